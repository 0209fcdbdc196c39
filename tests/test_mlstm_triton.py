"""The Triton mLSTM kernels against the native reference: chunkwise forward and every gradient (q, k, v, i, f and
the initial state C0, n0, m0), masked steps, tilings, and the fused decode step.

On CPU the kernels run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1) in float32 on tiny
shapes; on a CUDA machine the same tests run the compiled kernels, and the `gpu`-marked tests add bf16,
realistic sizes and a 65,536-token stability check.

Reference and tolerance. The oracle is the native kernel run in float64 on the same inputs, so the only error
measured is ours. Errors are normwise: max |ours - ref| <= REL * max |ref| per tensor. With gate
pre-activations of size ~3 the gradients reach ~1e2 - 1e3 and exp/cumsum rounding gives both our kernels and
the native float32 kernel normwise errors of 0.5 - 2e-5 against float64 (measured); REL = 5e-5 sits above that
and far below what a wrong or missing term gives (>= 1e-3; e.g. dropping the gradient through the
stabilizer's max in `test_chunkwise_stabilizer_gradient` gives ~5e-4).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from modeling_xlstm.kernels.mlstm import native  # noqa: E402
from modeling_xlstm.kernels.mlstm import triton as mt  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REL = 5e-5


def make_inputs(B=1, NH=2, S=7, DHQK=16, DHV=16, seed=0, gate_scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)

    q, k, v = randn(B, NH, S, DHQK), randn(B, NH, S, DHQK), randn(B, NH, S, DHV)
    # strong gates: the stabilizer moves far from 0 and forget gates far from 1
    i = gate_scale * randn(B, NH, S)
    f = gate_scale * randn(B, NH, S) + 1.0
    return [q, k, v, i, f]


def make_state(B=1, NH=2, DHQK=16, DHV=16, seed=1, m_offset=0.0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, NH, DHQK, DHV, generator=g)
    n = torch.randn(B, NH, DHQK, generator=g)
    m = torch.randn(B, NH, 1, generator=g) + m_offset
    return [t.to(DEVICE) for t in (c, n, m)]


def output_weights(h_shape, state_shapes, seed=5, dtype=torch.float32):
    """Random weights for a loss over h and the whole final state, so every output adjoint is non-zero."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).to(DEVICE, dtype) for s in (h_shape, *state_shapes)]


def run_with_grads(fn, inputs, state, weights, dtype=None):
    """Outputs (h, C, n, m) and gradients of sum(w * outputs) w.r.t. q, k, v, i, f (and C0, n0, m0)."""
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    leaves = [cast(t).detach().clone().requires_grad_() for t in inputs]
    state_leaves = [cast(t).detach().clone().requires_grad_() for t in state] if state is not None else None
    h, (c, n, m) = fn(*leaves, tuple(state_leaves) if state_leaves is not None else None)
    outs = [h, c, n, m]
    loss = sum((o.to(w.dtype) * cast(w)).sum() for o, w in zip(outs, weights))
    loss.backward()
    grads = [t.grad for t in leaves + (state_leaves or [])]
    return [o.detach() for o in outs], grads


def assert_matches(actual, expected, what, rel=REL, scale=None):
    assert actual is not None, f"{what}: no gradient"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual.double() - expected.double()).abs().max().item()
    if scale is None:
        scale = expected.double().abs().max().item()
    assert err <= rel * scale + 1e-7, f"{what}: max error {err:.3e} > {rel:g} * scale ({scale:.3e})"


