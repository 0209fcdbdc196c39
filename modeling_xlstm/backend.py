"""Kernel selection: which implementation of the mLSTM and sLSTM recurrences a layer calls.

`backend="native"` uses the pure-PyTorch kernels of `modeling_xlstm.kernels.*.native` (any device);
`backend="triton"` the Triton kernels (CUDA only); `backend="auto"` picks Triton on CUDA tensors when the
Triton kernels are importable and native otherwise.
"""

from __future__ import annotations

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


@lru_cache(maxsize=1)
def triton_kernels() -> KernelSet | None:
    """The Triton kernel set, or None when Triton or its kernels cannot be imported here."""
    try:
        from .kernels.mlstm import triton as mlstm_triton  # noqa: F401
        from .kernels.slstm import triton as slstm_triton  # noqa: F401
    except ImportError:
        return None
    return KernelSet(
        mlstm_chunkwise=mlstm_triton.mlstm_chunkwise,
        mlstm_parallel=mlstm_triton.mlstm_chunkwise,
        mlstm_step=mlstm_triton.mlstm_recurrent_step,
        slstm_sequence=slstm_triton.slstm_sequence,
        slstm_step=slstm_triton.slstm_step,
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


def select_kernels(backend: str, device: torch.device) -> KernelSet:
    """The kernel set for tensors on `device` under the configured `backend`."""
    if backend == "native" or device.type != "cuda":
        return NATIVE_KERNELS
    kernels = triton_kernels()
    if kernels is None:
        if backend == "triton":
            check_backend(backend)
        return NATIVE_KERNELS
    return kernels
