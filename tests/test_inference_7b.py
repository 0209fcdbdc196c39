"""7B inference path: the benchmark script's CPU mode, `fuse_projections`, and (GPU only) the bf16 + Triton path
against the float32 native reference on a small 7B-style model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import benchmarks.bench_7b_inference as bench
from benchmarks import results
from helpers import randomize_
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM


def small_7b_config(**overrides) -> XLSTMConfig:
    """A tiny xLSTM 7B: the hub config's block structure and defaults at toy width."""
    settings = dict(vocab_size=512, hidden_size=128, num_hidden_layers=3, num_heads=4, block_types=["mlstm"] * 3,
                    slstm_at=[], backend="native")
    settings.update(overrides)
    return XLSTMConfig.from_pretrained(str(Path(__file__).resolve().parent.parent / "hub_configs" / "xlstm-7b"),
                                       **settings)


def perturbed_model(config: XLSTMConfig, seed: int = 0) -> XLSTMForCausalLM:
    """A model whose gate weights are not zero (the init zeroes them), so every projection affects the logits."""
    torch.manual_seed(seed)
    return randomize_(XLSTMForCausalLM(config), scale=0.05, seed=seed).eval()


# ---------------------------------------------------------------------------------------------------------------
# the benchmark script, end to end on CPU
# ---------------------------------------------------------------------------------------------------------------


def test_benchmark_small_cpu_runs_both_implementations(monkeypatch, tmp_path):
    # nothing may be recorded in --small mode: point the record files at a scratch folder and check they stay absent
    monkeypatch.setattr(results, "RESULTS_JSONL", tmp_path / "results.jsonl")
    monkeypatch.setattr(results, "RESULTS_MD", tmp_path / "RESULTS.md")
    torch.set_num_threads(1)
    out = bench.main(["--small", "--device", "cpu", "--new-tokens", "4", "--repeats", "1", "--batches", "1,2"])
    assert not (tmp_path / "results.jsonl").exists()

    # theirs must have run, with their Triton kernels tried first and their native kernels as the fallback on CPU
    assert "native_autograd" in out["competitor"] and out["triton_failure"]
    # the same weights: float32 logits agree closely, and greedy decoding gives the same tokens
    assert out["logits_diff"] < 1e-4
    assert out["same_tokens"] and all(out["same_tokens"].values())

    figures = {figure["name"]: figure for figure in out["figures"]}
    scale = bench.SMALL
    expected = [bench.decode_name(b, p) for b in (1, 2) for p in scale.decode_prompts]
    expected += [bench.ttft_name(p) for p in scale.ttft_prompts] + [bench.prefill_name(scale.prefill_shape)]
    for name in expected:
        figure = figures[name]
        for side in ("ours", "theirs"):
            value = figure[side]
            assert isinstance(value, float) and value > 0, (name, side, value)
        # plausible magnitudes for a tiny model on one CPU thread: > 1 token/s, TTFT < 10 s
        if figure["unit"] == "ms":
            assert figure["ours"] < 10_000 and figure["theirs"] < 10_000
        else:
            assert figure["ours"] > 1 and figure["theirs"] > 1
        assert figures[name + bench.PEAK_SUFFIX]["ours"] is None  # no GPU memory figure on CPU


def test_benchmark_declares_the_issue_figures():
    names = set(results.EXPECTED_FIGURES)
    assert {bench.decode_name(b, p) for b in (1, 8, 64) for p in (128, 8192)} <= names
    assert {bench.ttft_name(2048), bench.ttft_name(16384), "gpu_7b_prefill_tok_s_8x8192"} <= names
    assert "gpu_7b_prefill_tok_s_8x8192_peak_gb" in names


def test_benchmark_refuses_full_size_on_cpu():
    with pytest.raises(SystemExit):
        bench.run(bench.parse_args(["--device", "cpu"]))


# ---------------------------------------------------------------------------------------------------------------
# fuse_projections
# ---------------------------------------------------------------------------------------------------------------