OUT_NAMES = ["h", "C", "n", "m"]
GRAD_NAMES = ["dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]


def check_chunkwise_against_native(inputs, state, chunk_size=64, tiling=mt.TilingOverride(), rel=REL):
    B, NH, S, DHQK = inputs[0].shape
    DHV = inputs[2].shape[-1]
    weights = output_weights((B, NH, S, DHV), [(B, NH, DHQK, DHV), (B, NH, DHQK), (B, NH, 1)])
    outs, grads = run_with_grads(
        lambda *a: mt.mlstm_chunkwise(*a, chunk_size=chunk_size, tiling=tiling), inputs, state, weights
    )
    ref_outs, ref_grads = run_with_grads(
        lambda *a: native.mlstm_chunkwise(*a, chunk_size=chunk_size), inputs, state, weights, dtype=torch.float64
    )
    assert outs[0].dtype == inputs[2].dtype and all(o.dtype == torch.float32 for o in outs[1:])
    for name, a, b in zip(OUT_NAMES, outs, ref_outs):
        assert_matches(a, b, name, rel)
    # The gate gradients are sums like q.dq - k.dk (the TFLA identity), which may cancel (exactly, e.g. df for a
    # single step whose input gate sets the stabilizer): their rounding error is relative to those terms.
    q, k = (t.double() for t in inputs[:2])
    gate_terms = max((q * ref_grads[0]).sum(-1).abs().max().item(), (k * ref_grads[1]).sum(-1).abs().max().item())
    for name, a, b in zip(GRAD_NAMES, grads, ref_grads):
        scale = max(b.double().abs().max().item(), gate_terms) if name in ("di", "df") else None
        assert_matches(a, b, name, rel, scale)
    return outs, grads


# ---------------------------------------------------------------------------------------------------------------
# chunkwise
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("dims", [(16, 32), (32, 16)], ids=lambda d: f"dqk{d[0]}_dv{d[1]}")
@pytest.mark.parametrize("S", [1, 7, 64, 130])
def test_chunkwise_matches_native(S, dims, with_state):
    DHQK, DHV = dims
    inputs = make_inputs(S=S, DHQK=DHQK, DHV=DHV)
    state = make_state(DHQK=DHQK, DHV=DHV) if with_state else None
    check_chunkwise_against_native(inputs, state)


def test_chunkwise_multi_tile_paths():
    """Several sequence sub-blocks per chunk, several head-dim tiles, head dims that are no power of two (masked
    tile tails) and a sequence that is no multiple of the chunk."""
    inputs = make_inputs(B=2, NH=1, S=75, DHQK=24, DHV=40, seed=3)
    state = make_state(B=2, NH=1, DHQK=24, DHV=40, seed=4)
    check_chunkwise_against_native(inputs, state, chunk_size=32, tiling=mt.TilingOverride(16, 16, 16))


@pytest.mark.parametrize("tiling", [mt.TilingOverride(block_l=24), mt.TilingOverride(block_v=8)])
def test_tiling_override_with_an_impossible_block_is_refused(tiling):
    with pytest.raises(ValueError, match="power of two >= 16"):
        mt.mlstm_chunkwise(*make_inputs(S=20), tiling=tiling)


def test_chunkwise_results_do_not_depend_on_chunk_size():
    inputs = make_inputs(S=70, seed=7)
    h16, s16 = mt.mlstm_chunkwise(*inputs, chunk_size=16)
    h64, s64 = mt.mlstm_chunkwise(*inputs, chunk_size=64)
    h_ref, s_ref = native.mlstm_recurrent_sequence(*(t.double() for t in inputs))
    for a, b in zip([h16, *s16], [h_ref, *s_ref]):
        assert_matches(a, b, "chunk 16 vs recurrent")
    for a, b in zip([h64, *s64], [h_ref, *s_ref]):
        assert_matches(a, b, "chunk 64 vs recurrent")


@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_chunkwise_masked_positions(with_state):
    """i = -inf, f = +inf (the model's attention-mask convention): left padding, a hole covering a whole chunk,
    a single step and the last step. The state must not move, nothing may be NaN, h at the kept positions and the
    final state equal those of the sequence without the masked steps, and every gradient equals the reference's
    (zero for the masked gates)."""
    S = 70
    inputs = make_inputs(S=S, DHV=32, seed=11)
    state = make_state(DHV=32, seed=12) if with_state else None
    masked = torch.zeros(S, dtype=torch.bool, device=DEVICE)
    masked[:5] = True
    masked[20:45] = True  # covers chunk [32, 48) entirely at chunk_size 16
    masked[60] = True
    masked[-1] = True
    inputs[3] = inputs[3].masked_fill(masked, float("-inf"))
    inputs[4] = inputs[4].masked_fill(masked, float("inf"))

    outs, grads = check_chunkwise_against_native(inputs, state, chunk_size=16)
    keep = ~masked
    h_kept, state_kept = native.mlstm_recurrent_sequence(
        *(t[:, :, keep].double() for t in inputs), tuple(s.double() for s in state) if state else None
    )
    assert_matches(outs[0][:, :, keep], h_kept, "h at kept positions")
    for name, a, b in zip(OUT_NAMES[1:], outs[1:], state_kept):
        assert_matches(a, b, f"final {name} vs sequence without masked steps")
    di, df = grads[3], grads[4]
    assert (di[..., masked] == 0).all() and (df[..., masked] == 0).all()


def test_chunkwise_stabilizer_gradient():
    """Large input gates and a large initial m0 make exp(-m) comparable to eps, so the gradient through the
    stabilizer (its max routes to i, f and m0) is a large part of di, df and dm0; without it this test fails."""
    inputs = make_inputs(S=40, seed=21)
    inputs[3] = inputs[3] + 12.0
    state = make_state(seed=22, m_offset=12.0)
    check_chunkwise_against_native(inputs, state, chunk_size=16)


def test_chunkwise_continues_from_state():
    inputs = make_inputs(S=45, seed=31)
    h_full, s_full = mt.mlstm_chunkwise(*inputs, chunk_size=16)
    h1, s1 = mt.mlstm_chunkwise(*(t[:, :, :17] for t in inputs), chunk_size=16)
    h2, s2 = mt.mlstm_chunkwise(*(t[:, :, 17:] for t in inputs), state=s1, chunk_size=16)
    torch.testing.assert_close(torch.cat([h1, h2], dim=2), h_full, atol=1e-5, rtol=1e-5)
    for a, b in zip(s2, s_full):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_chunkwise_float64_uses_native():
    inputs = [t.double() for t in make_inputs(S=9)]
    h, state = mt.mlstm_chunkwise(*inputs)
    h_ref, state_ref = native.mlstm_chunkwise(*inputs)
    assert h.dtype == torch.float64
    torch.testing.assert_close(h, h_ref)


def test_chunkwise_rejects_mismatched_shapes():
    q, k, v, i, f = make_inputs(S=7)
    with pytest.raises(ValueError, match="shapes"):
        mt.mlstm_chunkwise(q, k, v[:, :, :5], i, f)


# ---------------------------------------------------------------------------------------------------------------
# decode step
# ---------------------------------------------------------------------------------------------------------------


def step_inputs(B=2, NH=3, DHQK=24, DHV=80, seed=0):
    q, k, v, i, f = make_inputs(B=B, NH=NH, S=1, DHQK=DHQK, DHV=DHV, seed=seed)
    return [q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., 0], f[..., 0]]


