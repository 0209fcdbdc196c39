"""The native mLSTM and sLSTM kernels: the parallel, chunkwise and recurrent forms agree, their gradients are
right (gradcheck), they continue from a carried state, masked steps leave the state untouched, and they match
NX-AI's reference code."""

import pytest
import torch

from modeling_xlstm.kernels.mlstm import (
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent_sequence,
    mlstm_recurrent_step,
)
from modeling_xlstm.kernels.mlstm import native
from modeling_xlstm.kernels.slstm import slstm_sequence, slstm_sequence_reference, slstm_step


def mlstm_inputs(B=2, NH=2, S=19, DHQK=8, DHV=6, dtype=torch.float32, seed=0, gate_scale=3.0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    q, k, v = randn(B, NH, S, DHQK), randn(B, NH, S, DHQK), randn(B, NH, S, DHV)
    # strong gates so that the stabilizer is exercised (m far from 0, forget gates far from 1)
    i = gate_scale * randn(B, NH, S)
    f = gate_scale * randn(B, NH, S) + 1.0
    return q, k, v, i, f


def random_mlstm_state(B=2, NH=2, DHQK=8, DHV=6, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, NH, DHQK, DHV, generator=g, dtype=dtype),
        torch.randn(B, NH, DHQK, generator=g, dtype=dtype),
        torch.randn(B, NH, 1, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("S", [1, 5, 8, 19])
@pytest.mark.parametrize("with_state", [False, True])
def test_mlstm_forms_agree(S, with_state):
    q, k, v, i, f = mlstm_inputs(S=S)
    state = random_mlstm_state() if with_state else None
    h_rec, s_rec = mlstm_recurrent_sequence(q, k, v, i, f, state)
    h_par, s_par = mlstm_parallel(q, k, v, i, f, state)
    h_chk, s_chk = mlstm_chunkwise(q, k, v, i, f, state, chunk_size=4)
    # float32 rounding of exp/cumsum over <= 19 steps with gate pre-activations of size ~3: 1e-4 is the
    # model-level tolerance of DESIGN §4, and the kernels must meet it on their own.
    for h in (h_par, h_chk):
        torch.testing.assert_close(h, h_rec, atol=1e-4, rtol=1e-4)
    for s in (s_par, s_chk):
        for a, b in zip(s, s_rec):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mlstm_forms_agree_exactly_in_float64():
    q, k, v, i, f = mlstm_inputs(S=23, dtype=torch.float64)
    h_rec, _ = mlstm_recurrent_sequence(q, k, v, i, f)
    h_chk, _ = mlstm_chunkwise(q, k, v, i, f, chunk_size=5)
    h_par, _ = mlstm_parallel(q, k, v, i, f)
    torch.testing.assert_close(h_chk, h_rec, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(h_par, h_rec, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("chunks_per_group", [1, 2, 3, 100])
def test_mlstm_chunkwise_groups_of_chunks_agree_with_the_recurrence(monkeypatch, chunks_per_group):
    """Without gradients whole chunks run in groups (their states in one weighted sum); any group size, a last
    group with fewer chunks and a shorter last chunk give the recurrence's outputs and state."""
    q, k, v, i, f = mlstm_inputs(S=27)  # 6 chunks of 4 and 3 tokens
    state = random_mlstm_state()
    B, NH, _, DHQK = q.shape
    monkeypatch.setattr(native, "GROUP_STATE_BYTES", chunks_per_group * B * NH * DHQK * v.shape[-1] * 4)
    h_rec, s_rec = mlstm_recurrent_sequence(q, k, v, i, f, state)
    h_chk, s_chk = mlstm_chunkwise(q, k, v, i, f, state, chunk_size=4)
    # the same float32 tolerance as the forms above (rounding of exp/cumsum over the sequence)
    torch.testing.assert_close(h_chk, h_rec, atol=1e-4, rtol=1e-4)
    for a, b in zip(s_chk, s_rec):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mlstm_chunkwise_continues_from_state():
    q, k, v, i, f = mlstm_inputs(S=21)
    h_full, s_full = mlstm_chunkwise(q, k, v, i, f, chunk_size=4)
    h1, s1 = mlstm_chunkwise(*(t[:, :, :9] for t in (q, k, v, i, f)), chunk_size=4)
    h2, s2 = mlstm_chunkwise(*(t[:, :, 9:] for t in (q, k, v, i, f)), state=s1, chunk_size=4)
    torch.testing.assert_close(torch.cat([h1, h2], dim=2), h_full, atol=1e-5, rtol=1e-5)
    for a, b in zip(s2, s_full):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_mlstm_masked_steps_leave_state_untouched():
    q, k, v, i, f = mlstm_inputs(S=12)
    masked = torch.zeros(12, dtype=torch.bool)
    masked[:4] = True  # left padding
    masked[7] = True  # and a hole
    i_m = i.masked_fill(masked, float("-inf"))
    f_m = f.masked_fill(masked, float("inf"))
    keep = ~masked
    h_ref, s_ref = mlstm_recurrent_sequence(*(t[:, :, keep] for t in (q, k, v, i, f)))
    # chunks of 4: the first chunk is all padding, so its own inputs have no weight at all
    chunks_of_4 = lambda *a: mlstm_chunkwise(*a, chunk_size=4)  # noqa: E731
    for fn in (mlstm_parallel, mlstm_chunkwise, chunks_of_4, mlstm_recurrent_sequence):
        h, s = fn(q, k, v, i_m, f_m)
        assert torch.isfinite(h).all()
        torch.testing.assert_close(h[:, :, keep], h_ref, atol=1e-5, rtol=1e-5)
        for a, b in zip(s, s_ref):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_mlstm_gradients_of_all_forms_agree():
    inputs = mlstm_inputs(S=13)
    state = random_mlstm_state()
    grads = []
    for fn in (mlstm_recurrent_sequence, mlstm_parallel, lambda *a: mlstm_chunkwise(*a, chunk_size=4)):
        leaves = [t.clone().requires_grad_() for t in (*inputs, *state)]
        h, (c, n, m) = fn(*leaves[:5], tuple(leaves[5:]))
        (h.square().sum() + c.sum() + n.sum()).backward()
        grads.append([leaf.grad for leaf in leaves])
    for other in grads[1:]:
        for a, b in zip(other, grads[0]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "step"])
def test_mlstm_gradcheck(form):
    q, k, v, i, f = mlstm_inputs(B=1, NH=1, S=5, DHQK=3, DHV=2, dtype=torch.float64, gate_scale=1.0)
    state = random_mlstm_state(B=1, NH=1, DHQK=3, DHV=2, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (q, k, v, i, f, *state)]
    if form == "parallel":
        fn = lambda q, k, v, i, f, c, n, m: mlstm_parallel(q, k, v, i, f, (c, n, m))  # noqa: E731
    elif form == "chunkwise":
        fn = lambda q, k, v, i, f, c, n, m: mlstm_chunkwise(q, k, v, i, f, (c, n, m), chunk_size=2)  # noqa: E731
    else:
        fn = lambda q, k, v, i, f, c, n, m: mlstm_recurrent_step(  # noqa: E731
            q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., 0], f[..., 0], (c, n, m)
        )
    assert torch.autograd.gradcheck(lambda *a: fn(*a)[0], leaves)


def test_mlstm_step_matches_mlstm_kernels_reference():
    from mlstm_kernels.torch.recurrent.native_step import mlstm_recurrent_step__native_fw

    q, k, v, i, f = mlstm_inputs(S=1)
    c, n, m = random_mlstm_state()
    # clones: without autograd our step updates the given state in place (see the next test)
    h, (c1, n1, m1) = mlstm_recurrent_step(
        q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., 0], f[..., 0], (c.clone(), n.clone(), m.clone())
    )
    h_ref, (c_ref, n_ref, m_ref) = mlstm_recurrent_step__native_fw(
        c, n, m, q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., :1], f[..., :1]
    )
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c1, c_ref)
    torch.testing.assert_close(n1, n_ref)
    torch.testing.assert_close(m1, m_ref)