def test_fuse_projections_keeps_logits_and_generation(tmp_path):
    # with an sLSTM block too: its feed-forward is fused as well
    model = perturbed_model(small_7b_config(block_types=["mlstm", "slstm", "mlstm"]))
    ids = torch.randint(0, 512, (2, 100))  # > chunk_size: chunkwise path
    with torch.no_grad():
        before = model(ids).logits
        steps_before = model.generate(ids[:, :10], max_new_tokens=6, do_sample=False)
    single_names = {name for name, _ in model.named_parameters()}
    assert model.fuse_projections() is model
    assert model.config.weight_mode == "fused"
    names = {name for name, _ in model.named_parameters()}
    assert not any(name.endswith((".q.weight", ".igate_preact.bias", ".proj_up.weight")) for name in names)
    assert any(name.endswith(".qkv_opreact.weight") for name in names)
    assert len(names) < len(single_names)
    with torch.no_grad():
        after = model(ids).logits
        steps_after = model.generate(ids[:, :10], max_new_tokens=6, do_sample=False)
    # Same numbers: each output column of the fused matmul is the dot product of the same row and input as before.
    # Bitwise equality is what we see on CPU, but a BLAS may block a wider matmul differently (another summation
    # order), so allow float32 rounding of a reduction over 128 terms (~1e-6 relative), with margin.
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert torch.equal(steps_after, steps_before)

    # the fused model saves and loads as a fused checkpoint
    model.save_pretrained(tmp_path / "fused")
    loaded = XLSTMForCausalLM.from_pretrained(tmp_path / "fused").eval()
    assert loaded.config.weight_mode == "fused"
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, after, rtol=0, atol=0)
    assert model.fuse_projections() is model  # fused already: a no-op


def test_fuse_projections_with_bias():
    model = perturbed_model(small_7b_config(use_bias=True, num_hidden_layers=2, block_types=["mlstm"] * 2))
    ids = torch.randint(0, 512, (1, 20))
    with torch.no_grad():
        before = model(ids).logits
        after = model.fuse_projections()(ids).logits
    assert model.backbone.blocks[0].mixer.qkv_opreact.bias is not None
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# GPU: the lowered-precision path against the float32 reference
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_bf16_triton_fused_is_as_close_to_float32_as_plain_bf16():
    """bf16 weights, Triton kernels, fused projections vs the float32 native model, prompt and 64 decode steps.

    Tolerance: the yardstick is what plain PyTorch bf16 gives on the same weights, our native backend in bf16
    (library matmuls, PyTorch elementwise ops, float32 states). bf16 keeps 8 mantissa bits, and at this size its
    error is not small: on CPU the native bf16 logits differ from float32 by 0.047 on average and 0.375 at most
    over 1.2M logits of standard deviation 1.3 (transformers' xLSTM in bf16 on the same weights: 0.056 and 0.426).
    On the H200 the Triton path's largest error was 0.427, which an absolute 5e-2 (the first version of this test,
    never run on a GPU before) could not meet. The Triton path rounds at other points than the yardstick (its own
    tiling and accumulation order), so it is not bitwise equal to it; we require its mean error within 1.5x and its
    largest within 2x of the yardstick's, at the prompt and over the decode steps (the states stay float32, so the
    error must not grow with the number of steps).
    """
    device = torch.device("cuda")

    def bf16_model(backend):
        model = perturbed_model(small_7b_config(hidden_size=512, num_heads=4, vocab_size=2048, num_hidden_layers=2,
                                                block_types=["mlstm"] * 2, backend=backend))
        model.load_state_dict(reference.state_dict())
        return model.to(device, torch.bfloat16).fuse_projections()

    reference = perturbed_model(small_7b_config(hidden_size=512, num_heads=4, vocab_size=2048, num_hidden_layers=2,
                                                block_types=["mlstm"] * 2)).to(device)
    fast, plain = bf16_model("triton"), bf16_model("native")
    ids = torch.randint(0, 2048, (2, 300), device=device)

    def errors(model, reference_logits, cache=None, token=None):
        out = model(ids if token is None else token, past_key_values=cache, use_cache=True)
        error = (out.logits.float() - reference_logits).abs()
        return error.mean().item(), error.max().item(), out.past_key_values

    with torch.no_grad():
        ref = reference(ids, use_cache=True)
        assert 0.3 < ref.logits.std().item() < 3
        (fast_mean, fast_max, fast_cache), (plain_mean, plain_max, plain_cache) = (
            errors(fast, ref.logits), errors(plain, ref.logits))
        assert fast_mean <= 1.5 * plain_mean and fast_max <= 2 * plain_max, (fast_mean, fast_max, plain_mean, plain_max)

        ref_cache, token = ref.past_key_values, ref.logits[:, -1:].argmax(-1)
        fast_worst = plain_worst = fast_sum = plain_sum = 0.0
        for _ in range(64):  # both follow the reference's tokens
            logits = reference(token, past_key_values=ref_cache, use_cache=True).logits
            fast_mean, fast_max, fast_cache = errors(fast, logits, fast_cache, token)
            plain_mean, plain_max, plain_cache = errors(plain, logits, plain_cache, token)
            fast_worst, plain_worst = max(fast_worst, fast_max), max(plain_worst, plain_max)
            fast_sum, plain_sum = fast_sum + fast_mean, plain_sum + plain_mean
            token = logits[:, -1:].argmax(-1)
        assert fast_sum <= 1.5 * plain_sum and fast_worst <= 2 * plain_worst, (fast_sum, plain_sum, fast_worst,
                                                                                 plain_worst)
