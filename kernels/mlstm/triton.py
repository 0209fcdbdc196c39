"""Triton mLSTM kernels: chunkwise forward + backward (training, prefill) and a fused decode step.

Same entry points, signatures and semantics as `modeling_xlstm.kernels.mlstm.native` (see there for the math):

    mlstm_chunkwise(q, k, v, i, f, state=None, chunk_size=64, eps=1e-6) -> (h, (C, n, m))
    mlstm_recurrent_step(q, k, v, i, f, state=None, eps=1e-6)           -> (h, (C, n, m))

The numbers are those of the native forms, stabilizer included: the per-step stabilizer is the recurrent one,
m_t = max(log f_t + m_{t-1}, i_t), with the initial state's m0 entering the row maximum, and
h_t = num_t / (max(|q_t . n_t|, exp(-m_t)) + eps). Since that stabilizer does not depend on the chunking,
`chunk_size` only changes speed, never results (beyond float rounding). Masked steps (i = -inf, f = +inf)
leave the state untouched and produce no NaN, in the forward and the backward.

Design (details in kernels/mlstm/README.md), TFLA-style two-level chunking:

* forward, inter-chunk (`_fwd_state_kernel`): grid (DHQK tiles, DHV tiles, B*NH); one program walks the
  chunks in order and materialises the stabilised state (C_c, n_c, m_c) at every chunk boundary (float32).
* forward, intra-chunk (`_fwd_intra_kernel`): grid (DHV tiles, query blocks, B*NH); flash-attention-like
  loop over the key blocks of the query block's chunk (causal), plus the contribution of the chunk-start
  state. The row stabilizer m_t is computed exactly first (a cheap pass over gate vectors only), so the
  accumulation needs no running-max rescaling.
* backward: the chunk states are recomputed (one cheap pass) instead of stored across forward and backward,
  a reverse inter-chunk kernel (`_bwd_state_kernel`) materialises the state adjoints dC_c, dn_c, and three
  intra-chunk kernels compute dQ, dK, dV (each parallel over its own rows and one head-dim tile, looping
  over the other side's blocks), as TFLA does. Memory is O(S / chunk * DHQK * DHV + S * (DHQK + DHV)).
* gate gradients use the identity  dL/dF_t = q_t . dq_t - k_t . dk_t  (F = cumulative log forget gate),
  dL/di_t = k_t . dk_t, plus the exact gradient through the stabilizer (it enters the output through eps
  and exp(-m), and the final state through m); that part is O(S) bookkeeping in PyTorch.
* decode (`_step_kernel`): grid (DHV tiles, B*NH), C is read and written once.

Precision: gates, stabilizers, normalizers and states are float32. Matmuls take bf16/fp16 operands for
bf16/fp16 inputs (fp32 accumulation, as in TFLA) and exact float32 (`input_precision="ieee"`, no TF32) for
float32 inputs. float64 inputs are delegated to the native reference.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .. import autograd_records
from ..triton_math import logsigmoid
from . import native

MLSTMState = native.MLSTMState

# Smallest tile of `tl.dot` (every dot dimension must be >= 16).
MIN_TILE = 16
# Tiling defaults (TFLA uses 64 x 64 sub-blocks of the sequence and 64-wide head-dim tiles).
DEFAULT_BLOCK_L = 64
DEFAULT_BLOCK_DH = 64


def _pow2_at_least(x: int, lo: int = MIN_TILE) -> int:
    return max(lo, triton.next_power_of_2(int(x)))


# ----------------------------------------------------------------------------------------------------------
# Forward kernels
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_state_kernel(
    K, V, IG, BG,  # k [BNH, S, DHQK], v [BNH, S, DHV], i and chunk-local cumsum of log f [BNH, NC * L] (f32)
    C0, N0, M0,  # initial state [BNH, DHQK, DHV], [BNH, DHQK], [BNH] (f32)
    CS, NS, MS,  # out: state at every chunk boundary [BNH, NC + 1, DHQK, DHV], [BNH, NC + 1, DHQK], [BNH, NC + 1]
    S, NC,
    DHQK: tl.constexpr, DHV: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    pk, pv, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rk = pk * BK + tl.arange(0, BK)
    rv = pv * BV + tl.arange(0, BV)
    mk, mv = rk < DHQK, rv < DHV
    mkv = mk[:, None] & mv[None, :]
    rl = tl.arange(0, L)
    SP = NC * L

    c = tl.load(C0 + bh * DHQK * DHV + rk[:, None] * DHV + rv[None, :], mask=mkv, other=0.0)
    n = tl.load(N0 + bh * DHQK + rk, mask=mk, other=0.0)
    m = tl.load(M0 + bh)
    for ci in range(NC):
        slot = bh * (NC + 1) + ci
        tl.store(CS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], c, mask=mkv)
        if pv == 0:
            tl.store(NS + slot * DHQK + rk, n, mask=mk)
            if pk == 0:
                tl.store(MS + slot, m)
        t = ci * L + rl
        b = tl.load(BG + bh * SP + t)
        ig = tl.load(IG + bh * SP + t)
        b_last = tl.load(BG + bh * SP + ci * L + L - 1)
        # weight of input j relative to the chunk end, and the new stabilizer (native: log_g, m_next)
        log_g = b_last - b + ig
        m_next = tl.maximum(b_last + m, tl.max(log_g, axis=0))
        a = tl.exp(log_g - m_next)  # 0 for masked / padded inputs (i = -inf)
        decay = tl.exp(b_last + m - m_next)
        in_seq = t < S
        kt = tl.load(K + bh * S * DHQK + t[:, None] * DHQK + rk[None, :], mask=in_seq[:, None] & mk[None, :], other=0.0)
        vt = tl.load(V + bh * S * DHV + t[:, None] * DHV + rv[None, :], mask=in_seq[:, None] & mv[None, :], other=0.0)
        ka = kt.to(tl.float32) * a[:, None]
        c = decay * c + tl.dot(tl.trans(ka.to(vt.dtype)), vt, input_precision=DOT_PREC)
        n = decay * n + tl.sum(ka, axis=0)
        m = m_next
    slot = bh * (NC + 1) + NC
    tl.store(CS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], c, mask=mkv)
    if pv == 0:
        tl.store(NS + slot * DHQK + rk, n, mask=mk)
        if pk == 0:
            tl.store(MS + slot, m)


@triton.jit
def _fwd_intra_kernel(
    Q, K, V, IG, BG,
    CS, NS, MS,  # chunk-start states from _fwd_state_kernel
    H,  # out [BNH, S, DHV] (dtype of v)
    MR, QN,  # out: per-row stabilizer m_t and signed normalizer q_t . n_t [BNH, NC * L] (f32)
    S, NC, scale, eps,
    DHQK: tl.constexpr, DHV: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, DOT_PREC: tl.constexpr,
):
    pv, pl, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    NB = L // BL
    ci = pl // NB
    qb = pl % NB
    SP = NC * L
    rl = tl.arange(0, BL)
    tq = ci * L + qb * BL + rl  # global rows of this query block
    rv = pv * BV + tl.arange(0, BV)
    mv = rv < DHV
    q_in = tq < S

    b_q = tl.load(BG + bh * SP + tq)
    m_c = tl.load(MS + bh * (NC + 1) + ci)

    # pass 1: the exact row stabilizer m_t = max(b_t + m_c, max_{j <= t} (b_t - b_j + i_j)) (native's m)
    m_row = b_q + m_c
    for jb in range(0, qb + 1):
        tk = ci * L + jb * BL + rl
        b_k = tl.load(BG + bh * SP + tk)
        i_k = tl.load(IG + bh * SP + tk)
        log_d = b_q[:, None] - b_k[None, :] + i_k[None, :]
        log_d = tl.where(tq[:, None] >= tk[None, :], log_d, float("-inf"))
        m_row = tl.maximum(m_row, tl.max(log_d, axis=1))

    # pass 2: intra-chunk numerator and normalizer with the final stabilizer (no rescaling needed)
    acc = tl.zeros([BL, BV], dtype=tl.float32)
    qn = tl.zeros([BL], dtype=tl.float32)
    for jb in range(0, qb + 1):
        tk = ci * L + jb * BL + rl
        k_in = tk < S
        s = tl.zeros([BL, BL], dtype=tl.float32)
        for kk in range(0, DHQK, BK):
            rk = kk + tl.arange(0, BK)
            mk = rk < DHQK
            qt = tl.load(Q + bh * S * DHQK + tq[:, None] * DHQK + rk[None, :], mask=q_in[:, None] & mk[None, :], other=0.0)
            kt = tl.load(K + bh * S * DHQK + tk[:, None] * DHQK + rk[None, :], mask=k_in[:, None] & mk[None, :], other=0.0)
            s += tl.dot(qt, tl.trans(kt), input_precision=DOT_PREC)
        b_k = tl.load(BG + bh * SP + tk)
        i_k = tl.load(IG + bh * SP + tk)
        log_d = b_q[:, None] - b_k[None, :] + i_k[None, :]
        d = tl.where(tq[:, None] >= tk[None, :], tl.exp(log_d - m_row[:, None]), 0.0)
        p = s * scale * d
        qn += tl.sum(p, axis=1)
        vt = tl.load(V + bh * S * DHV + tk[:, None] * DHV + rv[None, :], mask=k_in[:, None] & mv[None, :], other=0.0)
        acc += tl.dot(p.to(vt.dtype), vt, input_precision=DOT_PREC)

    # contribution of the chunk-start state, weight exp(b_t + m_c - m_t) <= 1
    acc_c = tl.zeros([BL, BV], dtype=tl.float32)
    qn_c = tl.zeros([BL], dtype=tl.float32)
    slot = bh * (NC + 1) + ci
    for kk in range(0, DHQK, BK):
        rk = kk + tl.arange(0, BK)
        mk = rk < DHQK
        qt = tl.load(Q + bh * S * DHQK + tq[:, None] * DHQK + rk[None, :], mask=q_in[:, None] & mk[None, :], other=0.0)
        ct = tl.load(CS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        nt = tl.load(NS + slot * DHQK + rk, mask=mk, other=0.0)
        acc_c += tl.dot(qt, ct.to(qt.dtype), input_precision=DOT_PREC)
        qn_c += tl.sum(qt.to(tl.float32) * nt[None, :], axis=1)
    w0 = tl.exp(b_q + m_c - m_row) * scale
    acc += w0[:, None] * acc_c
    qn += w0 * qn_c

    denom = tl.maximum(tl.abs(qn), tl.exp(-m_row)) + eps
    h = acc / denom[:, None]
    tl.store(H + bh * S * DHV + tq[:, None] * DHV + rv[None, :], h.to(H.dtype.element_ty), mask=q_in[:, None] & mv[None, :])
    if pv == 0:
        tl.store(MR + bh * SP + tq, m_row)
        tl.store(QN + bh * SP + tq, qn)


# ----------------------------------------------------------------------------------------------------------
# Backward kernels
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _bwd_delta_kernel(H, DH, DELTA, S, SP, DHV: tl.constexpr, BL: tl.constexpr, BV: tl.constexpr):
    """delta_t = dh_t . h_t (float32), the row scalar of the normalizer's gradient (flash-attention's 'delta')."""
    pl, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    t = pl * BL + tl.arange(0, BL)
    t_in = t < S
    acc = tl.zeros([BL], dtype=tl.float32)
    for vv in range(0, DHV, BV):
        rv = vv + tl.arange(0, BV)
        msk = t_in[:, None] & (rv < DHV)[None, :]
        h = tl.load(H + bh * S * DHV + t[:, None] * DHV + rv[None, :], mask=msk, other=0.0).to(tl.float32)
        dh = tl.load(DH + bh * S * DHV + t[:, None] * DHV + rv[None, :], mask=msk, other=0.0).to(tl.float32)
        acc += tl.sum(h * dh, axis=1)
    tl.store(DELTA + bh * SP + t, acc, mask=t < SP)


@triton.jit
def _bwd_state_kernel(
    Q, DH, BG, MR, INVD, DQN,  # q, dh; per row: b, m_t, 1/denominator, dL/d(q.n) [BNH, SP] (f32)
    MS,  # chunk-start stabilizers [BNH, NC + 1]
    DC_LAST, DN_LAST,  # adjoints of the final state [BNH, DHQK, DHV], [BNH, DHQK] (f32)
    DCS, DNS,  # out: adjoint of every chunk-start state [BNH, NC + 1, DHQK, DHV], [BNH, NC + 1, DHQK]
    S, NC, scale,
    DHQK: tl.constexpr, DHV: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    pk, pv, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rk = pk * BK + tl.arange(0, BK)
    rv = pv * BV + tl.arange(0, BV)
    mk, mv = rk < DHQK, rv < DHV
    mkv = mk[:, None] & mv[None, :]
    rl = tl.arange(0, L)
    SP = NC * L

    dc = tl.load(DC_LAST + bh * DHQK * DHV + rk[:, None] * DHV + rv[None, :], mask=mkv, other=0.0)
    dn = tl.load(DN_LAST + bh * DHQK + rk, mask=mk, other=0.0)
    for cc in range(NC):
        ci = NC - 1 - cc
        slot = bh * (NC + 1) + ci + 1
        tl.store(DCS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], dc, mask=mkv)
        if pv == 0:
            tl.store(DNS + slot * DHQK + rk, dn, mask=mk)
        m_c = tl.load(MS + bh * (NC + 1) + ci)
        m_next = tl.load(MS + bh * (NC + 1) + ci + 1)
        t = ci * L + rl
        b = tl.load(BG + bh * SP + t)
        b_last = tl.load(BG + bh * SP + ci * L + L - 1)
        m_t = tl.load(MR + bh * SP + t)
        inv_d = tl.load(INVD + bh * SP + t)
        dqn = tl.load(DQN + bh * SP + t)
        # h_t reads C_c with weight exp(b_t + m_c - m_t); C_{c+1} reads C_c with weight exp(b_last + m_c - m_next)
        w0 = tl.exp(b + m_c - m_t) * scale
        decay = tl.exp(b_last + m_c - m_next)
        in_seq = t < S
        qt = tl.load(Q + bh * S * DHQK + t[:, None] * DHQK + rk[None, :], mask=in_seq[:, None] & mk[None, :], other=0.0)
        dht = tl.load(DH + bh * S * DHV + t[:, None] * DHV + rv[None, :], mask=in_seq[:, None] & mv[None, :], other=0.0)
        qw = qt.to(tl.float32) * w0[:, None]
        dnum = dht.to(tl.float32) * inv_d[:, None]
        dc = decay * dc + tl.dot(tl.trans(qw.to(qt.dtype)), dnum.to(qt.dtype), input_precision=DOT_PREC)
        dn = decay * dn + tl.sum(qw * dqn[:, None], axis=0)
    slot = bh * (NC + 1)
    tl.store(DCS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], dc, mask=mkv)
    if pv == 0:
        tl.store(DNS + slot * DHQK + rk, dn, mask=mk)


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DH, IG, BG, MR, INVD, DQN, CS, NS, MS,
    DQ, SQ,  # out: dq [BNH, S, DHQK]; partial q_t . dq_t per DHQK tile [NKT, BNH, SP] (f32)
    S, NC, scale,
    DHQK: tl.constexpr, DHV: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, DOT_PREC: tl.constexpr,
):
    pk, pl, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    NB = L // BL
    ci = pl // NB
    qb = pl % NB
    SP = NC * L
    BNH = tl.num_programs(2)
    rl = tl.arange(0, BL)
    tq = ci * L + qb * BL + rl
    q_in = tq < S
    rk = pk * BK + tl.arange(0, BK)
    mk = rk < DHQK

    b_q = tl.load(BG + bh * SP + tq)
    m_q = tl.load(MR + bh * SP + tq)
    inv_d = tl.load(INVD + bh * SP + tq)
    dqn = tl.load(DQN + bh * SP + tq)
    m_c = tl.load(MS + bh * (NC + 1) + ci)

    acc = tl.zeros([BL, BK], dtype=tl.float32)
    for jb in range(0, qb + 1):
        tk = ci * L + jb * BL + rl
        k_in = tk < S
        dp = tl.zeros([BL, BL], dtype=tl.float32)
        for vv in range(0, DHV, BV):
            rv = vv + tl.arange(0, BV)
            mv = rv < DHV
            dht = tl.load(DH + bh * S * DHV + tq[:, None] * DHV + rv[None, :], mask=q_in[:, None] & mv[None, :], other=0.0)
            vt = tl.load(V + bh * S * DHV + tk[:, None] * DHV + rv[None, :], mask=k_in[:, None] & mv[None, :], other=0.0)
            dp += tl.dot(dht.to(vt.dtype), tl.trans(vt), input_precision=DOT_PREC)
        b_k = tl.load(BG + bh * SP + tk)
        i_k = tl.load(IG + bh * SP + tk)
        log_d = b_q[:, None] - b_k[None, :] + i_k[None, :]
        d = tl.where(tq[:, None] >= tk[None, :], tl.exp(log_d - m_q[:, None]), 0.0)
        ds = (dp * inv_d[:, None] + dqn[:, None]) * d
        kt = tl.load(K + bh * S * DHQK + tk[:, None] * DHQK + rk[None, :], mask=k_in[:, None] & mk[None, :], other=0.0)
        acc += tl.dot(ds.to(kt.dtype), kt, input_precision=DOT_PREC)

    # through the chunk-start state: dq_t += w0_t (C_c dnum_t + dqn_t n_c)
    slot = bh * (NC + 1) + ci
    acc_c = tl.zeros([BL, BK], dtype=tl.float32)
    for vv in range(0, DHV, BV):
        rv = vv + tl.arange(0, BV)
        mv = rv < DHV
        dht = tl.load(DH + bh * S * DHV + tq[:, None] * DHV + rv[None, :], mask=q_in[:, None] & mv[None, :], other=0.0)
        ct = tl.load(CS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        acc_c += tl.dot(dht, tl.trans(ct.to(dht.dtype)), input_precision=DOT_PREC)
    nt = tl.load(NS + slot * DHQK + rk, mask=mk, other=0.0)
    w0 = tl.exp(b_q + m_c - m_q)
    acc += w0[:, None] * (acc_c * inv_d[:, None] + dqn[:, None] * nt[None, :])

    dq = acc * scale
    qt = tl.load(Q + bh * S * DHQK + tq[:, None] * DHQK + rk[None, :], mask=q_in[:, None] & mk[None, :], other=0.0)
    tl.store(DQ + bh * S * DHQK + tq[:, None] * DHQK + rk[None, :], dq.to(DQ.dtype.element_ty), mask=q_in[:, None] & mk[None, :])
    tl.store(SQ + (pk * BNH + bh) * SP + tq, tl.sum(qt.to(tl.float32) * dq, axis=1))


@triton.jit
def _bwd_dk_kernel(
    Q, K, V, DH, IG, BG, MR, INVD, DQN, DCS, DNS, MS,
    DK, SK,  # out: dk [BNH, S, DHQK]; partial k_j . dk_j per DHQK tile [NKT, BNH, SP] (f32)
    S, NC, scale,
    DHQK: tl.constexpr, DHV: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, DOT_PREC: tl.constexpr,
):
    pk, pl, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    NB = L // BL
    ci = pl // NB
    kb = pl % NB
    SP = NC * L
    BNH = tl.num_programs(2)
    rl = tl.arange(0, BL)
    tk = ci * L + kb * BL + rl
    k_in = tk < S
    rk = pk * BK + tl.arange(0, BK)
    mk = rk < DHQK

    b_k = tl.load(BG + bh * SP + tk)
    i_k = tl.load(IG + bh * SP + tk)

    acc = tl.zeros([BL, BK], dtype=tl.float32)  # rows j (keys)
    for qb in range(kb, NB):
        tq = ci * L + qb * BL + rl
        q_in = tq < S
        b_q = tl.load(BG + bh * SP + tq)
        m_q = tl.load(MR + bh * SP + tq)
        inv_d = tl.load(INVD + bh * SP + tq)
        dqn = tl.load(DQN + bh * SP + tq)
        dpt = tl.zeros([BL, BL], dtype=tl.float32)  # [j, t]
        for vv in range(0, DHV, BV):
            rv = vv + tl.arange(0, BV)
            mv = rv < DHV
            vt = tl.load(V + bh * S * DHV + tk[:, None] * DHV + rv[None, :], mask=k_in[:, None] & mv[None, :], other=0.0)
            dht = tl.load(DH + bh * S * DHV + tq[:, None] * DHV + rv[None, :], mask=q_in[:, None] & mv[None, :], other=0.0)
            dpt += tl.dot(vt, tl.trans(dht.to(vt.dtype)), input_precision=DOT_PREC)
        log_d = b_q[None, :] - b_k[:, None] + i_k[:, None]
        d = tl.where(tq[None, :] >= tk[:, None], tl.exp(log_d - m_q[None, :]), 0.0)
        dst = (dpt * inv_d[None, :] + dqn[None, :]) * d
        qt = tl.load(Q + bh * S * DHQK + tq[:, None] * DHQK + rk[None, :], mask=q_in[:, None] & mk[None, :], other=0.0)
        acc += tl.dot(dst.to(qt.dtype), qt, input_precision=DOT_PREC)
    acc = acc * scale

    # through the next chunk-start state: dk_j += a_j (dC_{c+1} v_j + dn_{c+1}), a_j = exp(b_last - b_j + i_j - m_{c+1})
    slot = bh * (NC + 1) + ci + 1
    m_next = tl.load(MS + slot)
    b_last = tl.load(BG + bh * SP + ci * L + L - 1)
    a = tl.exp(b_last - b_k + i_k - m_next)
    acc_c = tl.zeros([BL, BK], dtype=tl.float32)
    for vv in range(0, DHV, BV):
        rv = vv + tl.arange(0, BV)
        mv = rv < DHV
        vt = tl.load(V + bh * S * DHV + tk[:, None] * DHV + rv[None, :], mask=k_in[:, None] & mv[None, :], other=0.0)
        dct = tl.load(DCS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        acc_c += tl.dot(vt, tl.trans(dct.to(vt.dtype)), input_precision=DOT_PREC)
    dnt = tl.load(DNS + slot * DHQK + rk, mask=mk, other=0.0)
    acc += a[:, None] * (acc_c + dnt[None, :])

    kt = tl.load(K + bh * S * DHQK + tk[:, None] * DHQK + rk[None, :], mask=k_in[:, None] & mk[None, :], other=0.0)
    tl.store(DK + bh * S * DHQK + tk[:, None] * DHQK + rk[None, :], acc.to(DK.dtype.element_ty), mask=k_in[:, None] & mk[None, :])
    tl.store(SK + (pk * BNH + bh) * SP + tk, tl.sum(kt.to(tl.float32) * acc, axis=1))


@triton.jit
def _bwd_dv_kernel(
    Q, K, DH, IG, BG, MR, INVD, DCS, MS,
    DV,  # out [BNH, S, DHV]
    S, NC, scale,
    DHQK: tl.constexpr, DHV: tl.constexpr, L: tl.constexpr, BL: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, DOT_PREC: tl.constexpr,
):
    pv, pl, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    NB = L // BL
    ci = pl // NB
    kb = pl % NB
    SP = NC * L
    rl = tl.arange(0, BL)
    tk = ci * L + kb * BL + rl
    k_in = tk < S
    rv = pv * BV + tl.arange(0, BV)
    mv = rv < DHV

    b_k = tl.load(BG + bh * SP + tk)
    i_k = tl.load(IG + bh * SP + tk)

    acc = tl.zeros([BL, BV], dtype=tl.float32)
    for qb in range(kb, NB):
        tq = ci * L + qb * BL + rl
        q_in = tq < S
        b_q = tl.load(BG + bh * SP + tq)
        m_q = tl.load(MR + bh * SP + tq)
        inv_d = tl.load(INVD + bh * SP + tq)
        st = tl.zeros([BL, BL], dtype=tl.float32)  # [j, t]
        for kk in range(0, DHQK, BK):
            rk = kk + tl.arange(0, BK)
            mk = rk < DHQK
            kt = tl.load(K + bh * S * DHQK + tk[:, None] * DHQK + rk[None, :], mask=k_in[:, None] & mk[None, :], other=0.0)
            qt = tl.load(Q + bh * S * DHQK + tq[:, None] * DHQK + rk[None, :], mask=q_in[:, None] & mk[None, :], other=0.0)
            st += tl.dot(kt, tl.trans(qt), input_precision=DOT_PREC)
        log_d = b_q[None, :] - b_k[:, None] + i_k[:, None]
        d = tl.where(tq[None, :] >= tk[:, None], tl.exp(log_d - m_q[None, :]), 0.0)
        pt = st * scale * d * inv_d[None, :]  # dnum_t = dh_t / denom_t folded into the score
        dht = tl.load(DH + bh * S * DHV + tq[:, None] * DHV + rv[None, :], mask=q_in[:, None] & mv[None, :], other=0.0)
        acc += tl.dot(pt.to(dht.dtype), dht, input_precision=DOT_PREC)

    # through the next chunk-start state: dv_j += a_j dC_{c+1}^T k_j
    slot = bh * (NC + 1) + ci + 1
    m_next = tl.load(MS + slot)
    b_last = tl.load(BG + bh * SP + ci * L + L - 1)
    a = tl.exp(b_last - b_k + i_k - m_next)
    acc_c = tl.zeros([BL, BV], dtype=tl.float32)
    for kk in range(0, DHQK, BK):
        rk = kk + tl.arange(0, BK)
        mk = rk < DHQK
        kt = tl.load(K + bh * S * DHQK + tk[:, None] * DHQK + rk[None, :], mask=k_in[:, None] & mk[None, :], other=0.0)
        dct = tl.load(DCS + slot * DHQK * DHV + rk[:, None] * DHV + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        acc_c += tl.dot(kt, dct.to(kt.dtype), input_precision=DOT_PREC)
    acc += a[:, None] * acc_c
    tl.store(DV + bh * S * DHV + tk[:, None] * DHV + rv[None, :], acc.to(DV.dtype.element_ty), mask=k_in[:, None] & mv[None, :])


# ----------------------------------------------------------------------------------------------------------
# Decode step kernel
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _step_kernel(
    C, N, M, Q, K, V, IG, FG,  # state [BNH, DHQK, DHV], [BNH, DHQK], [BNH] (f32); q, k [BNH, DHQK]; v [BNH, DHV]; i, f [BNH]
    C_OUT, N_OUT, M_OUT, H,  # C_OUT may alias C (each program reads its C tile before writing it); N_OUT, M_OUT must not
    scale, eps,
    DHQK: tl.constexpr, DHV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    pv, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    rv = pv * BV + tl.arange(0, BV)
    mv = rv < DHV
    m = tl.load(M + bh)
    ig = tl.load(IG + bh).to(tl.float32)
    lf = logsigmoid(tl.load(FG + bh).to(tl.float32))
    m_new = tl.maximum(lf + m, ig)
    fa = tl.exp(lf + m - m_new)
    ia = tl.exp(ig - m_new)
    vt = tl.load(V + bh * DHV + rv, mask=mv, other=0.0).to(tl.float32)

    # q . n_new first: every value tile needs the full normalizer
    qn = tl.zeros([BK], dtype=tl.float32)
    for kk in range(0, DHQK, BK):
        rk = kk + tl.arange(0, BK)
        mk = rk < DHQK
        qt = tl.load(Q + bh * DHQK + rk, mask=mk, other=0.0).to(tl.float32)
        kt = tl.load(K + bh * DHQK + rk, mask=mk, other=0.0).to(tl.float32)
        nt = tl.load(N + bh * DHQK + rk, mask=mk, other=0.0)
        n_new = fa * nt + ia * kt
        qn += qt * n_new
        if pv == 0:
            tl.store(N_OUT + bh * DHQK + rk, n_new, mask=mk)
    qn_tot = tl.sum(qn, axis=0) * scale

    num = tl.zeros([BV], dtype=tl.float32)
    for kk in range(0, DHQK, BK):
        rk = kk + tl.arange(0, BK)
        mk = rk < DHQK
        msk = mk[:, None] & mv[None, :]
        qt = tl.load(Q + bh * DHQK + rk, mask=mk, other=0.0).to(tl.float32)
        kt = tl.load(K + bh * DHQK + rk, mask=mk, other=0.0).to(tl.float32)
        ct = tl.load(C + bh * DHQK * DHV + rk[:, None] * DHV + rv[None, :], mask=msk, other=0.0)
        c_new = fa * ct + (ia * kt)[:, None] * vt[None, :]
        tl.store(C_OUT + bh * DHQK * DHV + rk[:, None] * DHV + rv[None, :], c_new, mask=msk)
        num += tl.sum(qt[:, None] * c_new, axis=0)
    h = num * scale / (tl.maximum(tl.abs(qn_tot), tl.exp(-m_new)) + eps)
    tl.store(H + bh * DHV + rv, h.to(H.dtype.element_ty), mask=mv)
    if pv == 0:
        tl.store(M_OUT + bh, m_new)


# ----------------------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------------------


def _dot_precision(dtype: torch.dtype) -> str:
    # exact fp32 products for fp32 inputs (TF32 would cost ~1e-3 relative error); 16-bit inputs use tensor cores
    return "ieee" if dtype == torch.float32 else "tf32"


class TilingOverride(NamedTuple):
    """Launch settings of the chunkwise kernels that replace the defaults (None: the default). Results do not
    depend on them beyond float rounding. `benchmarks/sweep_mlstm_tiling.py` searches them on a GPU; tests use
    small blocks to exercise the multi-tile paths on small shapes. Block sizes are powers of two >= 16 (the
    `tl.dot` minimum)."""

    block_l: int | None = None  # sequence sub-block of the intra-chunk kernels
    block_k: int | None = None  # DHQK tile
    block_v: int | None = None  # DHV tile
    num_warps: int | None = None
    num_stages: int | None = None  # software-pipelining depth of the kernels' loops


class _Tiling:
    """Chunk and tile sizes for one call. L: chunk (state materialisation interval), BL: sequence sub-block of
    the intra-chunk kernels, BK / BV: head-dim tiles; and the launch's warps and pipelining depth."""

    def __init__(self, S: int, DHQK: int, DHV: int, chunk_size: int, override: TilingOverride):
        for name in ("block_l", "block_k", "block_v"):
            size = getattr(override, name)
            if size is not None and (size < 16 or size & (size - 1)):
                raise ValueError(f"TilingOverride.{name} must be a power of two >= 16 (the tl.dot minimum), got {size}")
        # a chunk longer than the (padded) sequence only costs padding
        L = _pow2_at_least(min(chunk_size, max(S, 1)))
        self.L = L
        self.BL = min(L, override.block_l or DEFAULT_BLOCK_L)
        self.BK = min(_pow2_at_least(DHQK), override.block_k or DEFAULT_BLOCK_DH)
        self.BV = min(_pow2_at_least(DHV), override.block_v or DEFAULT_BLOCK_DH)
        self.NC = triton.cdiv(S, L)
        self.SP = self.NC * L
        self.num_warps = override.num_warps or (4 if max(self.BL, self.BK, self.BV) >= 64 else 2)
        self.num_stages = override.num_stages or 1


