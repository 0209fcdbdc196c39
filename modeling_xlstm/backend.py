"""Kernel selection: which implementation of the mLSTM and sLSTM recurrences a layer calls.

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
