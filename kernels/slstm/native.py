"""Pure-PyTorch sLSTM kernels: the recurrent step and the sequence loop built on it.

The sLSTM cell (Beck et al., 2024) is a scalar LSTM with an exponential input gate, a normalizer state
n and memory mixing through a recurrent matrix that is block-diagonal over heads. With gate
pre-activations  raw = W x_t + R h_{t-1} + b  split into (i, f, z, o):

    m_t = max(log sigmoid(f) + m_{t-1}, i)                 (log-space stabilizer)
    c_t = exp(log sigmoid(f) + m_{t-1} - m_t) c_{t-1} + exp(i - m_t) tanh(z)
    n_t = exp(log sigmoid(f) + m_{t-1} - m_t) n_{t-1} + exp(i - m_t)
    h_t = sigmoid(o) c_t / n_t

An empty state (n = 0) takes m_t = i on its first step, so n_t = 1 and h_t never divides by zero.

Shapes (B batch, S sequence, NH heads, DH head dim):
    gates_x (input pre-activations, gate order i, f, z, o): [B, S, 4, NH, DH] (step: [B, 4, NH, DH])
    recurrent_kernel: [NH, DH_in, 4, DH_out]       bias: [NH, 4, DH]
    state (h, c, n, m): each [B, NH, DH], float32 (float64 for float64 inputs)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SLSTMState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def slstm_zero_state(batch_size: int, num_heads: int, head_dim: int, device=None, dtype=torch.float32) -> SLSTMState:
    """The empty sLSTM state (h, c, n, m), all zeros."""
    return tuple(torch.zeros(batch_size, num_heads, head_dim, device=device, dtype=dtype) for _ in range(4))


def slstm_step(
    gates_x: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: torch.Tensor,
    state: SLSTMState | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SLSTMState]:
    """One sLSTM step. gates_x: [B, 4, NH, DH]; mask: optional [B] bool, False keeps the state untouched.

    Returns h [B, NH, DH] (dtype of gates_x) and the new state.
    """
    dtype = torch.promote_types(gates_x.dtype, torch.float32)
    B, _, NH, DH = gates_x.shape
    if state is None:
        state = slstm_zero_state(B, NH, DH, device=gates_x.device, dtype=dtype)
    h, c, n, m = (s.to(dtype) for s in state)
    recurrent = torch.einsum("bhd,hdgo->bgho", h, recurrent_kernel.to(dtype))
    raw = gates_x.to(dtype) + recurrent + bias.to(dtype).transpose(0, 1)
    i_raw, f_raw, z_raw, o_raw = raw.unbind(dim=1)

    # An empty state contributes nothing; -inf makes m_new = i_raw (a constant, so no NaN gradients).
    log_f_plus_m = torch.where(n == 0, float("-inf"), F.logsigmoid(f_raw) + m)
    m_new = torch.maximum(log_f_plus_m, i_raw)
    f_act = torch.exp(log_f_plus_m - m_new)
    i_act = torch.exp(i_raw - m_new)
    c_new = f_act * c + i_act * torch.tanh(z_raw)
    n_new = f_act * n + i_act
    h_new = torch.sigmoid(o_raw) * c_new / n_new
    new_state = (h_new, c_new, n_new, m_new)
    if mask is not None:
        keep = mask.view(B, 1, 1)
        new_state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, (h, c, n, m)))
    return new_state[0].to(gates_x.dtype), new_state


def slstm_sequence(
    gates_x: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: torch.Tensor,
    state: SLSTMState | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SLSTMState]:
    """The sLSTM over a sequence, one step at a time. gates_x: [B, S, 4, NH, DH]; mask: optional [B, S] bool.

    Returns h [B, S, NH, DH] (dtype of gates_x) and the final state.
    """
    outputs = []
    for t in range(gates_x.shape[1]):
        h, state = slstm_step(
            gates_x[:, t], recurrent_kernel, bias, state, mask=None if mask is None else mask[:, t]
        )
        outputs.append(h)
    return torch.stack(outputs, dim=1), state