def _gates(i: torch.Tensor, f: torch.Tensor, tiling: _Tiling) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """i, log f and the chunk-local cumulative log forget gate b, float32 [BNH, SP], padded with masked steps
    (i = -inf, log f = 0) so that the padding leaves every state untouched."""
    BNH, S = i.shape
    pad = tiling.SP - S
    ig = i.float()
    lf = F.logsigmoid(f.float())
    if pad:
        ig = F.pad(ig, (0, pad), value=float("-inf"))
        lf = F.pad(lf, (0, pad), value=0.0)
    bg = lf.view(BNH, tiling.NC, tiling.L).cumsum(-1).view(BNH, tiling.SP)
    return ig.contiguous(), lf.contiguous(), bg.contiguous()


def _chunk_states(k, v, ig, bg, c0, n0, m0, tiling: _Tiling, S: int, DHQK: int, DHV: int):
    BNH = k.shape[0]
    NC = tiling.NC
    cs = torch.empty(BNH, NC + 1, DHQK, DHV, device=k.device, dtype=torch.float32)
    ns = torch.empty(BNH, NC + 1, DHQK, device=k.device, dtype=torch.float32)
    ms = torch.empty(BNH, NC + 1, device=k.device, dtype=torch.float32)
    grid = (triton.cdiv(DHQK, tiling.BK), triton.cdiv(DHV, tiling.BV), BNH)
    _fwd_state_kernel[grid](
        k, v, ig, bg, c0, n0, m0, cs, ns, ms, S, NC,
        DHQK=DHQK, DHV=DHV, L=tiling.L, BK=tiling.BK, BV=tiling.BV, DOT_PREC=_dot_precision(k.dtype),
        num_warps=tiling.num_warps, num_stages=tiling.num_stages,
    )
    return cs, ns, ms


