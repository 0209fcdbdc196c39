"""`convert_checkpoint`: any public xLSTM checkpoint -> a `save_pretrained` folder of modeling_xlstm.

The conversion streams: tensors are read one at a time from the source (safetensors `safe_open`, or a
memory-mapped `torch.load`), transformed, and collected into an output shard that is written as soon as it
reaches `max_shard_size`. Peak memory is about one output shard, whatever the model size.

Everything is written into a temporary folder next to OUT and renamed to OUT at the end; on any failure (SIGTERM
included) the temporary folder is removed, so a failed conversion leaves nothing behind, and folders left by a
conversion killed outright (SIGKILL) are removed by the next conversion to the same OUT.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import GenerationConfig
from transformers.utils import logging

from modeling_xlstm.configuration_xlstm import XLSTMConfig

from .errors import ConversionError
from .formats import FORMAT_DESCRIPTIONS, FORMATS, Plan, Recipe, build_plan, detect_format
from .sources import TOKENIZER_FILES, TensorSource, find_config_file, find_weight_files, load_config_file

logger = logging.get_logger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_SHARD_SIZE = "5GB"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


@dataclass
class ConversionResult:
    """What `convert_checkpoint` did: the output folder, the detected format, our config, and figures."""

    out: Path
    source_format: str
    config: XLSTMConfig
    num_tensors: int
    num_shards: int
    total_bytes: int
    max_logit_diff: float | None = None


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as "5GB", "500MB", "2GiB"."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?I?B?)\s*", str(size).upper())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ConversionError(f"max_shard_size {size!r} is not a size such as 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConversionError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


# --------------------------------------------------------------------------------------------------------------
# Reading and checking the source
# --------------------------------------------------------------------------------------------------------------


@dataclass
class LoadedSource:
    path: Path
    tensors: TensorSource
    document: dict[str, Any] | None
    config_path: Path | None
    source_format: str
    plan: Plan


def open_source(src: Path, source_format: str = "auto", config_path: Path | None = None) -> LoadedSource:
    """Index the source, detect its format, build the conversion plan and check every tensor against it."""
    if not src.exists():
        raise ConversionError(f"the source {src} does not exist")
    if source_format != "auto" and source_format not in FORMATS:
        raise ConversionError(f"unknown source format {source_format!r}; choose auto or one of {', '.join(FORMATS)}")
    files = find_weight_files(src)
    config_file = find_config_file(src, config_path)
    problems: list[str] = []
    document = None
    if config_file is not None:
        try:
            document = load_config_file(config_file)
        except ConversionError as error:
            problems.extend(error.problems)
    try:
        tensors = TensorSource(files)
    except ConversionError as error:
        raise ConversionError(problems + error.problems) from None
    if problems:
        raise ConversionError(problems)

    if (document or {}).get("model_type") == XLSTMConfig.model_type:
        raise ConversionError(
            f"{src} is already a modeling_xlstm checkpoint (model_type {XLSTMConfig.model_type!r}); "
            "load it with XLSTMForCausalLM.from_pretrained"
        )
    detected = detect_format(document, tensors.names())
    if source_format == "auto":
        if detected is None:
            sample = ", ".join(sorted(tensors.names())[:6])
            known = "; ".join(f"{name}: {text}" for name, text in FORMAT_DESCRIPTIONS.items())
            raise ConversionError(
                f"unknown checkpoint format (tensor names such as {sample or 'none'}"
                f"{'' if config_file is None else f', config {config_file.name}'}); known formats are {known}. "
                "Pass --from to choose one"
            )
        source_format = detected
    elif detected is not None and detected != source_format:
        logger.warning(f"the source looks like {detected!r} but --from {source_format!r} was given; using {source_format!r}")
    if document is None:
        raise ConversionError(
            f"no config found for {src}: a {source_format} checkpoint needs its config "
            "(config.json / config.yaml next to the weights, or --config PATH)"
        )
    plan = build_plan(source_format, document, tensors.shapes)
    check_plan(plan, tensors)
    return LoadedSource(src, tensors, document, config_file, source_format, plan)


def check_plan(plan: Plan, tensors: TensorSource) -> None:
    """One ConversionError listing every missing, unexpected and wrongly shaped source tensor."""
    needed: dict[str, tuple[tuple[int, ...], ...]] = {}
    for recipe in plan.recipes:
        for name, shapes in zip(recipe.sources, recipe.shapes):
            needed[name] = shapes
    missing = sorted(name for name in needed if name not in tensors.shapes)
    unexpected = sorted(name for name in tensors.shapes if name not in needed and name not in plan.ignorable)
    wrong = []
    for name in sorted(needed):
        if name in tensors.shapes and tensors.shapes[name] not in needed[name]:
            expected = " or ".join(str(list(shape)) for shape in needed[name])
            wrong.append(f"{name}: expected shape {expected}, found {list(tensors.shapes[name])}")
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected)}")
    if wrong:
        problems.append(f"tensors with the wrong shape ({len(wrong)}): {'; '.join(wrong)}")
    if problems:
        raise ConversionError(problems, f"the checkpoint does not match its {plan.source_format} config")


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def _make_tensor(recipe: Recipe, tensors: TensorSource, dtype: torch.dtype, expected: tuple[int, ...]) -> torch.Tensor:
    if recipe.synth is not None:
        tensor = recipe.synth()
    else:
        inputs = [tensors.get(name) for name in recipe.sources]
        tensor = recipe.fn(*inputs) if recipe.fn is not None else inputs[0]
    if tuple(tensor.shape) != expected:  # a bug in a recipe, not in the input: the checks above passed
        raise AssertionError(f"{recipe.target}: made shape {tuple(tensor.shape)}, expected {expected}")
    return tensor.to(dtype).contiguous()


def _source_dtype(plan: Plan, tensors: TensorSource) -> torch.dtype:
    """The model dtype when none is asked for: the dtype of the source's embedding."""
    embedding = next(r for r in plan.recipes if r.target == "backbone.embeddings.weight").sources[0]
    return _dtype_of(tensors, embedding, torch.float32)


