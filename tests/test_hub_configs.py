"""hub_configs/: every published model's config builds (on the meta device) a model with exactly the parameter
count of NX-AI's reference implementation built from the same settings, the folders are up to date, ship as
package data and hold no remote code; an exported copy (`python -m modeling_xlstm.hub_configs export`) loads with
trust_remote_code=True without the package imported first, and its remote code does not shadow the package."""

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
from modeling_xlstm.conversion.formats import to_nxai_large_config, to_nxai_paper_config
from modeling_xlstm.hub_configs.make_hub_configs import published_models, write_folder
from modeling_xlstm.hub_configs import (
    AUTO_MAP,
    BUNDLED_MODEL,
    REMOTE_MODULE,
    export,
    model_path,
    names,
    remote_code_source,
    write_remote_code,
)
from modeling_xlstm.hub_configs.__main__ import main as hub_configs_main

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "hub_configs"

MODELS = published_models()
FOLDERS = names()  # the published configs and the bundled xlstm-tiny-stdlib
EXPORT = [sys.executable, "-m", "modeling_xlstm.hub_configs", "export"]


def clean_env(**extra) -> dict:
    """The environment of a fresh interpreter: no PYTHONPATH, so modeling_xlstm is the installed package."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() lists a tied weight once


def reference_paper(config: XLSTMConfig) -> torch.nn.Module:
    from dacite import Config, from_dict
    from xlstm import xLSTMLMModel, xLSTMLMModelConfig

    return xLSTMLMModel(from_dict(xLSTMLMModelConfig, to_nxai_paper_config(config), config=Config(strict=True)))


def reference_large(config: XLSTMConfig) -> torch.nn.Module:
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    return xLSTMLarge(xLSTMLargeConfig(**to_nxai_large_config(config)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_matches_reference(name):
    pytest.importorskip("xlstm")
    config = XLSTMConfig.from_pretrained(HUB / name)
    with torch.device("meta"):
        ours = XLSTMForCausalLM(config)
        theirs = reference_paper(config) if config.block_style == "paper" else reference_large(config)
    assert count(ours) == count(theirs)
    # and the parameter shapes agree tensor by tensor (as multisets: the names differ)
    assert sorted(tuple(p.shape) for p in ours.parameters()) == sorted(
        tuple(p.shape) for p in _external_parameters(theirs)
    )


def _external_parameters(model: torch.nn.Module):
    """The reference's parameters with sLSTM cells in the external layout [NH, DH, 4, DH] / [NH, 4, DH]."""
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "_recurrent_kernel_":
                yield module.recurrent_kernel
            elif name == "_bias_":
                yield module.bias
            else:
                yield param


def test_7b_matches_transformers_xlstm_defaults():
    """The 7B's dims are transformers' xLSTMConfig defaults (which are those of NX-AI/xLSTM-7b)."""
    from transformers import xLSTMConfig

    theirs = xLSTMConfig()
    ours = XLSTMConfig.from_pretrained(HUB / "xlstm-7b")
    for our_name, their_name in [
        ("vocab_size", "vocab_size"),
        ("hidden_size", "hidden_size"),
        ("num_hidden_layers", "num_hidden_layers"),
        ("num_heads", "num_heads"),
        ("qk_dim_factor", "qk_dim_factor"),
        ("v_dim_factor", "v_dim_factor"),
        ("ffn_proj_factor", "ffn_proj_factor"),
        ("ffn_round_up_to_multiple_of", "ffn_round_up_to_multiple_of"),
        ("gate_soft_cap", "gate_soft_cap"),
        ("output_logit_soft_cap", "output_logit_soft_cap"),
        ("norm_eps", "norm_eps"),
        ("eps", "eps"),
        ("chunk_size", "chunk_size"),
        ("use_bias", "use_bias"),
        ("weight_mode", "weight_mode"),
        ("pad_token_id", "pad_token_id"),
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
    ]:
        assert getattr(ours, our_name) == getattr(theirs, their_name), our_name
    assert ours.block_types == ["mlstm"] * 32


def test_every_model_folder_is_listed():
    assert set(FOLDERS) == set(MODELS) | {"xlstm-tiny-stdlib"}
    assert model_path("xlstm-7b") == HUB / "xlstm-7b"
    with pytest.raises(ValueError, match="xlstm-tiny-stdlib"):
        model_path("xlstm-70b")


