"""Sequence-mixing kernels of the xLSTM family.

`modeling_xlstm.kernels.mlstm` and `modeling_xlstm.kernels.slstm` each hold a pure-PyTorch reference
(`native`) that runs everywhere, and the Triton kernels used on CUDA. `modeling_xlstm.backend` picks
between them.
"""

import sys

import torch


def _hand_the_name_to_the_kernel_hub() -> None:
    """Run from a checkout's root (`python -m pytest`, `python -m benchmarks....`), this folder is importable as a
    top-level `kernels`, the name of Hugging Face's kernel-hub package, which transformers imports whenever it is
    installed (a dependency of transformers from 5.25 on) and would fail to find in this folder. So this module
    replaces itself with that package, found on the rest of sys.path; where it is not installed, this module stays
    a stand-in without a version, which transformers takes for no kernel hub."""
    import importlib.machinery
    import importlib.util
    import os

    checkout = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    elsewhere = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != checkout]
    spec = importlib.machinery.PathFinder.find_spec(__name__, elsewhere)
    if spec is None:
        return
    hub = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = hub  # what the importing statement receives once this module has run
    spec.loader.exec_module(hub)


if __name__ == "kernels":
    _hand_the_name_to_the_kernel_hub()


def autograd_records(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd would record an op on any of `tensors` (None entries are skipped).

    Picks between a differentiable path (an `autograd.Function`, or keeping tensors alive for backward) and the
    cheaper forward that saves nothing and may update state in place.
    """
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