def test_step_matches_native_and_updates_c_in_place():
    inputs = step_inputs()
    inputs[3][0, 0], inputs[4][0, 0] = float("-inf"), float("inf")  # one masked (batch, head)
    state = make_state(B=2, NH=3, DHQK=24, DHV=80)
    given = [s.clone() for s in state]
    h, (c, n, m) = mt.mlstm_recurrent_step(*inputs, tuple(given))
    h_ref, s_ref = native.mlstm_recurrent_step(*(t.double() for t in inputs), tuple(s.double() for s in state))
    for name, a, b in zip(OUT_NAMES, [h, c, n, m], [h_ref, *s_ref]):
        assert_matches(a, b, f"step {name}", rel=1e-6)
    assert c is given[0], "C of a given float32 state is updated in place"
    assert n is not given[1] and torch.equal(given[1], state[1]), "n is returned new, the given one untouched"
    torch.testing.assert_close(c[0, 0], state[0][0, 0])  # the masked step left its C alone


def test_step_without_state_and_bf16_state_are_not_in_place():
    inputs = step_inputs(DHQK=16, DHV=16)
    h, s = mt.mlstm_recurrent_step(*inputs)
    h_ref, s_ref = native.mlstm_recurrent_step(*(t.double() for t in inputs))
    for a, b in zip([h, *s], [h_ref, *s_ref]):
        assert_matches(a, b, "step from empty state", rel=1e-6)
    state = make_state(B=2, NH=3, DHQK=16, DHV=16)
    state_bf16 = tuple(t.bfloat16() for t in state)
    before = state_bf16[0].clone()
    _, (c, _, _) = mt.mlstm_recurrent_step(*inputs, state_bf16)
    assert c.dtype == torch.float32 and torch.equal(state_bf16[0], before)


def test_step_gradients_match_native():
    inputs = step_inputs(DHQK=16, DHV=32, seed=3)
    state = make_state(B=2, NH=3, DHQK=16, DHV=32, seed=4)
    weights = output_weights((2, 3, 32), [(2, 3, 16, 32), (2, 3, 16), (2, 3, 1)])
    outs, grads = run_with_grads(mt.mlstm_recurrent_step, inputs, state, weights)
    ref_outs, ref_grads = run_with_grads(native.mlstm_recurrent_step, inputs, state, weights, dtype=torch.float64)
    for name, a, b in zip(OUT_NAMES + GRAD_NAMES, outs + grads, ref_outs + ref_grads):
        assert_matches(a, b, f"step {name}", rel=1e-5)


