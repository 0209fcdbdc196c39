"""Sequence-mixing kernels of the xLSTM family.

`modeling_xlstm.kernels.mlstm` and `modeling_xlstm.kernels.slstm` each hold a pure-PyTorch reference
(`native`) that runs everywhere, and the Triton kernels used on CUDA. `modeling_xlstm.backend` picks
between them.
"""

import torch


def autograd_records(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd would record an op on any of `tensors` (None entries are skipped).

    Picks between a differentiable path (an `autograd.Function`, or keeping tensors alive for backward) and the
    cheaper forward that saves nothing and may update state in place.
    """
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
