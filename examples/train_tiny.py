"""Train the bundled tiny xLSTM on the Python standard library and compare it with two baselines, offline.

Reproduces `hub_configs/xlstm-tiny-stdlib/` (in float32; the run it records may have trained in parts, see
`--resume` below):

    python examples/train_tiny.py --num-threads 2

What it does:

1. Corpus: the standard library's own source files (`sysconfig.get_paths()["stdlib"]`). Its top-level `*.py`
   files are split by file into training and held-out files with a fixed hash of the file name (deterministic, no
   shuffling); with `--corpus with-tests` (the default) the `*.py` files of its packages, their test suites and
   applications (IDLE, the turtle demos) join the training files, with `--corpus packages` only those of its
   packages without the test suites and applications (left out, with installed third-party packages and the Python
   2 converter: `EXCLUDED_FOLDERS`), so the held-out files are the same for all corpora.
2. Tokenizer: a byte-level BPE trained with the `tokenizers` library on the training files only.
3. Three models with about the same parameter count, trained with `Trainer` on the same token budget (same
   steps, batch size, sequence length, schedule shape and data order; GPT-2 at its own peak learning rate), and
   then each baseline again for the time the xLSTM's steps take (equal wall-clock: its steps are the xLSTM's
   times the ratio of their step times, measured side by side, the models taking turns; the schedule is scaled to
   those steps):
   - `xlstm`: the paper-style xLSTM with sLSTM and mLSTM blocks (the bundled model),
   - `mlstm`: the same stack with mLSTM blocks only,
   - `gpt2`: a GPT-2-style transformer (`GPT2LMHeadModel`).
4. Held-out bits per byte of each: the summed next-token NLL (nats) of every held-out token, each predicted
   from at most `--block-size` preceding tokens of its own file, divided by the number of UTF-8 bytes of the
   held-out files and by ln 2. The byte-level tokenizer round-trips every file exactly, so this is a fair
   comparison between models (and tokenizers). Measured twice: on the held-out standard-library files, and on
   Python code from outside the standard library (the installed `tqdm` and `packaging` packages, which
   transformers depends on; their versions are recorded). Then once more with the most context each model can
   use: the xLSTM models read each file whole through their recurrent state, GPT-2 slides its window by half.
5. Saves the xLSTM as a hub-ready folder (config.json, generation_config.json, model.safetensors stored in
   `--save-dtype`, loaded in float32; tokenizer files; README.md model card with the measured numbers, those of
   "this model" measured on the folder as saved; `train_tiny_run.json`, the run's settings and every figure) and
   the baselines under `--work-dir`.

Before committing to a budget, time a few steps of each model and extrapolate:

    python examples/train_tiny.py --measure-steps 3

A long run can be stopped (Ctrl-C, or the machine going away) and continued later with the same command plus
`--resume`: finished models are kept in `--work-dir`, the interrupted one continues from its last checkpoint
(every `--save-steps` steps); its training time counts each step once. `--resume` may also add models to a run,
finished or not (`--models` and `--wall-clock-baselines` naming more than before): each model trains from the same
seed on the same tokenizer and data, so the result is the run that would have trained them all at once. Where the
`--work-dir` is gone (a fresh checkout, another machine), `--resume` continues from the hub folder the run's last
finished part wrote: its `train_tiny_run.json`, tokenizer and xLSTM weights are all the rest of the run needs (the
corpus must be the same: same Python, same versions of the outside packages).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import sys
import sysconfig
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import modeling_xlstm  # noqa: F401  (registers the xlstm_stack model type)
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM

REPO = Path(__file__).resolve().parent.parent
EOS = "<|endoftext|>"
MODEL_NAMES = ("xlstm", "mlstm", "gpt2")
BASELINES = ("mlstm", "gpt2")
# training steps per model timed side by side to set the equal wall-clock budgets (after one warm-up step each)
SPEED_STEPS = 5
SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Python code from outside the standard library for a second held-out figure: two pure-Python packages that
# transformers itself depends on, so they are installed wherever this script runs
EXTERNAL_PACKAGES = ("tqdm", "packaging")
CORPORA = ("top-level", "packages", "with-tests")
# The run's state and figures, written into the hub folder beside the card: machine-readable, and what --resume
# continues from when the --work-dir is gone
RUN_FILE = "train_tiny_run.json"
# Folders of the standard library whose files a corpus of its packages leaves out. "packages": test suites (some
# test data in old or deliberately broken syntax, and 1.6x as much code as the library), applications (IDLE, the
# turtle demos), the Python 2 converter with its Python 2 fixtures, and third-party packages installed inside the
# stdlib folder; "with-tests" takes the test suites and the applications too.
EXCLUDED_FOLDERS = {
    "packages": frozenset(
        {"test", "tests", "idlelib", "turtledemo", "lib2to3", "site-packages", "dist-packages", "__pycache__"}
    ),
    "with-tests": frozenset({"lib2to3", "site-packages", "dist-packages", "__pycache__"}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    # hub_configs/ is installed as modeling_xlstm.hub_configs (package data): this folder is the one the wheel ships
    parser.add_argument("--output-dir", default=str(REPO / "hub_configs" / "xlstm-tiny-stdlib"),
                        help="hub-ready folder for the trained xLSTM (replaced if it exists)")
    parser.add_argument("--work-dir", default=str(REPO / "out" / "train_tiny"),
                        help="Trainer output, the two baselines and results.json")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                        help="which models to train (the hub folder is written only when xlstm is among them)")
    parser.add_argument("--corpus", choices=CORPORA, default="with-tests",
                        help="training files: the stdlib's top-level *.py files not held out, and with 'packages' "
                        "also the *.py files of its packages but their test suites, with 'with-tests' those too "
                        "(held out: top-level files only, the same for all)")
    parser.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"],
                        help="the standard-library folder to train and evaluate on")
    parser.add_argument("--held-out-percent", type=int, default=10, help="share of top-level stdlib files held out")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (incl. the EOS token)")
    parser.add_argument("--block-size", type=int, default=256, help="tokens per training sequence / eval context")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=2400,
                        help="optimizer steps per model (the token budget; with the defaults 1.09 epochs of the "
                        "'with-tests' corpus)")
    parser.add_argument("--learning-rate", type=float, default=8e-3,
                        help="peak learning rate (cosine schedule) of the two xLSTM models; at 360 steps the xLSTM "
                        "scored 1.930 / 1.848 / 1.826 held-out bits/byte with 2e-3 / 4e-3 / 8e-3")
    parser.add_argument("--gpt2-learning-rate", type=float, default=2e-3,
                        help="peak learning rate of the GPT-2 baseline; at 720 steps it scored 2.0107 held-out "
                        "bits/byte with 2e-3 and 2.0600 with 8e-3")
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--hidden-size", type=int, default=192, help="width of all three models")
    parser.add_argument("--num-blocks", type=int, default=8, help="xLSTM blocks (both xLSTM models)")
    parser.add_argument("--slstm-at", type=int, nargs="+", default=[1], help="sLSTM block positions of `xlstm`")
    parser.add_argument("--gpt-layers", type=int, default=4, help="GPT-2 layers (chosen to match parameters)")
    parser.add_argument("--chunk-size", type=int, default=64, help="mLSTM chunk size")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--num-threads", type=int, default=max(1, min(4, (os.cpu_count() or 1) // 2)),
                        help="torch CPU threads (on an idle 2-core machine 2 threads trained 1.5-1.7x faster than 1; "
                        "on a busy one 1 thread was 5x faster than 2: the small ops of the recurrences suffer from "
                        "thread synchronisation under contention)")
    parser.add_argument("--wall-clock-baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                        help="baselines trained a second time for as long as the xLSTM's steps take, from step "
                        "times measured side by side at the start of these runs (none: skip)")
    parser.add_argument("--bf16", action="store_true",
                        help="mixed precision: matmuls in bfloat16 under autocast, weights and optimizer in float32 "
                        "(Trainer's bf16=True); on a 2-core CPU with AVX512-BF16 a training step of the bundled "
                        "model took 1.07-1.46 s instead of 1.48-2.06 s in float32 (three in-process A/Bs), at the "
                        "same loss in 150-step trials; on a 2-core AVX2 CPU without native bfloat16 (AMD EPYC) it "
                        "took 25 s instead of 1.6 s")
    parser.add_argument("--save-dtype", choices=sorted(SAVE_DTYPES), default="bfloat16",
                        help="storage dtype of the saved xLSTM's weights (it loads and runs in float32)")
    parser.add_argument("--measure-steps", type=int, default=0,
                        help="only time this many training steps per model, extrapolate to --max-steps, and exit")
    parser.add_argument("--save-steps", type=int, default=100,
                        help="checkpoint every this many optimizer steps (the last one is kept), for --resume")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --work-dir with the same settings: finished models are "
                        "kept, an unfinished one continues from its last checkpoint (a long CPU run can span "
                        "several sessions), and --models / --wall-clock-baselines may add models to it; with no run "
                        "in --work-dir, it continues the one recorded in --output-dir (train_tiny_run.json); without "
                        "it the script refuses a --work-dir holding an unfinished run")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# Options that do not change what a run trains or measures; every other option must match to --resume a run
NOT_RUN_SETTINGS = frozenset({"output_dir", "work_dir", "eval_batch_size", "num_threads", "save_dtype", "measure_steps",
                              "save_steps", "resume"})
# Which models a run trains: --resume may add to them (each model trains from its own seed, so a model added later is
# the one the whole run would have trained) but not drop one trained before
MODEL_LISTS = ("models", "wall_clock_baselines")


def run_settings(args: argparse.Namespace) -> dict:
    return {key: value for key, value in sorted(vars(args).items()) if key not in NOT_RUN_SETTINGS}


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def is_held_out(name: str, percent: int) -> bool:
    """Deterministic split by file name (crc32 is stable across runs, platforms and Python versions)."""
    return zlib.crc32(name.encode("utf-8")) % 100 < percent


def read_stdlib(percent: int, corpus: str, root: Path | None = None) -> tuple[dict[str, str], dict[str, str], Path]:
    """({name: text} of the training files, {name: text} of the held-out files, the stdlib folder).

    Names are paths relative to the folder. Held out: the top-level files that `is_held_out`; with the "packages"
    and "with-tests" corpora the files of packages (outside the corpus's EXCLUDED_FOLDERS) are training files, except
    copies of a held-out file.
    """
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else root
    paths = sorted(root.glob("*.py"))
    if corpus in EXCLUDED_FOLDERS:
        excluded = EXCLUDED_FOLDERS[corpus]
        paths += sorted(p for p in root.glob("*/**/*.py") if not excluded & set(p.relative_to(root).parts))
    train, held_out = {}, {}
    for path in paths:  # top-level files first, so every held-out text is known before the packages' files
        name = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:  # unreadable or not UTF-8: leave it out of both sets
            print(f"skipping {name}: {error}", file=sys.stderr)
            continue
        if not text:
            continue
        if path.parent == root and is_held_out(name, percent):
            held_out[name] = text
        elif text not in held_out.values():
            train[name] = text
    if not train or not held_out:
        raise SystemExit(f"error: found no usable *.py files in {root} for one of the splits")
    return train, held_out, root


def read_external_code() -> tuple[dict[str, str], dict[str, str]]:
    """The `*.py` files of the installed EXTERNAL_PACKAGES ({package/path: text}) and their versions."""
    from importlib import metadata

    texts, versions = {}, {}
    for package in EXTERNAL_PACKAGES:
        distribution = metadata.distribution(package)
        versions[package] = distribution.version
        for file in sorted(str(f) for f in distribution.files or () if str(f).endswith(".py")):
            text = Path(distribution.locate_file(file)).read_text(encoding="utf-8")
            if text:
                texts[file] = text
    if not texts:
        raise SystemExit(f"error: found no Python files of {', '.join(EXTERNAL_PACKAGES)}")
    return texts, versions


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Every training file starts with EOS, so a prompt gets one too: the model reads it as the start of a file.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, tokenizer.token_to_id(EOS))]
    )
    # Left padding: a batch of prompts then ends every row with its last real token, where generate() continues.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        model_max_length=1 << 20,
        padding_side="left",
    )


def encode_files(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each file, each preceded by EOS (the document separator the model sees in training)."""
    encoded = tokenizer(texts, add_special_tokens=False).input_ids
    return [[tokenizer.eos_token_id] + ids for ids in encoded]


def training_blocks(files: list[list[int]], block_size: int) -> list[dict]:
    """Concatenate the files and cut the stream into equal blocks (no padding; labels = inputs, shifted inside
    the model, so the EOS separators are predicted too)."""
    stream = [token for ids in files for token in ids]
    return [
        {"input_ids": torch.tensor(stream[i : i + block_size])}
        for i in range(0, len(stream) - block_size + 1, block_size)
    ]


def collate(examples: list[dict]) -> dict:
    input_ids = torch.stack([example["input_ids"] for example in examples])
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def eval_windows(files: list[list[int]], block_size: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, targets) windows such that every token of every file after its leading EOS is a target exactly
    once, predicted from the preceding tokens of its window (at most block_size of them, same file)."""
    windows = []
    for ids in files:
        for start in range(0, len(ids) - 1, block_size):
            chunk = ids[start : start + block_size + 1]
            windows.append((chunk[:-1], chunk[1:]))
    return windows


def sliding_windows(files: list[list[int]], block_size: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, targets) windows of at most block_size tokens, each starting `stride` tokens after the previous one
    of its file; a window's targets are those no earlier window scored (-100 elsewhere), so every token of every
    file after its leading EOS is a target exactly once, and after a file's first window it is predicted from at
    least block_size - stride preceding tokens."""
    windows = []
    for ids in files:
        scored = 0  # targets ids[1 : scored + 1] are scored by earlier windows
        for start in range(0, len(ids) - 1, stride):
            chunk = ids[start : start + block_size + 1]
            inputs, labels = chunk[:-1], chunk[1:]
            seen = scored - start
            windows.append((inputs, [-100] * seen + labels[seen:]))
            scored = start + len(labels)
            if scored == len(ids) - 1:
                break
    return windows


@torch.inference_mode()
def whole_file_nll(model, files: list[list[int]], batch_size: int, tokens_per_forward: int, pad_id: int,
                   desc: str) -> tuple[float, int]:
    """Summed next-token NLL (nats) and the number of targets, each file read from its start to its end through
    the recurrent state of an xLSTM.

    Files of similar length share right-padded batches (a padded position leaves the state untouched and is not
    scored), read in segments of about `tokens_per_forward` tokens per forward pass, the state carried between them.
    """
    model.eval()
    total, count = 0.0, 0
    files = sorted(files, key=len, reverse=True)
    for first in tqdm(range(0, len(files), batch_size), desc=desc, unit="batch"):
        batch = files[first : first + batch_size]
        width = len(batch[0])
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long, device=model.device)
        mask = torch.zeros((len(batch), width), dtype=torch.long, device=model.device)
        targets = torch.full((len(batch), width), -100, dtype=torch.long, device=model.device)
        for row, file_ids in enumerate(batch):
            ids[row, : len(file_ids)] = torch.tensor(file_ids)
            mask[row, : len(file_ids) - 1] = 1
            targets[row, : len(file_ids) - 1] = torch.tensor(file_ids[1:])
        segment = max(1, tokens_per_forward // len(batch))
        cache = None
        for start in range(0, width - 1, segment):
            window = slice(start, min(start + segment, width - 1))
            output = model(input_ids=ids[:, window], attention_mask=mask[:, window], cache=cache, use_cache=True)
            cache = output.past_key_values
            total += torch.nn.functional.cross_entropy(
                output.logits.float().flatten(0, 1), targets[:, window].flatten(), ignore_index=-100, reduction="sum"
            ).item()
        count += int((targets != -100).sum())
    return total, count


@torch.inference_mode()
def held_out_nll(model, windows, batch_size: int, pad_id: int, desc: str) -> tuple[float, int]:
    """Summed next-token NLL (nats) over all targets, and the number of targets.

    Windows are right-padded: in a causal model padding after a position cannot change its prediction, and the
    padded targets are ignored.
    """
    model.eval()
    total, count = 0.0, 0
    for start in tqdm(range(0, len(windows), batch_size), desc=desc, unit="batch"):
        batch = windows[start : start + batch_size]
        width = max(len(inputs) for inputs, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long, device=model.device)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long, device=model.device)
        targets = torch.full((len(batch), width), -100, dtype=torch.long, device=model.device)
        for row, (inputs, labels) in enumerate(batch):
            input_ids[row, : len(inputs)] = torch.tensor(inputs)
            attention_mask[row, : len(inputs)] = 1
            targets[row, : len(labels)] = torch.tensor(labels)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
        total += torch.nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100, reduction="sum"
        ).item()
        count += int((targets != -100).sum())
    return total, count


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def build_model(name: str, args: argparse.Namespace, tokenizer) -> torch.nn.Module:
    special = dict(
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if name == "gpt2":
        # No pad id: training rows are never padded, yet the EOS separating documents is also the pad token, and
        # GPT-2 would warn about padding without a mask at every run (evaluation passes its mask).
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=args.block_size,
            n_embd=args.hidden_size,
            n_layer=args.gpt_layers,
            n_head=4,
            tie_word_embeddings=False,
            **{**special, "pad_token_id": None},
        )
        model = GPT2LMHeadModel(config)
        # transformers picks the loss by class name (GPT2LMHeadModel matches none, and it warns); the same loss by name
        model.loss_type = "ForCausalLM"
        return model
    config = XLSTMConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_blocks,
        slstm_at=args.slstm_at if name == "xlstm" else [],
        block_style="paper",
        num_heads=4,
        slstm_num_heads=4,
        mlstm_proj_factor=2.0,
        chunk_size=args.chunk_size,
        tie_word_embeddings=False,
        logits_with_loss=False,  # the same loss from the hidden states, faster: the [B, S, V] logits are never held
        **special,
    )
    return XLSTMForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, parameters outside the input embedding, LM head and GPT-2's position table)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    if isinstance(model, GPT2LMHeadModel):
        embedding += model.transformer.wpe.weight.numel()
    return total, total - embedding


