"""The native sLSTM sequence as one autograd.Function (`slstm_sequence`, a hand-written backward through time)
against its reference, the plain step loop differentiated by autograd (`slstm_sequence_reference`).

- float64 gradcheck on small shapes: with and without an initial state, with masks holding False positions,
  with empty (n == 0) elements at the start, left padding over an empty state, and exact ties in the stabilizer's
  max (where torch.maximum splits the gradient in half, and so must we).
- float32 equality of outputs, final states and all gradients with the reference loop at S in {1, 5, 33},
  1 and 4 heads, head dims 8 and 16, from an empty and from a random state, with and without a mask.

Tolerance (float32): atol = rtol = 1e-5, the Triton kernel tests' bound. Both sides do the same float32
arithmetic, grouped differently: the recurrent matmul as one GEMM per head (and, in the backward, one per step
over all four gates) instead of an einsum per step, the stabilizer's gradient folded into per-step coefficients
(dlfm = w dm + alpha dn + beta dc, di = dm - dlfm) instead of autograd's chain through f_act, i_act and the max,
and dR as one GEMM over all B * S rows instead of S accumulated per-step products. That moves results by a few
ulp per op; over <= 33 steps with O(1..10) values the largest difference seen is ~5e-6 absolute (~2e-6 relative
to 1 + |value|), so 1e-5 has margin, while a wrong or missing term in any gradient is O(1e-1) here.
"""

import pytest
import torch
from helpers import slstm_run_with_grads

from modeling_xlstm.kernels.slstm import native
from modeling_xlstm.kernels.slstm import slstm_sequence, slstm_sequence_reference

TOL = dict(atol=1e-5, rtol=1e-5)
NAMES = ["gates_x", "recurrent_kernel", "bias", "h0", "c0", "n0", "m0"]


