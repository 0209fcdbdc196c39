"""The bundled tiny model (hub_configs/xlstm-tiny-stdlib) and the `python -m modeling_xlstm` command line."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer
from transformers.utils import logging

import modeling_xlstm  # noqa: F401
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
from modeling_xlstm.__main__ import bundled_model_dir, main

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "hub_configs" / "xlstm-tiny-stdlib"
PROMPT = "def fibonacci(n):"


def cli_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def run_cli(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modeling_xlstm", *args],
        input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd, env=cli_env(),
    )


def bundled_copy(folder: Path, **config_changes) -> Path:
    """The bundled model in `folder` (files linked, not copied), with config.json's values changed."""
    folder.mkdir()
    for path in BUNDLED.iterdir():
        (folder / path.name).symlink_to(path)
    (folder / "config.json").unlink()
    config = json.loads((BUNDLED / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module")
def bundled():
    model = AutoModelForCausalLM.from_pretrained(BUNDLED).eval()
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED)
    return model, tokenizer


def greedy_text(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0], skip_special_tokens=True), output.shape[1] - inputs.input_ids.shape[1]


# --------------------------------------------------------------------------------------------------------------
# The bundled model
# --------------------------------------------------------------------------------------------------------------


def test_bundled_folder_is_complete_and_small():
    names = {path.name for path in BUNDLED.iterdir()}
    for required in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "README.md"):
        assert required in names, f"{required} missing from {BUNDLED}"
    total = sum(path.stat().st_size for path in BUNDLED.iterdir())
    assert total < 10_000_000, f"the bundled model takes {total:,} bytes"
    config = json.loads((BUNDLED / "config.json").read_text())
    assert config["model_type"] == "xlstm_stack"
    assert {"slstm", "mlstm"} <= set(config["block_types"]), config["block_types"]
    # the card reports every model its run trained (the run may still be growing, see train_tiny.py --resume), and
    # at least one baseline beside the xLSTM
    card = (BUNDLED / "README.md").read_text()
    train_tiny = load_train_tiny()
    trained = json.loads((BUNDLED / train_tiny.RUN_FILE).read_text())["results"]
    assert "xlstm" in trained and len(trained) > 1, sorted(trained)
    results = card.split("## Results")[1].split("## Training setup")[0]
    windowed = results.split("### With more context")[0]
    rows = Counter(name.removesuffix("_wall_clock") for name in trained)  # a row per run
    rows["xlstm"] += any(name.endswith("_wall_clock") for name in trained)  # and the xLSTM's in the equal-time table
    for model, count in rows.items():
        assert windowed.count(f"| {train_tiny.LABELS[model]} |") == count, model


def test_bundled_weights_are_stored_in_16_bits_and_run_in_float32(bundled):
    """16-bit storage keeps the folder small; config.json says float32, so from_pretrained upcasts on load."""
    from safetensors import safe_open

    with safe_open(BUNDLED / "model.safetensors", framework="pt") as weights:
        stored = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert stored == {"BF16"}, stored
    assert bundled[0].dtype == torch.float32


def test_cli_finds_the_bundled_model():
    from modeling_xlstm.hub_configs import model_path

    assert bundled_model_dir() == BUNDLED == model_path("xlstm-tiny-stdlib")


def test_bundled_generation_config_leaves_the_length_to_the_caller(bundled):
    """No max_new_tokens/max_length in generation_config.json: it would override the max_length that clients such
    as lm-eval pass to generate()."""
    settings = json.loads((BUNDLED / "generation_config.json").read_text())
    assert "max_new_tokens" not in settings and "max_length" not in settings, settings
    assert settings["do_sample"] is True and settings["top_k"] == 40  # the sampling defaults stay
    model, tokenizer = bundled
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        output = model.generate(ids, max_length=ids.shape[1] + 5, do_sample=False)
    assert output.shape[1] == ids.shape[1] + 5


def test_cli_default_max_new_tokens_is_its_own(bundled):
    from modeling_xlstm.__main__ import build_parser, generation_settings

    args = build_parser().parse_args(["generate", PROMPT])
    assert generation_settings(args, bundled[0]).max_new_tokens == 128
    args = build_parser().parse_args(["generate", PROMPT, "--max-new-tokens", "7"])
    assert generation_settings(args, bundled[0]).max_new_tokens == 7


def test_bundled_model_generates_deterministically(bundled):
    model, tokenizer = bundled
    assert type(model).__name__ == "XLSTMForCausalLM"
    first, new_tokens = greedy_text(model, tokenizer, PROMPT, 20)
    second, _ = greedy_text(model, tokenizer, PROMPT, 20)
    assert first == second
    assert first.startswith(PROMPT)
    assert new_tokens > 0 and first[len(PROMPT):].strip(), f"empty continuation: {first!r}"