def describe(model: torch.nn.Module) -> str:
    config = model.config
    if isinstance(model, GPT2LMHeadModel):
        return (
            f"GPT-2 (GPT2LMHeadModel): {config.n_layer} layers, width {config.n_embd}, {config.n_head} heads, "
            f"MLP 4x, learned positions ({config.n_positions}), untied head"
        )
    kinds = "".join("s" if kind == "slstm" else "m" for kind in config.block_types)
    return (
        f"xLSTM paper-style blocks `{kinds}` (m = mLSTM, s = sLSTM), width {config.hidden_size}, "
        f"mLSTM: {config.num_heads} heads, up-projection {config.mlstm_proj_factor}, chunk size {config.chunk_size}"
        + (f"; sLSTM: {config.slstm_num_heads} heads + gated FFN {config.ffn_proj_factor}" if "s" in kinds else "")
        + "; untied head"
    )


def learning_rate(args: argparse.Namespace, name: str) -> float:
    return args.gpt2_learning_rate if name == "gpt2" else args.learning_rate


def training_arguments(args: argparse.Namespace, run: str, max_steps: int) -> TrainingArguments:
    """Trainer settings of one run: a model (`xlstm`, `mlstm`, `gpt2`), `_wall_clock` for a baseline's second run."""
    return TrainingArguments(
        output_dir=str(Path(args.work_dir) / "trainer" / run),
        per_device_train_batch_size=args.batch_size,
        max_steps=max_steps,
        learning_rate=learning_rate(args, run.removesuffix("_wall_clock")),
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(args.warmup_ratio * max_steps)),
        weight_decay=args.weight_decay,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        logging_steps=10,
        save_strategy="steps",
        save_steps=args.save_steps,  # TrainingClock deletes the older checkpoints once a new one is complete
        report_to=[],
        seed=args.seed,
        data_seed=args.seed,
        dataloader_drop_last=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=args.bf16,
    )


