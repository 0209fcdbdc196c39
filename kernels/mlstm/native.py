"""Pure-PyTorch mLSTM kernels: parallel, chunkwise and recurrent forms of one recurrence.

The mLSTM cell (Beck et al., 2024) keeps a matrix memory per head and updates it with an exponential
input gate and a sigmoid forget gate:

    C_t = f_t C_{t-1} + i_t k_t v_t^T          n_t = f_t n_{t-1} + i_t k_t
    h_t = (q_t^T C_t) / max(|q_t^T n_t|, 1)     with q_t scaled by 1/sqrt(DHQK)

To keep exp() in range every form carries a log-space stabilizer m and stores the scaled state
(C, n) = (C_true, n_true) * exp(-m). One step reads

    m_t = max(log f_t + m_{t-1}, i_t)
    C_t = exp(log f_t + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) k_t v_t^T
    h_t = q_t^T C_t / (max(|q_t^T n_t|, exp(-m_t)) + eps)

The parallel form below includes the initial state as one more term of the row maximum, so that
parallel, chunkwise and recurrent forms compute the same numbers (eps included), not only the same
function up to eps. An empty state is C = 0, n = 0, m = 0.

Shapes (B batch, NH heads, S sequence, DHQK query/key head dim, DHV value head dim):
    q, k: [B, NH, S, DHQK]    v: [B, NH, S, DHV]    i, f (gate pre-activations): [B, NH, S]
    C: [B, NH, DHQK, DHV]     n: [B, NH, DHQK]      m: [B, NH, 1]

All state math runs in float32 (or float64 when the inputs are float64); the output h has the dtype of v.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import autograd_records

MLSTMState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# Without gradients the chunkwise form takes whole chunks in groups whose chunk states fit in this many bytes, so that
# a group's batched tensors stay in a core's cache (README.md: 64 MB groups ran an evaluation batch's cell at half the
# speed of chunk by chunk)
GROUP_STATE_BYTES = 1 << 20


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # a dtype comparison costs far less than a no-op `.to()` call, which matters in a decode step
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def mlstm_zero_state(
    batch_size: int, num_heads: int, dhqk: int, dhv: int, device=None, dtype=torch.float32
) -> MLSTMState:
    """The empty mLSTM state (C, n, m) = (0, 0, 0)."""
    return (
        torch.zeros(batch_size, num_heads, dhqk, dhv, device=device, dtype=dtype),
        torch.zeros(batch_size, num_heads, dhqk, device=device, dtype=dtype),
        torch.zeros(batch_size, num_heads, 1, device=device, dtype=dtype),
    )


def _chunk_outputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, b: torch.Tensor, state: MLSTMState, eps: float
) -> torch.Tensor:
    """Parallel (quadratic) form of the outputs of chunks, each starting from its own state. Compute dtype.

    q, k: [..., L, DHQK], v: [..., L, DHV], i and b (the cumulative log forget gate inside the chunk): [..., L];
    state: C [..., DHQK, DHV], n [..., DHQK], m [..., 1]. The leading dims are [B, NH], or [B, NH, chunks] for many
    chunks at once. Returns h [..., L, DHV].
    """
    c0, n0, m0 = state
    L, dhqk = q.shape[-2], q.shape[-1]
    q = q * dhqk**-0.5
    # log D[t, j] = b_t - b_j + i_j for j <= t
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    log_d = b.unsqueeze(-1) - b.unsqueeze(-2) + i.unsqueeze(-2)
    log_d = log_d.masked_fill(~causal, float("-inf"))  # [..., L, L]
    log_w0 = b + m0  # weight of the initial state at step t, [..., L]
    m = torch.maximum(log_d.amax(dim=-1), log_w0)  # [..., L], equals the recurrent stabilizer

    d = torch.exp(log_d - m.unsqueeze(-1))
    w0 = torch.exp(log_w0 - m).unsqueeze(-1)  # [..., L, 1]
    scores = (q @ k.transpose(-1, -2)) * d  # [..., L, L]
    numerator = scores @ v + w0 * (q @ c0)
    qn = scores.sum(dim=-1, keepdim=True) + w0 * (q @ n0.unsqueeze(-1))
    denominator = torch.maximum(qn.abs(), torch.exp(-m).unsqueeze(-1)) + eps
    return numerator / denominator


def _mlstm_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState,
    eps: float,
) -> tuple[torch.Tensor, MLSTMState]:
    """Parallel (quadratic) form over one chunk, starting from `state`. Inputs already in compute dtype.

    q, k: [B, NH, L, DHQK], v: [B, NH, L, DHV], i, f: [B, NH, L]; returns h [B, NH, L, DHV] and the state
    after the chunk.
    """
    c0, n0, m0 = state
    b = torch.cumsum(F.logsigmoid(f), dim=-1)  # b_t = sum_{s<=t} log f_s
    h = _chunk_outputs(q, k, v, i, b, state, eps)

    # state after the chunk: weights of every input relative to the chunk end
    b_last = b[..., -1:]  # [B, NH, 1]
    log_g = b_last - b + i  # [B, NH, L]
    m_next = torch.maximum(b_last + m0, log_g.amax(dim=-1, keepdim=True))  # [B, NH, 1]
    g = torch.exp(log_g - m_next).unsqueeze(-1)  # [B, NH, L, 1]
    decay = torch.exp(b_last + m0 - m_next)  # [B, NH, 1]
    c_next = decay.unsqueeze(-1) * c0 + (k * g).transpose(-1, -2) @ v
    n_next = decay * n0 + (k * g).sum(dim=-2)
    return h, (c_next, n_next, m_next)


def _chunk_group(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState,
    eps: float,
) -> tuple[torch.Tensor, MLSTMState]:
    """Several whole chunks at once: the state at every chunk start in one pass, then all chunks' outputs in one
    batched parallel form. Compute dtype.

    q, k: [B, NH, NC, L, DHQK], v: [B, NH, NC, L, DHV], i, f: [B, NH, NC, L]; returns h [B, NH, NC, L, DHV] and the
    state after the last chunk. The states follow the recurrence across chunks written as one weighted sum, with the
    same log-space stabilizer as the chunk-by-chunk loop (equal up to float rounding):

        m_c = max(B_c + m_0, max_{c' <= c} (B_c - B_c' + mu_c'))       B_c: summed log forget gates of chunks 1..c
        C_c = exp(B_c + m_0 - m_c) C_0 + sum_{c' <= c} exp(B_c - B_c' + mu_c' - m_c) U_c'

    where U_c' = sum_j exp(log g_j - mu_c') k_j v_j^T is chunk c''s own input, stabilized by its own maximum mu_c'.
    """
    c0, n0, m0 = state
    NC = q.shape[2]
    b = torch.cumsum(F.logsigmoid(f), dim=-1)  # [B, NH, NC, L]
    b_last = b[..., -1]  # [B, NH, NC]
    log_g = b_last.unsqueeze(-1) - b + i  # weight of each input at its chunk's end, [B, NH, NC, L]
    mu = log_g.amax(dim=-1)  # [B, NH, NC]; -inf for a chunk whose inputs are all masked
    g = torch.exp(log_g - torch.where(mu.isfinite(), mu, 0.0).unsqueeze(-1)).unsqueeze(-1)  # [B, NH, NC, L, 1]
    inputs_c = (k * g).transpose(-1, -2) @ v  # U_c, [B, NH, NC, DHQK, DHV]
    inputs_n = (k * g).sum(dim=-2)  # [B, NH, NC, DHQK]

    total = torch.cumsum(b_last, dim=-1)  # B_c, [B, NH, NC]
    causal = torch.ones(NC, NC, dtype=torch.bool, device=q.device).tril()
    log_w = (total.unsqueeze(-1) - total.unsqueeze(-2) + mu.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    log_w0 = total + m0  # [B, NH, NC]
    m_end = torch.maximum(log_w.amax(dim=-1), log_w0)  # state stabilizer after each chunk
    w = torch.exp(log_w - m_end.unsqueeze(-1))  # [B, NH, NC, NC]
    w0 = torch.exp(log_w0 - m_end).unsqueeze(-1)  # [B, NH, NC, 1]
    c_end = (w @ inputs_c.flatten(-2) + w0 * c0.flatten(-2).unsqueeze(2)).unflatten(-1, c0.shape[-2:])
    n_end = w @ inputs_n + w0 * n0.unsqueeze(2)

    # the state each chunk starts from: the initial one, then the state after the chunk before
    starts = (
        torch.cat([c0.unsqueeze(2), c_end[:, :, :-1]], dim=2),
        torch.cat([n0.unsqueeze(2), n_end[:, :, :-1]], dim=2),
        torch.cat([m0.unsqueeze(2), m_end[:, :, :-1].unsqueeze(-1)], dim=2),
    )
    h = _chunk_outputs(q, k, v, i, b, starts, eps)
    return h, (c_end[:, :, NC - 1], n_end[:, :, NC - 1], m_end[:, :, NC - 1 :])


def _prepare(q, k, v, i, f, state):
    """Inputs and state in the compute dtype; the empty state for None. q: [B, NH, (S,) DHQK] (a sequence or a step)."""
    dtype = _compute_dtype(v.dtype)
    if state is None:
        (B, NH), DHQK = q.shape[:2], q.shape[-1]
        state = mlstm_zero_state(B, NH, DHQK, v.shape[-1], device=q.device, dtype=dtype)
    else:
        state = tuple(_as_dtype(s, dtype) for s in state)
    return tuple(_as_dtype(t, dtype) for t in (q, k, v, i, f)), state


def mlstm_parallel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, MLSTMState]:
    """Quadratic parallel form over the whole sequence (memory O(S^2)); best for short sequences.

    Returns h [B, NH, S, DHV] (dtype of v) and the final state (float32).
    """
    inputs, state = _prepare(q, k, v, i, f, state)
    h, state = _mlstm_chunk(*inputs, state, eps)
    return h.to(v.dtype), state


def mlstm_chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState | None = None,
    chunk_size: int = 64,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, MLSTMState]:
    """Chunkwise form: parallel inside chunks of `chunk_size`, recurrent across them.

    Memory per chunk is O(chunk_size^2) whatever the sequence length; any length works (the last chunk
    may be shorter). Returns h [B, NH, S, DHV] (dtype of v) and the final state (float32).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    inputs, state = _prepare(q, k, v, i, f, state)
    (B, NH, S, DHQK), DHV = q.shape, v.shape[-1]
    # Without gradients, whole chunks go in groups (_chunk_group: a few dozen tensor ops per group, not per chunk),
    # a group's chunk states within GROUP_STATE_BYTES. With them, chunk by chunk: the backward of a group's weighted
    # sum over chunk states cost more than the loop saves (bundled model's training shape: 0.81x). A last, shorter
    # chunk runs on its own.
    chunks_per_group = 1
    if not autograd_records(*inputs, *state):
        chunks_per_group = max(1, GROUP_STATE_BYTES // max(B * NH * DHQK * DHV * inputs[2].element_size(), 1))
    group = chunks_per_group * chunk_size
    whole = S - S % chunk_size
    sizes = [group] * (whole // group) + [n for n in (whole % group, S - whole) if n]
    # one split per input, not one slice per piece: the backward of a split is one concatenation, that of a slice
    # a zero tensor of the input's full size per piece
    time_dims = [-1 if x.dim() == 3 else -2 for x in inputs]  # gates [B, NH, S], the others [B, NH, S, D]
    pieces = [x.split(sizes, dim=dim) for x, dim in zip(inputs, time_dims)]
    outputs = []
    for piece in zip(*pieces):
        length = piece[0].shape[-2]
        if length <= chunk_size:
            h, state = _mlstm_chunk(*piece, state, eps)
        else:
            grouped = [x.unflatten(dim, (length // chunk_size, chunk_size)) for x, dim in zip(piece, time_dims)]
            h, state = _chunk_group(*grouped, state, eps)
            h = h.flatten(2, 3)
        outputs.append(h)
    return torch.cat(outputs, dim=-2).to(v.dtype), state


def mlstm_recurrent_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, MLSTMState]:
    """One recurrent step. q, k: [B, NH, DHQK], v: [B, NH, DHV], i, f: [B, NH].

    Returns h [B, NH, DHV] (dtype of v) and the new state (float32). O(1) in the number of past tokens.
    Written with as few tensor ops as the math allows: in a small model's decode step, each op costs more in
    dispatch than in arithmetic.

    In place, as the Triton step: when no gradient is required and the given state already has the compute dtype
    (float32; float64 for float64 inputs), C, n and m are updated in place and the returned state *is* the given one (decode then allocates no new C, and the
    model's cache, which passes its own buffers, needs no copy back). Otherwise the given state is left untouched.
    Callers must use the returned state.
    """
    out_dtype, DHQK = v.dtype, q.shape[-1]
    in_place = state is not None and not autograd_records(q, k, v, i, f, *state)
    (q, k, v, i, f), (c, n, m) = _prepare(q, k, v, i, f, state)
    log_f_plus_m = F.logsigmoid(f).unsqueeze(-1) + m  # [B, NH, 1]
    i = i.unsqueeze(-1)
    m_new = torch.maximum(log_f_plus_m, i)
    f_act = torch.exp(log_f_plus_m - m_new)
    k_i = k * torch.exp(i - m_new)  # [B, NH, DHQK]
    if in_place:
        c_new = c.mul_(f_act.unsqueeze(-1)).addcmul_(k_i.unsqueeze(-1), v.unsqueeze(-2))
        n_new = n.mul_(f_act).add_(k_i)
        m_new = m.copy_(m_new)
    else:
        c_new = torch.addcmul(c * f_act.unsqueeze(-1), k_i.unsqueeze(-1), v.unsqueeze(-2))
        n_new = torch.addcmul(k_i, n, f_act)
    # bmm over B * NH rows rather than a broadcasting matmul, whose shape handling costs more than these products
    (B, NH), DHV = q.shape[:2], v.shape[-1]
    q = (q * DHQK**-0.5).reshape(B * NH, 1, DHQK)
    numerator = torch.bmm(q, c_new.reshape(B * NH, DHQK, DHV)).view(B, NH, DHV)
    qn = torch.bmm(q, n_new.reshape(B * NH, DHQK, 1)).view(B, NH, 1)
    h = numerator / (torch.maximum(qn.abs(), torch.exp(-m_new)) + eps)
    return _as_dtype(h, out_dtype), (c_new, n_new, m_new)


def mlstm_recurrent_sequence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, MLSTMState]:
    """The step applied token by token: the plainest statement of the recurrence (a test oracle). The given
    state is left untouched."""
    if state is not None:
        state = tuple(s.clone() for s in state)  # the steps below may update it in place
    outputs = []
    for t in range(q.shape[-2]):
        h, state = mlstm_recurrent_step(q[..., t, :], k[..., t, :], v[..., t, :], i[..., t], f[..., t], state, eps)
        outputs.append(h)
    return torch.stack(outputs, dim=-2), state