def _forward(q, k, v, ig, bg, c0, n0, m0, tiling: _Tiling, eps: float):
    BNH, S, DHQK = q.shape
    DHV = v.shape[-1]
    cs, ns, ms = _chunk_states(k, v, ig, bg, c0, n0, m0, tiling, S, DHQK, DHV)
    h = torch.empty(BNH, S, DHV, device=q.device, dtype=v.dtype)
    m_row = torch.empty(BNH, tiling.SP, device=q.device, dtype=torch.float32)
    qn = torch.empty(BNH, tiling.SP, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(DHV, tiling.BV), tiling.NC * (tiling.L // tiling.BL), BNH)
    _fwd_intra_kernel[grid](
        q, k, v, ig, bg, cs, ns, ms, h, m_row, qn, S, tiling.NC, DHQK**-0.5, eps,
        DHQK=DHQK, DHV=DHV, L=tiling.L, BL=tiling.BL, BK=tiling.BK, BV=tiling.BV,
        DOT_PREC=_dot_precision(q.dtype), num_warps=tiling.num_warps, num_stages=tiling.num_stages,
    )
    return h, cs, ns, ms, m_row, qn


def _stabilizer_grads(ig, lf, m0, dm_row):
    """Route dL/dm_t (per step, float32 [BNH, SP]) through the stabilizer's max to i, the cumulative log forget
    gate F and m0. m_t = F_t + max(m0, max_{j<=t} (i_j - F_j)) (the recurrent max-stabilizer unrolled), so
    dm_t goes to dF_t, and to m0 or to (i_{j*}, -F_{j*}) for the maximising j*. Float64 here: F_t over the
    whole sequence can reach ~1e6 in magnitude, where float32 could not tell the branches apart."""
    F64 = lf.double().cumsum(-1)
    x = ig.double() - F64
    best, arg = torch.cummax(x, dim=-1)
    from_m0 = m0.double().unsqueeze(-1) >= best  # [BNH, SP]
    dF = dm_row.clone()
    dm0 = torch.where(from_m0, dm_row, 0.0).sum(-1)
    routed = torch.where(from_m0, 0.0, dm_row)
    dF.scatter_add_(-1, arg, -routed)
    di = torch.zeros_like(dm_row).scatter_add_(-1, arg, routed)
    return dF, di, dm0


class _MLSTMChunkwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, c0, n0, m0, chunk_size, eps, override):
        B, NH, S, DHQK = q.shape
        DHV = v.shape[-1]
        BNH = B * NH
        tiling = _Tiling(S, DHQK, DHV, chunk_size, override)
        q3 = q.reshape(BNH, S, DHQK).contiguous()
        k3 = k.reshape(BNH, S, DHQK).contiguous()
        v3 = v.reshape(BNH, S, DHV).contiguous()
        ig, lf, bg = _gates(i.reshape(BNH, S), f.reshape(BNH, S), tiling)
        c0_ = c0.reshape(BNH, DHQK, DHV).float().contiguous()
        n0_ = n0.reshape(BNH, DHQK).float().contiguous()
        m0_ = m0.reshape(BNH).float().contiguous()
        h, cs, ns, ms, m_row, qn = _forward(q3, k3, v3, ig, bg, c0_, n0_, m0_, tiling, eps)
        c_last = cs[:, -1].clone()
        n_last = ns[:, -1].clone()
        m_last = ms[:, -1:].clone()
        del cs, ns  # recomputed in the backward: cheaper than keeping NC states alive in between
        ctx.save_for_backward(q3, k3, v3, i, f, c0_, n0_, m0_, h, m_row, qn, c_last, n_last)
        ctx.meta = (tiling, eps, (B, NH, S, DHQK, DHV), (c0.dtype, n0.dtype, m0.dtype))
        return (
            h.view(B, NH, S, DHV),
            c_last.view(B, NH, DHQK, DHV),
            n_last.view(B, NH, DHQK),
            m_last.view(B, NH, 1),
        )

    @staticmethod
    def backward(ctx, dh, dc_last, dn_last, dm_last):
        q3, k3, v3, i, f, c0_, n0_, m0_, h, m_row, qn, c_last, n_last = ctx.saved_tensors
        tiling, eps, (B, NH, S, DHQK, DHV), state_dtypes = ctx.meta
        BNH, SP, NC = B * NH, tiling.SP, tiling.NC
        dev = q3.device
        scale = DHQK**-0.5
        prec = _dot_precision(q3.dtype)
        dh3 = dh.reshape(BNH, S, DHV).to(v3.dtype).contiguous()
        dc_last = dc_last.reshape(BNH, DHQK, DHV).float().contiguous()
        dn_last = dn_last.reshape(BNH, DHQK).float().contiguous()
        dm_last = dm_last.reshape(BNH).float()

        ig, lf, bg = _gates(i.reshape(BNH, S), f.reshape(BNH, S), tiling)
        cs, ns, ms = _chunk_states(k3, v3, ig, bg, c0_, n0_, m0_, tiling, S, DHQK, DHV)

        # per-row scalars of the normalizer: h = num / D, D = max(|qn|, exp(-m)) + eps
        delta = torch.empty(BNH, SP, device=dev, dtype=torch.float32)
        _bwd_delta_kernel[(triton.cdiv(SP, tiling.BL), BNH)](
            h, dh3, delta, S, SP, DHV=DHV, BL=tiling.BL, BV=tiling.BV, num_warps=tiling.num_warps
        )
        floor = torch.exp(-m_row)
        denom = torch.maximum(qn.abs(), floor) + eps
        inv_d = 1.0 / denom
        r = delta * inv_d  # dh . h / D
        dqn = torch.where(qn.abs() > floor, -r * torch.sign(qn), 0.0).contiguous()
        # dL/dm_t with everything else fixed: num, q.n and exp(-m) all scale like exp(-m), only eps does not
        dm_row = -eps * r

        dcs = torch.empty(BNH, NC + 1, DHQK, DHV, device=dev, dtype=torch.float32)
        dns = torch.empty(BNH, NC + 1, DHQK, device=dev, dtype=torch.float32)
        _bwd_state_kernel[(triton.cdiv(DHQK, tiling.BK), triton.cdiv(DHV, tiling.BV), BNH)](
            q3, dh3, bg, m_row, inv_d, dqn, ms, dc_last, dn_last, dcs, dns, S, NC, scale,
            DHQK=DHQK, DHV=DHV, L=tiling.L, BK=tiling.BK, BV=tiling.BV, DOT_PREC=prec,
            num_warps=tiling.num_warps, num_stages=tiling.num_stages,
        )

        nkt = triton.cdiv(DHQK, tiling.BK)
        n_blocks = NC * (tiling.L // tiling.BL)
        common = dict(DHQK=DHQK, DHV=DHV, L=tiling.L, BL=tiling.BL, BK=tiling.BK, BV=tiling.BV, DOT_PREC=prec,
                      num_warps=tiling.num_warps, num_stages=tiling.num_stages)
        dq = torch.empty_like(q3)
        sq = torch.empty(nkt, BNH, SP, device=dev, dtype=torch.float32)
        _bwd_dq_kernel[(nkt, n_blocks, BNH)](
            q3, k3, v3, dh3, ig, bg, m_row, inv_d, dqn, cs, ns, ms, dq, sq, S, NC, scale, **common
        )
        dk = torch.empty_like(k3)
        sk = torch.empty(nkt, BNH, SP, device=dev, dtype=torch.float32)
        _bwd_dk_kernel[(nkt, n_blocks, BNH)](
            q3, k3, v3, dh3, ig, bg, m_row, inv_d, dqn, dcs, dns, ms, dk, sk, S, NC, scale, **common
        )
        dv = torch.empty_like(v3)
        _bwd_dv_kernel[(triton.cdiv(DHV, tiling.BV), n_blocks, BNH)](
            q3, k3, dh3, ig, bg, m_row, inv_d, dcs, ms, dv, S, NC, scale, **common
        )

        # gates. With q~_t = q_t e^{F_t}, k~_j = k_j e^{i_j - F_j} the outputs are bilinear in (q~, k~), hence
        # dL/dF_t = q.dq - k.dk and dL/di_t = k.dk; the final state adds e^{F_T} (its own q~) and its
        # stabilizer m_T; then every dL/dm_t is routed through the max.
        sq, sk = sq.sum(0), sk.sum(0)
        fin = (dc_last * c_last).sum((-1, -2)) + (dn_last * n_last).sum(-1)  # [BNH]
        dm_row[:, -1] += dm_last - fin  # C_out = C_true e^{-m_T}; the padded tail does not move m
        dF, di_m, dm0 = _stabilizer_grads(ig, lf, m0_, dm_row)
        dF = dF + sq - sk
        dF[:, -1] += fin
        dlogf = dF.flip(-1).cumsum(-1).flip(-1)[:, :S]
        di = (sk + di_m)[:, :S]
        df = dlogf * torch.sigmoid(-f.reshape(BNH, S).float())

        dc0 = dcs[:, 0]
        dn0 = dns[:, 0]
        # C0 enters as C0 e^{m0}: dL/dm0 = <dC0, C0> + <dn0, n0> (+ what the max routes to m0)
        dm0 = dm0 + (dc0 * c0_).sum((-1, -2)) + (dn0 * n0_).sum(-1)
        return (
            dq.view(B, NH, S, DHQK),
            dk.view(B, NH, S, DHQK),
            dv.view(B, NH, S, DHV),
            di.view(B, NH, S).to(i.dtype),
            df.view(B, NH, S).to(f.dtype),
            dc0.view(B, NH, DHQK, DHV).to(state_dtypes[0]),
            dn0.view(B, NH, DHQK).to(state_dtypes[1]),
            dm0.view(B, NH, 1).to(state_dtypes[2]),
            None,
            None,
            None,
        )


def _check(q, k, v, i, f, seq_dims: int):
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:-1] != q.shape[:-1] or i.shape != q.shape[:-1] or f.shape != q.shape[:-1]:
        raise ValueError(
            f"shapes do not fit: q {tuple(q.shape)}, v {tuple(v.shape)}, i {tuple(i.shape)}, f {tuple(f.shape)}"
        )
    if q.dim() != seq_dims:
        raise ValueError(f"expected {seq_dims}-d q, got shape {tuple(q.shape)}")


def mlstm_chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState | None = None,
    chunk_size: int = 64,
    eps: float = 1e-6,
    *,
    tiling: TilingOverride = TilingOverride(),
) -> tuple[torch.Tensor, MLSTMState]:
    """Chunkwise mLSTM (Triton, differentiable). Same signature and results as `native.mlstm_chunkwise`.

    q, k: [B, NH, S, DHQK], v: [B, NH, S, DHV], i, f: [B, NH, S] gate pre-activations; state (C, n, m) or None
    (the empty state). Any S >= 1 (padded internally with masked steps). `chunk_size` is the interval at
    which states are materialised, rounded up to a power of two >= 16 (results do not depend on it).
    `tiling` overrides block sizes, warps and pipelining depth (see `TilingOverride`). Returns h [B, NH, S, DHV]
    (dtype of v) and the final state (float32). Gradients flow to q, k, v, i, f and the initial state.
    """
    _check(q, k, v, i, f, 4)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if v.dtype == torch.float64 or q.dtype == torch.float64:
        return native.mlstm_chunkwise(q, k, v, i, f, state, chunk_size=chunk_size, eps=eps)
    B, NH, S, DHQK = q.shape
    DHV = v.shape[-1]
    if q.dtype != v.dtype:
        q, k = q.to(v.dtype), k.to(v.dtype)
    if state is None:
        c0, n0, m0 = native.mlstm_zero_state(B, NH, DHQK, DHV, device=q.device)
    else:
        c0, n0, m0 = state
    h, c, n, m = _MLSTMChunkwise.apply(q, k, v, i, f, c0, n0, m0, int(chunk_size), float(eps), TilingOverride(*tiling))
    return h, (c, n, m)