# --------------------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------------------


LABELS = {"xlstm": "xLSTM (sLSTM + mLSTM), this model", "mlstm": "xLSTM, mLSTM blocks only", "gpt2": "GPT-2"}
SHORT_LABELS = {"xlstm": "xLSTM", "mlstm": "mLSTM-only", "gpt2": "GPT-2"}


def long_context_section(info: dict, names: list[str], windowed: Callable[[str], dict]) -> str:
    """The card's comparison of the equal-token models with the most context each can use, beside their figures in
    windows (`windowed(name)`)."""
    results, block = info["results"], info["block_size"]
    rows = ["| model | context | held-out stdlib bits/byte | outside code bits/byte |", "|---|---|---:|---:|"]
    for name in names:
        figures = results[name]["shipped_long_context_eval" if name == "xlstm" else "long_context_eval"]
        context = "whole file" if name != "gpt2" else f"sliding, {block} tokens by {block // 2}"
        change = {s: figures[s]["bits_per_byte"] - windowed(name)[s]["bits_per_byte"] for s in ("stdlib", "external")}
        cells = [f"{figures[s]['bits_per_byte']:.4f} ({change[s]:+.4f})" for s in ("stdlib", "external")]
        rows.append(f"| {LABELS[name]} | {context} | {' | '.join(cells)} |")
    gpt2 = (f" GPT-2, whose positions end at {block}, slides a window of {block} tokens by {block // 2} and scores "
            f"only its new tokens, so after a file's first window every token sees {block // 2} to {block - 1} "
            "preceding tokens." if "gpt2" in names else "")
    return f"""### With more context

The figures above give every model the same view of a file: at most {block} tokens, the context restarting at each
window. A recurrent model is not bound to that, its state carries everything read so far at constant memory: here
the xLSTM models read each held-out file from its start to its end through their recurrent state, although they
were trained on {block}-token sequences only.{gpt2} The same tokens are scored; in
parentheses the change from the figures in windows.

{chr(10).join(rows)}"""


