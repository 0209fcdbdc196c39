"""Conversion of every public xLSTM checkpoint format, checked against NX-AI's and transformers' own code.

Random reference models (non-zero recurrent kernels and gate weights) are saved in their native formats,
converted, and compared: logits (float32, atol 1e-4), step-by-step logits and greedy generations.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from helpers import randomize_

from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
from modeling_xlstm.conversion import ConversionError, convert_checkpoint
from modeling_xlstm.conversion.formats import (
    NATIVE_KERNELS,
    hf_xlstm_config,
    large_config,
    large_plan,
    paper_config,
    paper_plan,
    to_hf_xlstm_config,
    to_nxai_large_config,
    to_nxai_paper_config,
)

xlstm = pytest.importorskip("xlstm")
pytest.importorskip("mlstm_kernels")

ATOL = 1e-4  # float32; the references differ from us only in summation order (and eps placement, see below)


def tokens(batch: int, length: int, vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------------------
# Paper models: xlstm package xLSTMLMModel, sLSTM cells from the vanilla and the CUDA backend
# --------------------------------------------------------------------------------------------------------------

PAPER_VOCAB = 61
PAPER_EXPERIMENT = {
    "training": {"lr": 1e-3, "num_steps": 10, "lr_decay_until_steps": "${.num_steps}"},
    "model": {
        "num_blocks": 4,
        "embedding_dim": 32,
        "vocab_size": "${dataset.kwargs.vocab_size}",
        "context_length": "${dataset.kwargs.context_length}",
        "mlstm_block": {"mlstm": {"num_heads": 2, "conv1d_kernel_size": 4, "qkv_proj_blocksize": 4, "proj_factor": 2.0}},
        "slstm_block": {
            "slstm": {"num_heads": 2, "backend": "vanilla", "conv1d_kernel_size": 4},
            "feedforward": {"proj_factor": 1.3, "act_fn": "gelu"},
        },
        "slstm_at": [1, 3],
    },
    "dataset": {"name": "form_language", "kwargs": {"vocab_size": PAPER_VOCAB, "context_length": 64}},
}


def paper_model_config(experiment: dict) -> dict:
    model = json.loads(json.dumps(experiment["model"]))
    model["vocab_size"] = experiment["dataset"]["kwargs"]["vocab_size"]
    model["context_length"] = experiment["dataset"]["kwargs"]["context_length"]
    return model


@pytest.fixture(scope="module")
def paper_reference():
    from dacite import Config, from_dict
    from xlstm import xLSTMLMModel, xLSTMLMModelConfig

    torch.manual_seed(0)
    config = from_dict(xLSTMLMModelConfig, paper_model_config(PAPER_EXPERIMENT), config=Config(strict=True))
    return randomize_(xLSTMLMModel(config), scale=0.3).eval()


def cuda_layout_state_dict(model) -> dict[str, torch.Tensor]:
    """The state_dict the CUDA sLSTM backend would save for `model` (built with the vanilla backend): the same
    external parameters in the CUDA cell's internal layout, via its own transforms (skip_backend_init: no GPU)."""
    from xlstm.blocks.slstm.cell import sLSTMCell_cuda

    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    for index, block in enumerate(model.xlstm_block_stack.blocks):
        cell = getattr(block.xlstm, "slstm_cell", None)
        if cell is None:
            continue
        cuda_cell = sLSTMCell_cuda(cell.config, skip_backend_init=True)
        prefix = f"xlstm_block_stack.blocks.{index}.xlstm.slstm_cell."
        kernel = cuda_cell._recurrent_kernel_ext2int(cell.recurrent_kernel.clone())
        bias = cuda_cell._bias_ext2int(cell.bias.clone())
        assert kernel.shape != cell._recurrent_kernel_.shape  # the two layouts really differ
        assert not torch.equal(bias, cell._bias_)
        state_dict[prefix + "_recurrent_kernel_"], state_dict[prefix + "_bias_"] = kernel.contiguous(), bias
    return state_dict