def write_weights(
    source: LoadedSource, folder: Path, dtype: torch.dtype | None, max_shard_bytes: int, progress: bool = True
) -> tuple[int, int, torch.dtype]:
    """Write the converted tensors as safetensors shards (+ index). Returns (num shards, total bytes, dtype)."""
    from .formats import our_parameter_shapes

    plan, tensors = source.plan, source.tensors
    model_dtype = dtype or _source_dtype(plan, tensors)
    expected = our_parameter_shapes(plan.config)
    targets = {recipe.target for recipe in plan.recipes}
    if targets != set(expected):  # every tensor of our model has exactly one recipe
        raise AssertionError(f"plan/model mismatch: {sorted(targets ^ set(expected))}")

    shard: dict[str, torch.Tensor] = {}
    shard_bytes = total_bytes = 0
    shard_files: list[tuple[Path, list[str]]] = []

    def flush() -> None:
        nonlocal shard, shard_bytes
        if not shard:
            return
        path = folder / f"shard-{len(shard_files):05d}.tmp"
        save_file(shard, str(path), metadata={"format": "pt"})
        shard_files.append((path, list(shard)))
        shard, shard_bytes = {}, 0

    bar = tqdm(plan.recipes, desc=f"converting {source.source_format}", unit="tensor", disable=not progress)
    for recipe in bar:
        if recipe.synth is not None:
            out_dtype = model_dtype
        else:
            out_dtype = dtype or _dtype_of(tensors, recipe.sources[0], model_dtype)
        tensor = _make_tensor(recipe, tensors, out_dtype, expected[recipe.target])
        nbytes = tensor.numel() * tensor.element_size()
        if shard and shard_bytes + nbytes > max_shard_bytes:
            flush()
        shard[recipe.target] = tensor
        shard_bytes += nbytes
        total_bytes += nbytes
    flush()

    count = len(shard_files)
    if count == 1:
        shard_files[0][0].rename(folder / "model.safetensors")
    else:
        weight_map = {}
        for index, (path, names) in enumerate(shard_files, start=1):
            name = f"model-{index:05d}-of-{count:05d}.safetensors"
            path.rename(folder / name)
            weight_map.update({key: name for key in names})
        index_data = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index_data, indent=2) + "\n")
    return count, total_bytes, model_dtype


def _dtype_of(tensors: TensorSource, name: str, default: torch.dtype) -> torch.dtype:
    text = tensors.dtypes.get(name, "").lower()
    mapping = {"f32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
               "f16": torch.float16, "float16": torch.float16, "f64": torch.float64, "float64": torch.float64}
    return mapping.get(text, default)


