"""Pure-PyTorch sLSTM kernels: the recurrent step, the sequence as one autograd.Function with a hand-written
backward through time, and the plain step-by-step loop that is its reference.

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

Entry points:
    slstm_step                 one step (decode; also the building block of the reference loop)
    slstm_sequence             the sequence: `SLSTMSequenceFunction`, a lean forward loop and a hand-written
                               backward loop through time (see kernels/slstm/README.md for the design)
    slstm_sequence_reference   the plain loop over `slstm_step`, differentiated by autograd step by step: the
                               definition the fast sequence is tested against
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import autograd_records

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


def slstm_sequence_reference(
    gates_x: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: torch.Tensor,
    state: SLSTMState | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SLSTMState]:
    """The sLSTM over a sequence as a plain loop over `slstm_step`, differentiated by autograd step by step.

    Same signature and results as `slstm_sequence`; slow under autograd (every step records ~20 nodes). It is
    the definition the fast sequence is tested against. gates_x: [B, S, 4, NH, DH]; mask: optional [B, S] bool.
    """
    outputs = []
    for t in range(gates_x.shape[1]):
        h, state = slstm_step(
            gates_x[:, t], recurrent_kernel, bias, state, mask=None if mask is None else mask[:, t]
        )
        outputs.append(h)
    return torch.stack(outputs, dim=1), state


# ---------------------------------------------------------------------------------------------------------------
# The sequence as one autograd.Function
# ---------------------------------------------------------------------------------------------------------------
#
# All buffers are in the state dtype (float32, or float64 for float64 inputs) and slot-major per step: every
# per-step quantity is one contiguous [NH, B, DH] plane (on strided slices the same ops are 2-5x slower at these
# sizes, where the loop pays mostly per-op costs). Saved for the backward, and nothing else:
#
#   G  [S, 5, NH, B, DH]      per step lfm = log sigmoid(f) + m_{t-1} (-inf for an empty state), then the raw
#                             pre-activations i, f, z, o (gates_x + bias, written for all steps at once before
#                             the loop, plus h_{t-1} R added in the loop)
#   ST [S + 1, 4, NH, B, DH]  the state c, n, m, h after each step; index 0 holds the initial state
#
# The recurrent matmul is one batched matmul per step, [NH, B, DH] @ [NH, DH, 4 DH], into a small scratch (the
# row-major [B, 4 DH] output per head is the layout the BLAS is fast at; column-major outputs with only B columns
# ran 4x slower) whose four gate slices are then added onto the gate planes by one op. The backward recomputes
# the pointwise activations from G and ST for a chunk of steps at once, then runs the sequential part through two
# alternating records of 8 planes (see _sequence_backward).

_LFM = 0  # G slot of lfm; the gates i, f, z, o follow
_C, _N, _M, _H = range(4)  # ST slots
# Backward record slots; the gate gradients are kept in the order z, o, i, f (see _sequence_backward)
_DZ, _DO, _DI, _DF, _DM, _DN, _DC, _DH = range(8)
# Backward coefficient slots (see _backward_coefficients)
_AB, _QK, _CM, _CN, _CC, _FA, _NCOEF = 0, 2, 4, 7, 10, 13, 14

# Time steps whose backward coefficients are computed at once (vectorized over the chunk). Larger chunks spread
# the per-op cost of the ~30 coefficient ops over more steps; smaller ones keep the coefficient buffer (14 planes
# of [chunk, B, hidden]) in cache.
BACKWARD_CHUNK = 16


def _empty_state_steps(n0: torch.Tensor, mask: torch.Tensor | None, S: int) -> int:
    """How many leading steps may still see an empty state (n == 0) somewhere: the forward applies the
    empty-state rule there and skips its two ops on all later steps.

    After an unmasked step n > 0 for good: n_t = f_act n_{t-1} + i_act, where one of f_act, i_act is exp(0) = 1,
    so n_t >= min(n_{t-1}, 1). A row that starts empty therefore stays empty only through its masked steps.
    """
    if bool((n0 < 0).any()):  # not a state the cell produces; keep the rule everywhere to stay exact
        return S
    empty_rows = (n0 == 0).flatten(1).any(1)  # [B]
    if not bool(empty_rows.any()):
        return 0
    if mask is None:
        return 1
    live = mask[empty_rows]  # [rows, S]
    first_live = torch.where(live.any(1), live.to(torch.uint8).argmax(1), S - 1)
    return int(first_live.max()) + 1


def _sequence_forward(gates_x, R, bias, h0, c0, n0, m0, mask):
    """The forward loop. R, bias and the initial state are in the state dtype; mask is [B, S] bool or None.
    Returns the buffers G and ST described above."""
    B, S, _, NH, DH = gates_x.shape
    G = R.new_empty((S, 5, NH, B, DH))
    torch.add(gates_x.permute(1, 2, 3, 0, 4), bias.transpose(0, 1).reshape(1, 4, NH, 1, DH), out=G[:, 1:])
    ST = R.new_empty((S + 1, 4, NH, B, DH))
    ST[0] = torch.stack([c0, n0, m0, h0]).transpose(1, 2)
    recurrent = R.reshape(NH, DH, 4 * DH)

    # Per-step views, made once (unbind makes all of them in one call).
    gates = G[:, 1:].unbind(0)
    lfm, i_raw, f_raw, z_raw, o_raw = (G[:, k].unbind(0) for k in range(5))
    lfm_i = G[:, 0:2].unbind(0)  # (lfm, i) side by side: one sub and one exp give f_act and i_act
    state = ST.unbind(0)
    cn = ST[:, _C : _N + 1].unbind(0)
    c, n, m, h = (ST[:, k].unbind(0) for k in range(4))

    # Scratch, reused by every step (small: stays in cache).
    prod = R.new_empty((NH, B, 4, DH))  # h_{t-1} R, gates interleaved as the matmul writes them
    prod_flat = prod.view(NH, B, 4 * DH)
    prod_slots = prod.permute(2, 0, 1, 3)  # the same as [4, NH, B, DH], to add onto the gate planes
    acts = R.new_empty((2, NH, B, DH))  # (f_act, i_act)
    f_act, i_act = acts[0:1], acts[1:2]
    tz_one = R.new_ones((2, NH, B, DH))  # (tanh z, 1): c and n in one addcmul
    so = R.new_empty((NH, B, DH))

    rule_steps = _empty_state_steps(n0, mask, S)
    if mask is not None:
        keep = mask.t().reshape(S, 1, 1, B, 1).unbind(0)
        masked = (~mask).any(0).tolist()
    for t in range(S):
        torch.bmm(h[t], recurrent, out=prod_flat)
        gates[t].add_(prod_slots)
        torch.add(F.logsigmoid(f_raw[t]), m[t], out=lfm[t])
        if t < rule_steps:
            lfm[t].masked_fill_(n[t] == 0, float("-inf"))
        torch.maximum(lfm[t], i_raw[t], out=m[t + 1])
        torch.sub(lfm_i[t], m[t + 1], out=acts).exp_()
        torch.tanh(z_raw[t], out=tz_one[0])
        torch.mul(cn[t], f_act, out=cn[t + 1]).addcmul_(i_act, tz_one)
        torch.mul(torch.sigmoid(o_raw[t], out=so), c[t + 1], out=h[t + 1]).div_(n[t + 1])
        if mask is not None and masked[t]:
            torch.where(keep[t], state[t + 1], state[t], out=state[t + 1])
    return G, ST


def _backward_coefficients(G, ST, keep, out, tmp):
    """The per-step coefficients of the backward recurrence for a chunk of T steps, all steps at once.

    G [T, 5, NH, B, DH] and ST [T + 1, 4, NH, B, DH] (the states before and after each step); keep: [T, 1, 1, B, 1]
    bool or None; out: [T, 14, NH, B, DH]; tmp: [T, 5, NH, B, DH] scratch. With (dm, dn, dc, dh) the gradient
    flowing into step t from later steps (dh including dy_t), the loop computes

        (dn, dc) += (-h / n, sigmoid(o) / n) * dh                     -> the totals dn_t, dc_t   (slots _AB)
        (dz, do)  = (i_act (1 - tanh(z)^2), h (1 - sigmoid(o))) * (dc, dh)                       (slots _QK)
        (di, df, dlfm) = c_m dm + c_n dn + c_c dc                                  (slots _CM, _CN, _CC)
        into step t-1: dm = dlfm, (dn, dc) *= f_act (slot _FA), dh = sum_g dgate_g R_g^T (+ dh if masked)

    where lfm = log sigmoid(f) + m_{t-1}. The (di, df, dlfm) rows come from the stabilizer: m_t = max(lfm, i)
    passes dm_t - u - v on to the winner (half each on a tie, as torch.maximum does), where
    u = f_act (c_{t-1} dc + n_{t-1} dn) is what lfm gets through f_act and v = i_act (tanh(z) dc + dn) what i gets
    through i_act. With w = 1 where lfm won (0.5 on a tie, 0 where i won or the state was empty, lfm = -inf):
    dlfm = w dm + (1-w) u - w v, di = dm - dlfm and df = sigmoid(-f) dlfm. A masked step has all coefficients 0
    except dlfm = dm and f_act = 1: it passes (dm, dn, dc) through, and the loop adds dh back around the matmul.

    Every intermediate is written into `out` or `tmp` (allocated once per backward): temporaries of this size
    would be fresh memory on every call, and first-touch page faults cost as much as the arithmetic.
    """
    lfm, i_raw, f_raw, z_raw, o_raw = G.unbind(1)
    c_p, n_p = ST[:-1, _C], ST[:-1, _N]
    c, n, m, h = ST[1:].unbind(1)
    ab0, ab1, qk0, qk1, cm0, cm1, cm2, cn0, cn1, cn2, cc0, cc1, cc2, fa = out.unbind(1)
    i_act, tz, so, sf, p = tmp.unbind(1)
    one = torch.ones((), dtype=G.dtype, device=G.device)

    torch.sub(lfm, m, out=fa).exp_()
    torch.sub(i_raw, m, out=i_act).exp_()
    torch.tanh(z_raw, out=tz)
    torch.sigmoid(o_raw, out=so)
    torch.reciprocal(n, out=p)  # 1 / n, for the next two
    torch.mul(h, p, out=ab0).neg_()  # -dh/dn
    torch.mul(so, p, out=ab1)  # dh/dc
    torch.addcmul(one, tz, tz, value=-1, out=qk0).mul_(i_act)  # dc/dz
    torch.addcmul(h, h, so, value=-1, out=qk1)  # dh/do
    w = torch.sub(lfm, i_raw, out=cm2).sign_().mul_(0.5).add_(0.5)  # 1 where lfm won, 0.5 on a tie, 0 where i won
    torch.sub(one, w, out=cm0)
    torch.neg(f_raw, out=sf).sigmoid_()  # d/df log sigmoid(f)
    torch.mul(sf, w, out=cm1)
    torch.mul(cm0, fa, out=p)  # (1 - w) f_act
    torch.mul(p, n_p, out=cn2).addcmul_(w, i_act, value=-1)  # alpha = dlfm/dn
    tz.mul_(i_act)
    torch.mul(p, c_p, out=cc2).addcmul_(w, tz, value=-1)  # beta = dlfm/dc
    torch.neg(cn2, out=cn0)
    torch.mul(sf, cn2, out=cn1)
    torch.neg(cc2, out=cc0)
    torch.mul(sf, cc2, out=cc1)
    if keep is not None:
        masked_values = torch.zeros(_NCOEF, dtype=G.dtype, device=G.device)
        masked_values[_CM + 2] = 1.0  # dlfm = dm
        masked_values[_FA] = 1.0
        torch.where(keep, out, masked_values.view(1, _NCOEF, 1, 1, 1), out=out)
    return out


def _sequence_backward(G, ST, R, mask, dy, dh_T, dc_T, dn_T, dm_T):
    """The backward loop through time. Returns the gradients of the gate pre-activations, [B, S, 4, NH, DH] in the
    state dtype, and those of the initial state (h, c, n, m), each [NH, B, DH].

    Two alternating records W[0], W[1] of 8 planes carry the loop: the record of step t + 1 holds the gradient
    flowing into step t (slots dm, dn, dc, dh; dh includes dy_t); step t writes its gate gradients (slots dz, do,
    di, df; dz, do before di, df so that one op writes (di, df, dlfm) with dlfm landing in the dm slot) and the
    gradient flowing into step t - 1 into the other record. Its gate gradients are gathered, interleaved in the
    order i, f, z, o, into a small scratch [NH, B, 4, DH]: the left operand of one matmul per head,
    dh_{t-1} = dy_{t-1} + [B, 4 DH] @ [4 DH, DH] (the sum over gates inside the matmul), and copied from there to
    the output in one op.
    """
    S, _, NH, B, DH = G.shape
    d_gates = G.new_empty((B, S, 4, NH, DH))
    dy = dy.to(G.dtype).permute(1, 2, 0, 3)  # [S, NH, B, DH]; a view when dy is in the state dtype already
    recurrent_t = R.permute(0, 2, 3, 1).reshape(NH, 4 * DH, DH)
    inter = G.new_empty((NH, B, 4, DH))
    inter_flat = inter.view(NH, B, 4 * DH)
    inter_if, inter_zo = inter[:, :, 0:2].permute(2, 0, 1, 3), inter[:, :, 2:4].permute(2, 0, 1, 3)

    W = G.new_empty((2, 8, NH, B, DH))
    first = W[S % 2]
    for slot, grad in ((_DM, dm_T), (_DN, dn_T), (_DC, dc_T)):
        first[slot] = grad.transpose(0, 1)
    torch.add(dh_T.transpose(0, 1), dy[S - 1], out=first[_DH])

    def views(rec):
        return dict(
            zo=rec[_DZ : _DO + 1],
            ifl=rec[_DI : _DM + 1],
            dnc=rec[_DN : _DC + 1],
            dch=rec[_DC : _DH + 1],
            dm=rec[_DM : _DM + 1],
            dn=rec[_DN : _DN + 1],
            dc=rec[_DC : _DC + 1],
            dh_1=rec[_DH : _DH + 1],
            dh=rec[_DH],
            di_df=rec[_DI : _DF + 1],
        )

    rec = [views(W[0]), views(W[1])]
    dy_t = dy.unbind(0)
    out_gates = d_gates.permute(1, 3, 0, 2, 4).unbind(0)  # per step [NH, B, 4, DH] views of the output
    if mask is not None:
        masked = (~mask).any(0).tolist()
        passthrough = (~mask).to(G.dtype).t().reshape(S, 1, B, 1).unbind(0)

    chunk = min(S, BACKWARD_CHUNK)
    coef_buffer = G.new_empty((chunk, _NCOEF, NH, B, DH))
    tmp_buffer = G.new_empty((chunk, 5, NH, B, DH))
    for t0 in reversed(range(0, S, chunk)):
        t1 = min(S, t0 + chunk)
        keep = None
        if mask is not None and not bool(mask[:, t0:t1].all()):
            keep = mask[:, t0:t1].t().reshape(t1 - t0, 1, 1, B, 1)
        coef = _backward_coefficients(
            G[t0:t1], ST[t0 : t1 + 1], keep, coef_buffer[: t1 - t0], tmp_buffer[: t1 - t0]
        )
        ab, qk, c_m, c_n, c_c, fa = (
            coef[:, a:b].unbind(0)
            for a, b in (
                (_AB, _AB + 2), (_QK, _QK + 2), (_CM, _CM + 3), (_CN, _CN + 3), (_CC, _CC + 3), (_FA, _FA + 1)
            )
        )
        for t in reversed(range(t0, t1)):
            j, cur, nxt = t - t0, rec[(t + 1) % 2], rec[t % 2]
            cur["dnc"].addcmul_(ab[j], cur["dh_1"])
            torch.mul(qk[j], cur["dch"], out=nxt["zo"])
            torch.mul(c_m[j], cur["dm"], out=nxt["ifl"]).addcmul_(c_n[j], cur["dn"]).addcmul_(c_c[j], cur["dc"])
            torch.mul(cur["dnc"], fa[j], out=nxt["dnc"])
            inter_if.copy_(nxt["di_df"])
            inter_zo.copy_(nxt["zo"])
            out_gates[t].copy_(inter)
            if t > 0:
                dh = torch.baddbmm(dy_t[t - 1], inter_flat, recurrent_t, out=nxt["dh"])
            else:
                dh = torch.bmm(inter_flat, recurrent_t, out=nxt["dh"])
            if mask is not None and masked[t]:
                dh.addcmul_(passthrough[t], cur["dh"])
    last = W[0]
    return d_gates, (last[_DH], last[_DC], last[_DN], last[_DM])


class SLSTMSequenceFunction(torch.autograd.Function):
    """The sLSTM sequence with a hand-written backward through time (the native counterpart of the Triton
    kernel's). Inputs: gates_x [B, S, 4, NH, DH] (any float dtype); recurrent_kernel [NH, DH, 4, DH], bias
    [NH, 4, DH] and the initial state h0, c0, n0, m0 [B, NH, DH] in the state dtype (float32, or float64);
    mask [B, S] bool or None. Outputs: y [B, S, NH, DH] (gates_x dtype) and the final h, c, n, m (state dtype).
    """

    @staticmethod
    def forward(ctx, gates_x, recurrent_kernel, bias, h0, c0, n0, m0, mask):
        G, ST = _sequence_forward(gates_x, recurrent_kernel, bias, h0, c0, n0, m0, mask)
        ctx.save_for_backward(G, ST, recurrent_kernel, mask)
        ctx.gates_dtype = gates_x.dtype
        return _outputs(G, ST, gates_x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_T, dc_T, dn_T, dm_T):
        G, ST, R, mask = ctx.saved_tensors
        S, _, NH, B, DH = G.shape
        d_gates, d_init = _sequence_backward(G, ST, R, mask, dy, dh_T, dc_T, dn_T, dm_T)
        need = ctx.needs_input_grad
        d_R = d_bias = None
        if need[1]:
            # dR[h, k, g, j] = sum_{b,t} h_{t-1}[b, h, k] dgate_g[b, t, h, j]: per gate one matmul per head over
            # all B * S rows (d_gates[:, :, g] is a [NH, B * S, DH] view, rows 4 * NH * DH apart).
            h_prev = ST[:S, _H].permute(1, 2, 0, 3).reshape(NH, B * S, DH).transpose(1, 2)
            d_R = torch.stack(
                [torch.bmm(h_prev, d_gates[:, :, g].permute(2, 0, 1, 3).reshape(NH, B * S, DH)) for g in range(4)],
                dim=2,
            )
        if need[2]:
            d_bias = d_gates.sum(dim=(0, 1)).transpose(0, 1).contiguous()
        d_gates = d_gates.to(ctx.gates_dtype) if need[0] else None
        d_init = [d.transpose(0, 1).contiguous() if need[3 + k] else None for k, d in enumerate(d_init)]
        return d_gates, d_R, d_bias, *d_init, None


def _outputs(G, ST, dtype):
    """y [B, S, NH, DH] in `dtype` and the final state (h, c, n, m), each [B, NH, DH], from the forward buffers."""
    S, _, NH, B, DH = G.shape
    y = G.new_empty((B, S, NH, DH), dtype=dtype)
    y.copy_(ST[1:, _H].permute(2, 0, 1, 3))
    final = tuple(ST[S, slot].transpose(0, 1).contiguous() for slot in (_H, _C, _N, _M))
    return (y, *final)


def slstm_sequence(
    gates_x: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: torch.Tensor,
    state: SLSTMState | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SLSTMState]:
    """The sLSTM over a sequence. gates_x: [B, S, 4, NH, DH]; mask: optional [B, S] bool (False keeps the state).

    Returns h [B, S, NH, DH] (dtype of gates_x) and the final state, float32 (float64 for float64 inputs).
    Differentiable w.r.t. gates_x, recurrent_kernel, bias and the initial state, through
    `SLSTMSequenceFunction` (one graph node, a hand-written backward loop through time; not twice
    differentiable). Same results as `slstm_sequence_reference`, the plain step loop.

    Under torch.compile the plain step loop is traced instead: the Function's loops branch on data and write
    through `out=` into strided views, which dynamo would split into many graphs; the step loop traces into one.
    """
    if torch.compiler.is_compiling():
        return slstm_sequence_reference(gates_x, recurrent_kernel, bias, state, mask)
    dtype = torch.promote_types(gates_x.dtype, torch.float32)
    B, S, _, NH, DH = gates_x.shape
    if state is None:
        state = slstm_zero_state(B, NH, DH, device=gates_x.device, dtype=dtype)
    h0, c0, n0, m0 = (s.to(dtype) for s in state)
    if S == 0:
        return gates_x.new_empty((B, 0, NH, DH)), (h0, c0, n0, m0)
    if mask is not None:
        mask = mask.to(torch.bool)
        if bool(mask.all()):
            mask = None
    inputs = (gates_x, recurrent_kernel.to(dtype), bias.to(dtype), h0, c0, n0, m0)
    if autograd_records(*inputs):
        y, *final = SLSTMSequenceFunction.apply(*inputs, mask)
        return y, tuple(final)
    y, *final = _outputs(*_sequence_forward(*inputs, mask), gates_x.dtype)
    return y, tuple(final)