def test_bundled_tokenizer_pads_a_batch_of_prompts_for_generation(bundled, caplog):
    """The tokenizer's own padding side lets a batch of prompts go straight to generate(): each row continues as
    that prompt does alone, and transformers has no right-padding to warn about."""
    model, tokenizer = bundled
    prompts = ["def f(x):\n    return", "import os\nimport sys\n\n\nclass Config:\n    def __init__(self"]
    alone = [greedy_text(model, tokenizer, prompt, 8)[0] for prompt in prompts]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert batch.attention_mask[0, 0] == 0, "the shorter prompt should be padded in front"
    transformers_logger = logging.get_logger("transformers")
    transformers_logger.addHandler(caplog.handler)
    try:
        with torch.inference_mode():
            output = model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    finally:
        transformers_logger.removeHandler(caplog.handler)
    assert "padding" not in caplog.text
    assert tokenizer.batch_decode(output, skip_special_tokens=True) == alone


def test_bundled_model_has_learned_python(bundled):
    """A trained model, not random weights: Python source is far more likely than shuffled tokens of it."""
    model, tokenizer = bundled
    text = "import os\n\n\ndef main(argv=None):\n    if argv is None:\n        argv = sys.argv[1:]\n    return 0\n"
    ids = tokenizer(text, return_tensors="pt").input_ids
    order = torch.randperm(ids.shape[1] - 1, generator=torch.Generator().manual_seed(0)) + 1
    shuffled = torch.cat([ids[:, :1], ids[:, order]], dim=1)
    with torch.inference_mode():
        loss = model(ids, labels=ids).loss.item()
        loss_shuffled = model(shuffled, labels=shuffled).loss.item()
    assert loss < 0.6 * loss_shuffled, (loss, loss_shuffled)


# --------------------------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------------------------


def test_cli_generate_greedy_streams_the_models_text(bundled):
    result = run_cli("generate", PROMPT, "--max-new-tokens", "20", "--greedy")
    assert result.returncode == 0, result.stderr
    expected, _ = greedy_text(*bundled, PROMPT, 20)
    assert result.stdout.rstrip("\n") == expected.rstrip("\n")
    continuation = result.stdout[len(PROMPT):]
    assert continuation.strip()
    python_marks = ("(", ")", ":", "=", "return", "self", "if ", "#", "import", '"""')  # '"""': a docstring
    assert any(token in continuation for token in python_marks), (
        f"not Python-like: {continuation!r}"
    )


