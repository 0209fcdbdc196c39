"""sLSTM kernels: native PyTorch reference (and Triton kernels on CUDA)."""

from .native import SLSTMState, slstm_sequence, slstm_step, slstm_zero_state

__all__ = ["SLSTMState", "slstm_sequence", "slstm_step", "slstm_zero_state"]
