"""Triton sLSTM kernels: a fused sequence kernel (forward and backward through time) and a decode step.

Same entry points, signatures and semantics as `modeling_xlstm.kernels.slstm.native` (see there for the
math: stabilizer m, normalizer n, the empty-state rule n == 0 -> m_new = i, and the mask that leaves the whole
state (h, c, n, m) untouched where False).

Design (details in kernels/slstm/README.md):

* Sequence forward: one program per (block of BB = 16 batch rows, head) runs the whole time loop. Per step it
  computes the four gate pre-activations  gates_x[t] + h_{t-1} @ R[head, :, g, :] + bias  with `tl.dot`
  (fp32 accumulation), then the pointwise cell update in float32. h, c, n, m live in registers across steps.
  - "resident" mode (padded head dim <= RESIDENT_MAX_HEAD_DIM): the head's four [DH, DH] recurrent blocks are
    loaded once, before the time loop, and stay on chip for all steps.
  - "streaming" mode (larger heads, up to MAX_HEAD_DIM): the recurrent block does not fit in one SM's
    registers, so each step streams it in K-chunks of BK rows (it stays L2-resident). The chunks of h_{t-1}
    are re-read from the output row just written (a CTA barrier orders the write before the reads), which
    avoids slicing register tensors, something Triton cannot do.
* Sequence backward (reverse time loop, same grid): when a gradient is needed the forward also stores the raw
  gate pre-activations and (c, n, m) after every step (float32). Storing is cheaper than recomputing: the
  recompute would repeat the forward's recurrent matmul in every backward step. The backward recomputes the
  pointwise activations from the stored pre-activations, carries (dh, dc, dn, dm) in registers, writes the
  pre-activation gradients, and back-propagates dh_{t-1} = sum_g dgate_g @ R_g^T with the transposed blocks
  (resident or streamed, as in the forward). The weight gradient dR = sum_{b,t} h_{t-1}^T dgate and the bias
  gradient are then each one large batched matmul / reduction outside the loop, instead of an atomic
  accumulation inside it.
* Decode step: a separate kernel with grid (batch block, head, output-column block); one step has no
  recurrence inside the launch, so the output columns of a head can be split across programs, which
  parallelises the (memory-bound) read of R far better than one program per head.

Precision: gates, states and all pointwise math are float32. The recurrent matmul runs in the dtype of
`gates_x` when that is bfloat16/float16 (tensor cores, fp32 accumulation; h_{t-1} and R are rounded to that
dtype, as in NX-AI's CUDA kernel), and in exact float32 (`input_precision="ieee"`, no TF32) otherwise.
float64 inputs are delegated to the native reference (Triton's fp64 dot is not worth a kernel).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import autograd_records
from ..triton_math import logsigmoid
from . import native

SLSTMState = native.SLSTMState

# Largest head dim the kernels accept. Above this even the streamed K-chunk of R ([BK, DH] per gate) and the
# register-resident state (h, c, n, m, 4 gate accumulators: 8 x [16, DH] fp32) no longer fit one SM.
MAX_HEAD_DIM = 256
# Padded head dims up to this keep the whole recurrent block of a head in registers for the whole sequence
# (4 x 64 x 64 = 16K elements, 64 registers/thread at 8 warps in bf16). Module-level so tests can force the
# streaming path on small shapes.
RESIDENT_MAX_HEAD_DIM = 64
# Batch rows per program: the minimum M of `tl.dot`.
BLOCK_B = 16
# Software-pipelining depths to try, deepest first. Deeper pipelines prefetch the next step's inputs (and the next
# chunks of a streamed R) into shared memory; at the default depth 3 the backward needs 120-156 KiB, which fits an
# H100 (227 KiB per block) or A100 (163 KiB) but not an RTX 30xx/40xx (99 KiB). A launch that runs out of shared
# memory is retried one stage shallower; depth 1 needs at most 68 KiB on every shape the kernels accept.
NUM_STAGES = (3, 2, 1)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------------------------------------
# Pointwise helpers
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _tanh(x):
    # tl has no tanh that also runs in the interpreter; 2 sigmoid(2x) - 1 is exact up to ~1 ulp of 1.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _cell(i_r, f_r, z_r, o_r, c, n, m):
    """One sLSTM cell update from the raw gate pre-activations; returns the new (h, c, n, m)."""
    # The empty state (n == 0) contributes nothing: -inf makes m_new = i_r, f_act = 0.
    lfm = tl.where(n == 0.0, float("-inf"), logsigmoid(f_r) + m)
    m_new = tl.maximum(lfm, i_r)
    f_act = tl.exp(lfm - m_new)
    i_act = tl.exp(i_r - m_new)
    c_new = f_act * c + i_act * _tanh(z_r)
    n_new = f_act * n + i_act
    h_new = tl.sigmoid(o_r) * c_new / n_new
    return h_new, c_new, n_new, m_new


# ----------------------------------------------------------------------------------------------------------
# Sequence forward
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _slstm_fwd_kernel(
    GX, R, BIAS, H0, C0, N0, M0, MASK,  # inputs
    Y, HT, CT, NT, MT,  # outputs
    GS, CS, NS, MS,  # saved for backward (only touched when SAVE)
    B, S,
    NH: tl.constexpr, DH: tl.constexpr, DHP: tl.constexpr, BB: tl.constexpr, BK: tl.constexpr,
    RESIDENT: tl.constexpr, HAS_MASK: tl.constexpr, SAVE: tl.constexpr, IEEE: tl.constexpr,
):
    HD: tl.constexpr = NH * DH
    pid_b = tl.program_id(0)
    hd = tl.program_id(1)
    rb = (pid_b * BB + tl.arange(0, BB)).to(tl.int64)
    rd = tl.arange(0, DHP)
    b_ok = rb < B
    d_ok = rd < DH
    bd_ok = b_ok[:, None] & d_ok[None, :]

    # Padded rows/columns load zeros: n = 0 there, so they follow the empty-state rule and stay finite.
    st = rb[:, None] * HD + hd * DH + rd[None, :]
    h = tl.load(H0 + st, mask=bd_ok, other=0.0)
    c = tl.load(C0 + st, mask=bd_ok, other=0.0)
    n = tl.load(N0 + st, mask=bd_ok, other=0.0)
    m = tl.load(M0 + st, mask=bd_ok, other=0.0)

    b_i = tl.load(BIAS + (hd * 4 + 0) * DH + rd, mask=d_ok, other=0.0)[None, :]
    b_f = tl.load(BIAS + (hd * 4 + 1) * DH + rd, mask=d_ok, other=0.0)[None, :]
    b_z = tl.load(BIAS + (hd * 4 + 2) * DH + rd, mask=d_ok, other=0.0)[None, :]
    b_o = tl.load(BIAS + (hd * 4 + 3) * DH + rd, mask=d_ok, other=0.0)[None, :]

    if RESIDENT:
        # R[hd, k, g, j] at ((hd*DH + k)*4 + g)*DH + j: four [DHP, DHP] blocks, loaded once.
        rk = tl.arange(0, DHP)
        r_ptr = R + (hd * DH + rk[:, None]) * (4 * DH) + rd[None, :]
        r_ok = (rk[:, None] < DH) & d_ok[None, :]
        w_i = tl.load(r_ptr + 0 * DH, mask=r_ok, other=0.0)
        w_f = tl.load(r_ptr + 1 * DH, mask=r_ok, other=0.0)
        w_z = tl.load(r_ptr + 2 * DH, mask=r_ok, other=0.0)
        w_o = tl.load(r_ptr + 3 * DH, mask=r_ok, other=0.0)

    for t in range(S):
        bt = rb * S + t
        g_off = bt[:, None] * (4 * HD) + hd * DH + rd[None, :]
        i_r = tl.load(GX + g_off + 0 * HD, mask=bd_ok, other=0.0).to(tl.float32) + b_i
        f_r = tl.load(GX + g_off + 1 * HD, mask=bd_ok, other=0.0).to(tl.float32) + b_f
        z_r = tl.load(GX + g_off + 2 * HD, mask=bd_ok, other=0.0).to(tl.float32) + b_z
        o_r = tl.load(GX + g_off + 3 * HD, mask=bd_ok, other=0.0).to(tl.float32) + b_o

        if RESIDENT:
            hq = h.to(w_i.dtype)
            i_r += _dot(hq, w_i, IEEE)
            f_r += _dot(hq, w_f, IEEE)
            z_r += _dot(hq, w_z, IEEE)
            o_r += _dot(hq, w_o, IEEE)
        else:
            for k0 in range(0, DH, BK):
                rk = k0 + tl.arange(0, BK)
                k_ok = rk < DH
                bk_ok = b_ok[:, None] & k_ok[None, :]
                # h_{t-1}: the output row of step t-1 (already in the dot dtype's rounding), or h0 at t = 0.
                # (t as a [BB] tensor: the interpreter rejects masks built from a Python bool.)
                t_b = (rb * 0 + t)[:, None]
                h_y = tl.load(Y + (bt - 1)[:, None] * HD + hd * DH + rk[None, :], mask=bk_ok & (t_b > 0), other=0.0)
                h_0 = tl.load(H0 + rb[:, None] * HD + hd * DH + rk[None, :], mask=bk_ok & (t_b == 0), other=0.0)
                hk = (h_y.to(tl.float32) + h_0).to(R.dtype.element_ty)
                r_ptr = R + (hd * DH + rk[:, None]) * (4 * DH) + rd[None, :]
                r_ok = k_ok[:, None] & d_ok[None, :]
                i_r += _dot(hk, tl.load(r_ptr + 0 * DH, mask=r_ok, other=0.0), IEEE)
                f_r += _dot(hk, tl.load(r_ptr + 1 * DH, mask=r_ok, other=0.0), IEEE)
                z_r += _dot(hk, tl.load(r_ptr + 2 * DH, mask=r_ok, other=0.0), IEEE)
                o_r += _dot(hk, tl.load(r_ptr + 3 * DH, mask=r_ok, other=0.0), IEEE)

        h_new, c_new, n_new, m_new = _cell(i_r, f_r, z_r, o_r, c, n, m)
        if HAS_MASK:
            keep = (tl.load(MASK + bt, mask=b_ok, other=0) != 0)[:, None]
            h = tl.where(keep, h_new, h)
            c = tl.where(keep, c_new, c)
            n = tl.where(keep, n_new, n)
            m = tl.where(keep, m_new, m)
        else:
            h, c, n, m = h_new, c_new, n_new, m_new

        s_off = bt[:, None] * HD + hd * DH + rd[None, :]
        tl.store(Y + s_off, h.to(Y.dtype.element_ty), mask=bd_ok)
        if SAVE:
            tl.store(GS + g_off + 0 * HD, i_r, mask=bd_ok)
            tl.store(GS + g_off + 1 * HD, f_r, mask=bd_ok)
            tl.store(GS + g_off + 2 * HD, z_r, mask=bd_ok)
            tl.store(GS + g_off + 3 * HD, o_r, mask=bd_ok)
            tl.store(CS + s_off, c, mask=bd_ok)
            tl.store(NS + s_off, n, mask=bd_ok)
            tl.store(MS + s_off, m, mask=bd_ok)
        if not RESIDENT:
            # The next step's K-chunks of h are read by other threads of this program.
            tl.debug_barrier()

    tl.store(HT + st, h, mask=bd_ok)
    tl.store(CT + st, c, mask=bd_ok)
    tl.store(NT + st, n, mask=bd_ok)
    tl.store(MT + st, m, mask=bd_ok)


# ----------------------------------------------------------------------------------------------------------
# Sequence backward
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _slstm_bwd_kernel(
    GS, CS, NS, MS, C0, N0, M0, MASK, R,  # saved forward values, initial states, inputs
    DY, DHT, DCT, DNT, DMT,  # incoming gradients
    DG, DH0, DC0, DN0, DM0,  # outgoing: d(pre-activations) [B,S,4,NH,DH] fp32, d(initial states)
    B, S,
    NH: tl.constexpr, DH: tl.constexpr, DHP: tl.constexpr, BB: tl.constexpr, BK: tl.constexpr,
    RESIDENT: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
):
    HD: tl.constexpr = NH * DH
    pid_b = tl.program_id(0)
    hd = tl.program_id(1)
    rb = (pid_b * BB + tl.arange(0, BB)).to(tl.int64)
    rd = tl.arange(0, DHP)
    b_ok = rb < B
    d_ok = rd < DH
    bd_ok = b_ok[:, None] & d_ok[None, :]

    st = rb[:, None] * HD + hd * DH + rd[None, :]
    dh = tl.load(DHT + st, mask=bd_ok, other=0.0)
    dc = tl.load(DCT + st, mask=bd_ok, other=0.0)
    dn = tl.load(DNT + st, mask=bd_ok, other=0.0)
    dm = tl.load(DMT + st, mask=bd_ok, other=0.0)

    if RESIDENT:
        # Transposed blocks: wt_g[j, k] = R[hd, k, g, j], so that dh_{t-1} = sum_g dgate_g @ wt_g.
        rj = tl.arange(0, DHP)
        rt_ptr = R + (hd * DH + rd[None, :]) * (4 * DH) + rj[:, None]
        rt_ok = (rj[:, None] < DH) & d_ok[None, :]
        wt_i = tl.load(rt_ptr + 0 * DH, mask=rt_ok, other=0.0)
        wt_f = tl.load(rt_ptr + 1 * DH, mask=rt_ok, other=0.0)
        wt_z = tl.load(rt_ptr + 2 * DH, mask=rt_ok, other=0.0)
        wt_o = tl.load(rt_ptr + 3 * DH, mask=rt_ok, other=0.0)

    for tt in range(S):
        t = S - 1 - tt
        bt = rb * S + t
        g_off = bt[:, None] * (4 * HD) + hd * DH + rd[None, :]
        s_off = bt[:, None] * HD + hd * DH + rd[None, :]
        i_r = tl.load(GS + g_off + 0 * HD, mask=bd_ok, other=0.0)
        f_r = tl.load(GS + g_off + 1 * HD, mask=bd_ok, other=0.0)
        z_r = tl.load(GS + g_off + 2 * HD, mask=bd_ok, other=0.0)
        o_r = tl.load(GS + g_off + 3 * HD, mask=bd_ok, other=0.0)
        # State before step t: saved after step t-1, or the initial state at t = 0.
        # (t as a [BB] tensor: the interpreter rejects masks built from a Python bool.)
        t_b = (rb * 0 + t)[:, None]
        later = bd_ok & (t_b > 0)
        first = bd_ok & (t_b == 0)
        c_p = tl.load(CS + s_off - HD, mask=later, other=0.0) + tl.load(C0 + st, mask=first, other=0.0)
        n_p = tl.load(NS + s_off - HD, mask=later, other=0.0) + tl.load(N0 + st, mask=first, other=0.0)
        m_p = tl.load(MS + s_off - HD, mask=later, other=0.0) + tl.load(M0 + st, mask=first, other=0.0)
        dy = tl.load(DY + s_off, mask=bd_ok, other=0.0).to(tl.float32)

        # Recompute the pointwise forward of step t (the unmasked update, also at masked steps, where its
        # result is discarded below; it stays finite there because n_new >= i_act > 0).
        has_state = n_p != 0.0
        lfm = tl.where(has_state, logsigmoid(f_r) + m_p, float("-inf"))
        m_new = tl.maximum(lfm, i_r)
        f_act = tl.exp(lfm - m_new)
        i_act = tl.exp(i_r - m_new)
        tz = _tanh(z_r)
        so = tl.sigmoid(o_r)
        c_new = f_act * c_p + i_act * tz
        n_new = f_act * n_p + i_act
        inv_n = 1.0 / n_new
        h_new = so * c_new * inv_n

        dh_tot = dh + dy
        do_r = dh_tot * c_new * inv_n * so * (1.0 - so)
        dc_tot = dc + dh_tot * so * inv_n
        dn_tot = dn - dh_tot * h_new * inv_n
        d_fact = dc_tot * c_p + dn_tot * n_p
        d_iact = dc_tot * tz + dn_tot
        dz_r = dc_tot * i_act * (1.0 - tz * tz)
        # m_new enters f_act, i_act and the state output; torch.maximum splits the gradient evenly on ties.
        dm_tot = dm - d_fact * f_act - d_iact * i_act
        w_l = tl.where(lfm > i_r, 1.0, tl.where(lfm == i_r, 0.5, 0.0))
        d_lfm = tl.where(has_state, d_fact * f_act + w_l * dm_tot, 0.0)
        di_r = d_iact * i_act + (1.0 - w_l) * dm_tot
        df_r = d_lfm * tl.sigmoid(-f_r)  # d/df log sigmoid(f) = sigmoid(-f)

        if HAS_MASK:
            keep = (tl.load(MASK + bt, mask=b_ok, other=0) != 0)[:, None]
            di_r = tl.where(keep, di_r, 0.0)
            df_r = tl.where(keep, df_r, 0.0)
            dz_r = tl.where(keep, dz_r, 0.0)
            do_r = tl.where(keep, do_r, 0.0)
        tl.store(DG + g_off + 0 * HD, di_r, mask=bd_ok)
        tl.store(DG + g_off + 1 * HD, df_r, mask=bd_ok)
        tl.store(DG + g_off + 2 * HD, dz_r, mask=bd_ok)
        tl.store(DG + g_off + 3 * HD, do_r, mask=bd_ok)

        if RESIDENT:
            wdt = wt_i.dtype
            dh_rec = _dot(di_r.to(wdt), wt_i, IEEE)
            dh_rec += _dot(df_r.to(wdt), wt_f, IEEE)
            dh_rec += _dot(dz_r.to(wdt), wt_z, IEEE)
            dh_rec += _dot(do_r.to(wdt), wt_o, IEEE)
        else:
            # The gate gradients just stored are re-read in chunks along the contracted (output) dim.
            tl.debug_barrier()
            dh_rec = tl.zeros((BB, DHP), dtype=tl.float32)
            for j0 in range(0, DH, BK):
                rj = j0 + tl.arange(0, BK)
                j_ok = rj < DH
                bj_ok = b_ok[:, None] & j_ok[None, :]
                gj = DG + bt[:, None] * (4 * HD) + hd * DH + rj[None, :]
                rt_ptr = R + (hd * DH + rd[None, :]) * (4 * DH) + rj[:, None]
                rt_ok = j_ok[:, None] & d_ok[None, :]
                for g in tl.static_range(4):
                    dgj = tl.load(gj + g * HD, mask=bj_ok, other=0.0).to(R.dtype.element_ty)
                    dh_rec += _dot(dgj, tl.load(rt_ptr + g * DH, mask=rt_ok, other=0.0), IEEE)

        if HAS_MASK:
            dh = tl.where(keep, dh_rec, dh_tot)
            dc = tl.where(keep, dc_tot * f_act, dc)
            dn = tl.where(keep, dn_tot * f_act, dn)
            dm = tl.where(keep, d_lfm, dm)
        else:
            dh = dh_rec
            dc = dc_tot * f_act
            dn = dn_tot * f_act
            dm = d_lfm

    tl.store(DH0 + st, dh, mask=bd_ok)
    tl.store(DC0 + st, dc, mask=bd_ok)
    tl.store(DN0 + st, dn, mask=bd_ok)
    tl.store(DM0 + st, dm, mask=bd_ok)


# ----------------------------------------------------------------------------------------------------------
# Decode step
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _slstm_step_kernel(
    GX, R, BIAS, H0, C0, N0, M0, MASK,
    Y, HT, CT, NT, MT,
    B,
    NH: tl.constexpr, DH: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
):
    HD: tl.constexpr = NH * DH
    pid_b = tl.program_id(0)
    hd = tl.program_id(1)
    pid_n = tl.program_id(2)
    rb = (pid_b * BB + tl.arange(0, BB)).to(tl.int64)
    rn = pid_n * BN + tl.arange(0, BN)
    b_ok = rb < B
    n_ok = rn < DH
    bn_ok = b_ok[:, None] & n_ok[None, :]

    g_off = rb[:, None] * (4 * HD) + hd * DH + rn[None, :]
    i_r = tl.load(GX + g_off + 0 * HD, mask=bn_ok, other=0.0).to(tl.float32)
    f_r = tl.load(GX + g_off + 1 * HD, mask=bn_ok, other=0.0).to(tl.float32)
    z_r = tl.load(GX + g_off + 2 * HD, mask=bn_ok, other=0.0).to(tl.float32)
    o_r = tl.load(GX + g_off + 3 * HD, mask=bn_ok, other=0.0).to(tl.float32)
    i_r += tl.load(BIAS + (hd * 4 + 0) * DH + rn, mask=n_ok, other=0.0)[None, :]
    f_r += tl.load(BIAS + (hd * 4 + 1) * DH + rn, mask=n_ok, other=0.0)[None, :]
    z_r += tl.load(BIAS + (hd * 4 + 2) * DH + rn, mask=n_ok, other=0.0)[None, :]
    o_r += tl.load(BIAS + (hd * 4 + 3) * DH + rn, mask=n_ok, other=0.0)[None, :]

    for k0 in range(0, DH, BK):
        rk = k0 + tl.arange(0, BK)
        k_ok = rk < DH
        hk = tl.load(H0 + rb[:, None] * HD + hd * DH + rk[None, :], mask=b_ok[:, None] & k_ok[None, :], other=0.0)
        hk = hk.to(R.dtype.element_ty)
        r_ptr = R + (hd * DH + rk[:, None]) * (4 * DH) + rn[None, :]
        r_ok = k_ok[:, None] & n_ok[None, :]
        i_r += _dot(hk, tl.load(r_ptr + 0 * DH, mask=r_ok, other=0.0), IEEE)
        f_r += _dot(hk, tl.load(r_ptr + 1 * DH, mask=r_ok, other=0.0), IEEE)
        z_r += _dot(hk, tl.load(r_ptr + 2 * DH, mask=r_ok, other=0.0), IEEE)
        o_r += _dot(hk, tl.load(r_ptr + 3 * DH, mask=r_ok, other=0.0), IEEE)

    st = rb[:, None] * HD + hd * DH + rn[None, :]
    h = tl.load(H0 + st, mask=bn_ok, other=0.0)
    c = tl.load(C0 + st, mask=bn_ok, other=0.0)
    n = tl.load(N0 + st, mask=bn_ok, other=0.0)
    m = tl.load(M0 + st, mask=bn_ok, other=0.0)
    h_new, c_new, n_new, m_new = _cell(i_r, f_r, z_r, o_r, c, n, m)
    if HAS_MASK:
        keep = (tl.load(MASK + rb, mask=b_ok, other=0) != 0)[:, None]
        h_new = tl.where(keep, h_new, h)
        c_new = tl.where(keep, c_new, c)
        n_new = tl.where(keep, n_new, n)
        m_new = tl.where(keep, m_new, m)
    tl.store(Y + st, h_new.to(Y.dtype.element_ty), mask=bn_ok)
    tl.store(HT + st, h_new, mask=bn_ok)
    tl.store(CT + st, c_new, mask=bn_ok)
    tl.store(NT + st, n_new, mask=bn_ok)
    tl.store(MT + st, m_new, mask=bn_ok)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------


def _padded(head_dim: int) -> int:
    # tl.dot needs every block dim >= 16 and tl.arange a power of two.
    return max(16, triton.next_power_of_2(head_dim))


def _check(gates_x: torch.Tensor, recurrent_kernel: torch.Tensor, bias: torch.Tensor) -> None:
    NH, DH = gates_x.shape[-2], gates_x.shape[-1]
    if DH > MAX_HEAD_DIM:
        raise ValueError(
            f"sLSTM Triton kernels support head dims up to {MAX_HEAD_DIM} (what fits on chip per head); got head "
            f"dim {DH}. Use more heads (smaller head dim) or backend='native'."
        )
    if gates_x.shape[-3] != 4:
        raise ValueError(f"gates_x must hold 4 gates (i, f, z, o) in dim -3, got shape {tuple(gates_x.shape)}")
    if tuple(recurrent_kernel.shape) != (NH, DH, 4, DH):
        raise ValueError(f"recurrent_kernel must be [{NH}, {DH}, 4, {DH}], got {tuple(recurrent_kernel.shape)}")
    if tuple(bias.shape) != (NH, 4, DH):
        raise ValueError(f"bias must be [{NH}, 4, {DH}], got {tuple(bias.shape)}")
    if gates_x.device.type == "cpu" and not _interpreting():
        raise ValueError(
            "sLSTM Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter); "
            "use the native kernels on CPU."
        )


def _dot_dtype(gates_x: torch.Tensor) -> torch.dtype:
    return gates_x.dtype if gates_x.dtype in (torch.bfloat16, torch.float16) else torch.float32


def _stream_block_k(dot_dtype: torch.dtype, padded: int) -> int:
    # A [BK, DH] chunk per gate: 32 rows in 16-bit, 16 in fp32 keeps 4 chunks of a 256-wide head at 64 KiB.
    return min(padded, 32 if dot_dtype != torch.float32 else 16)


def _num_warps(padded: int) -> int:
    return 4 if padded <= 32 else 8


# (kernel, device, launch constants) -> the deepest pipeline that fitted, so the fallback costs one failed
# launch per configuration and process, not one per call.
_STAGES_THAT_FIT: dict[tuple, int] = {}


def _launch(kernel, grid, device: torch.device, *args, **meta) -> None:
    """Launch `kernel` at the deepest pipeline depth in NUM_STAGES whose shared memory fits this GPU."""
    key = (kernel, str(device), tuple(sorted(meta.items())))
    first = NUM_STAGES.index(_STAGES_THAT_FIT.get(key, NUM_STAGES[0]))
    for depth in NUM_STAGES[first:]:
        try:
            kernel[grid](*args, **meta, num_stages=depth)
        except triton.OutOfResources as err:
            if depth == NUM_STAGES[-1]:
                raise RuntimeError(
                    f"the sLSTM Triton kernel does not fit this GPU even without pipelining ({err}). "
                    "Use more sLSTM heads (a smaller head dim) or backend='native'."
                ) from err
            continue
        _STAGES_THAT_FIT[key] = depth
        return


def _forward(gx, R, bias, h0, c0, n0, m0, mask, save: bool):
    """Launch the fused forward. All inputs contiguous; states/bias float32; R in the dot dtype."""
    B, S, _, NH, DH = gx.shape
    DHP = _padded(DH)
    resident = DHP <= RESIDENT_MAX_HEAD_DIM
    y = torch.empty(B, S, NH, DH, device=gx.device, dtype=gx.dtype)
    final = [torch.empty(B, NH, DH, device=gx.device, dtype=torch.float32) for _ in range(4)]
    if save:
        saved = (
            torch.empty(B, S, 4, NH, DH, device=gx.device, dtype=torch.float32),
            *(torch.empty(B, S, NH, DH, device=gx.device, dtype=torch.float32) for _ in range(3)),
        )
    else:
        saved = (y, y, y, y)  # never touched (SAVE is a constexpr)
    grid = (triton.cdiv(B, BLOCK_B), NH)
    _launch(
        _slstm_fwd_kernel, grid, gx.device,
        gx, R, bias, h0, c0, n0, m0, mask if mask is not None else y,
        y, *final, *saved,
        B, S,
        NH=NH, DH=DH, DHP=DHP, BB=BLOCK_B, BK=_stream_block_k(R.dtype, DHP),
        RESIDENT=resident, HAS_MASK=mask is not None, SAVE=save, IEEE=R.dtype == torch.float32,
        num_warps=_num_warps(DHP),
    )
    return y, tuple(final), saved


def _backward(saved, c0, n0, m0, mask, R, dy, dht, dct, dnt, dmt):
    gs, cs, ns, ms = saved
    B, S, _, NH, DH = gs.shape
    DHP = _padded(DH)
    dg = torch.empty_like(gs)
    d0 = [torch.empty(B, NH, DH, device=gs.device, dtype=torch.float32) for _ in range(4)]
    grid = (triton.cdiv(B, BLOCK_B), NH)
    _launch(
        _slstm_bwd_kernel, grid, gs.device,
        gs, cs, ns, ms, c0, n0, m0, mask if mask is not None else gs, R,
        dy, dht, dct, dnt, dmt,
        dg, *d0,
        B, S,
        NH=NH, DH=DH, DHP=DHP, BB=BLOCK_B, BK=_stream_block_k(R.dtype, DHP),
        RESIDENT=DHP <= RESIDENT_MAX_HEAD_DIM, HAS_MASK=mask is not None, IEEE=R.dtype == torch.float32,
        num_warps=_num_warps(DHP),
    )
    return dg, tuple(d0)


def _contiguous_f32(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.to(torch.float32).contiguous()


class SLSTMSequenceFunction(torch.autograd.Function):
    """Autograd over the fused sequence kernels. Inputs: gates_x [B,S,4,NH,DH] (any float dtype), R
    [NH,DH,4,DH] in the dot dtype, bias [NH,4,DH] fp32, h0/c0/n0/m0 [B,NH,DH] fp32, mask [B,S] uint8 or None.
    Outputs: y [B,S,NH,DH] (gates_x dtype) and the final h, c, n, m (fp32)."""

    @staticmethod
    def forward(ctx, gates_x, recurrent_kernel, bias, h0, c0, n0, m0, mask):
        y, final, saved = _forward(gates_x, recurrent_kernel, bias, h0, c0, n0, m0, mask, save=True)
        ctx.save_for_backward(recurrent_kernel, h0, c0, n0, m0, mask, y, *saved)
        ctx.gates_dtype = gates_x.dtype
        return (y, *final)

    @staticmethod
    def backward(ctx, dy, dht, dct, dnt, dmt):
        R, h0, c0, n0, m0, mask, y, *saved = ctx.saved_tensors
        dy, dht, dct, dnt, dmt = (g.contiguous() for g in (dy, dht, dct, dnt, dmt))
        dg, (dh0, dc0, dn0, dm0) = _backward(saved, c0, n0, m0, mask, R, dy, dht, dct, dnt, dmt)
        need = ctx.needs_input_grad
        d_gx = dg.to(ctx.gates_dtype) if need[0] else None
        d_R = None
        if need[1]:
            # dR[h,k,g,j] = sum_{b,t} h_{t-1}[b,h,k] dgate[b,t,g,h,j]. h_{t-1} is y[t-1] (y holds the kept h at
            # masked steps) or h0, in the rounding the forward's matmul saw.
            h_prev = torch.cat([h0.to(y.dtype).unsqueeze(1), y[:, :-1]], dim=1)
            B, S, NH, DH = h_prev.shape
            a = h_prev.permute(2, 3, 0, 1).reshape(NH, DH, B * S).to(R.dtype)
            bmat = dg.to(R.dtype).permute(3, 0, 1, 2, 4).reshape(NH, B * S, 4 * DH)
            d_R = torch.bmm(a, bmat).view(NH, DH, 4, DH)
        d_bias = dg.sum(dim=(0, 1)).transpose(0, 1) if need[2] else None
        return d_gx, d_R, d_bias, dh0, dc0, dn0, dm0, None


def _prepare(gates_x, recurrent_kernel, bias, state, batch_dims):
    """Common input handling for sequence and step: dtypes, contiguity, the zero state."""
    NH, DH = gates_x.shape[-2], gates_x.shape[-1]
    R = recurrent_kernel.to(_dot_dtype(gates_x)).contiguous()
    b = _contiguous_f32(bias)
    if state is None:
        state = native.slstm_zero_state(batch_dims, NH, DH, device=gates_x.device)
    else:
        state = tuple(_contiguous_f32(s) for s in state)
    return R, b, state


def slstm_sequence(
    gates_x: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: torch.Tensor,
    state: SLSTMState | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SLSTMState]:
    """The sLSTM over a sequence in one fused kernel. gates_x: [B, S, 4, NH, DH]; mask: optional [B, S] bool.

    Returns h [B, S, NH, DH] (dtype of gates_x) and the final state (h, c, n, m), float32. Differentiable
    w.r.t. gates_x, recurrent_kernel, bias and the initial state.
    """
    if gates_x.dtype == torch.float64:
        return native.slstm_sequence(gates_x, recurrent_kernel, bias, state, mask)
    _check(gates_x, recurrent_kernel, bias)
    B, S = gates_x.shape[:2]
    R, b, (h0, c0, n0, m0) = _prepare(gates_x, recurrent_kernel, bias, state, B)
    gx = gates_x.contiguous()
    mask_u8 = None if mask is None else mask.to(torch.uint8).contiguous()
    if S == 0:
        return gx.new_empty(B, 0, *gx.shape[3:]), (h0, c0, n0, m0)
    tensors = (gx, R, b, h0, c0, n0, m0)
    if autograd_records(*tensors):
        y, *final = SLSTMSequenceFunction.apply(*tensors, mask_u8)
        return y, tuple(final)
    y, final, _ = _forward(*tensors, mask_u8, save=False)
    return y, final


def slstm_step(
    gates_x: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: torch.Tensor,
    state: SLSTMState | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SLSTMState]:
    """One sLSTM step (decode). gates_x: [B, 4, NH, DH]; mask: optional [B] bool, False keeps the state.

    Returns h [B, NH, DH] (dtype of gates_x) and the new state. Under autograd this runs the differentiable
    sequence kernel on a length-1 sequence; otherwise the dedicated step kernel.
    """
    if gates_x.dtype == torch.float64:
        return native.slstm_step(gates_x, recurrent_kernel, bias, state, mask)
    if autograd_records(gates_x, recurrent_kernel, bias, *(state or ())):
        y, new_state = slstm_sequence(
            gates_x.unsqueeze(1), recurrent_kernel, bias, state, None if mask is None else mask.unsqueeze(1)
        )
        return y[:, 0], new_state
    _check(gates_x, recurrent_kernel, bias)
    B, _, NH, DH = gates_x.shape
    R, b, (h0, c0, n0, m0) = _prepare(gates_x, recurrent_kernel, bias, state, B)
    gx = gates_x.contiguous()
    DHP = _padded(DH)
    y = torch.empty(B, NH, DH, device=gx.device, dtype=gx.dtype)
    new_state = tuple(torch.empty(B, NH, DH, device=gx.device, dtype=torch.float32) for _ in range(4))
    BN = min(DHP, 64)
    grid = (triton.cdiv(B, BLOCK_B), NH, triton.cdiv(DH, BN))
    _launch(
        _slstm_step_kernel, grid, gx.device,
        gx, R, b, h0, c0, n0, m0, y if mask is None else mask.to(torch.uint8).contiguous(),
        y, *new_state,
        B,
        NH=NH, DH=DH, BB=BLOCK_B, BN=BN, BK=min(DHP, 32), HAS_MASK=mask is not None,
        IEEE=R.dtype == torch.float32,
        num_warps=4,
    )
    return y, new_state


__all__ = ["MAX_HEAD_DIM", "SLSTMSequenceFunction", "slstm_sequence", "slstm_step"]
