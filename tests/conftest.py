"""Test-session set-up: Triton kernels run in the interpreter on machines without CUDA."""

import os

import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined, so that CPU-only CI checks the kernels' logic.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