def write_metadata(source: LoadedSource, folder: Path, dtype: torch.dtype) -> None:
    """config.json, generation_config.json and the source's tokenizer files."""
    config = source.plan.config
    config.architectures = ["XLSTMForCausalLM"]
    config.dtype = dtype
    config.save_pretrained(folder)
    source_folder = source.path if source.path.is_dir() else source.path.parent
    generation_file = source_folder / "generation_config.json"
    if generation_file.is_file():
        shutil.copyfile(generation_file, folder / "generation_config.json")
    else:
        GenerationConfig.from_model_config(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (source_folder / name).is_file():
            shutil.copyfile(source_folder / name, folder / name)


# --------------------------------------------------------------------------------------------------------------
# Staging folders
# --------------------------------------------------------------------------------------------------------------
#
# Output is written into `.OUT.partial-PID-XXXX` next to OUT and renamed at the end; an overwritten OUT is parked
# in `.OUT.old-PID-XXXX` during the swap. A conversion killed with SIGKILL cannot clean up after itself, so the next
# conversion to the same OUT removes the folders of dead processes (and puts back a parked OUT the swap lost).


def _staging_prefix(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders that dead conversions to `out` left next to it; returns what was removed."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(partial|old)-(\d+)-")
    removed = []
    for candidate in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        match = pattern.match(candidate.name)
        if not match or not candidate.is_dir() or _process_alive(int(match.group(2))):
            continue
        parked = candidate / out.name
        if match.group(1) == "old" and parked.is_dir() and not out.exists():
            parked.rename(out)  # killed between parking the old OUT and renaming the new one: put it back
            logger.warning(f"restored {out} from an interrupted overwrite")
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    if removed:
        logger.info(f"removed {len(removed)} staging folder(s) left by interrupted conversions to {out}")
    return removed


@contextlib.contextmanager
def _terminate_as_exception():
    """Turn SIGTERM into an exception while the output is written, so that cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# The entry point
# --------------------------------------------------------------------------------------------------------------


def convert_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike,
    source_format: str = "auto",
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    verify: bool = False,
    config: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert an xLSTM checkpoint into a modeling_xlstm `save_pretrained` folder.

    Args:
        src: the source: a folder (weights + config, e.g. a transformers `xlstm` checkpoint such as
            NX-AI/xLSTM-7b downloaded locally, or an `xlstm` package state_dict with its config file), or a single
            weight file (`.safetensors`, `.pt`, `.bin`, `.pth`, `.ckpt`) whose config is next to it or given as
            `config`.
        out: the output folder; must not exist unless `overwrite`.
        source_format: "auto" (detect), "nxai-xlstm", "nxai-large" or "hf-xlstm".
        dtype: output dtype ("float32", "bfloat16", "float16"); None/"auto" keeps each tensor's dtype.
        max_shard_size: largest output shard, e.g. "5GB" (int: bytes).
        verify: run the source implementation (when installed) on random tokens and compare logits; the maximum
            absolute difference is returned in `ConversionResult.max_logit_diff` and logged.
        config: path of the source config when it is not next to the weights.
        overwrite: replace an existing `out` (only after the new folder has been written completely).
        progress: show a progress bar over the tensors.

    Raises:
        ConversionError: listing every problem found (unreadable files, unknown format, missing, unexpected or
            wrongly shaped tensors, unsupported settings). Nothing is written in that case.
    """
    src, out = Path(src), Path(out)
    clean_stale_staging(out)
    try:
        if out.exists() and not overwrite:
            raise ConversionError(f"the output folder {out} already exists; choose another one or pass overwrite")
        shard_bytes = parse_size(max_shard_size)
        target_dtype = parse_dtype(dtype)
        source = open_source(src, source_format, Path(config) if config is not None else None)
    except ConversionError as error:
        raise error.with_context(f"cannot convert {src}") from None

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out, "partial"), dir=out.parent))
    try:
        with _terminate_as_exception():
            num_shards, total_bytes, model_dtype = write_weights(source, staging, target_dtype, shard_bytes, progress)
            write_metadata(source, staging, model_dtype)
            if out.exists():  # overwrite: swap only now that the new folder is complete
                backup = Path(tempfile.mkdtemp(prefix=_staging_prefix(out, "old"), dir=out.parent))
                out.rename(backup / out.name)
                staging.rename(out)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = ConversionResult(
        out=out,
        source_format=source.source_format,
        config=source.plan.config,
        num_tensors=len(source.plan.recipes),
        num_shards=num_shards,
        total_bytes=total_bytes,
    )
    logger.info(f"converted {src} ({source.source_format}) -> {out}: {result.num_tensors} tensors, {num_shards} shard(s)")
    if verify:
        from .verify import verify_conversion

        result.max_logit_diff = verify_conversion(source, out)
    return result