@pytest.fixture(scope="module")
def paper_vanilla_converted(paper_reference, tmp_path_factory):
    """Vanilla layout, .pt state_dict + the experiment YAML (OmegaConf interpolations), converted."""
    src = tmp_path_factory.mktemp("paper_vanilla")
    torch.save(paper_reference.state_dict(), src / "model.pt")
    (src / "experiment.yaml").write_text(yaml.safe_dump(PAPER_EXPERIMENT))
    out = src.parent / (src.name + "_out")
    result = convert_checkpoint(src, out, progress=False)
    assert result.source_format == "nxai-xlstm"
    return out


@pytest.fixture(scope="module")
def paper_cuda_converted(paper_reference, tmp_path_factory):
    """CUDA layout, safetensors + a JSON of xLSTMLMModelConfig fields (backend: cuda), converted."""
    src = tmp_path_factory.mktemp("paper_cuda")
    save_file(cuda_layout_state_dict(paper_reference), src / "model.safetensors")
    model_config = paper_model_config(PAPER_EXPERIMENT)
    model_config["slstm_block"]["slstm"]["backend"] = "cuda"
    (src / "config.json").write_text(json.dumps(model_config))
    out = src.parent / (src.name + "_out")
    convert_checkpoint(src, out, progress=False)
    return out


@pytest.mark.parametrize("layout", ["vanilla", "cuda"])
def test_paper_logits_match(layout, paper_reference, paper_vanilla_converted, paper_cuda_converted):
    folder = paper_vanilla_converted if layout == "vanilla" else paper_cuda_converted
    ours = XLSTMForCausalLM.from_pretrained(folder).eval()
    assert ours.config.block_types == ["mlstm", "slstm", "mlstm", "slstm"]
    x = tokens(2, 20, PAPER_VOCAB)
    with torch.no_grad():
        theirs = paper_reference(x)
        mine = ours(x, use_cache=False).logits
    assert theirs.abs().max() > 1.0  # a non-trivial model
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


def _training_gradients(model, logits_of, x):
    """Loss of next-token prediction on `x` and the gradient of every parameter of `model`, by name."""
    model.zero_grad(set_to_none=True)
    logits = logits_of(x)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _copied_unchanged(plan) -> dict[str, str]:
    """{our parameter: its source} for every tensor the converter's plan copies without a transform."""
    return {recipe.target: recipe.sources[0] for recipe in plan.recipes if len(recipe.sources) == 1 and not recipe.fn}


def _check_training_gradients(theirs, mine, our_to_their_names: dict[str, str]):
    """Same loss, and the same gradient for every pair of parameters the converter copies unchanged."""
    (their_loss, their_grads), (my_loss, my_grads) = theirs, mine
    torch.testing.assert_close(my_loss, their_loss, atol=1e-5, rtol=0)
    embedding = next(name for name in our_to_their_names if name.endswith("embeddings.weight"))
    assert my_grads[embedding].abs().max() > 1e-3  # gradients reach the embedding through every block
    for ours, theirs_name in our_to_their_names.items():
        their_grad = their_grads[theirs_name]
        # 5e-5 of the largest entry. Measured: at most 1.9e-5 in float32 and still 8e-6 with both models in float64
        # (the references add the normalizer's eps at another place than we do), while a wrong term of a block's
        # backward (the soft cap's derivative off by 10 %) moves every one by 1.5e-3 to 1.8e-1 of its largest entry
        torch.testing.assert_close(
            my_grads[ours], their_grad, atol=5e-5 * their_grad.abs().max().item(), rtol=0, msg=lambda m: f"{ours}: {m}"
        )


def test_paper_training_gradients_match(paper_reference, paper_vanilla_converted):
    """What a fine-tuning step sees: our backward (hand-written sLSTM backward, fused gate projections, chunkwise
    mLSTM over several chunks) against autograd through NX-AI's vanilla model, parameter by parameter."""
    ours = XLSTMForCausalLM.from_pretrained(paper_vanilla_converted, chunk_size=8).train()
    x = tokens(2, 20, PAPER_VOCAB)
    theirs = _training_gradients(paper_reference, paper_reference, x)
    mine = _training_gradients(ours, lambda ids: ours(ids, use_cache=False).logits, x)
    source_shapes = {name: tuple(p.shape) for name, p in paper_reference.state_dict().items()}
    copied = _copied_unchanged(paper_plan({"model": paper_model_config(PAPER_EXPERIMENT)}, source_shapes))
    assert any(".mixer.igate." in name for name in copied) and any(".mixer.q_proj." in name for name in copied)
    _check_training_gradients(theirs, mine, copied)