def test_cli_stdout_holds_only_the_text_and_stderr_stays_empty(bundled):
    """stdout is exactly the generated text; no warnings or log lines on either stream (transformers 5.23 and
    5.24); with --verbose, still no warning about deprecated names, since none may be caused by our code."""
    expected, _ = greedy_text(*bundled, PROMPT, 12)
    result = run_cli("generate", PROMPT, "--max-new-tokens", "12", "--greedy")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"
    assert result.stderr == ""
    verbose = run_cli("generate", PROMPT, "--max-new-tokens", "12", "--greedy", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout == expected + "\n"
    for marker in ("Warning:", "deprecat", "Traceback"):
        assert marker.lower() not in verbose.stderr.lower(), verbose.stderr


def test_cli_exits_quietly_when_the_reader_goes_away():
    """`... generate | head -c 5`: no BrokenPipeError traceback, the exit status of a process killed by SIGPIPE."""
    process = subprocess.Popen(
        [sys.executable, "-m", "modeling_xlstm", "generate", PROMPT, "--greedy", "--max-new-tokens", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=cli_env(),
    )
    assert process.stdout.read(5) == PROMPT[:5].encode()
    process.stdout.close()  # like `head -c 5` exiting
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) in (0, 141), stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr


def test_cli_generate_reads_stdin_and_prompt_files(tmp_path, capsys, bundled):
    prompt = "import os\n\ndef "
    expected, _ = greedy_text(*bundled, prompt, 8)
    file = tmp_path / "prompt.py"
    file.write_text(prompt, encoding="utf-8")
    assert main(["generate", "--prompt-file", str(file), "--greedy", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == expected.rstrip("\n")

    result = run_cli("generate", "-", "--greedy", "--max-new-tokens", "8", "--no-stream", stdin=prompt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == expected.rstrip("\n")


def test_cli_sampling_is_reproducible_with_a_seed(capsys):
    args = ["generate", PROMPT, "--max-new-tokens", "12", "--temperature", "1.0", "--top-k", "50", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert first.startswith(PROMPT)


# --------------------------------------------------------------------------------------------------------------
# Errors: exit status 2 and one line naming the problem and the fix
# --------------------------------------------------------------------------------------------------------------


def test_cli_missing_model_folder_exits_2(tmp_path):
    result = run_cli("generate", PROMPT, "--model", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "does not exist" in lines[0] and "--model" in lines[0]


@pytest.mark.parametrize(
    "present, missing",
    [
        ({"config.json"}, "weights"),
        ({"config.json", "model.safetensors"}, "tokenizer"),
        ({"model.safetensors", "tokenizer.json"}, "config.json"),
    ],
)
def test_cli_incomplete_model_folder(tmp_path, capsys, present, missing):
    for name in present:
        (tmp_path / name).write_text("{}")
    assert main(["generate", PROMPT, "--model", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"no {missing}" in error and "--model" in error, error


@pytest.mark.parametrize("broken, message", [("model.safetensors", "cannot load the model weights"),
                                             ("tokenizer.json", "cannot load the tokenizer")])
def test_cli_unloadable_model_exits_2(tmp_path, capsys, broken, message):
    folder = bundled_copy(tmp_path / "model")
    (folder / broken).unlink()
    (folder / broken).write_bytes(b"garbage")
    assert main(["generate", PROMPT, "--model", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"python -m modeling_xlstm generate: error: {message}") and "\n" not in error, error


@pytest.mark.parametrize(
    "config_text, messages",
    [
        ('{"model_type": "xlstm_stack", "hidden_size": ', ["config.json", "not valid JSON", "line 1"]),
        ('["xlstm_stack"]', ["config.json", "JSON object"]),
        ('{"model_type": "no_such_model"}', ["config.json", "no_such_model"]),
    ],
)
def test_cli_invalid_config_json_is_reported_as_such(tmp_path, capsys, config_text, messages):
    folder = bundled_copy(tmp_path / "model")
    (folder / "config.json").write_text(config_text)
    assert main(["generate", PROMPT, "--model", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "tokenizer" not in error, error
    for message in messages:
        assert message in error, error


def test_cli_config_value_error_names_the_file_and_the_field(tmp_path, capsys):
    folder = bundled_copy(tmp_path / "model", num_heads=5)  # divides neither the width nor the up-projection
    assert main(["generate", PROMPT, "--model", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert "config.json" in error and "num_heads" in error and "tokenizer" not in error, error


def test_cli_config_weights_mismatch_lists_the_tensors(tmp_path):
    folder = bundled_copy(tmp_path / "model", vocab_size=4000)
    result = run_cli("generate", PROMPT, "--model", str(folder))
    assert result.returncode == 2 and result.stdout == ""
    error = result.stderr
    assert "above report" not in error and "Traceback" not in error, error
    assert error.startswith("python -m modeling_xlstm generate: error:"), error
    for name in ("backbone.embeddings.weight", "lm_head.weight"):
        assert name in error, error
    width = json.loads((BUNDLED / "config.json").read_text())["hidden_size"]
    assert f"[4096, {width}]" in error and f"[4000, {width}]" in error and "config.json" in error, error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
def test_cli_cuda_without_a_gpu(capsys):
    assert main(["generate", PROMPT, "--device", "cuda"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no CUDA device" in error and "--device cpu" in error and "cannot load" not in error, error


def test_cli_rejects_an_unknown_device(capsys):
    assert main(["generate", PROMPT, "--device", "gpu0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--device" in error and "gpu0" in error and "cpu" in error, error


@pytest.mark.parametrize(
    "content, message",
    [
        (b"def f():\n    return '\xff\xfe'\n", "not valid UTF-8"),
        (b"\x7fELF\x00\x00binary", "NUL bytes"),
        (b"   \n\t\n", "prompt is empty"),
    ],
)
def test_cli_malformed_prompt_file(tmp_path, capsys, content, message):
    file = tmp_path / "prompt.txt"
    file.write_bytes(content)
    assert main(["generate", "--prompt-file", str(file)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt-file", "/nonexistent/prompt.py"], "does not exist"),
        ([""], "prompt is empty"),
        ([], "no prompt"),
        ([PROMPT, "--prompt-file", "x.py"], "not both"),
        ([PROMPT, "--greedy", "--temperature", "0.5"], "--temperature apply only to sampling"),
    ],
)
def test_cli_prompt_errors(capsys, args, message):
    assert main(["generate", *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_bad_sampling_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", PROMPT, "--top-p", "1.5"])
    assert exit_info.value.code == 2
    assert "--top-p" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# help and convert
# --------------------------------------------------------------------------------------------------------------


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "generate" in out and "convert" in out


def test_cli_convert_help_is_the_converters():
    result = run_cli("convert", "--help")
    assert result.returncode == 0, result.stderr
    assert "SRC" in result.stdout and "OUT" in result.stdout and "--from" in result.stdout


def test_cli_convert_forwards_errors(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "missing.safetensors"), str(out)]) != 0
    assert not out.exists()
    assert capsys.readouterr().err.strip()


# --------------------------------------------------------------------------------------------------------------
# examples/train_tiny.py: the held-out evaluation scores every token exactly once
# --------------------------------------------------------------------------------------------------------------


def load_train_tiny():
    spec = importlib.util.spec_from_file_location("train_tiny", REPO / "examples" / "train_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_evaluated_model() -> XLSTMForCausalLM:
    """A paper-style xLSTM with an sLSTM block (vocab 64, pad id 0) for the evaluation tests; seeds torch with 0."""
    torch.manual_seed(0)
    return XLSTMForCausalLM(XLSTMConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, slstm_at=[1], block_style="paper", num_heads=4,
        slstm_num_heads=4, chunk_size=4, pad_token_id=0,
    ))


def test_eval_windows_cover_every_token_once():
    train_tiny = load_train_tiny()
    files = [[0] + list(range(100, 100 + n)) for n in (1, 7, 8, 9, 30)]
    windows = train_tiny.eval_windows(files, block_size=8)
    targets = [t for _, labels in windows for t in labels]
    assert sorted(targets) == sorted(t for ids in files for t in ids[1:])
    for inputs, labels in windows:
        assert len(inputs) == len(labels) <= 8 and inputs[1:] == labels[:-1]


def test_sliding_windows_score_every_token_once_with_context():
    """GPT-2's long-context evaluation: windows of 8 tokens starting every 4; each target is scored once, by the
    first window that holds it, so after a file's first window it has at least 4 tokens of context."""
    train_tiny = load_train_tiny()
    files = [[0] + list(range(100, 100 + n)) for n in (1, 7, 8, 9, 13, 30)]
    windows = train_tiny.sliding_windows(files, block_size=8, stride=4)
    targets = [t for _, labels in windows for t in labels if t != -100]
    assert sorted(targets) == sorted(t for ids in files for t in ids[1:])
    for inputs, labels in windows:
        assert len(inputs) == len(labels) <= 8
        scored = [position for position, label in enumerate(labels) if label != -100]
        assert scored == list(range(scored[0], len(labels)))  # the window's last positions, each after its context
        if inputs[0] != 0:  # not a file's first window (files start with EOS = 0): at least 4 tokens of context
            assert scored[0] >= 4


def test_whole_file_nll_reads_each_file_through_the_recurrent_state():
    """The xLSTM's long-context evaluation reads files in right-padded batches and segments, the state carried:
    the same NLL as each file alone in one forward pass."""
    train_tiny = load_train_tiny()
    model = tiny_evaluated_model()
    files = [[0] + torch.randint(1, 64, (n,)).tolist() for n in (1, 9, 23)]
    batched, count = train_tiny.whole_file_nll(model, files, batch_size=2, tokens_per_forward=10, pad_id=0,
                                               desc="batches of 2, segments of 5")
    alone = [train_tiny.whole_file_nll(model, [ids], batch_size=1, tokens_per_forward=64, pad_id=0, desc="alone")
             for ids in files]
    assert count == sum(n for _, n in alone) == sum(len(ids) - 1 for ids in files)
    # float32: chunkwise and step forms of the same recurrence sum in different orders, nothing more
    assert math.isclose(batched, sum(nll for nll, _ in alone), rel_tol=1e-5)
    windows, _ = train_tiny.held_out_nll(model, train_tiny.eval_windows(files, 5), 8, pad_id=0, desc="windows")
    assert not math.isclose(batched, windows, rel_tol=1e-3)  # the windows restart the context


def test_packages_corpus_adds_training_files_only(tmp_path):
    """The held-out files are the same top-level files for both corpora; package files (outside the excluded
    folders) only ever join the training files, and a package's copy of a held-out file is left out."""
    train_tiny = load_train_tiny()
    top = {f"module_{i}.py": f"x = {i}\n" for i in range(60)}
    held_name = next(n for n in top if train_tiny.is_held_out(n, 10))
    package = {"pkg/a.py": "a = 1\n", "pkg/sub/b.py": "b = 2\n", "pkg/copy.py": top[held_name],
               "test/test_a.py": "t = 1\n", "pkg/tests/c.py": "c = 3\n", "site-packages/dep/d.py": "d = 4\n",
               "pkg/notes.txt": "not python\n"}
    for name, text in {**top, **package}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    train, held_out, root = train_tiny.read_stdlib(10, "top-level", root=tmp_path)
    assert root == tmp_path and held_name in held_out
    assert set(held_out) == {n for n in top if train_tiny.is_held_out(n, 10)}
    assert set(train) == set(top) - set(held_out)

    train_packages, held_out_packages, _ = train_tiny.read_stdlib(10, "packages", root=tmp_path)
    assert held_out_packages == held_out
    assert set(train_packages) == set(train) | {"pkg/a.py", "pkg/sub/b.py"}

    train_tests, held_out_tests, _ = train_tiny.read_stdlib(10, "with-tests", root=tmp_path)
    assert held_out_tests == held_out
    assert set(train_tests) == set(train_packages) | {"test/test_a.py", "pkg/tests/c.py"}


def test_held_out_split_is_deterministic():
    train_tiny = load_train_tiny()
    names = [f"module_{i}.py" for i in range(1000)]
    held = [n for n in names if train_tiny.is_held_out(n, 10)]
    assert held == [n for n in names if train_tiny.is_held_out(n, 10)]
    assert 50 < len(held) < 150


def test_held_out_nll_is_unchanged_by_batching_and_padding():
    """Windows of different lengths share right-padded batches; each window's NLL must be what it scores alone."""
    train_tiny = load_train_tiny()
    model = tiny_evaluated_model()
    files = [[0] + torch.randint(1, 64, (n,)).tolist() for n in (3, 11, 6)]
    windows = train_tiny.eval_windows(files, block_size=8)
    batched, count = train_tiny.held_out_nll(model, windows, batch_size=len(windows), pad_id=0, desc="batched")
    alone = [train_tiny.held_out_nll(model, [window], batch_size=1, pad_id=0, desc="alone") for window in windows]
    assert count == sum(n for _, n in alone) == sum(len(ids) - 1 for ids in files)
    # float32: the batched and the single-window forward sum in different orders (different shapes), nothing more
    assert math.isclose(batched, sum(nll for nll, _ in alone), rel_tol=1e-5)


@pytest.mark.parametrize("flag, bf16", [([], False), (["--bf16"], True)])
def test_train_tiny_bf16_flag_reaches_trainer(flag, bf16):
    train_tiny = load_train_tiny()
    args = train_tiny.parse_args(flag)
    assert train_tiny.training_arguments(args, "xlstm", max_steps=10).bf16 is bf16


def write_tiny_stdlib(root: Path) -> None:
    """A stand-in standard library: 40 top-level modules (some held out) and a package, a few kB of Python."""
    for i in range(40):
        body = "".join(f"    if n % {k + 2} == {i % (k + 2)}:\n        return value_{k}(n - {k})\n" for k in range(6))
        (root / f"module_{i}.py").write_text(f'"""Module {i}."""\n\n\ndef function_{i}(n):\n{body}    return n\n')
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("from .core import *\n\n__all__ = ['run']\n")


def small_external_code() -> tuple[dict[str, str], dict[str, str]]:
    """A stand-in for the installed tqdm and packaging as the outside-code set of the tests' runs: a few kB instead
    of half a megabyte of tokens, read token by token by the xLSTM's long-context evaluation."""
    texts = {f"outside/module_{i}.py": f"import os\n\n\nclass Thing{i}:\n    size = {i}\n" * (i + 1)
             for i in range(3)}
    return texts, {"outside": "1.0"}


TINY_RUN = ["--vocab-size", "300", "--block-size", "32", "--batch-size", "2", "--max-steps", "6", "--save-steps", "3",
            "--hidden-size", "32", "--num-blocks", "2", "--slstm-at", "1", "--chunk-size", "8", "--gpt-layers", "1",
            "--eval-batch-size", "128", "--num-threads", "1", "--models", "xlstm", "mlstm", "--wall-clock-baselines",
            "mlstm"]


class Interrupted(Exception):
    pass


def test_train_tiny_resumes_an_interrupted_run_as_if_uninterrupted(tmp_path, monkeypatch):
    """A run stopped mid-way and continued with --resume keeps the finished models and the measured step times,
    continues the unfinished run from its last checkpoint, and ends with the figures of the same run done in one go;
    without --resume the script refuses to touch the unfinished run, and with other settings it refuses to resume
    it. A finished run of the xLSTM alone, resumed with more models, becomes the run that trained them all at once;
    resuming with fewer models is refused."""
    train_tiny = load_train_tiny()
    monkeypatch.setattr(train_tiny, "read_external_code", small_external_code)
    # the mLSTM-only stack "trains 1.5x faster": its equal wall-clock run gets 9 steps to the xLSTM's 6
    monkeypatch.setattr(train_tiny, "step_times", lambda names, *args: {"xlstm": 1.5, "mlstm": 1.0})
    (tmp_path / "stdlib").mkdir()
    write_tiny_stdlib(tmp_path / "stdlib")

    def options(name: str, *extra: str) -> list[str]:
        return [*TINY_RUN, "--stdlib", str(tmp_path / "stdlib"), "--work-dir", str(tmp_path / name / "work"),
                "--output-dir", str(tmp_path / name / "hub"), *extra]

    train_tiny.main(options("once"))
    once = json.loads((tmp_path / "once" / "work" / "results.json").read_text())

    class StopAtStep4(train_tiny.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if Path(args.output_dir).name == "mlstm_wall_clock" and state.global_step == 4:
                raise Interrupted

    class InterruptedTrainer(train_tiny.Trainer):
        def __init__(self, *args, callbacks, **kwargs):
            super().__init__(*args, callbacks=[*callbacks, StopAtStep4()], **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train_tiny, "Trainer", InterruptedTrainer)
        with pytest.raises(Interrupted):
            train_tiny.main(options("twice"))
    work = tmp_path / "twice" / "work"
    assert sorted(p.name for p in (work / "trainer").iterdir()) == ["mlstm_wall_clock"]
    assert sorted(p.name for p in (work / "trainer" / "mlstm_wall_clock").iterdir()) == ["checkpoint-3"]
    assert not (tmp_path / "twice" / "hub").exists()
    with pytest.raises(SystemExit, match="--resume"):  # a fresh run would discard the unfinished one
        train_tiny.main(options("twice"))
    with pytest.raises(SystemExit, match="max_steps"):
        train_tiny.main(options("twice", "--resume", "--max-steps", "8"))
    assert (work / "trainer" / "mlstm_wall_clock" / "checkpoint-3").is_dir()
    # a checkpoint whose saving was cut short by the interruption (everything but the training clock): passed over
    shutil.copytree(work / "trainer" / "mlstm_wall_clock" / "checkpoint-3",
                    work / "trainer" / "mlstm_wall_clock" / "checkpoint-5",
                    ignore=shutil.ignore_patterns("training_seconds.json"))

    # as if the first part had trained for 1,000 s before its checkpoint at step 3
    (work / "trainer" / "mlstm_wall_clock" / "checkpoint-3" / "training_seconds.json").write_text("1000.0")
    trained = []

    class RecordingTrainer(train_tiny.Trainer):
        def train(self, resume_from_checkpoint=None, **kwargs):
            trained.append((Path(self.args.output_dir).name, Path(resume_from_checkpoint).name))
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(train_tiny, "Trainer", RecordingTrainer)
    monkeypatch.setattr(train_tiny, "step_times", None)  # measured once, before the interruption
    evaluate = train_tiny.evaluate

    def evaluate_then_stop(model, eval_sets, args, pad_id, name):
        if name == "mlstm_wall_clock":
            raise Interrupted
        return evaluate(model, eval_sets, args, pad_id, name)

    with monkeypatch.context() as patch:  # interrupted again, after its last step
        patch.setattr(train_tiny, "evaluate", evaluate_then_stop)
        with pytest.raises(Interrupted):
            train_tiny.main(options("twice", "--resume"))
    assert trained == [("mlstm_wall_clock", "checkpoint-3")]  # the others had finished before the interruption
    assert sorted(p.name for p in (work / "trainer" / "mlstm_wall_clock").iterdir()) == ["checkpoint-9"]
    train_tiny.main(options("twice", "--resume"))
    twice = json.loads((work / "results.json").read_text())

    assert trained == [("mlstm_wall_clock", "checkpoint-3")]  # trained to the end: loaded, not trained a step more
    assert not (work / "trainer").exists() or not any((work / "trainer").iterdir())  # finished runs' checkpoints go
    assert twice["results"]["mlstm_wall_clock"]["steps"] == 9
    assert len(twice["parts"]) == 3 and twice["finished"] and "--resume" not in twice["command"]
    for run in ("xlstm", "mlstm", "mlstm_wall_clock"):
        for set_name in ("stdlib", "external"):
            # the same steps on the same data from the restored weights, optimizer, schedule and random state, in
            # the same float32 ops: the same numbers
            assert twice["results"][run]["eval"][set_name] == once["results"][run]["eval"][set_name]
    assert twice["sample"] == once["sample"]  # the run's own tokenizer, reloaded from the work dir
    assert twice["results"]["mlstm"]["long_context_eval"] == once["results"]["mlstm"]["long_context_eval"]
    assert "long_context_eval" not in twice["results"]["mlstm_wall_clock"]  # the comparison is at equal tokens
    assert 1000 < twice["results"]["mlstm_wall_clock"]["train_seconds"] < 1000 + 60  # the parts' times add up
    card = (tmp_path / "twice" / "hub" / "README.md").read_text()
    assert "in 3 parts" in card and "xLSTM 1.500 s, mLSTM-only 1.000 s" in card
    # the card describes the two models this run trained, not the three of a full run
    assert "Two models trained by the same script" in card and "GPT-2 at its own" not in card
    assert "Not trained at equal wall-clock" not in card  # the one baseline was
    long_context = card.split("### With more context")[1].split("\n## ")[0]
    for label in ("| xLSTM (sLSTM + mLSTM), this model | whole file |", "| xLSTM, mLSTM blocks only | whole file |"):
        assert long_context.count(label) == 1
    assert "GPT-2" not in long_context

    monkeypatch.setattr(train_tiny, "Trainer", Trainer)
    monkeypatch.setattr(train_tiny, "step_times", lambda names, *args: {"xlstm": 1.5, "mlstm": 1.0})
    common, folders = TINY_RUN[:TINY_RUN.index("--models")], options("grown")[len(TINY_RUN):]
    train_tiny.main([*common, "--models", "xlstm", "--wall-clock-baselines", *folders])
    with pytest.raises(SystemExit, match="xlstm in its --models; name them again"):
        train_tiny.main([*common, "--models", "mlstm", "--wall-clock-baselines", *folders, "--resume"])
    train_tiny.main(options("grown", "--resume"))
    grown = json.loads((tmp_path / "grown" / "work" / "results.json").read_text())
    assert grown["finished"] and grown["settings"] == once["settings"] and len(grown["parts"]) == 2
    for run in ("xlstm", "mlstm", "mlstm_wall_clock"):
        assert grown["results"][run]["eval"] == once["results"][run]["eval"]
    assert "Not trained at equal wall-clock" not in (tmp_path / "grown" / "hub" / "README.md").read_text()


def test_train_tiny_times_a_wall_clock_baseline_added_later_beside_the_xlstm(tmp_path, monkeypatch):
    """A part that adds an equal wall-clock baseline times it beside the xLSTM again (the machine may be busier or
    idler than when the first baselines were timed) and keeps the ratio of that side-by-side timing."""
    train_tiny = load_train_tiny()
    monkeypatch.setattr(train_tiny, "read_external_code", small_external_code)
    timed = []

    def step_times(names, *args):
        timed.append(names)
        # the first part's machine, then one twice as slow: GPT-2's steps take half the xLSTM's there
        return {"xlstm": 1.5, "mlstm": 1.0} if len(timed) == 1 else {"xlstm": 3.0, "gpt2": 1.5}

    monkeypatch.setattr(train_tiny, "step_times", step_times)
    (tmp_path / "stdlib").mkdir()
    write_tiny_stdlib(tmp_path / "stdlib")
    folders = ["--stdlib", str(tmp_path / "stdlib"), "--work-dir", str(tmp_path / "work"), "--output-dir",
               str(tmp_path / "hub")]
    train_tiny.main([*TINY_RUN, *folders])
    common = TINY_RUN[:TINY_RUN.index("--models")]
    train_tiny.main([*common, "--models", "xlstm", "mlstm", "gpt2", "--wall-clock-baselines", "mlstm", "gpt2",
                     *folders, "--resume"])

    assert timed == [["xlstm", "mlstm"], ["xlstm", "gpt2"]]
    run = json.loads((tmp_path / "work" / "results.json").read_text())
    assert run["step_seconds"] == {"xlstm": 1.5, "mlstm": 1.0, "gpt2": 0.75}
    assert run["results"]["mlstm_wall_clock"]["steps"] == 9 and run["results"]["gpt2_wall_clock"]["steps"] == 12


def test_train_tiny_resumes_from_the_hub_folder_when_the_work_dir_is_gone(tmp_path, monkeypatch):
    """The hub folder a part of the run wrote carries the run: --resume with an empty --work-dir (a fresh checkout,
    another machine) adds the baselines to the xLSTM trained before, and ends with the figures of the run done in
    one go; a --save-dtype that would re-round the stored weights is refused before anything is written."""
    train_tiny = load_train_tiny()
    monkeypatch.setattr(train_tiny, "read_external_code", small_external_code)
    monkeypatch.setattr(train_tiny, "step_times", lambda names, *args: {"xlstm": 1.5, "mlstm": 1.0})
    (tmp_path / "stdlib").mkdir()
    write_tiny_stdlib(tmp_path / "stdlib")

    def folders(work: str, hub: str) -> list[str]:
        return ["--stdlib", str(tmp_path / "stdlib"), "--work-dir", str(tmp_path / work), "--output-dir",
                str(tmp_path / hub)]

    train_tiny.main([*TINY_RUN, *folders("once", "once_hub")])
    once = json.loads((tmp_path / "once" / "results.json").read_text())
    common = TINY_RUN[:TINY_RUN.index("--models")]
    train_tiny.main([*common, "--models", "xlstm", "--wall-clock-baselines", *folders("first", "hub")])
    shutil.rmtree(tmp_path / "first")
    with pytest.raises(SystemExit, match="--save-dtype bfloat16"):
        train_tiny.main([*TINY_RUN, *folders("second", "hub"), "--save-dtype", "float32", "--resume"])
    assert not (tmp_path / "second").exists()
    train_tiny.main([*TINY_RUN, *folders("second", "hub"), "--resume"])

    carried = json.loads((tmp_path / "hub" / train_tiny.RUN_FILE).read_text())
    assert carried == json.loads((tmp_path / "second" / "results.json").read_text())
    assert carried["finished"] and carried["settings"] == once["settings"] and len(carried["parts"]) == 2
    for run in ("xlstm", "mlstm", "mlstm_wall_clock"):
        assert carried["results"][run]["eval"] == once["results"][run]["eval"]
    # the weights stored in 16 bits, saved again in 16 bits: the same folder as the one-go run's
    assert carried["results"]["xlstm"]["shipped_eval"] == once["results"]["xlstm"]["shipped_eval"]
    assert carried["sample"] == once["sample"]
    assert (tmp_path / "hub" / "model.safetensors").read_bytes() == (tmp_path / "once_hub" / "model.safetensors"
                                                                     ).read_bytes()
    assert "in 2 parts" in (tmp_path / "hub" / "README.md").read_text()


def test_train_tiny_card_of_a_run_without_baselines_claims_no_comparison(tmp_path, monkeypatch):
    """`--models xlstm` with no wall-clock baselines writes the hub folder with a card that says there was nothing to
    compare with, instead of the full run's "three models" text and a verdict over a single row."""
    train_tiny = load_train_tiny()
    monkeypatch.setattr(train_tiny, "read_external_code", small_external_code)
    write_tiny_stdlib(tmp_path)
    run = [*TINY_RUN[:TINY_RUN.index("--models")], "--models", "xlstm", "--wall-clock-baselines"]
    train_tiny.main([*run, "--stdlib", str(tmp_path), "--work-dir", str(tmp_path / "work"), "--output-dir",
                     str(tmp_path / "hub")])
    card = (tmp_path / "hub" / "README.md").read_text()
    results = card.split("## Results")[1].split("## Training setup")[0]
    assert "This run trained no baseline (`--models xlstm`), so there is no comparison" in results
    assert "No baseline was trained at equal wall-clock in this run" in results
    assert "models trained by the same script" not in results and "has the lowest" not in results
    assert results.split("### With more context")[0].count("| xLSTM (sLSTM + mLSTM), this model |") == 1
    assert results.split("### With more context")[1].count("| xLSTM (sLSTM + mLSTM), this model | whole file |") == 1


def test_train_tiny_measure_steps_times_every_model(tmp_path, capsys):
    train_tiny = load_train_tiny()
    write_tiny_stdlib(tmp_path)
    train_tiny.main([*TINY_RUN, "--stdlib", str(tmp_path), "--work-dir", str(tmp_path / "work"),
                     "--measure-steps", "2"])
    lines = capsys.readouterr().out.splitlines()
    for name in ("xlstm", "mlstm"):
        assert any(line.startswith(f"{name}: ") and " s/step (median of 2) -> " in line for line in lines), lines
    assert not (tmp_path / "work").exists()  # measuring trains nothing


def test_train_tiny_gpt2_baseline_trains_without_transformers_warnings(tmp_path):
    """GPT-2 warned once per run about padding without a mask (its pad id is the EOS between documents) and about
    an unrecognized loss type; a fresh process, so that no earlier warning_once hides one."""
    write_tiny_stdlib(tmp_path)
    run = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_tiny.py"), *TINY_RUN, "--models", "gpt2", "--stdlib",
         str(tmp_path), "--work-dir", str(tmp_path / "work"), "--measure-steps", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gpt2: " in run.stdout
    assert "[transformers]" not in run.stderr and "warn" not in run.stderr.lower(), run.stderr[-3000:]
