"""The Triton sLSTM kernels against the native reference.

CPU CI runs them in the Triton interpreter (TRITON_INTERPRET=1, set by conftest) in float32: outputs, final
states and the gradients of gates_x, the recurrent kernel, the bias and all four initial states. The `gpu`
tests run the compiled kernels at the benchmark shape (B=16, T=1024, hidden 768) in float32 and bfloat16.

Tolerances (CPU, float32): the kernel and the reference do the same float32 arithmetic in a different order
(matmul accumulation order, log-sigmoid and tanh written as min(x,0)-log(1+exp(-|x|)) and 2 sigmoid(2x)-1), so
they differ by a few ulp per step; over <= 33 steps with O(1..10) values that is ~1e-6 absolute. 1e-5 leaves
margin for that and nothing else: a wrong term in any gradient is O(1e-1) here.
"""

import pytest
import torch
from helpers import slstm_run_with_grads

from modeling_xlstm.kernels.slstm import native
from modeling_xlstm.kernels.slstm import triton as tk

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = dict(atol=1e-5, rtol=1e-5)


def make_inputs(B, S, NH, DH, state="random", seed=0, device=DEVICE, dtype=torch.float32):
    """Inputs with strong gates, so the stabilizer m moves far from 0 and forget gates far from 1."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    gates = randn(B, S, 4, NH, DH) * 2.0
    gates[:, :, 1] += 1.0  # forget gates mostly open, as after the published bias init
    recurrent = randn(NH, DH, 4, DH) / DH**0.5
    bias = randn(NH, 4, DH) * 0.5
    init = None
    if state == "random":
        # Half of the entries empty (n = 0: the empty-state rule applies per element), half with n > 0.
        n0 = torch.where(torch.rand(B, NH, DH, generator=g) > 0.5, torch.rand(B, NH, DH, generator=g) + 0.5, 0.0)
        init = (randn(B, NH, DH) * 0.5, randn(B, NH, DH), n0, randn(B, NH, DH) * 2.0)
    to = dict(device=device, dtype=dtype)
    gates, recurrent, bias = gates.to(**to), recurrent.to(**to), bias.to(device=device)
    if init is not None:
        init = tuple(s.to(device) for s in init)
    return gates, recurrent, bias, init


def assert_matches_native(gates, recurrent, bias, init, mask=None, **tol):
    tol = tol or TOL
    h, final, grads = slstm_run_with_grads(tk.slstm_sequence, gates, recurrent, bias, init, mask)
    h_ref, final_ref, grads_ref = slstm_run_with_grads(native.slstm_sequence, gates, recurrent, bias, init, mask)
    assert h.dtype == gates.dtype and h.shape == h_ref.shape
    torch.testing.assert_close(h, h_ref, **tol)
    for name, a, b in zip("hcnm", final, final_ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"final state {name}: {m}")
    names = ["gates_x", "recurrent_kernel", "bias", "h0", "c0", "n0", "m0"]
    for name, a, b in zip(names, grads, grads_ref):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("S", [1, 5, 33])
@pytest.mark.parametrize("NH", [1, 4])
@pytest.mark.parametrize("DH", [16, 32])
def test_sequence_forward_and_gradients(S, NH, DH):
    gates, recurrent, bias, init = make_inputs(B=2, S=S, NH=NH, DH=DH)
    assert_matches_native(gates, recurrent, bias, init)


@pytest.mark.parametrize("DH", [16, 32])
def test_sequence_from_empty_state(DH):
    # state=None: every element starts with n = 0 and takes m = i on its first step.
    gates, recurrent, bias, _ = make_inputs(B=3, S=5, NH=2, DH=DH, state=None)
    assert_matches_native(gates, recurrent, bias, None)


@pytest.mark.parametrize("state", [None, "random"])
def test_sequence_masked(state):
    B, S = 3, 17
    gates, recurrent, bias, init = make_inputs(B=B, S=S, NH=2, DH=16, state=state, seed=3)
    mask = torch.rand(B, S, generator=torch.Generator().manual_seed(4)) > 0.3
    mask[0, :5] = False  # left padding: from an empty state, n stays 0 until the first real token
    mask[1, -4:] = False  # right padding
    mask[2, :] = True
    mask = mask.to(DEVICE)
    assert_matches_native(gates, recurrent, bias, init, mask)
    # Masked steps keep the state untouched, so the output there repeats the previous step's.
    h, _ = tk.slstm_sequence(gates, recurrent, bias, init, mask)
    assert torch.equal(h[1, -4:], h[1, -5:-4].expand(4, -1, -1))


@pytest.mark.parametrize("DH", [24, 32])
def test_sequence_streaming_path(DH, monkeypatch):
    # Heads above RESIDENT_MAX_HEAD_DIM stream R in K-chunks each step (the path of hidden 768 / 4 heads).
    # Forcing it on small shapes covers the chunking (DH=32: two 16-row chunks) and padding (DH=24).
    monkeypatch.setattr(tk, "RESIDENT_MAX_HEAD_DIM", 0)
    B, S = 2, 6
    gates, recurrent, bias, init = make_inputs(B=B, S=S, NH=2, DH=DH, seed=5)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[0, 2] = False
    assert_matches_native(gates, recurrent, bias, init, mask.to(DEVICE))


def test_sequence_batch_larger_than_block():
    # B > BLOCK_B: several batch-block programs per head.
    gates, recurrent, bias, init = make_inputs(B=tk.BLOCK_B + 3, S=3, NH=1, DH=16, seed=6)
    assert_matches_native(gates, recurrent, bias, init)


def test_sequence_largest_head_dim():
    gates, recurrent, bias, init = make_inputs(B=1, S=2, NH=1, DH=tk.MAX_HEAD_DIM, seed=7)
    assert_matches_native(gates, recurrent, bias, init)


def test_head_dim_above_limit_is_a_clear_error():
    DH = tk.MAX_HEAD_DIM * 2
    gates = torch.zeros(1, 2, 4, 1, DH, device=DEVICE)
    with pytest.raises(ValueError, match=rf"head dims up to {tk.MAX_HEAD_DIM}.*got head dim {DH}"):
        tk.slstm_sequence(gates, torch.zeros(1, DH, 4, DH, device=DEVICE), torch.zeros(1, 4, DH, device=DEVICE))
    with pytest.raises(ValueError, match=rf"got head dim {DH}"):
        tk.slstm_step(gates[:, 0], torch.zeros(1, DH, 4, DH, device=DEVICE), torch.zeros(1, 4, DH, device=DEVICE))


def test_gradients_when_only_some_inputs_require_grad():
    gates, recurrent, bias, init = make_inputs(B=2, S=4, NH=2, DH=16, seed=8)
    gx = gates.clone().requires_grad_()
    (tk.slstm_sequence(gx, recurrent, bias, init)[0] ** 2).sum().backward()
    gx_ref = gates.clone().requires_grad_()
    (native.slstm_sequence(gx_ref, recurrent, bias, init)[0] ** 2).sum().backward()
    torch.testing.assert_close(gx.grad, gx_ref.grad, **TOL)


@pytest.mark.parametrize("DH", [16, 24, 32])
@pytest.mark.parametrize("state", [None, "random"])
@pytest.mark.parametrize("masked", [False, True])
def test_step_kernel_matches_native(DH, state, masked):
    B, NH = 3, 4
    gates, recurrent, bias, init = make_inputs(B=B, S=1, NH=NH, DH=DH, state=state, seed=9)
    mask = torch.tensor([True, False, True], device=DEVICE) if masked else None
    h, new = tk.slstm_step(gates[:, 0], recurrent, bias, init, mask)
    h_ref, new_ref = native.slstm_step(gates[:, 0], recurrent, bias, init, mask)
    torch.testing.assert_close(h, h_ref, **TOL)
    for a, b in zip(new, new_ref):
        torch.testing.assert_close(a, b, **TOL)


def test_step_chain_equals_sequence():
    gates, recurrent, bias, init = make_inputs(B=2, S=4, NH=2, DH=16, seed=10)
    h_seq, s_seq = tk.slstm_sequence(gates, recurrent, bias, init)
    state, hs = init, []
    for t in range(gates.shape[1]):
        h, state = tk.slstm_step(gates[:, t], recurrent, bias, state)
        hs.append(h)
    torch.testing.assert_close(torch.stack(hs, 1), h_seq, **TOL)
    for a, b in zip(state, s_seq):
        torch.testing.assert_close(a, b, **TOL)


def test_step_under_autograd_matches_native():
    gates, recurrent, bias, init = make_inputs(B=2, S=1, NH=2, DH=16, seed=11)
    mask = torch.tensor([True, False], device=DEVICE)

    def as_step(fn):
        def run(gx, r, b, state, m):
            h, new = fn(gx[:, 0], r, b, state, m)
            return h.unsqueeze(1), new

        return run

    h, final, grads = slstm_run_with_grads(as_step(tk.slstm_step), gates, recurrent, bias, init, mask)
    h_ref, final_ref, grads_ref = slstm_run_with_grads(as_step(native.slstm_step), gates, recurrent, bias, init, mask)
    torch.testing.assert_close(h, h_ref, **TOL)
    for a, b in zip((*final, *grads), (*final_ref, *grads_ref)):
        torch.testing.assert_close(a, b, **TOL)


def test_backend_dispatches_slstm_to_these_kernels():
    from modeling_xlstm.backend import triton_kernels

    kernels = triton_kernels()
    assert kernels.slstm_sequence is tk.slstm_sequence
    assert kernels.slstm_step is tk.slstm_step


# ------------------------------------------------------------------------------------------------------------
# GPU: the compiled kernels at the benchmark shape
# ------------------------------------------------------------------------------------------------------------


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


@pytest.mark.gpu
@pytest.mark.parametrize("NH", [4, 12])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_benchmark_shape(NH, dtype):
    B, S, D = 16, 1024, 768
    gates, recurrent, bias, init = make_inputs(B=B, S=S, NH=NH, DH=D // NH, seed=12, dtype=dtype)
    # The reference runs in float32 on the same (possibly bf16-rounded) inputs.
    h, final, grads = slstm_run_with_grads(tk.slstm_sequence, gates, recurrent, bias, init, None)
    h_ref, final_ref, grads_ref = slstm_run_with_grads(
        native.slstm_sequence, gates.float(), recurrent.float(), bias, init, None
    )
    # float32: the kernel's matmul is exact fp32 (no TF32), so only summation order differs; over 1024 steps
    # that stays ~1e-6 relative. bfloat16: h_{t-1} and R enter the recurrent matmul rounded to 8 mantissa bits
    # (2^-9 = 2e-3 relative) and h is stored in bf16; the recurrence is contractive (|h| < 1, forget gates < 1),
    # so the error stays at a few bf16 ulps instead of growing with T.
    bound = 1e-4 if dtype == torch.float32 else 3e-2
    names = ["h", "h_T", "c_T", "n_T", "m_T"]
    names += ["d gates_x", "d recurrent_kernel", "d bias", "d h0", "d c0", "d n0", "d m0"]
    errors = {
        name: rel_err(a, b)
        for name, a, b in zip(names, (h, *final, *grads), (h_ref, *final_ref, *grads_ref))
    }
    assert all(e < bound for e in errors.values()), errors


@pytest.mark.gpu
@pytest.mark.parametrize("NH", [4, 12])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_step_kernel(NH, dtype):
    B, D = 16, 768
    gates, recurrent, bias, init = make_inputs(B=B, S=1, NH=NH, DH=D // NH, seed=13, dtype=dtype)
    h, new = tk.slstm_step(gates[:, 0], recurrent, bias, init)
    h_ref, new_ref = native.slstm_step(gates[:, 0].float(), recurrent.float(), bias, init)
    bound = 1e-5 if dtype == torch.float32 else 1e-2
    for a, b in zip((h, *new), (h_ref, *new_ref)):
        assert rel_err(a, b) < bound
