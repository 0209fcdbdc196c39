"""Reading a source checkpoint lazily: tensor names and shapes first, tensors one at a time.

A source is a folder or a file. Weights are read from safetensors files (one, several, or a sharded set with an
index) through `safe_open`, so only the tensor being converted is in memory, or from a PyTorch pickle
(`.pt`/`.bin`/`.pth`/`.ckpt`) loaded with `torch.load(weights_only=True, mmap=True)`. Configs are JSON or YAML;
YAML experiment files may use OmegaConf interpolations such as `${dataset.kwargs.vocab_size}`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .errors import ConversionError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".bin", ".pth", ".ckpt")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
# Files in a checkpoint folder that are never the model config.
NON_CONFIG_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "added_tokens.json",
    "vocab.json",
    "preprocessor_config.json",
    "chat_template.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)
# Wrappers that training frameworks put around a state_dict, and prefixes they put on its keys.
_STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "module")
_KEY_PREFIXES = ("module.", "_orig_mod.")


class TensorSource:
    """Name -> shape index over one or more weight files, with lazy access to each tensor."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}
        self._location: dict[str, tuple[int, str]] = {}  # name -> (file index, key in that file)
        self._handles: list[Any] = []
        problems: list[str] = []
        duplicates: list[str] = []
        for index, path in enumerate(files):
            try:
                entries = self._open(path)
            except ConversionError as error:
                problems.extend(error.problems)
                self._handles.append(None)
                continue
            for key, name, shape, dtype in entries:
                if name in self.shapes:
                    duplicates.append(name)
                    continue
                self.shapes[name] = shape
                self.dtypes[name] = dtype
                self._location[name] = (index, key)
        if duplicates:
            problems.append(f"tensors present in more than one weight file: {', '.join(sorted(duplicates))}")
        if problems:
            raise ConversionError(problems)

    def _open(self, path: Path) -> list[tuple[str, str, tuple[int, ...], str]]:
        if path.suffix in SAFETENSORS_SUFFIXES:
            from safetensors import safe_open

            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
                entries = []
                for key in handle.keys():
                    tensor_slice = handle.get_slice(key)
                    entries.append((key, key, tuple(tensor_slice.get_shape()), str(tensor_slice.get_dtype())))
            except Exception as error:  # safetensors raises its own error types for truncated/corrupt files
                raise ConversionError([f"cannot read {path}: {type(error).__name__}: {error}"]) from None
            self._handles.append(handle)
            return entries
        try:
            try:
                loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                loaded = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except Exception as error:
            raise ConversionError([f"cannot read {path}: {type(error).__name__}: {error}"]) from None
        state_dict = _unwrap_state_dict(loaded)
        if state_dict is None:
            raise ConversionError([f"{path} does not contain a state_dict (a mapping of names to tensors)"])
        handle = {}
        entries = []
        for key, tensor in state_dict.items():
            name = key
            for prefix in _KEY_PREFIXES:
                name = name.removeprefix(prefix)
            handle[key] = tensor
            entries.append((key, name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")))
        self._handles.append(handle)
        return entries

    def names(self) -> list[str]:
        return list(self.shapes)

    def get(self, name: str) -> torch.Tensor:
        index, key = self._location[name]
        handle = self._handles[index]
        if isinstance(handle, dict):
            return handle[key]
        return handle.get_tensor(key)

    def file_of(self, name: str) -> Path:
        return self.files[self._location[name][0]]


def _unwrap_state_dict(loaded: Any) -> dict[str, torch.Tensor] | None:
    """The tensor mapping inside what torch.load returned (a bare state_dict or a training checkpoint)."""
    if not isinstance(loaded, dict):
        return None
    if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return loaded
    for wrapper in _STATE_DICT_WRAPPERS:
        inner = loaded.get(wrapper)
        if isinstance(inner, dict):
            found = _unwrap_state_dict(inner)
            if found is not None:
                return found
    return None


def find_weight_files(src: Path) -> list[Path]:
    """The weight files of a source (a file, or the weight files of a folder, honouring a shard index)."""
    if src.is_file():
        return [src]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = src / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except Exception as error:
                raise ConversionError([f"cannot read the shard index {index_path}: {error}"]) from None
            files = sorted({src / name for name in weight_map.values()})
            missing = [str(path) for path in files if not path.is_file()]
            if missing:
                raise ConversionError([f"shard files named in {index_path} are missing: {', '.join(missing)}"])
            return files
    safetensors = sorted(p for p in src.iterdir() if p.suffix in SAFETENSORS_SUFFIXES and p.is_file())
    if safetensors:
        return safetensors
    pickles = sorted(p for p in src.iterdir() if p.suffix in TORCH_SUFFIXES and p.is_file())
    if len(pickles) > 1:
        raise ConversionError(
            [f"{src} holds several PyTorch weight files ({', '.join(p.name for p in pickles)}); pass the one to convert"]
        )
    if not pickles:
        raise ConversionError([f"no weight files (*.safetensors, *.pt, *.bin, *.pth, *.ckpt) found in {src}"])
    return pickles


def find_config_file(src: Path, explicit: Path | None = None) -> Path | None:
    """The model config of a source: `explicit`, else config.json / config.yaml (or a single other YAML/JSON)."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConversionError([f"config file {explicit} does not exist"])
        return explicit
    folder = src if src.is_dir() else src.parent
    for name in ("config.json", "config.yaml", "config.yml"):
        if (folder / name).is_file():
            return folder / name
    candidates = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in CONFIG_SUFFIXES and p.name not in NON_CONFIG_FILES and not p.name.startswith(".")
    ]
    return candidates[0] if len(candidates) == 1 else None


def load_config_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML config as a plain dict, with `${...}` interpolations resolved."""
    try:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _load_yaml(text)
    except ConversionError:
        raise
    except Exception as error:
        raise ConversionError([f"cannot read the config {path}: {type(error).__name__}: {error}"]) from None
    if not isinstance(data, dict):
        raise ConversionError([f"the config {path} is not a mapping of settings"])
    return data


def _load_yaml(text: str) -> dict[str, Any]:
    try:
        from omegaconf import OmegaConf
    except ImportError:
        import yaml

        return _resolve_interpolations(yaml.safe_load(text))
    config = OmegaConf.create(text)
    return OmegaConf.to_container(config, resolve=True)


_INTERPOLATION = re.compile(r"\$\{([^${}]+)\}")


def _resolve_interpolations(data: Any) -> Any:
    """Resolve OmegaConf-style `${a.b.c}` (absolute) and `${.b}` (relative) references without OmegaConf."""

    def lookup(path: str, parents: list[Any]) -> Any:
        if path.startswith("."):
            depth = len(path) - len(path.lstrip("."))
            node = parents[-depth] if depth <= len(parents) else None
            parts = path.lstrip(".").split(".")
        else:
            node, parts = data, path.split(".")
        for part in parts:
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise ConversionError([f"cannot resolve the interpolation ${{{path}}} in the config"])
        return resolve(node, parents)

    def resolve(node: Any, parents: list[Any]) -> Any:
        if isinstance(node, dict):
            return {key: resolve(value, parents + [node]) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value, parents) for value in node]
        if isinstance(node, str):
            match = _INTERPOLATION.fullmatch(node.strip())
            if match:
                return lookup(match.group(1).strip(), parents)
            return _INTERPOLATION.sub(lambda m: str(lookup(m.group(1).strip(), parents)), node)
        return node

    return resolve(data, [])
