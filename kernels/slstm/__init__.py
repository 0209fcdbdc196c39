"""sLSTM kernels: native PyTorch (the sequence as an autograd.Function with a hand-written backward, and the plain
step loop that is its reference) and Triton kernels on CUDA."""

from .native import (
    SLSTMSequenceFunction,
    SLSTMState,
    slstm_sequence,
    slstm_sequence_reference,
    slstm_step,
    slstm_zero_state,
)

__all__ = [
    "SLSTMSequenceFunction",
    "SLSTMState",
    "slstm_sequence",
    "slstm_sequence_reference",
    "slstm_step",
    "slstm_zero_state",
]