def model_card(info: dict) -> str:
    results = info["results"]
    shipped = results["xlstm"]["shipped_eval"]

    def evaluation(name: str) -> dict:
        """The figures a table shows for a model: for this model, those of the folder as saved."""
        return shipped if name == "xlstm" else results[name]["eval"]

    def bpb(figures: dict, set_name: str, best: float) -> str:
        text = f"{figures[set_name]['bits_per_byte']:.4f}"
        return f"**{text}**" if figures[set_name]["bits_per_byte"] == best else text

    def table(names: list[str], size_columns: tuple[str, str]) -> str:
        """One row per model: two size columns (parameters, or steps and tokens), then the measured figures."""
        evals = {n: evaluation(n) for n in names}
        best = {s: min(e[s]["bits_per_byte"] for e in evals.values()) for s in ("stdlib", "external")}
        rows = [f"| model | {' | '.join(size_columns)} | held-out stdlib bits/byte | bits/token | outside code "
                "bits/byte | training time |", "|---|---:|---:|---:|---:|---:|---:|"]
        for n in names:
            r, e = results[n], evals[n]
            sizes = (r["parameters"], r["non_embedding_parameters"]) if size_columns[0] == "parameters" else \
                (r["steps"], r["tokens"])
            first = f"{sizes[0]:,} | {sizes[1]:,}"
            rows.append(f"| {LABELS[n.removesuffix('_wall_clock')]} | {first} | {bpb(e, 'stdlib', best['stdlib'])} | "
                        f"{e['stdlib']['bits_per_token']:.3f} | {bpb(e, 'external', best['external'])} | "
                        f"{r['train_seconds'] / 60:.1f} min |")
        return "\n".join(rows)

    speeds = ", ".join(f"{SHORT_LABELS[name]} {seconds:.3f} s" for name, seconds in info["step_seconds"].items())
    speed_note = (f" A training step, median of {SPEED_STEPS} per model on one batch, the models taking turns: "
                  f"{speeds}." if speeds else "")
    equal_tokens = [n for n in MODEL_NAMES if n in results]
    equal_time = ["xlstm"] + [n for n in results if n.endswith("_wall_clock")]
    budget = f"{info['token_budget']:,} tokens, {info['max_steps']} steps"
    tokens_table = table(equal_tokens, ("parameters", "non-embedding"))
    if len(equal_tokens) == 1:
        equal_tokens_text = (f"This run trained no baseline (`--models xlstm`), so there is no comparison; at "
                             f"{budget}:\n\n{tokens_table}")
    else:
        ranking = sorted(equal_tokens, key=lambda n: evaluation(n)["stdlib"]["bits_per_byte"])
        if ranking[0] == "xlstm":
            verdict = "At equal tokens the sLSTM + mLSTM xLSTM has the lowest held-out standard-library bits per byte."
        else:
            verdict = (f"At equal tokens the {LABELS[ranking[0]]} baseline has the lowest held-out standard-library "
                       "bits per byte; this card reports the numbers as measured.")
        gpt2_rate = " (GPT-2 at its own peak learning rate)" if "gpt2" in equal_tokens else ""
        equal_tokens_text = (
            f"{'Three' if len(equal_tokens) == 3 else 'Two'} models trained by the same script with the same data, "
            f"data order, optimiser and schedule shape{gpt2_rate}, and about the same parameter count. At equal "
            f"tokens ({budget} each):\n\n{tokens_table}\n\n{verdict}"
        )
    not_run = [LABELS[n] for n in BASELINES if n in results and f"{n}_wall_clock" not in results]
    if len(equal_time) == 1:
        equal_time_text = "No baseline was trained at equal wall-clock in this run (`--wall-clock-baselines`)."
    else:
        equal_time_text = (
            "At equal wall-clock: each baseline trained again, from the same seed, for as many steps as take it as "
            f"long as the xLSTM's {info['max_steps']} steps (the learning-rate schedule scaled to those steps)."
            f"{speed_note}\n\n{table(equal_time, ('steps', 'tokens'))}"
            + (f"\n\nNot trained at equal wall-clock in this run: {', '.join(not_run)}." if not_run else "")
        )
    long_context_text = long_context_section(info, equal_tokens, evaluation)
    d = info["data"]
    split_rule = f"crc32(file name) % 100 < {info['held_out_percent']}"
    if d["corpus"] in EXCLUDED_FOLDERS:
        excluded = ", ".join(f"`{folder}`" for folder in sorted(EXCLUDED_FOLDERS[d["corpus"]]))
        corpus_rule = (f"the training files are the others and the `*.py` files of its packages "
                       f"({d['train_package_files']} files; folders left out: {excluded}; no copy of a held-out file)")
    else:
        corpus_rule = "the training files are the others (the files of its packages are not used)"
    train_bpt = d["train_bytes"] / d["train_tokens"]
    held_out_bpt = d["held_out_bytes"] / d["held_out_tokens"]
    external_bpt = d["external_bytes"] / d["external_tokens"]
    external = ", ".join(f"`{name}` {version}" for name, version in d["external_packages"].items())
    epochs = info["token_budget"] / d["train_tokens"]
    trained_bpb = results["xlstm"]["eval"]["stdlib"]["bits_per_byte"]
    baselines = {name: results[name]["architecture"] if name in results else "not trained" for name in MODEL_NAMES}
    parts = info["parts"]
    resumed = (f" in {len(parts)} parts (interrupted and continued with `--resume`: "
               + "; ".join(f"{p['date']}, {p['minutes']:.1f} min" for p in parts) + ")") if len(parts) > 1 else ""
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- xlstm
- slstm
- mlstm
- code
- python
---