def test_mlstm_step_updates_a_float32_state_in_place_only_without_autograd():
    """The decode contract (the same as the Triton step's): no gradient required and a float32 state -> the returned
    state is the given tensors, updated; otherwise the given state is left as it was. Same numbers either way."""
    q, k, v, i, f = (t[..., 0, :] if t.dim() == 4 else t[..., 0] for t in mlstm_inputs(S=1))
    state = random_mlstm_state()
    before = tuple(s.clone() for s in state)
    with torch.no_grad():
        h_copy, new_copy = mlstm_recurrent_step(q, k, v, i, f, tuple(s.double() for s in state))
        h, new = mlstm_recurrent_step(q, k, v, i, f, state)
    assert all(a is b for a, b in zip(new, state))
    assert not torch.equal(state[0], before[0])
    torch.testing.assert_close(h, h_copy.float())
    for got, expected in zip(new, new_copy):
        torch.testing.assert_close(got, expected.float())

    state = tuple(s.clone() for s in before)
    q.requires_grad_()
    h, new = mlstm_recurrent_step(q, k, v, i, f, state)
    assert all(torch.equal(s, b) for s, b in zip(state, before))
    assert all(a is not b for a, b in zip(new, state))
    h.sum().backward()
    assert q.grad is not None


def test_mlstm_bf16_inputs_keep_float32_state():
    q, k, v, i, f = (t.bfloat16() for t in mlstm_inputs(S=9))
    h, state = mlstm_chunkwise(q, k, v, i, f, chunk_size=4)
    assert h.dtype == torch.bfloat16
    assert all(s.dtype == torch.float32 for s in state)
    h, state = mlstm_recurrent_step(q[..., 0, :], k[..., 0, :], v[..., 0, :], i[..., 0], f[..., 0], state)
    assert h.dtype == torch.bfloat16
    assert all(s.dtype == torch.float32 for s in state)


