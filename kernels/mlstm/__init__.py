"""mLSTM kernels: native PyTorch reference forms (and Triton kernels on CUDA)."""

from .native import (
    MLSTMState,
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent_sequence,
    mlstm_recurrent_step,
    mlstm_zero_state,
)

__all__ = [
    "MLSTMState",
    "mlstm_chunkwise",
    "mlstm_parallel",
    "mlstm_recurrent_sequence",
    "mlstm_recurrent_step",
    "mlstm_zero_state",
]