# xlstm-tiny-stdlib

A tiny xLSTM language model (sLSTM and mLSTM blocks, {results['xlstm']['parameters']:,} parameters) trained
from scratch by the `modeling_xlstm` project on the Python standard library's own source files. It exists so
that the package can be tried offline right after installation: it writes Python-looking code, nothing more.
It is not a useful code assistant.

```bash
python -m modeling_xlstm generate "def fibonacci(n):"
```

```python
import modeling_xlstm  # registers the xlstm_stack model type
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling_xlstm.hub_configs import model_path

folder = model_path("xlstm-tiny-stdlib")  # ships with the package; or the path of a copy of this folder
model = AutoModelForCausalLM.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
ids = tokenizer("def fibonacci(n):", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=40, do_sample=False)[0], skip_special_tokens=True))
```

Greedy continuation of `def fibonacci(n):` (40 new tokens) by this folder's weights:

```python
{info['sample']}
```

## Results: held-out bits per byte

{equal_tokens_text}

{equal_time_text}

The figures of this model are those of the weights as stored here ({info['save_dtype']}, loaded in float32);
the float32 weights at the end of training scored {trained_bpb:.4f} on the standard library.

Bits per byte = (summed next-token negative log-likelihood in nats over all tokens of a held-out set) /
(UTF-8 bytes of its files) / ln 2. Two held-out sets: {d['held_out_files']} standard-library files never seen in
training ({d['held_out_bytes']:,} bytes, {d['held_out_tokens']:,} tokens), and Python code from outside the
standard library: the {d['external_files']} `*.py` files of the installed {external} ({d['external_bytes']:,}
bytes, {d['external_tokens']:,} tokens), the same files for every model. Every token is predicted from at most
{info['block_size']} preceding tokens of the same file (files are cut into windows of {info['block_size']} tokens;
the context restarts at each window), identically for all models; the next section gives each model the most
context it can use. Lower is better. One run with one seed; the
spread across seeds was not measured, so read differences of a few hundredths as unresolved.

{long_context_text}

## Training setup

- Corpus: the standard library of Python {d['python_version']} (the folder `sysconfig.get_paths()["stdlib"]`). Its
  top-level `*.py` files are split by file deterministically (held out when `{split_rule}`);
  {corpus_rule}. {d['train_files']} training files ({d['train_bytes']:,} bytes,
  {d['train_tokens']:,} tokens) and {d['held_out_files']} held-out files ({d['held_out_bytes']:,} bytes,
  {d['held_out_tokens']:,} tokens), never seen by the tokenizer or the models in training:
  {', '.join(d['held_out_names'])}.
- Tokenizer: byte-level BPE trained with the `tokenizers` library on the training files only, vocabulary
  {info['vocab_size']:,} (one special token `{EOS}`, used as document separator, BOS, EOS and padding;
  batches of prompts are padded on the left).
  {train_bpt:.2f} bytes per token on the training files, {held_out_bpt:.2f} on the held-out files,
  {external_bpt:.2f} on the outside code.
- This model: {baselines['xlstm']}.
- mLSTM-only baseline: {baselines['mlstm']}.
- GPT-2 baseline: {baselines['gpt2']}.
- Training (`transformers.Trainer`, identical for all models but the learning rate): {info['max_steps']} steps
  of {info['batch_size']} x {info['block_size']} tokens = {info['token_budget']:,} tokens
  ({epochs:.2f} epochs of the training stream) at equal tokens, AdamW (beta2 0.95, weight decay
  {info['weight_decay']}), linear warm-up over the first {info['warmup_ratio']:.0%} of the steps, then cosine
  decay, gradient clipping 1.0, {info['precision']}, seed {info['seed']}. Peak learning rate
  {info['learning_rate']} for the two xLSTM models and {info['gpt2_learning_rate']} for GPT-2 (the rates tried in
  short runs are in the help of the script's `--learning-rate` and `--gpt2-learning-rate`). The xLSTM models
  compute the loss without holding the logits (`logits_with_loss=False`: the same loss, in less time).
- Hardware: {info['hardware']}, torch threads: {info['num_threads']}, shared with other jobs (times are indicative).
- Total wall time of the script: {info['wall_minutes']:.1f} min{resumed}. Date: {info['date']}.
- Command: `{info['command']}` (torch {info['torch_version']}, transformers {info['transformers_version']}).

## Files

`config.json` (`model_type: xlstm_stack`, loaded after `import modeling_xlstm`), `generation_config.json`,
`model.safetensors` ({info['save_dtype']}; `config.json` says float32, so the weights are upcast on load),
`tokenizer.json` + `tokenizer_config.json`. For `trust_remote_code=True`, export a
copy first: `python -m modeling_xlstm.hub_configs export xlstm-tiny-stdlib OUT` writes the remote code and
`auto_map` there.
"""


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------


def step_times(names: list[str], steps: int, args, train_set, tokenizer) -> dict[str, float]:
    """Median seconds of a training step (forward, backward, AdamW) of each model on the first batch, after one
    warm-up step each; the models take turns step by step, so that load from other processes hits all alike."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where Trainer would train
    batch = {key: value.to(device) for key, value in collate(train_set[: args.batch_size]).items()}
    models, optimizers, times = {}, {}, {name: [] for name in names}
    for name in names:
        torch.manual_seed(args.seed)
        models[name] = build_model(name, args, tokenizer).to(device)
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=learning_rate(args, name))
    for step in tqdm(range(steps + 1), desc=f"timing training steps of {', '.join(names)}"):
        for name in names:
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss = models[name](**batch).loss
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:  # the first step of each is a warm-up
                times[name].append(time.perf_counter() - start)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def measure(args, train_set, tokenizer) -> None:
    """Time a few optimizer steps of each model and extrapolate to --max-steps."""
    times = step_times(args.models, args.measure_steps, args, train_set, tokenizer)
    for name, per_step in times.items():
        parameters = count_parameters(build_model(name, args, tokenizer))[0]
        print(f"{name}: {parameters:,} parameters, {per_step:.2f} s/step (median of {args.measure_steps}) -> "
              f"{per_step * args.max_steps / 60:.1f} min for {args.max_steps} steps")
    total = sum(times.values()) * args.max_steps
    print(f"all models: about {total / 60:.1f} min of training for {args.max_steps} steps each (plus evaluation)")


