"""The seam between layers and kernels: one op per recurrence, `mlstm_op` and `slstm_op`.

Layers compute projections and gate pre-activations in their own [B, S, ...] layout and call the op; the op owns
what is the same for every layer: masking by gates (a padded position leaves the state untouched), the choice of
form (recurrent step for one token with a state, parallel up to `chunk_size`, chunkwise beyond, the sLSTM sequence),
the kernels' [B, NH, S, ...] layout, and the kernel set for the configured backend and device (chosen once per
(backend, device type), not per call).

`backend="native"` uses the pure-PyTorch kernels of `modeling_xlstm.kernels.*.native` (any device);
`backend="triton"` the Triton kernels (CUDA only); `backend="auto"` picks Triton on CUDA tensors when the
Triton kernels are importable and native otherwise.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from .kernels.mlstm import native as mlstm_native
from .kernels.slstm import native as slstm_native


@dataclass(frozen=True)
class KernelSet:
    """The four entry points a model needs; signatures are those of the native kernels."""

    mlstm_chunkwise: Callable
    mlstm_parallel: Callable
    mlstm_step: Callable
    slstm_sequence: Callable
    slstm_step: Callable


NATIVE_KERNELS = KernelSet(
    mlstm_chunkwise=mlstm_native.mlstm_chunkwise,
    mlstm_parallel=mlstm_native.mlstm_parallel,
    mlstm_step=mlstm_native.mlstm_recurrent_step,
    slstm_sequence=slstm_native.slstm_sequence,
    slstm_step=slstm_native.slstm_step,
)


@lru_cache(maxsize=None)
def _triton_module(family: str):
    """`modeling_xlstm.kernels.<family>.triton`, or None when Triton or that module cannot be imported."""
    try:
        return importlib.import_module(f"modeling_xlstm.kernels.{family}.triton")
    except ImportError:
        return None


def triton_kernels() -> KernelSet | None:
    """The Triton kernels, native ones standing in for a family without Triton kernels; None if neither has."""
    mlstm, slstm = _triton_module("mlstm"), _triton_module("slstm")
    if mlstm is None and slstm is None:
        return None
    return KernelSet(
        mlstm_chunkwise=mlstm.mlstm_chunkwise if mlstm else NATIVE_KERNELS.mlstm_chunkwise,
        mlstm_parallel=mlstm.mlstm_chunkwise if mlstm else NATIVE_KERNELS.mlstm_parallel,
        mlstm_step=mlstm.mlstm_recurrent_step if mlstm else NATIVE_KERNELS.mlstm_step,
        slstm_sequence=slstm.slstm_sequence if slstm else NATIVE_KERNELS.slstm_sequence,
        slstm_step=slstm.slstm_step if slstm else NATIVE_KERNELS.slstm_step,
    )


def check_backend(backend: str) -> None:
    """Fail early, at model creation, when the requested backend cannot run on this machine."""
    if backend != "triton":
        return
    if not torch.cuda.is_available():
        raise ValueError(
            'backend="triton" needs a CUDA GPU, and none is available; use backend="native" or backend="auto" '
            "(which picks Triton on CUDA and native elsewhere)."
        )
    if triton_kernels() is None:
        raise ValueError(
            'backend="triton" was requested but the Triton kernels cannot be imported (is `triton` installed?); '
            'use backend="native" or install triton.'
        )


def _kernels_for(backend: str, device_type: str) -> KernelSet:
    if backend == "native" or device_type != "cuda":
        return NATIVE_KERNELS
    kernels = triton_kernels()
    if kernels is None:
        if backend == "triton":
            check_backend(backend)
        return NATIVE_KERNELS
    return kernels


# (backend, device type) -> kernel set; a plain dict rather than lru_cache, which torch.compile traces through with a
# warning to the user
_SELECTED: dict[tuple[str, str], KernelSet] = {}


def select_kernels(backend: str, device: torch.device) -> KernelSet:
    """The kernel set for tensors on `device` under the configured `backend`."""
    key = (backend, device.type)
    if key not in _SELECTED:
        _SELECTED[key] = _kernels_for(backend, device.type)
    return _SELECTED[key]


def mlstm_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    *,
    state: tuple[torch.Tensor, ...] | None,
    mask: torch.Tensor | None,
    chunk_size: int,
    eps: float,
    backend: str,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The mLSTM recurrence. q, k: [B, S, NH, DHQK], v: [B, S, NH, DHV], i, f: [B, S, NH] gate pre-activations;
    mask: [B, S] bool (False = padding) or None; state (C, n, m) or None for an empty one.

    Returns h [B, S, NH, DHV] and the new state. A masked position gets input gate 0 and forget gate 1, so it leaves
    the state untouched.
    """
    if mask is not None:
        keep = mask.unsqueeze(-1)
        i = i.masked_fill(~keep, float("-inf"))
        f = f.masked_fill(~keep, float("inf"))
    S = q.shape[1]
    if S == 1 and state is not None:  # decoding: the step reads [B, NH, ...] directly, no layout change
        h, state = mlstm_step_op(q[:, 0], k[:, 0], v[:, 0], i[:, 0], f[:, 0], state=state, eps=eps, backend=backend)
        return h.unsqueeze(1), state
    kernels = select_kernels(backend, q.device)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    i, f = i.transpose(1, 2), f.transpose(1, 2)
    if S <= chunk_size:
        h, state = kernels.mlstm_parallel(q, k, v, i, f, state, eps=eps)
    else:
        h, state = kernels.mlstm_chunkwise(q, k, v, i, f, state, chunk_size=chunk_size, eps=eps)
    return h.transpose(1, 2), state


def mlstm_step_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    *,
    state: tuple[torch.Tensor, ...] | None,
    eps: float,
    backend: str,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One mLSTM token (a decode step). q, k: [B, NH, DHQK], v: [B, NH, DHV], i, f: [B, NH]; state (C, n, m) or None
    for an empty one. Returns h [B, NH, DHV] and the new state (the given tensors, updated in place, where the kernel
    can)."""
    return select_kernels(backend, q.device).mlstm_step(q, k, v, i, f, state, eps=eps)


def slstm_op(
    gates: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: torch.Tensor,
    *,
    state: tuple[torch.Tensor, ...] | None,
    mask: torch.Tensor | None,
    backend: str,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The sLSTM recurrence. gates: [B, S, 4, NH, DH] input pre-activations (i, f, z, o); recurrent_kernel
    [NH, DH, 4, DH]; bias [NH, 4, DH]; mask: [B, S] bool (False = padding: the state stays untouched) or None.

    Returns h [B, S, NH, DH] and the new state (h, c, n, m).
    """
    kernels = select_kernels(backend, gates.device)
    if gates.shape[1] == 1 and state is not None:
        h, state = kernels.slstm_step(gates[:, 0], recurrent_kernel, bias, state, None if mask is None else mask[:, 0])
        return h.unsqueeze(1), state
    return kernels.slstm_sequence(gates, recurrent_kernel, bias, state, mask)