def make_inputs(B, S, NH, DH, state="random", dtype=torch.float32, seed=0):
    """Strong gates, so the stabilizer m moves far from 0 and forget gates far from 1. state: None, "random" (n > 0
    everywhere) or "mixed" (half of the elements empty, n = 0: the empty-state rule applies per element)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    gates = randn(B, S, 4, NH, DH) * 2.0
    gates[:, :, 1] += 1.0  # forget gates mostly open, as after the published bias init
    recurrent = randn(NH, DH, 4, DH) / DH**0.5
    bias = randn(NH, 4, DH) * 0.5
    init = None
    if state is not None:
        n0 = torch.rand(B, NH, DH, generator=g, dtype=dtype) + 0.5
        if state == "mixed":
            n0 = torch.where(torch.rand(B, NH, DH, generator=g) > 0.5, n0, 0.0)
        init = (randn(B, NH, DH) * 0.5, randn(B, NH, DH), n0, randn(B, NH, DH) * 2.0)
    return gates, recurrent, bias, init


def make_mask(B, S, seed=4):
    mask = torch.rand(B, S, generator=torch.Generator().manual_seed(seed)) > 0.3
    mask[0, : min(3, S)] = False  # left padding (over an empty state, n stays 0 until the first real token)
    if B > 1:
        mask[1, -min(2, S) :] = False  # right padding
    return mask


def assert_matches_reference(gates, recurrent, bias, init, mask=None, **tol):
    tol = tol or TOL
    h, final, grads = slstm_run_with_grads(slstm_sequence, gates, recurrent, bias, init, mask)
    h_ref, final_ref, grads_ref = slstm_run_with_grads(slstm_sequence_reference, gates, recurrent, bias, init, mask)
    assert h.dtype == h_ref.dtype and h.shape == h_ref.shape
    torch.testing.assert_close(h, h_ref, **tol)
    for name, a, b in zip("hcnm", final, final_ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"final state {name}: {m}")
    for name, a, b in zip(NAMES, grads, grads_ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"grad of {name}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# float32: equal to the reference loop
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("S", [1, 5, 33])
@pytest.mark.parametrize("NH", [1, 4])
@pytest.mark.parametrize("DH", [8, 16])
@pytest.mark.parametrize("state", [None, "random"])
def test_matches_reference(S, NH, DH, state):
    gates, recurrent, bias, init = make_inputs(B=3, S=S, NH=NH, DH=DH, state=state, seed=S + NH + DH)
    assert_matches_reference(gates, recurrent, bias, init)


@pytest.mark.parametrize("S", [1, 5, 33])
@pytest.mark.parametrize("NH", [1, 4])
@pytest.mark.parametrize("DH", [8, 16])
@pytest.mark.parametrize("state", [None, "mixed"])
def test_matches_reference_masked(S, NH, DH, state):
    gates, recurrent, bias, init = make_inputs(B=3, S=S, NH=NH, DH=DH, state=state, seed=2 * S + NH + DH)
    assert_matches_reference(gates, recurrent, bias, init, make_mask(3, S, seed=S))


def test_masked_steps_repeat_the_state():
    gates, recurrent, bias, init = make_inputs(B=2, S=9, NH=2, DH=8)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, -4:] = False
    h, final = slstm_sequence(gates, recurrent, bias, init, mask)
    assert torch.equal(h[1, -4:], h[1, -5:-4].expand(4, -1, -1))
    _, final_kept = slstm_sequence(gates[1:, :5], recurrent, bias, tuple(s[1:] for s in init))
    for a, b in zip(final, final_kept):
        torch.testing.assert_close(a[1:], b, **TOL)


def test_longer_than_a_backward_chunk(monkeypatch):
    # The backward computes its coefficients chunk by chunk; a short chunk makes the test cross several of them,
    # with a partial last chunk and masked steps on both sides of a chunk border.
    monkeypatch.setattr(native, "BACKWARD_CHUNK", 4)
    gates, recurrent, bias, init = make_inputs(B=2, S=11, NH=2, DH=8, state="mixed", seed=9)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[0, 2:6] = False
    assert_matches_reference(gates, recurrent, bias, init)
    assert_matches_reference(gates, recurrent, bias, init, mask)


def test_gradient_through_the_final_state_only():
    # y unused: its incoming gradient is zero, and everything flows through (h, c, n, m) at the end.
    gates, recurrent, bias, init = make_inputs(B=2, S=12, NH=2, DH=8)
    grads = []
    for fn in (slstm_sequence, slstm_sequence_reference):
        leaves = [x.clone().requires_grad_() for x in (gates, recurrent, bias, *init)]
        _, (h, c, n, m) = fn(*leaves[:3], tuple(leaves[3:]))
        (h.square().sum() + (c / n).sum() + 0.1 * m.sum()).backward()
        grads.append([leaf.grad for leaf in leaves])
    for name, a, b in zip(NAMES, *grads):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"grad of {name}: {m}")


def test_only_some_inputs_require_grad():
    gates, recurrent, bias, init = make_inputs(B=2, S=6, NH=2, DH=8)
    for which in range(3):
        grads = []
        for fn in (slstm_sequence, slstm_sequence_reference):
            inputs = [gates, recurrent, bias]
            inputs[which] = inputs[which].clone().requires_grad_()
            h, _ = fn(*inputs, init)
            grads.append(torch.autograd.grad(h.square().sum(), inputs[which])[0])
        torch.testing.assert_close(grads[0], grads[1], **TOL)


def test_bfloat16_gates_keep_float32_state():
    gates, recurrent, bias, init = make_inputs(B=2, S=7, NH=2, DH=8)
    gates = gates.bfloat16()
    h, final, grads = slstm_run_with_grads(slstm_sequence, gates, recurrent, bias, init, None)
    h_ref, final_ref, grads_ref = slstm_run_with_grads(slstm_sequence_reference, gates, recurrent, bias, init, None)
    assert h.dtype == torch.bfloat16 and all(s.dtype == torch.float32 for s in final)
    assert grads[0].dtype == torch.bfloat16
    # the same float32 math inside; only the rounding of h and of the gates' gradient to bf16 differs
    torch.testing.assert_close(h, h_ref, atol=1e-2, rtol=1e-2)
    for a, b in zip((*final, *grads), (*final_ref, *grads_ref)):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


def test_no_grad_forward_equals_autograd_forward():
    gates, recurrent, bias, init = make_inputs(B=2, S=9, NH=2, DH=8, state="mixed")
    mask = make_mask(2, 9)
    with torch.no_grad():
        h, final = slstm_sequence(gates, recurrent, bias, init, mask)
    h_grad, final_grad = slstm_sequence(gates, recurrent.clone().requires_grad_(), bias, init, mask)
    assert not h.requires_grad and h_grad.requires_grad
    assert torch.equal(h, h_grad.detach())
    for a, b in zip(final, final_grad):
        assert torch.equal(a, b.detach())


def test_sequence_is_one_graph_node():
    gates, recurrent, bias, _ = make_inputs(B=1, S=20, NH=1, DH=8)
    h, _ = slstm_sequence(gates.requires_grad_(), recurrent, bias)
    assert type(h.grad_fn).__name__ == "SLSTMSequenceFunctionBackward"


def test_non_contiguous_inputs_and_all_true_mask():
    gates, recurrent, bias, init = make_inputs(B=3, S=6, NH=2, DH=8)
    gates_nc = gates.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    recurrent_nc = recurrent.permute(3, 1, 2, 0).contiguous().permute(3, 1, 2, 0)
    init_nc = tuple(s.transpose(0, 1).contiguous().transpose(0, 1) for s in init)
    assert not gates_nc.is_contiguous() and not recurrent_nc.is_contiguous()
    h, final = slstm_sequence(gates_nc, recurrent_nc, bias, init_nc, torch.ones(3, 6, dtype=torch.bool))
    h_ref, final_ref = slstm_sequence_reference(gates, recurrent, bias, init)
    torch.testing.assert_close(h, h_ref, **TOL)
    for a, b in zip(final, final_ref):
        torch.testing.assert_close(a, b, **TOL)


def test_empty_sequence_returns_the_state():
    gates, recurrent, bias, init = make_inputs(B=2, S=0, NH=2, DH=8)
    h, final = slstm_sequence(gates, recurrent, bias, init)
    assert h.shape == (2, 0, 2, 8)
    for a, b in zip(final, init):
        assert torch.equal(a, b)


def test_extreme_gates_stay_finite_with_finite_gradients():
    gates, recurrent, bias, init = make_inputs(B=2, S=16, NH=2, DH=8)
    gates = (50.0 * gates.sign()).requires_grad_()
    h, final = slstm_sequence(gates, recurrent, bias, init)
    (h.sum() + sum(s.sum() for s in final)).backward()
    assert torch.isfinite(h).all() and all(torch.isfinite(s).all() for s in final)
    assert torch.isfinite(gates.grad).all()


def test_not_twice_differentiable():
    gates, recurrent, bias, _ = make_inputs(B=1, S=3, NH=1, DH=4)
    gates.requires_grad_()
    loss = slstm_sequence(gates, recurrent, bias)[0].square().sum()  # its gradient depends on h: a graph
    (grad,) = torch.autograd.grad(loss, gates, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        grad.sum().backward()


# ---------------------------------------------------------------------------------------------------------------
# float64: gradcheck
# ---------------------------------------------------------------------------------------------------------------


def gradcheck(gates, recurrent, bias, init=None, mask=None, state_grad=(True, True, True, True)):
    """gradcheck of y and all four final states w.r.t. gates, R, bias and the initial-state tensors marked in
    `state_grad` (an empty element's n0 must stay exactly 0: the empty-state rule is a jump at n = 0)."""
    leaves = [gates.requires_grad_(), recurrent.requires_grad_(), bias.requires_grad_()]
    state = list(init) if init is not None else None
    if state is not None:
        for k, grad in enumerate(state_grad):
            if grad:
                state[k] = state[k].requires_grad_()
                leaves.append(state[k])
    slots = [k for k, grad in enumerate(state_grad) if grad] if state is not None else []

    def fn(x, r, b, *s):
        full = None
        if state is not None:
            full = list(state)
            for k, value in zip(slots, s):
                full[k] = value
        y, final = slstm_sequence(x, r, b, full, mask)
        return (y, *final)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("NH,DH", [(1, 3), (2, 2)])
def test_gradcheck_from_empty_state(NH, DH):
    gates, recurrent, bias, _ = make_inputs(B=2, S=4, NH=NH, DH=DH, dtype=torch.float64)
    gradcheck(gates, recurrent, bias)


@pytest.mark.parametrize("NH,DH", [(1, 3), (2, 2)])
def test_gradcheck_with_initial_state(NH, DH):
    gates, recurrent, bias, init = make_inputs(B=2, S=4, NH=NH, DH=DH, dtype=torch.float64, seed=1)
    gradcheck(gates, recurrent, bias, init)


def test_gradcheck_with_mask():
    gates, recurrent, bias, init = make_inputs(B=3, S=6, NH=2, DH=2, dtype=torch.float64, seed=2)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 0] = mask[0, 3] = False  # a hole at the start and one inside
    mask[1, -2:] = False  # right padding
    gradcheck(gates, recurrent, bias, init, mask)