def _step_forward(q, k, v, i, f, c, n, m, eps: float, in_place: bool):
    B, NH, DHQK = q.shape
    DHV = v.shape[-1]
    BNH = B * NH
    c_ = c.reshape(BNH, DHQK, DHV)
    in_place = in_place and c.dtype == torch.float32 and c.is_contiguous()
    if in_place:
        c_out = c_
    else:
        c_ = c_.float().contiguous()
        c_out = torch.empty_like(c_)
    n_ = n.reshape(BNH, DHQK).float().contiguous()
    m_ = m.reshape(BNH).float().contiguous()
    n_out = torch.empty_like(n_)
    m_out = torch.empty_like(m_)
    h = torch.empty(BNH, DHV, device=v.device, dtype=v.dtype)
    BK = min(_pow2_at_least(DHQK), DEFAULT_BLOCK_DH)
    BV = min(_pow2_at_least(DHV), DEFAULT_BLOCK_DH)
    _step_kernel[(triton.cdiv(DHV, BV), BNH)](
        c_, n_, m_,
        q.reshape(BNH, DHQK).contiguous(), k.reshape(BNH, DHQK).contiguous(), v.reshape(BNH, DHV).contiguous(),
        i.reshape(BNH).contiguous(), f.reshape(BNH).contiguous(),
        c_out, n_out, m_out, h, DHQK**-0.5, eps,
        DHQK=DHQK, DHV=DHV, BK=BK, BV=BV, num_warps=4,
    )
    c_new = c if in_place else c_out.view(B, NH, DHQK, DHV)
    return h.view(B, NH, DHV), c_new, n_out.view(B, NH, DHQK), m_out.view(B, NH, 1)