def test_paper_stepwise_logits_and_greedy_generation_match_step_loop(paper_reference, paper_vanilla_converted):
    ours = XLSTMForCausalLM.from_pretrained(paper_vanilla_converted).eval()
    prompt, new = tokens(1, 6, PAPER_VOCAB, seed=3), 12
    with torch.no_grad():
        # their step() loop: feed the prompt one token at a time, then greedy
        state, their_steps, generated = None, [], []
        for t in range(prompt.shape[1]):
            logits, state = paper_reference.step(prompt[:, t : t + 1], state=state)
            their_steps.append(logits)
        for _ in range(new):
            token = their_steps[-1][:, -1].argmax(-1, keepdim=True)
            generated.append(token)
            logits, state = paper_reference.step(token, state=state)
            their_steps.append(logits)
        theirs = torch.cat(generated, dim=1)

        # ours token by token through the cache
        cache, our_steps = None, []
        for t in range(prompt.shape[1]):
            out = ours(prompt[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            our_steps.append(out.logits)
        for token in theirs.unbind(dim=1):
            out = ours(token[:, None], cache=cache, use_cache=True)
            cache = out.cache
            our_steps.append(out.logits)
    torch.testing.assert_close(torch.cat(our_steps, 1), torch.cat(their_steps, 1), atol=ATOL, rtol=0)
    mine = ours.generate(prompt, max_new_tokens=new, do_sample=False)[:, prompt.shape[1] :]
    assert torch.equal(mine, theirs)


def test_paper_facts():
    """The facts the converter relies on, read off the installed xlstm package (fails if a release changes them)."""
    import inspect

    from xlstm.blocks.slstm.layer import sLSTMLayer
    from xlstm.components.ln import LayerNorm

    source = inspect.getsource(sLSTMLayer.forward)
    assert "self.fgate(x_conv)" in source.split("self.igate(x_conv)")[0]  # i is computed by the module named fgate
    norm = LayerNorm(ndim=4)
    assert torch.equal(norm.weight_proxy, torch.ones(4))  # stored 0, applied 1 + weight
    assert norm.eps == 1e-5


# --------------------------------------------------------------------------------------------------------------
# xLSTM 7B architecture: xlstm package xLSTMLarge (single, fused) and transformers' xLSTMForCausalLM
# --------------------------------------------------------------------------------------------------------------

LARGE_VOCAB = 71


@pytest.mark.parametrize("weight_mode", ["single", "fused"])
def test_xlstm_large_logits_and_generation_match(weight_mode, tmp_path):
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    settings = dict(
        embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=LARGE_VOCAB, weight_mode=weight_mode, chunk_size=8,
        mode="inference", return_last_states=True, **NATIVE_KERNELS,
    )
    torch.manual_seed(0)
    reference = randomize_(xLSTMLarge(xLSTMLargeConfig(**settings))).eval()
    src = tmp_path / "src"
    src.mkdir()
    save_file(reference.state_dict(), src / "model.safetensors")
    (src / "config.yaml").write_text(yaml.safe_dump(settings))
    result = convert_checkpoint(src, tmp_path / "out", progress=False)
    assert (result.source_format, result.config.weight_mode) == ("nxai-large", weight_mode)

    ours = XLSTMForCausalLM.from_pretrained(tmp_path / "out").eval()
    x = tokens(2, 21, LARGE_VOCAB)
    with torch.no_grad():
        theirs = reference(x)[0]
        mine = ours(x, use_cache=False).logits
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    prompt = x[:1, :11]
    their_tokens, _ = reference.generate(prompt, max_length=10)
    mine = ours.generate(prompt, max_new_tokens=10, do_sample=False)[:, prompt.shape[1] :]
    assert torch.equal(mine, their_tokens)


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    """A random transformers xLSTMForCausalLM saved in several shards, with tokenizer files beside it.

    hidden_size * qk_dim_factor = 64, a multiple of 64: transformers' own cache crashes otherwise (DESIGN §7).
    """
    from transformers import xLSTMConfig, xLSTMForCausalLM

    torch.manual_seed(0)
    config = xLSTMConfig(vocab_size=83, hidden_size=128, num_hidden_layers=2, num_heads=2, chunk_size=8, **NATIVE_KERNELS)
    reference = randomize_(xLSTMForCausalLM(config)).eval()
    src = tmp_path_factory.mktemp("hf_xlstm")
    reference.save_pretrained(src, max_shard_size="200KB")
    assert (src / "model.safetensors.index.json").is_file()
    (src / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    (src / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<eos>"}))
    return reference, src


def _check_against_hf(reference, ours):
    x = tokens(2, 21, reference.config.vocab_size)
    with torch.no_grad():
        theirs = reference(x, use_cache=False).logits
        mine = ours(x, use_cache=False).logits
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    prompt = x[:1, :11]
    # An explicit all-ones mask: the random prompt may contain pad_token_id (1), which generate() would otherwise
    # read as padding. We honour such a mask (DESIGN §4); transformers' xLSTM ignores masks.
    mask = torch.ones_like(prompt)
    theirs = reference.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=False)
    mine = ours.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=False)
    assert torch.equal(mine, theirs)


def test_hf_xlstm_cli_conversion(hf_reference, tmp_path):
    """The CLI end to end: shards, --verify output, tokenizer files, AutoModelForCausalLM loading."""
    from transformers import AutoModelForCausalLM

    reference, src = hf_reference
    out = tmp_path / "converted"
    run = subprocess.run(
        [sys.executable, "-m", "modeling_xlstm.conversion", str(src), str(out), "--max-shard-size", "150KB",
         "--verify", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "hf-xlstm" in run.stdout and "max |logit difference|" in run.stdout
    diff = float(run.stdout.rsplit(":", 1)[1])
    assert diff < ATOL
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "config.json"):
        assert (out / name).is_file(), name
    assert (out / "tokenizer_config.json").read_text() == (src / "tokenizer_config.json").read_text()
    ours = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(ours, XLSTMForCausalLM)
    _check_against_hf(reference, ours)


def test_hf_xlstm_loads_directly(hf_reference, tmp_path):
    """XLSTMForCausalLM.from_pretrained on a transformers `xlstm` folder: no conversion step; re-saves as ours."""
    reference, src = hf_reference
    ours = XLSTMForCausalLM.from_pretrained(src, backend="native").eval()
    assert ours.config.model_type == "xlstm_stack" and ours.config.backend == "native"
    _check_against_hf(reference, ours)
    ours.save_pretrained(tmp_path / "resaved")
    saved = load_file(tmp_path / "resaved" / "model.safetensors")
    assert any(".mixer." in key for key in saved) and not any("mlstm_layer" in key for key in saved)
    again = XLSTMForCausalLM.from_pretrained(tmp_path / "resaved").eval()
    x = tokens(1, 9, reference.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(again(x).logits, ours(x).logits)


def test_hf_xlstm_training_gradients_match(hf_reference):
    """The backward of the 7B style, soft caps of gates and logits included, against autograd through transformers'
    xLSTM with mlstm_kernels' native chunkwise kernel, for every parameter."""
    reference, src = hf_reference
    ours = XLSTMForCausalLM.from_pretrained(src, backend="native").train()
    assert ours.config.output_logit_soft_cap and ours.config.gate_soft_cap
    x = tokens(2, 21, reference.config.vocab_size)
    theirs = _training_gradients(reference, lambda ids: reference(ids, use_cache=False).logits, x)
    mine = _training_gradients(ours, lambda ids: ours(ids, use_cache=False).logits, x)
    source_shapes = {name: tuple(p.shape) for name, p in reference.state_dict().items()}
    copied = _copied_unchanged(large_plan(reference.config.to_dict(), "hf-xlstm", source_shapes))
    assert len(copied) == len(theirs[1])  # every parameter of theirs has its counterpart
    _check_training_gradients(theirs, mine, copied)


def test_dtype_and_single_shard(hf_reference, tmp_path):
    _, src = hf_reference
    result = convert_checkpoint(src, tmp_path / "bf16", dtype="bfloat16", progress=False)
    assert result.num_shards == 1 and (tmp_path / "bf16" / "model.safetensors").is_file()
    assert {t.dtype for t in load_file(tmp_path / "bf16" / "model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(ConversionError, match="already exists"):
        convert_checkpoint(src, tmp_path / "bf16", progress=False)


def test_interpolations_without_omegaconf():
    from modeling_xlstm.conversion.sources import _resolve_interpolations

    resolved = _resolve_interpolations(PAPER_EXPERIMENT)
    assert resolved["model"]["vocab_size"] == PAPER_VOCAB
    assert resolved["model"]["context_length"] == 64
    assert resolved["training"]["lr_decay_until_steps"] == 10


# --------------------------------------------------------------------------------------------------------------
# Bad input: non-zero exit, one message naming every problem, no OUT folder
# --------------------------------------------------------------------------------------------------------------


def _bad_source(tmp_path: Path, paper_reference, damage: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    state_dict = {k: v.clone() for k, v in paper_reference.state_dict().items()}
    (src / "config.yaml").write_text(yaml.safe_dump(PAPER_EXPERIMENT))
    if damage in ("missing", "all"):
        del state_dict["xlstm_block_stack.blocks.0.xlstm.proj_down.weight"]
        del state_dict["xlstm_block_stack.blocks.1.ffn_norm.weight"]
    if damage in ("extra", "all"):
        state_dict["xlstm_block_stack.blocks.9.xlstm.stray.weight"] = torch.zeros(3)
    if damage in ("shape", "all"):
        state_dict["xlstm_block_stack.blocks.2.xlstm.mlstm_cell.igate.weight"] = torch.zeros(2, 100)
    if damage == "unknown":
        state_dict = {"encoder.layer.0.weight": torch.zeros(4, 4)}
    save_file(state_dict, src / "model.safetensors")
    if damage == "truncated":
        data = (src / "model.safetensors").read_bytes()
        (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    return src


BAD_INPUTS = [
    ("truncated", ["cannot read", "model.safetensors"]),
    ("missing", ["missing tensors (2)", "blocks.0.xlstm.proj_down.weight", "blocks.1.ffn_norm.weight"]),
    ("extra", ["unexpected tensors (1)", "blocks.9.xlstm.stray.weight"]),
    ("shape", ["wrong shape (1)", "mlstm_cell.igate.weight", "[2, 192]", "[2, 100]"]),
    ("unknown", ["unknown checkpoint format", "encoder.layer.0.weight"]),
    ("all", ["missing tensors (2)", "unexpected tensors (1)", "wrong shape (1)", "proj_down.weight", "stray.weight",
             "igate.weight"]),
]


@pytest.mark.parametrize("damage, expected", BAD_INPUTS)
def test_bad_input_fails_cleanly(damage, expected, tmp_path, paper_reference, capsys):
    """The CLI's main() in-process (the `python -m` entry point itself is run in a subprocess below)."""
    from modeling_xlstm.conversion.__main__ import main

    src = _bad_source(tmp_path, paper_reference, damage)
    out = tmp_path / "out"
    status = main([str(src), str(out), "--no-progress"])
    stderr = capsys.readouterr().err
    _check_failure(status, stderr, expected, out, tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "all"])
def test_bad_input_fails_cleanly_subprocess(damage, tmp_path, paper_reference):
    src = _bad_source(tmp_path, paper_reference, damage)
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "modeling_xlstm.conversion", str(src), str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    expected = dict(BAD_INPUTS)[damage]
    _check_failure(run.returncode, run.stderr, expected, out, tmp_path)


def _check_failure(status, stderr, expected, out, tmp_path):
    assert status != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr  # one message ...
    assert "Traceback" not in stderr
    for text in expected:  # ... naming each problem
        assert text in stderr, (text, stderr)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no partial folder either


def test_failure_while_writing_leaves_nothing(tmp_path, paper_reference, monkeypatch):
    """A failure after the checks (here: in the middle of writing shards) removes the partial output."""
    import modeling_xlstm.conversion.convert as convert_module

    src = _bad_source(tmp_path, paper_reference, "none")
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return save_file(*args, **kwargs)

    monkeypatch.setattr(convert_module, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(src, tmp_path / "out", max_shard_size="10KB", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def _dead_pid() -> int:
    """The pid of a process that has exited (so a staging folder named after it is stale)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_a_killed_conversion_leaves_nothing_behind_after_the_next_run(tmp_path, paper_reference):
    """SIGKILL cannot be caught: the staging folders it leaves (a partial output, an OUT parked mid-overwrite) are
    cleaned up by the next conversion to the same OUT, and a parked OUT is put back; a live process's are kept."""
    src = _bad_source(tmp_path, paper_reference, "none")
    out = tmp_path / "out"
    dead = _dead_pid()
    partial = tmp_path / f".out.partial-{dead}-abc"
    (partial / "sub").mkdir(parents=True)
    parked = tmp_path / f".out.old-{dead}-def" / "out"
    parked.mkdir(parents=True)
    (parked / "config.json").write_text("{}")
    alive = tmp_path / f".out.partial-{os.getpid()}-ghi"  # a concurrent conversion of this (live) process
    alive.mkdir()
    with pytest.raises(ConversionError, match="already exists"):  # the parked OUT is back, so OUT exists again
        convert_checkpoint(src, out, progress=False)
    assert (out / "config.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == sorted(["src", "out", alive.name])
    convert_checkpoint(src, out, progress=False, overwrite=True)
    assert (out / "model.safetensors").is_file() and sorted(os.listdir(tmp_path)) == sorted(["src", "out", alive.name])


def test_sigterm_during_conversion_leaves_nothing(tmp_path, paper_reference):
    src = _bad_source(tmp_path, paper_reference, "none")
    out = tmp_path / "out"
    # the child stops itself with SIGTERM while writing its second shard
    script = (
        "import os, signal, sys\n"
        "import modeling_xlstm.conversion.convert as c\n"
        "saved = []\n"
        "real = c.save_file\n"
        "def save(*a, **k):\n"
        "    saved.append(1)\n"
        "    if len(saved) == 2: os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*a, **k)\n"
        "c.save_file = save\n"
        f"c.convert_checkpoint({str(src)!r}, {str(out)!r}, max_shard_size='10KB', progress=False)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 128 + 15, run.stderr
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_verify_raises_no_warning_from_our_code(hf_reference, tmp_path):
    from helpers import no_warnings_from_our_code

    _, src = hf_reference
    with no_warnings_from_our_code():
        result = convert_checkpoint(src, tmp_path / "verified", verify=True, progress=False)
    assert result.max_logit_diff < ATOL


@pytest.mark.parametrize("weight_mode", ["single", "fused"])
def test_large_config_mappings_invert_the_readers(weight_mode):
    ours = XLSTMConfig(
        vocab_size=71, hidden_size=64, num_hidden_layers=3, num_heads=2, block_style="large", chunk_size=8,
        weight_mode=weight_mode, gate_soft_cap=12.0, ffn_proj_factor=2.0, pad_token_id=0,
    )
    back = large_config(to_nxai_large_config(ours), "nxai-large", weight_mode=weight_mode)
    back_hf = hf_xlstm_config(to_hf_xlstm_config(ours), weight_mode=weight_mode)
    for config in (back, back_hf):
        mine, theirs = ours.to_dict(), config.to_dict()
        for key in ("transformers_version", "bos_token_id", "eos_token_id", "pad_token_id"):
            mine.pop(key, None), theirs.pop(key, None)
        assert theirs == mine


def test_paper_config_mapping_inverts_the_reader():
    ours = XLSTMConfig(
        vocab_size=61, hidden_size=32, num_hidden_layers=4, slstm_at=[1, 3], num_heads=2, slstm_num_heads=2,
        block_style="paper", weight_mode="fused", ffn_proj_factor=1.3, ffn_round_up_to_multiple_of=64,
        gate_soft_cap=None, output_logit_soft_cap=None,
    )
    back = paper_config(to_nxai_paper_config(ours)).config
    mine, theirs = ours.to_dict(), back.to_dict()
    for key in ("transformers_version", "eps"):
        mine.pop(key, None), theirs.pop(key, None)
    assert theirs == mine
