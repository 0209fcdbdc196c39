"""The model folders that ship with modeling_xlstm, and the one writer of their remote code.

Installed as `modeling_xlstm.hub_configs` (pyproject.toml maps this folder into the package and ships the folders'
files as package data), so the same folders are found in a source checkout and in an installed wheel:

    import modeling_xlstm  # registers the xlstm_stack model type
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from modeling_xlstm.hub_configs import model_path

    model = AutoModelForCausalLM.from_pretrained(model_path("xlstm-tiny-stdlib"))   # trained, 7 MB
    tokenizer = AutoTokenizer.from_pretrained(model_path("xlstm-tiny-stdlib"))
    config = AutoConfig.from_pretrained(model_path("xlstm-7b"))                     # config only

The shipped folders hold no remote code and no `auto_map`: `import modeling_xlstm` registers the classes. For
`trust_remote_code=True` (a folder copied elsewhere or uploaded to the Hub, loaded without the import), export a
copy first, which writes the remote-code module there and points config.json's `auto_map` at it:

    python -m modeling_xlstm.hub_configs export xlstm-tiny-stdlib my-model     # or: export(...) below

`write_remote_code(folder)` is the only writer of that module (used by `export` and by `XLSTMConfig.save_pretrained`
for configs whose `auto_map` names it); see hub_configs/README.md for why the module looks the way it does and
why no folder keeps a copy.

This module imports nothing heavy (no torch, no transformers), so that the folders can be located cheaply.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = [
    "AUTO_MAP",
    "BUNDLED_MODEL",
    "REMOTE_MODULE",
    "ROOT",
    "export",
    "model_path",
    "names",
    "remote_code_source",
    "write_remote_code",
]

ROOT = Path(__file__).resolve().parent
BUNDLED_MODEL = "xlstm-tiny-stdlib"
"""The trained model that `python -m modeling_xlstm generate` uses by default."""

REMOTE_MODULE = "xlstm_stack_remote"
"""Name of the remote-code module that `write_remote_code` writes into an exported folder. Never `modeling_xlstm`:
a file with the package's name in a folder shadows the installed package for every Python started there."""

AUTO_MAP = {
    "AutoConfig": f"{REMOTE_MODULE}.XLSTMConfig",
    "AutoModel": f"{REMOTE_MODULE}.XLSTMModel",
    "AutoModelForCausalLM": f"{REMOTE_MODULE}.XLSTMForCausalLM",
}

# The two re-export shims that earlier versions wrote next to config.json; `write_remote_code` removes them
# (only when they are exactly such shims), since `modeling_xlstm.py` shadows the package.
_LEGACY_SHIMS = ("configuration_xlstm.py", "modeling_xlstm.py")
_LEGACY_MARKER = "Remote-code entry point (`auto_map` in config.json) for `trust_remote_code=True`."

_REMOTE_CODE = '''\
"""Remote code of an xLSTM model folder: config.json's `auto_map` points here (`trust_remote_code=True`).

Written by `modeling_xlstm.hub_configs.write_remote_code`; do not edit. The model's code is the installed
`modeling_xlstm` package (pip install modeling-xlstm), kernels included; the classes below only subclass the
package's, so that transformers copies this file (and not the package's own modules) next to a model that was
loaded with `trust_remote_code=True` and then saved. The file is deliberately not called `modeling_xlstm.py`:
a file named like the package would shadow it for any Python started in this folder.
"""

try:
    import modeling_xlstm
except ImportError as error:
    raise ImportError(
        "This model is an xLSTM of the modeling_xlstm package, which is not installed: pip install modeling-xlstm"
    ) from error


class XLSTMConfig(modeling_xlstm.XLSTMConfig):
    pass


class XLSTMModel(modeling_xlstm.XLSTMModel):
    config_class = XLSTMConfig


class XLSTMForCausalLM(modeling_xlstm.XLSTMForCausalLM):
    config_class = XLSTMConfig
'''


def names() -> list[str]:
    """The model folders shipped with the package (each holds a config.json), sorted."""
    return sorted(path.name for path in ROOT.iterdir() if (path / "config.json").is_file())


def model_path(name: str = BUNDLED_MODEL) -> Path:
    """The folder of a shipped model, for `from_pretrained`; a ValueError naming the choices if there is none."""
    folder = ROOT / name
    if not (folder / "config.json").is_file():
        raise ValueError(f"no model folder {name!r} ships with modeling_xlstm; choose one of: {', '.join(names())}")
    return folder


def remote_code_source() -> str:
    """The text of `<REMOTE_MODULE>.py`, identical for every exported folder."""
    return _REMOTE_CODE


def write_remote_code(folder: str | os.PathLike) -> Path:
    """Make the model folder `folder` (holding config.json) loadable with `trust_remote_code=True`, in place.

    Writes `xlstm_stack_remote.py`, sets config.json's `auto_map` to it (the rest of config.json is kept, written
    as `save_pretrained` writes it) and removes the re-export shims of earlier versions. Returns the module's path.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist; save the model's config there first")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("model_type") != "xlstm_stack":
        raise ValueError(
            f"{config_file} has model_type {config.get('model_type')!r}, not 'xlstm_stack': the remote code "
            "of modeling_xlstm can only load its own models"
        )
    config["auto_map"] = dict(AUTO_MAP)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    module = folder / f"{REMOTE_MODULE}.py"
    module.write_text(_REMOTE_CODE, encoding="utf-8")
    for name in _LEGACY_SHIMS:
        legacy = folder / name
        if legacy.is_file() and _LEGACY_MARKER in legacy.read_text(encoding="utf-8", errors="replace"):
            legacy.unlink()
    return module


def _model_folder(name_or_dir: str | os.PathLike) -> Path:
    """`name_or_dir` if it is a model folder (holding config.json), else the shipped model of that name; a
    ValueError naming the shipped models if it is neither."""
    folder = Path(name_or_dir)
    if (folder / "config.json").is_file():
        return folder
    if str(name_or_dir) in names():
        return ROOT / str(name_or_dir)
    raise ValueError(
        f"{str(name_or_dir)!r} is neither a model folder (a folder holding config.json) nor a model that ships "
        f"with modeling_xlstm ({', '.join(names())})"
    )


def export(name_or_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy a model folder to `out` and make the copy loadable with `trust_remote_code=True` (`write_remote_code`).

    `name_or_dir` is a model folder (holding config.json) or the name of a shipped model (`names()`); it is left as
    it is. `out` must not exist unless `overwrite`, which replaces it once the copy is complete, and must neither
    be nor hold nor lie in the source. Returns `out`. On an error (ValueError, FileExistsError) nothing is written.
    """
    source = _model_folder(name_or_dir).resolve()
    out = Path(out)
    target = out.resolve()
    if source.is_relative_to(target) or target.is_relative_to(source):
        raise ValueError(f"the output folder {out} and the model folder {source} overlap; choose another output folder")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"the output folder {out} already exists; choose another one or pass --overwrite (overwrite=True)"
            )
        if out.is_symlink() or not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder; remove it or choose another output folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))  # same file system as out
    try:
        staging = holder / target.name
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
        write_remote_code(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(target)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    return out