def evaluate(model, eval_sets: dict, args, pad_id: int, name: str, long_context: bool = False) -> dict:
    """Held-out bits per byte (and bits per token) of `model` on each evaluation set ({name: (files' token ids,
    bytes, targets)}). Every token is predicted from at most block_size preceding tokens of its window, the context
    restarting at each window; with `long_context`, from the most context the model can use: an xLSTM reads each
    file whole through its recurrent state, GPT-2 (positions up to block_size) slides its window by half of it."""
    figures = {}
    for set_name, (files, num_bytes, num_tokens) in eval_sets.items():
        desc = f"eval {name} on {set_name}" + (", long context" if long_context else "")
        if long_context and isinstance(model, XLSTMForCausalLM):
            nll, count = whole_file_nll(model, files, args.eval_batch_size, args.eval_batch_size * args.block_size,
                                        pad_id, desc)
        else:
            windows = (sliding_windows(files, args.block_size, args.block_size // 2) if long_context
                       else eval_windows(files, args.block_size))
            nll, count = held_out_nll(model, windows, args.eval_batch_size, pad_id, desc)
        assert count == num_tokens, (count, num_tokens)
        figures[set_name] = {
            "nll_nats": nll,
            "bits_per_token": nll / count / math.log(2),
            "bits_per_byte": nll / num_bytes / math.log(2),
        }
    return figures


def write_json(path: Path, value) -> None:
    """Write `value` as JSON in one step: a reader (or a run resumed after a kill) sees the old file or the new one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2))
    os.replace(partial, path)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


class TrainingClock(TrainerCallback):
    """Seconds spent training, summed over a run's resumed parts: each checkpoint keeps the total at its step, so
    the steps repeated after an interruption (those after the last checkpoint) are counted once.

    Its file, written after everything Trainer saves, marks a checkpoint as complete; only then are the older
    checkpoints deleted, so that an interruption at any moment leaves a complete one. `on_checkpoint` runs after
    each checkpoint (the script saves its progress there)."""

    FILE = "training_seconds.json"

    def __init__(self, checkpoint: str | None, on_checkpoint):
        self.before = json.loads((Path(checkpoint) / self.FILE).read_text()) if checkpoint else 0.0
        self.start = time.perf_counter()
        self.on_checkpoint = on_checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        write_json(folder / self.FILE, self.seconds())
        for older in Path(args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            if checkpoint_step(older) < state.global_step:
                shutil.rmtree(older)
        self.on_checkpoint()


def last_checkpoint(folder: str) -> str | None:
    """The newest complete checkpoint in `folder` (see TrainingClock); one cut short by an interruption is passed
    over."""
    done = [path for path in Path(folder).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (path / TrainingClock.FILE).exists()]
    return str(max(done, key=checkpoint_step)) if done else None


def train_and_evaluate(run: str, max_steps: int, args, tokenizer, train_set, eval_sets: dict, on_checkpoint):
    """Train one model from the same seed for `max_steps` steps (with --resume from the run's last checkpoint, if
    any); (result dict, trained model). `run` is the model's name, with `_wall_clock` for a baseline's second run."""
    name = run.removesuffix("_wall_clock")
    torch.manual_seed(args.seed)
    model = build_model(name, args, tokenizer)
    parameters, non_embedding = count_parameters(model)
    training = training_arguments(args, run, max_steps)
    checkpoint = last_checkpoint(training.output_dir)
    resumed = f", resumed from {Path(checkpoint).name}" if checkpoint else ""
    print(f"\n=== {run}, {max_steps} steps{resumed}: {parameters:,} parameters ({non_embedding:,} non-embedding) ===")
    clock = TrainingClock(checkpoint, on_checkpoint)
    if checkpoint is not None and checkpoint_step(Path(checkpoint)) == max_steps:
        # trained to the end before the interruption: Trainer would take one more step, past the schedule's end
        model = type(model).from_pretrained(checkpoint)
        train_seconds = clock.before
        log_history = json.loads((Path(checkpoint) / TRAINER_STATE_NAME).read_text())["log_history"]
    else:
        trainer = Trainer(model=model, args=training, train_dataset=train_set, data_collator=collate,
                          callbacks=[clock])
        trainer.train(resume_from_checkpoint=checkpoint)
        train_seconds = clock.seconds()
        log_history = trainer.state.log_history
    if isinstance(model, XLSTMForCausalLM):
        model.config.logits_with_loss = True  # saved with the default: users' training steps return logits
    figures = evaluate(model, eval_sets, args, tokenizer.pad_token_id, run)
    logged = [entry["loss"] for entry in log_history if "loss" in entry]
    result = {
        "architecture": describe(model),
        "parameters": parameters,
        "non_embedding_parameters": non_embedding,
        "learning_rate": training.learning_rate,
        "steps": max_steps,
        "tokens": max_steps * args.batch_size * args.block_size,
        "final_train_loss": sum(logged[-5:]) / len(logged[-5:]) if logged else None,  # last 50 steps' mean
        "train_seconds": train_seconds,
        "eval": figures,
    }
    print(f"{run}: held-out {figures['stdlib']['bits_per_byte']:.4f} bits/byte on the standard library, "
          f"{figures['external']['bits_per_byte']:.4f} on outside code; trained in {train_seconds / 60:.1f} min")
    return result, model


def cpu_name() -> str:
    """The processor's model name where the OS tells it (a run's parts may train on different machines)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name()})"
    return f"CPU ({cpu_name()}, {os.cpu_count()} cores)"