class _MLSTMStep(torch.autograd.Function):
    """Fused Triton step forward (never in place); the backward (training through single steps is rare)
    differentiates the native step, which computes the same function."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, c, n, m, eps):
        ctx.eps = eps
        ctx.save_for_backward(q, k, v, i, f, c, n, m)
        return _step_forward(q, k, v, i, f, c, n, m, eps, in_place=False)

    @staticmethod
    def backward(ctx, dh, dc, dn, dm):
        inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad[:8]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip(inputs, needs)]
            h, (c, n, m) = native.mlstm_recurrent_step(*leaves[:5], tuple(leaves[5:]), eps=ctx.eps)
            wrt = [x for x, need in zip(leaves, needs) if need]
            grads = iter(torch.autograd.grad((h, c, n, m), wrt, (dh, dc, dn, dm), allow_unused=True))
        out = [next(grads) if need else None for need in needs]
        return (*out, None)


def mlstm_recurrent_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    state: MLSTMState | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, MLSTMState]:
    """One fused recurrent step (Triton). Same signature and results as `native.mlstm_recurrent_step`.

    q, k: [B, NH, DHQK], v: [B, NH, DHV], i, f: [B, NH]. Returns h [B, NH, DHV] (dtype of v) and the new state.

    In place: when `state` is given, its C is float32 and contiguous, and no gradient is required, C is
    updated in place and the returned C *is* `state[0]` (decode then reads and writes C exactly once, with no
    allocation; the model's cache passes its own buffers, so the state never moves). Otherwise (bf16 state,
    autograd) a new C is returned and the given one is left untouched. n and m (tiny) are always returned as
    new tensors: every program of the kernel reads the old n, so it cannot be overwritten during the launch.
    Callers must use the returned state.
    """
    _check(q, k, v, i, f, 3)
    if v.dtype == torch.float64 or q.dtype == torch.float64:
        return native.mlstm_recurrent_step(q, k, v, i, f, state, eps=eps)
    B, NH, DHQK = q.shape
    DHV = v.shape[-1]
    if q.dtype != v.dtype:
        q, k = q.to(v.dtype), k.to(v.dtype)
    if state is None:
        c, n, m = native.mlstm_zero_state(B, NH, DHQK, DHV, device=q.device)
    else:
        c, n, m = state
    if autograd_records(q, k, v, i, f, c, n, m):
        h, c, n, m = _MLSTMStep.apply(q, k, v, i, f, c, n, m, float(eps))
    else:
        h, c, n, m = _step_forward(q, k, v, i, f, c, n, m, float(eps), in_place=True)
    return h, (c, n, m)


__all__ = ["MLSTMState", "TilingOverride", "mlstm_chunkwise", "mlstm_recurrent_step"]