def test_gradcheck_empty_elements_and_left_padding():
    # Row 0 is empty (n0 == 0) and left-padded for two steps: the empty-state rule must hold through the masked
    # steps and apply at its first real step. Row 1 has empty and live elements side by side and starts at once.
    gates, recurrent, bias, init = make_inputs(B=2, S=5, NH=1, DH=3, dtype=torch.float64, seed=3)
    h0, c0, n0, m0 = init
    n0 = n0.clone()
    n0[0] = 0.0
    n0[1, 0, 1] = 0.0
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, :2] = False
    gradcheck(gates, recurrent, bias, (h0, c0, n0, m0), mask, state_grad=(True, True, False, True))
    # and the same against the reference loop in float64, to machine precision
    h, final, grads = slstm_run_with_grads(slstm_sequence, gates, recurrent, bias, (h0, c0, n0, m0), mask)
    h_ref, final_ref, grads_ref = slstm_run_with_grads(
        slstm_sequence_reference, gates, recurrent, bias, (h0, c0, n0, m0), mask
    )
    for a, b in zip((h, *final, *grads), (h_ref, *final_ref, *grads_ref)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_ties_in_the_stabilizer_split_the_gradient():
    # i == log sigmoid(f) + m_{t-1} exactly on the first step: torch.maximum sends half of the gradient of m each
    # way, and so must the hand-written backward (gradcheck's central differences see the same half split).
    B, S, NH, DH = 1, 3, 1, 2
    gates, recurrent, bias, init = make_inputs(B=B, S=S, NH=NH, DH=DH, dtype=torch.float64, seed=4)
    h0, c0, n0, m0 = init
    h0 = torch.zeros_like(h0)  # no recurrent contribution on step 0, so raw = gates_x + bias exactly
    bias = torch.zeros_like(bias)
    lfm = torch.nn.functional.logsigmoid(gates[:, 0, 1]) + m0
    gates[:, 0, 0] = lfm  # i = lfm, bitwise
    leaves_state = (h0, c0, n0, m0)
    G, _ = native._sequence_forward(gates, recurrent, bias, h0, c0, n0, m0, None)
    assert torch.equal(G[0, native._LFM], G[0, native._LFM + 1])  # the forward sees the tie: lfm == i
    h, final, grads = slstm_run_with_grads(slstm_sequence, gates, recurrent, bias, leaves_state, None)
    h_ref, final_ref, grads_ref = slstm_run_with_grads(
        slstm_sequence_reference, gates, recurrent, bias, leaves_state, None
    )
    for a, b in zip((h, *final, *grads), (h_ref, *final_ref, *grads_ref)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    gradcheck(gates, recurrent, bias, (h0, c0, n0, m0), state_grad=(False, True, True, False))


def test_torch_compile_traces_the_step_loop_without_graph_breaks():
    # The Function's loops branch on data; under dynamo slstm_sequence traces the plain step loop instead.
    gates, recurrent, bias, init = make_inputs(B=2, S=3, NH=2, DH=4)
    explanation = torch._dynamo.explain(lambda *a: slstm_sequence(*a)[0])(gates, recurrent, bias, init)
    assert explanation.graph_break_count == 0, explanation.break_reasons