def seed_from_output_dir(args: argparse.Namespace, work_dir: Path) -> None:
    """--resume of a run whose --work-dir is gone (a fresh checkout, another machine): the hub folder its last part
    wrote carries what the rest of the run needs. Its RUN_FILE is the run's state with every figure measured so far
    (the baselines' included, so their weights are not needed again), and its tokenizer and xLSTM weights are the
    run's; the weights are stored in --save-dtype, so saving them again in that dtype is exact."""
    out = Path(args.output_dir)
    if not (out / RUN_FILE).exists():
        return
    info = json.loads((out / RUN_FILE).read_text())
    if info.get("save_dtype") != args.save_dtype:
        raise SystemExit(f"error: --resume: {out} stores the xLSTM in {info.get('save_dtype')}; resume with "
                         f"--save-dtype {info.get('save_dtype')} (the float32 weights as trained are not kept)")
    print(f"resuming the run recorded in {out / RUN_FILE} (no run in {work_dir})")
    work_dir.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast.from_pretrained(out).save_pretrained(work_dir / "tokenizer")
    XLSTMForCausalLM.from_pretrained(out).save_pretrained(work_dir / "xlstm")
    write_json(work_dir / "results.json", info)


def previous_run(args: argparse.Namespace, work_dir: Path) -> dict | None:
    """The state of the run to continue with --resume (None for a fresh run); refuses to mix two runs."""
    state_file = work_dir / "results.json"
    if args.resume and not state_file.exists():
        seed_from_output_dir(args, work_dir)
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    if not args.resume:
        if state is not None and state.get("finished") is False:
            raise SystemExit(f"error: {work_dir} holds an unfinished run; pass --resume to continue it, or choose "
                             "another --work-dir")
        return None
    if state is None or "settings" not in state:
        raise SystemExit(f"error: --resume: no run to continue in {work_dir}")
    settings = run_settings(args)
    differing = sorted(key for key, value in settings.items()
                       if key not in MODEL_LISTS and state["settings"].get(key) != value)
    if differing:
        raise SystemExit(f"error: --resume: the run in {work_dir} used other settings ({', '.join(differing)}); "
                         "repeat its options, or start a fresh run in another --work-dir")
    for key in MODEL_LISTS:
        dropped = [name for name in state["settings"][key] if name not in settings[key]]
        if dropped:
            raise SystemExit(f"error: --resume: the run in {work_dir} has {' '.join(dropped)} in its "
                             f"--{key.replace('_', '-')}; name them again (a resumed run may add models, not drop any)")
    if any(settings[key] != state["settings"][key] for key in MODEL_LISTS):
        print(f"resuming with more models: --models {' '.join(settings['models'])}, --wall-clock-baselines "
              f"{' '.join(settings['wall_clock_baselines']) or '(none)'}")
        state["settings"], state["finished"] = settings, False
    return state


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    work_dir = Path(args.work_dir)
    previous = previous_run(args, work_dir)
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)

    train_texts, held_out_texts, stdlib = read_stdlib(args.held_out_percent, args.corpus, Path(args.stdlib))
    external_texts, external_versions = read_external_code()
    if previous is None:
        tokenizer = train_tokenizer(list(train_texts.values()), args.vocab_size)
    else:  # the run's own tokenizer, so that the models trained so far and the data stay consistent
        tokenizer = PreTrainedTokenizerFast.from_pretrained(work_dir / "tokenizer")
    train_files = encode_files(tokenizer, list(train_texts.values()))
    held_out_files = encode_files(tokenizer, list(held_out_texts.values()))
    external_files = encode_files(tokenizer, list(external_texts.values()))
    for name, text in {**held_out_texts, **external_texts}.items():  # bits/byte needs an exact round trip
        if tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) != text:
            raise SystemExit(f"error: the tokenizer does not round-trip {name}")
    train_set = training_blocks(train_files, args.block_size)
    data = {
        "python_version": platform.python_version(),
        "stdlib": str(stdlib),
        "corpus": args.corpus,
        "train_package_files": sum("/" in name for name in train_texts),
        "train_files": len(train_texts),
        "held_out_files": len(held_out_texts),
        "held_out_names": list(held_out_texts),
        "train_bytes": sum(len(t.encode("utf-8")) for t in train_texts.values()),
        "held_out_bytes": sum(len(t.encode("utf-8")) for t in held_out_texts.values()),
        "train_tokens": sum(len(ids) for ids in train_files),
        "held_out_tokens": sum(len(ids) - 1 for ids in held_out_files),
        "external_packages": external_versions,
        "external_files": len(external_texts),
        "external_bytes": sum(len(t.encode("utf-8")) for t in external_texts.values()),
        "external_tokens": sum(len(ids) - 1 for ids in external_files),
    }
    if previous is not None and previous["data"] != data:
        changed = sorted(k for k in data if previous["data"].get(k) != data[k])
        raise SystemExit(f"error: --resume: the corpus differs from the run's ({', '.join(changed)}); resume it "
                         "where it started (same Python, same installed packages)")
    eval_sets = {
        "stdlib": (held_out_files, data["held_out_bytes"], data["held_out_tokens"]),
        "external": (external_files, data["external_bytes"], data["external_tokens"]),
    }
    print(
        f"{data['train_files']} training files ({data['train_bytes']:,} bytes, {data['train_tokens']:,} tokens, "
        f"{len(train_set)} blocks of {args.block_size}); {data['held_out_files']} held-out files "
        f"({data['held_out_bytes']:,} bytes, {data['held_out_tokens']:,} tokens); {data['external_files']} files of "
        f"{', '.join(EXTERNAL_PACKAGES)} ({data['external_bytes']:,} bytes, {data['external_tokens']:,} tokens)"
    )
    if args.measure_steps:
        measure(args, train_set, tokenizer)
        return
    token_budget = args.max_steps * args.batch_size * args.block_size
    if token_budget > len(train_set) * args.block_size:
        print(f"note: the token budget {token_budget:,} exceeds one epoch; Trainer repeats the data")

    work_dir.mkdir(parents=True, exist_ok=True)
    if previous is None:
        tokenizer.save_pretrained(work_dir / "tokenizer")
        state = {"settings": run_settings(args), "data": data, "results": {}, "step_seconds": {}, "parts": [],
                 "finished": False}
    else:
        state = previous
        print(f"resuming: {', '.join(state['results']) or 'no model'} trained before")
    results, step_seconds = state["results"], state["step_seconds"]
    part = None
    if not state["finished"]:  # this invocation trains: a new part of the run
        part = {"date": datetime.date.today().isoformat(), "hardware": hardware(), "num_threads": args.num_threads,
                "minutes": 0.0}
        state["parts"].append(part)

    def save_results() -> None:
        if part is not None:
            part["minutes"] = (time.perf_counter() - wall_start) / 60
        write_json(work_dir / "results.json", state)

    def train(run: str, steps: int) -> None:
        """Train and evaluate a run unless it finished before; its checkpoints go once its results are saved."""
        if run not in results:
            results[run], model = train_and_evaluate(run, steps, args, tokenizer, train_set, eval_sets, save_results)
            model.save_pretrained(work_dir / run)
            save_results()
        shutil.rmtree(work_dir / "trainer" / run, ignore_errors=True)

    save_results()
    for name in args.models:  # equal tokens
        train(name, args.max_steps)
    baselines = [n for n in args.wall_clock_baselines if n in results]
    if "xlstm" in results and baselines:
        # equal wall-clock: as many steps as take a baseline as long as the xLSTM's steps, from step times measured
        # side by side (a ratio that load on a shared machine, or a run spread over days, does not skew)
        untimed = [name for name in baselines if name not in step_seconds]
        if untimed:  # measured once per model, kept for the runs resumed later
            # a baseline added by a later part is timed beside the xLSTM again, and its time scaled by the xLSTM's
            # first timing over its new one: every ratio then still comes from steps taken side by side
            measured = step_times(["xlstm", *untimed], SPEED_STEPS, args, train_set, tokenizer)
            step_seconds.setdefault("xlstm", measured["xlstm"])
            for name in untimed:
                step_seconds[name] = measured[name] * step_seconds["xlstm"] / measured["xlstm"]
            save_results()
        for name in baselines:
            steps = max(1, round(args.max_steps * step_seconds["xlstm"] / step_seconds[name]))
            if steps == args.max_steps:  # the equal-token run already is the equal-time run
                results[f"{name}_wall_clock"] = results[name]
            else:
                train(f"{name}_wall_clock", steps)
    state["finished"] = True
    save_results()

    print("\nheld-out bits per byte (standard library / outside code):")
    for name, r in results.items():
        print(f"  {name:<17} {r['eval']['stdlib']['bits_per_byte']:.4f} / {r['eval']['external']['bits_per_byte']:.4f}"
              f"  ({r['parameters']:,} parameters, {r['steps']} steps, {r['train_seconds'] / 60:.1f} min)")
    if "xlstm" not in results:
        return

    model = XLSTMForCausalLM.from_pretrained(work_dir / "xlstm")  # as trained, float32
    out = Path(args.output_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.config.architectures = ["XLSTMForCausalLM"]
    model.config.backend = "auto"
    model.config.use_cache = True  # training may have switched it off; generation wants the recurrent state
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # no max_new_tokens / max_length: they would override the max_length clients such as lm-eval pass
        do_sample=True,
        temperature=0.7,
        top_k=40,
        top_p=0.95,
    )
    model.to(SAVE_DTYPES[args.save_dtype]).save_pretrained(out)
    # the weights are stored in --save-dtype, the model computes in float32: from_pretrained upcasts them on load
    config_file = out / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "dtype": "float32"}, indent=2) + "\n")
    tokenizer.save_pretrained(out)  # no remote code here: `python -m modeling_xlstm.hub_configs export` writes it

    # every figure of "this model" is measured on the folder as saved (weights rounded to --save-dtype)
    shipped = XLSTMForCausalLM.from_pretrained(out)
    assert shipped.dtype == torch.float32, shipped.dtype
    results["xlstm"]["shipped_eval"] = evaluate(shipped, eval_sets, args, tokenizer.pad_token_id, "saved xlstm")
    results["xlstm"]["shipped_long_context_eval"] = evaluate(shipped, eval_sets, args, tokenizer.pad_token_id,
                                                             "saved xlstm", long_context=True)
    for name in BASELINES:  # as trained (float32); kept in results.json, so a resumed run measures each once
        if name in results and "long_context_eval" not in results[name]:
            baseline = AutoModelForCausalLM.from_pretrained(work_dir / name)
            results[name]["long_context_eval"] = evaluate(baseline, eval_sets, args, tokenizer.pad_token_id, name,
                                                          long_context=True)
            save_results()
    prompt = tokenizer("def fibonacci(n):", return_tensors="pt").input_ids
    with torch.inference_mode():
        output = shipped.generate(prompt, max_new_tokens=40, do_sample=False)
    sample = tokenizer.decode(output[0], skip_special_tokens=True)

    save_results()
    parts = state["parts"]
    info = {
        **state,
        "sample": sample,
        "token_budget": token_budget,
        "block_size": args.block_size,
        "batch_size": args.batch_size,
        "max_steps": args.max_steps,
        "warmup_ratio": args.warmup_ratio,
        "learning_rate": args.learning_rate,
        "gpt2_learning_rate": args.gpt2_learning_rate,
        "weight_decay": args.weight_decay,
        "vocab_size": len(tokenizer),
        "held_out_percent": args.held_out_percent,
        "save_dtype": args.save_dtype,
        "seed": args.seed,
        "hardware": " / ".join(dict.fromkeys(part["hardware"] for part in parts)),
        "num_threads": " / ".join(dict.fromkeys(str(part["num_threads"]) for part in parts)),
        "precision": "bfloat16 mixed precision (float32 weights)" if args.bf16 else "float32",
        "wall_minutes": sum(part["minutes"] for part in parts),
        "date": parts[-1]["date"],
        "command": " ".join(["python", "examples/train_tiny.py"]
                            + [shlex.quote(a) for a in (argv or sys.argv[1:]) if a != "--resume"]),
        "torch_version": torch.__version__,
        "transformers_version": __import__("transformers").__version__,
    }
    (out / "README.md").write_text(model_card(info))
    write_json(work_dir / "results.json", info)
    write_json(out / RUN_FILE, info)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"\nwrote {out} ({size / 1e6:.2f} MB) in {info['wall_minutes']:.1f} min")


if __name__ == "__main__":
    main()
