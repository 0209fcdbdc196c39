"""Sequence-mixing kernels of the xLSTM family.

`modeling_xlstm.kernels.mlstm` and `modeling_xlstm.kernels.slstm` each hold a pure-PyTorch reference
(`native`) that runs everywhere, and the Triton kernels used on CUDA. `modeling_xlstm.backend` picks
between them.
"""