# ---------------------------------------------------------------------------------------------------------------
# sLSTM
# ---------------------------------------------------------------------------------------------------------------


def slstm_inputs(B=2, S=9, NH=2, DH=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    gates = 2.0 * torch.randn(B, S, 4, NH, DH, generator=g, dtype=dtype)
    recurrent = 0.5 * torch.randn(NH, DH, 4, DH, generator=g, dtype=dtype)
    bias = torch.randn(NH, 4, DH, generator=g, dtype=dtype)
    return gates, recurrent, bias


def test_slstm_matches_xlstm_vanilla_reference():
    """Our [NH, DH_in, 4, DH_out] recurrent layout and gate order against NX-AI's vanilla sLSTM loop."""
    from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry

    B, S, NH, DH = 2, 11, 3, 4
    gates, recurrent, bias = slstm_inputs(B=B, S=S, NH=NH, DH=DH)
    h, (h_last, c_last, n_last, m_last) = slstm_sequence(gates, recurrent, bias)

    # the vanilla backend's internal layouts: R [NH, 4*DH_out, DH_in], b [4*NH*DH], x [S, B, 4*NH*DH]
    r_int = recurrent.permute(0, 2, 3, 1).reshape(NH, 4 * DH, DH)
    b_int = bias.permute(1, 0, 2).reshape(-1)
    x_int = gates.permute(1, 0, 2, 3, 4).reshape(S, B, -1)
    states = torch.zeros(4, B, NH * DH)
    states_all, _, _ = slstm_forward(x_int, states, r_int, b_int, slstm_pointwise_function_registry["slstm"])
    h_ref = states_all[0, 1:].view(S, B, NH, DH).transpose(0, 1)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    # c and n agree up to the stabilizer's scale: compare what they mean, c / n
    c_ref, n_ref = states_all[1, -1].view(B, NH, DH), states_all[2, -1].view(B, NH, DH)
    torch.testing.assert_close(c_last / n_last, c_ref / n_ref, atol=1e-5, rtol=1e-5)


def test_slstm_gradients_match_xlstm_vanilla_reference():
    """Gradients through our sequence (hand-written backward) against autograd through NX-AI's vanilla loop. The two
    pick the stabilizer differently on the first step (they start from m = 0, we from the empty-state rule), which
    rescales c and n but not h, so the comparison is on a loss of h alone."""
    from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry

    B, S, NH, DH = 2, 11, 3, 4
    gates, recurrent, bias = slstm_inputs(B=B, S=S, NH=NH, DH=DH)
    weight = torch.randn(B, S, NH, DH, generator=torch.Generator().manual_seed(5))

    ours = [t.clone().requires_grad_() for t in (gates, recurrent, bias)]
    (slstm_sequence(*ours)[0] * weight).sum().backward()

    x_int = gates.permute(1, 0, 2, 3, 4).reshape(S, B, -1).requires_grad_()
    r_int = recurrent.permute(0, 2, 3, 1).reshape(NH, 4 * DH, DH).requires_grad_()
    b_int = bias.permute(1, 0, 2).reshape(-1).requires_grad_()
    states_all, _, _ = slstm_forward(
        x_int, torch.zeros(4, B, NH * DH), r_int, b_int, slstm_pointwise_function_registry["slstm"]
    )
    (states_all[0, 1:].view(S, B, NH, DH).transpose(0, 1) * weight).sum().backward()

    # back to our layouts: x [S, B, (4, NH, DH)], R [NH, (4, DH_out), DH_in], b [(4, NH, DH)]
    theirs = (
        x_int.grad.view(S, B, 4, NH, DH).permute(1, 0, 2, 3, 4),
        r_int.grad.view(NH, 4, DH, DH).permute(0, 3, 1, 2),
        b_int.grad.view(4, NH, DH).transpose(0, 1),
    )
    for name, a, b in zip(("gates_x", "recurrent_kernel", "bias"), (t.grad for t in ours), theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"grad of {name}: {m}")


def test_slstm_continues_from_state_and_step_equals_sequence():
    gates, recurrent, bias = slstm_inputs(S=10)
    h_full, s_full = slstm_sequence(gates, recurrent, bias)
    _, s1 = slstm_sequence(gates[:, :6], recurrent, bias)
    h2, s2 = slstm_sequence(gates[:, 6:], recurrent, bias, s1)
    torch.testing.assert_close(h2, h_full[:, 6:])
    h_step, s_step = slstm_step(gates[:, 6], recurrent, bias, s1)
    torch.testing.assert_close(h_step, h_full[:, 6])
    for a, b in zip(s2, s_full):
        torch.testing.assert_close(a, b)


def test_slstm_masked_steps_leave_state_untouched():
    gates, recurrent, bias = slstm_inputs(S=10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, :3] = False
    mask[1, 5] = False
    h, state = slstm_sequence(gates, recurrent, bias, mask=mask)
    for b in range(2):
        h_ref, s_ref = slstm_sequence(gates[b : b + 1, mask[b]], recurrent, bias)
        torch.testing.assert_close(h[b : b + 1, mask[b]], h_ref)
        for a, r in zip(state, s_ref):
            torch.testing.assert_close(a[b : b + 1], r)


@pytest.mark.parametrize("sequence", [slstm_sequence, slstm_sequence_reference])
def test_slstm_gradcheck(sequence):
    gates, recurrent, bias = slstm_inputs(B=1, S=4, NH=2, DH=2, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    state = tuple(torch.randn(1, 2, 2, generator=g, dtype=torch.float64) for _ in range(4))
    state = (state[0], state[1], state[2].abs() + 0.5, state[3])  # a live state has n > 0
    leaves = [t.requires_grad_() for t in (gates, recurrent, bias, *state)]
    assert torch.autograd.gradcheck(lambda x, r, b, *s: sequence(x, r, b, tuple(s))[0], leaves)


def test_slstm_extreme_gates_stay_finite():
    gates, recurrent, bias = slstm_inputs(S=16)
    h, state = slstm_sequence(50.0 * gates.sign(), recurrent, bias)
    assert torch.isfinite(h).all() and all(torch.isfinite(s).all() for s in state)