def test_steps_reproduce_chunkwise():
    """Prefill with the chunkwise kernel, then decode with the step kernel: the same numbers as one chunkwise pass."""
    inputs = make_inputs(S=12, DHV=32, seed=41)
    h_full, s_full = mt.mlstm_chunkwise(*inputs)
    h, state = mt.mlstm_chunkwise(*(t[:, :, :8] for t in inputs))
    hs = [h]
    for t in range(8, 12):
        h_t, state = mt.mlstm_recurrent_step(*(x[:, :, t] for x in inputs), state)
        hs.append(h_t.unsqueeze(2))
    torch.testing.assert_close(torch.cat(hs, dim=2), h_full, atol=1e-5, rtol=1e-5)
    for a, b in zip(state, s_full):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# GPU: bf16 and fp32 at realistic sizes, and a long sequence with extreme gates
# ---------------------------------------------------------------------------------------------------------------

# bf16 inputs: the kernels round the matmul operands (scores, states, dh / denominator) to bf16, as TFLA does;
# bf16's unit roundoff is 4e-3, and sums of a few hundred such products give normwise errors of ~1e-2.
GPU_REL = {torch.float32: 2e-4, torch.bfloat16: 3e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("dims", [(128, 256), (96, 192)], ids=lambda d: f"dqk{d[0]}_dv{d[1]}")
def test_gpu_chunkwise_matches_native(dtype, dims):
    DHQK, DHV = dims
    B, NH, S = 2, 4, 1000
    inputs = make_inputs(B=B, NH=NH, S=S, DHQK=DHQK, DHV=DHV, gate_scale=2.0, dtype=dtype)
    state = make_state(B=B, NH=NH, DHQK=DHQK, DHV=DHV)
    check_chunkwise_against_native(inputs, state, chunk_size=64, rel=GPU_REL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_step_matches_native(dtype):
    inputs = [t.to(dtype) for t in step_inputs(B=1, NH=8, DHQK=256, DHV=512)]
    state = make_state(B=1, NH=8, DHQK=256, DHV=512)
    h, s = mt.mlstm_recurrent_step(*inputs, tuple(t.clone() for t in state))
    h_ref, s_ref = native.mlstm_recurrent_step(*(t.double() for t in inputs), tuple(t.double() for t in state))
    assert h.dtype == dtype
    for name, a, b in zip(OUT_NAMES, [h, *s], [h_ref, *s_ref]):
        assert_matches(a, b, f"step {name}", rel=1e-2 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.gpu
def test_gpu_long_sequence_extreme_gates_stay_finite():
    """65,536 tokens in bf16 with gate pre-activations of +-50: no inf/NaN anywhere, forward or backward, and h
    agrees with the native reference (float32 math on the same bf16 inputs)."""
    B, NH, S, DHQK, DHV = 1, 2, 65536, 128, 256
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(B, NH, S, DHQK, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, NH, S, DHV, device="cuda", generator=g, dtype=torch.bfloat16)
    sign = lambda: torch.randint(0, 2, (B, NH, S), device="cuda", generator=g) * 2.0 - 1.0  # noqa: E731
    i = (50.0 * sign()).to(torch.bfloat16)
    f = (50.0 * sign()).to(torch.bfloat16)
    leaves = [t.requires_grad_() for t in (q, k, v, i, f)]
    h, (c, n, m) = mt.mlstm_chunkwise(*leaves)
    for name, t in zip(OUT_NAMES, (h, c, n, m)):
        assert torch.isfinite(t).all(), f"{name} not finite"
    (h.float().square().mean() + c.sum() + n.sum()).backward()
    for name, t in zip(GRAD_NAMES, leaves):
        assert torch.isfinite(t.grad).all(), f"{name} not finite"
    with torch.no_grad():
        h_ref, _ = native.mlstm_chunkwise(*(t.detach() for t in leaves), chunk_size=256)
    # Per-token relative error, judged by its median: with gates of +-50 some rows have a nearly cancelling
    # normaliser q.n (ill-conditioned in any precision); a broken kernel gets most rows wrong.
    h, h_ref = h.detach().float(), h_ref.float()
    row_err = (h - h_ref).norm(dim=-1) / h_ref.norm(dim=-1).clamp_min(1e-30)
    assert row_err.median().item() < GPU_REL[torch.bfloat16]