@pytest.mark.parametrize("name", FOLDERS)
def test_no_model_folder_holds_remote_code(name):
    """The shipped folders load after `import modeling_xlstm`; the remote-code module and the auto_map are written
    only into exported copies (DESIGN.md section 3: one writer, no committed copy per folder)."""
    folder = HUB / name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "xlstm_stack"
    assert "auto_map" not in config
    assert not list(folder.glob("*.py"))
    assert not [path for path in folder.iterdir() if path.is_dir()]


@pytest.mark.parametrize("name", FOLDERS)
def test_no_file_in_a_model_folder_shadows_a_module(name):
    """Python puts the working directory first on sys.path: no file or folder there may be named like anything
    importable (the package itself above all, which the remote code imports)."""
    for path in (HUB / name).iterdir():
        module = path.stem if path.suffix == ".py" else path.name
        if path.suffix == ".py" or path.is_dir():
            assert module not in ("modeling_xlstm", "transformers", "torch", "kernels", "conversion"), path
            assert importlib.util.find_spec(module) is None, f"{path} shadows the importable module {module!r}"


@pytest.mark.parametrize("name", ["xlstm-tiny-stdlib", "xlstm-7-1-125m", "exported"])
def test_package_works_from_inside_a_model_folder(name, tmp_path):
    """`cd hub_configs/<model> && python -m modeling_xlstm --help` once failed: modeling_xlstm.py there shadowed
    the package. An exported folder (the one that holds the remote-code module) is checked too."""
    folder = export("xlstm-7-1-125m", tmp_path / "model") if name == "exported" else HUB / name
    env = clean_env()
    result = subprocess.run([sys.executable, "-m", "modeling_xlstm", "--help"], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "generate" in result.stdout and "convert" in result.stdout
    code = "import modeling_xlstm.modeling_xlstm, modeling_xlstm.hub_configs; print(modeling_xlstm.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert not Path(result.stdout.strip()).resolve().is_relative_to(folder.resolve())


def test_package_data_covers_every_model_file():
    """pyproject.toml's package-data patterns take every file of every model folder into the wheel (the setuptools
    patterns are globs relative to hub_configs/, as used here)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert setuptools["package-dir"]["modeling_xlstm.hub_configs"] == "hub_configs"
    assert "modeling_xlstm.hub_configs" in setuptools["packages"]
    shipped = {path for pattern in setuptools["package-data"]["modeling_xlstm.hub_configs"] for path in HUB.glob(pattern)}
    files = {path for name in FOLDERS for path in (HUB / name).iterdir() if path.is_file()}
    assert files - shipped == set()
    assert HUB / "README.md" in shipped
    size = sum(path.stat().st_size for path in shipped)
    assert size < 10_000_000, f"the model folders add {size:,} bytes to the wheel"


def test_write_remote_code_replaces_the_legacy_shims(tmp_path):
    config = XLSTMConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_heads=2)
    config.save_pretrained(tmp_path)
    legacy = '"""Remote-code entry point (`auto_map` in config.json) for `trust_remote_code=True`.\n"""\n'
    (tmp_path / "modeling_xlstm.py").write_text(legacy)
    (tmp_path / "configuration_xlstm.py").write_text(legacy)
    (tmp_path / "other.py").write_text("x = 1\n")
    before = json.loads((tmp_path / "config.json").read_text())
    module = write_remote_code(tmp_path)
    assert module == tmp_path / f"{REMOTE_MODULE}.py" and module.read_text() == remote_code_source()
    assert sorted(path.name for path in tmp_path.glob("*.py")) == ["other.py", f"{REMOTE_MODULE}.py"]
    after = json.loads((tmp_path / "config.json").read_text())
    assert after.pop("auto_map") == AUTO_MAP and after == before
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="xlstm_stack"):
        write_remote_code(tmp_path)


def test_export_copies_a_model_folder_and_writes_the_remote_code_only_there(tmp_path):
    """By name (a shipped model) or by path (any model folder of this package); the source stays as it is."""
    before = {p.name: p.read_bytes() for p in (HUB / "xlstm-7b").iterdir()}
    out = export("xlstm-7b", tmp_path / "by-name")
    assert out == tmp_path / "by-name"
    assert {p.name: p.read_bytes() for p in (HUB / "xlstm-7b").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, f"{REMOTE_MODULE}.py"])
    config = json.loads((out / "config.json").read_text())
    assert config.pop("auto_map") == AUTO_MAP and config == json.loads(before["config.json"])
    assert (out / "generation_config.json").read_bytes() == before["generation_config.json"]
    # a model folder given by path, into a folder that does not exist yet (parents made)
    by_path = export(out, tmp_path / "a" / "b")
    assert (by_path / f"{REMOTE_MODULE}.py").read_text() == remote_code_source()
    assert not list(tmp_path.rglob(".*.export-*"))  # no staging folder left behind
    # --overwrite replaces the folder: a stale file there goes
    (out / "stale.txt").write_text("x")
    assert hub_configs_main(["export", "xlstm-7b", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / f"{REMOTE_MODULE}.py").is_file()


def export_error(capsys, *argv: str) -> str:
    """The export command's error message (one line on stderr, exit status 2, no traceback)."""
    assert hub_configs_main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m modeling_xlstm.hub_configs export: error: ") and "Traceback" not in err
    return err


def test_export_errors_are_clear_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    err = export_error(capsys, "xlstm-70b", str(out))  # unknown name: say so, and list the choices
    assert "'xlstm-70b'" in err and "xlstm-tiny-stdlib" in err and "xlstm-7b" in err
    err = export_error(capsys, str(tmp_path / "nowhere"), str(out))  # a path that is no model folder
    assert "nowhere" in err and "config.json" in err
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    err = export_error(capsys, "xlstm-7b", str(out))  # an existing OUT: refused unless --overwrite
    assert "already exists" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text('{"model_type": "gpt2"}')
    err = export_error(capsys, str(gpt2), str(tmp_path / "gpt2-out"))  # not a model of this package
    assert "xlstm_stack" in err and not (tmp_path / "gpt2-out").exists()
    err = export_error(capsys, str(gpt2), str(gpt2 / "sub"), "--overwrite")  # OUT inside the source
    assert "overlap" in err
    err = export_error(capsys, str(gpt2), str(tmp_path), "--overwrite")  # OUT holding the source
    assert "overlap" in err and (gpt2 / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2", "out"]


def test_export_command_help_and_list():
    env = clean_env()
    out = subprocess.run([*EXPORT, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "NAME_OR_DIR" in out.stdout and "--overwrite" in out.stdout and "trust_remote_code" in out.stdout
    out = subprocess.run([sys.executable, "-m", "modeling_xlstm.hub_configs", "list"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == FOLDERS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_folder_is_complete_and_up_to_date(name, tmp_path):
    folder = HUB / name
    assert (folder / "generation_config.json").is_file()
    # make_hub_configs.py writes the same files: config.json and generation_config.json, no remote code
    write_folder(tmp_path / name, MODELS[name])
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(p.name for p in folder.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json"]
    # the folder holds what make_hub_configs.py writes for it (an auto_map would show up as a difference)
    expected = XLSTMConfig(**MODELS[name]).to_diff_dict()
    written = XLSTMConfig.from_pretrained(folder).to_diff_dict()
    for key in ("transformers_version", "architectures"):
        expected.pop(key, None), written.pop(key, None)
    assert written == expected


def test_paper_sizes_follow_table_7():
    paper = {name: s for name, s in MODELS.items() if name != "xlstm-7b"}
    assert len(paper) == 8
    for name, settings in paper.items():
        assert settings["num_heads"] == 4 and settings["vocab_size"] == 50304
        if name.startswith("xlstm-1-0"):
            assert settings["slstm_at"] == []
        else:  # xLSTM[7:1]: sLSTM blocks at the paper's positions (2 of 24 blocks, 6 of 48; hub_configs/README.md)
            expected = {24: [3, 20], 48: [3, 5, 7, 40, 42, 44]}[settings["num_hidden_layers"]]
            assert settings["slstm_at"] == expected


def test_trust_remote_code_loads_without_importing_the_package(tmp_path):
    """An exported config-only folder: AutoConfig/AutoModelForCausalLM with trust_remote_code in a fresh
    interpreter."""
    folder = export("xlstm-7-1-125m", tmp_path / "xlstm-7-1-125m")
    code = (
        "import sys, torch\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "assert 'modeling_xlstm' not in sys.modules\n"
        f"c = AutoConfig.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "with torch.device('meta'):\n"
        "    m = AutoModelForCausalLM.from_config(c, trust_remote_code=True)\n"
        "print(type(m).__name__, sum(p.numel() for p in m.parameters()))\n"
    )
    env = clean_env(HF_MODULES_CACHE=str(tmp_path / "modules"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    name, params = out.stdout.split()
    assert name == "XLSTMForCausalLM" and int(params) > 100_000_000


REMOTE_LOAD = """
import os, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, saved, tokenizer = sys.argv[1:4]
assert "modeling_xlstm" not in sys.modules
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
module = type(model).__module__
assert module.startswith("transformers_modules.") and module.endswith(".xlstm_stack_remote"), module
ids = AutoTokenizer.from_pretrained(tokenizer)("def f(x):", return_tensors="pt").input_ids
with torch.inference_mode():
    logits = model(ids).logits
import modeling_xlstm  # only now: the reference

reference = modeling_xlstm.XLSTMForCausalLM.from_pretrained(folder)
with torch.inference_mode():
    assert torch.equal(logits, reference(ids).logits)
if saved != "-":
    model.save_pretrained(saved)
print("ok")
"""


def test_trust_remote_code_loads_an_exported_model_folder(tmp_path):
    """A copy of the bundled model exported elsewhere with the export command loads with trust_remote_code=True
    in an interpreter that never imported modeling_xlstm, gives the package's logits, and saves a folder that
    loads the same way: with the remote-code module copied next to it (not the package's own modules)."""
    copy = tmp_path / "some" / "model"
    env = clean_env(HF_MODULES_CACHE=str(tmp_path / "modules"))
    out = subprocess.run([*EXPORT, "xlstm-tiny-stdlib", str(copy)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shipped = sorted(p.name for p in model_path().iterdir())
    assert sorted(p.name for p in copy.iterdir()) == sorted([*shipped, f"{REMOTE_MODULE}.py"])
    assert json.loads((copy / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert (copy / "model.safetensors").read_bytes() == (model_path() / "model.safetensors").read_bytes()
    saved = tmp_path / "saved"
    for folder, save_to in ((copy, saved), (saved, "-")):
        out = subprocess.run([sys.executable, "-c", REMOTE_LOAD, str(folder), str(save_to), str(copy)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
        if folder == copy:
            assert sorted(path.name for path in saved.glob("*.py")) == [f"{REMOTE_MODULE}.py"]
            assert (saved / f"{REMOTE_MODULE}.py").read_text() == remote_code_source()
            assert json.loads((saved / "config.json").read_text())["auto_map"] == AUTO_MAP


def test_save_pretrained_keeps_a_folder_loadable_with_remote_code(tmp_path):
    """A config read from a remote-code folder (an exported one), saved elsewhere, writes the remote-code module
    beside it."""
    config = XLSTMConfig.from_pretrained(export(BUNDLED_MODEL, tmp_path / "exported"))
    assert config.auto_map == AUTO_MAP
    saved = tmp_path / "saved"
    config.save_pretrained(saved)
    assert (saved / f"{REMOTE_MODULE}.py").read_text() == remote_code_source()
    assert json.loads((saved / "config.json").read_text())["auto_map"] == config.auto_map
    assert getattr(XLSTMConfig.from_pretrained(model_path()), "auto_map", None) is None  # the shipped one has none
    plain = tmp_path / "plain"
    XLSTMConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_heads=2).save_pretrained(plain)
    assert not (plain / f"{REMOTE_MODULE}.py").exists()  # a config without auto_map gets no remote code


def test_bundled_model_keeps_the_cache_on_and_leaves_max_length_to_the_caller():
    """A config with use_cache false would make every generation step recompute the whole sequence for callers
    that follow config.use_cache; max_new_tokens in generation_config.json would override a caller's max_length."""
    folder = model_path()
    assert json.loads((folder / "config.json").read_text())["use_cache"] is True
    generation = json.loads((folder / "generation_config.json").read_text())
    assert "max_new_tokens" not in generation and "max_length" not in generation
