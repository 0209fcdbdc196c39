#!/usr/bin/env bash
# The package as a user gets it from a registry: build the sdist and the wheel (`python -m build` builds the wheel
# from the unpacked sdist, so a file the sdist lacks is missing from the wheel too), check what both contain,
# install the wheel into a fresh venv of its own and, from a directory outside the source tree, run what a user
# runs: the CLI (generate, --help of both subcommands), the bundled model through AutoModelForCausalLM, and a
# trust_remote_code load of a model folder exported with the installed package's export command
# (`python -m modeling_xlstm.hub_configs export`), in an interpreter that never imports the package first.
#
#   bash .ci/wheel_check.sh            # PYTHON=/path/to/venv/bin/python bash .ci/wheel_check.sh: another Python
#
# Needs `build` (dev extra) in the Python that runs it (PYTHON, default: python on PATH), and pip access to
# torch==2.13.0's CPU wheel (it refuses to install a CUDA build). KEEP_WORK=1 keeps the temporary folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
TORCH_REQUIREMENT="torch==2.13.0"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/modeling_xlstm_wheel_check.XXXXXX")"
if [[ "${KEEP_WORK:-0}" == 1 ]]; then
    echo "work folder (kept): $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

step() { printf '\n== [%3ds] %s\n' "$SECONDS" "$*"; }
fail() { echo "wheel_check: FAILED: $*" >&2; exit 1; }
# run_logged LOG CMD...: run quietly; on failure show the end of the log
run_logged() {
    local log="$1"; shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "$* (log: $log)"
    fi
}

# ---------------------------------------------------------------------------------------------------------------
step "build the sdist, and the wheel from the unpacked sdist"
"$PYTHON" -c "import build" 2>/dev/null \
    || fail "$PYTHON has no 'build' module: pip install build (the dev extra has it), or point PYTHON at a Python that has it"
run_logged "$WORK/build.log" "$PYTHON" -m build --outdir "$WORK/dist" "$ROOT"
shopt -s nullglob
sdists=("$WORK"/dist/*.tar.gz)
wheels=("$WORK"/dist/*.whl)
shopt -u nullglob
[[ ${#sdists[@]} == 1 && ${#wheels[@]} == 1 ]] || fail "expected one sdist and one wheel in $WORK/dist"
SDIST="${sdists[0]}"
WHEEL="${wheels[0]}"
ls -l "$SDIST" "$WHEEL"

step "check the contents of the sdist and the wheel"
"$PYTHON" - "$ROOT" "$SDIST" "$WHEEL" <<'PY'
import sys, tarfile, zipfile
from email.parser import Parser
from pathlib import Path

root, sdist, wheel = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
# source folder -> its place in the installed package (pyproject.toml's [tool.setuptools.package-dir])
PACKAGES = {"modeling_xlstm": "modeling_xlstm", "kernels": "modeling_xlstm/kernels",
            "conversion": "modeling_xlstm/conversion", "hub_configs": "modeling_xlstm/hub_configs"}
problems = []

source = [Path("hub_configs/README.md")]  # every module of the package, and every file of every model folder
for folder in PACKAGES:
    source += [path.relative_to(root) for path in (root / folder).rglob("*.py")]
for model in (root / "hub_configs").iterdir():
    if (model / "config.json").is_file():
        source += [path.relative_to(root) for path in model.iterdir() if path.is_file()]
source = sorted({path for path in source if "__pycache__" not in path.parts})
assert any(p.name == "model.safetensors" for p in source), "the bundled model is missing from the checkout"

with tarfile.open(sdist) as tar:
    names = tar.getnames()
prefix = names[0].split("/")[0]
in_sdist = {name.removeprefix(prefix + "/") for name in names}
for needed in ["pyproject.toml", "README.md", "LICENSE", "PKG-INFO", *map(str, source)]:
    if needed not in in_sdist:
        problems.append(f"sdist lacks {needed}")

with zipfile.ZipFile(wheel) as archive:
    in_wheel = set(archive.namelist())
    dist_info = next(name.split("/")[0] for name in in_wheel if name.split("/")[0].endswith(".dist-info"))
    metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
for path in source:
    parts = path.parts
    target = "/".join([PACKAGES[parts[0]], *parts[1:]])
    if target not in in_wheel:
        problems.append(f"wheel lacks {target} (from {path})")
# the model folders ship no remote code: only the export command writes it, into a copy
for name in sorted(in_wheel):
    parts = name.split("/")
    if parts[:2] == ["modeling_xlstm", "hub_configs"] and len(parts) == 4 and name.endswith(".py"):
        problems.append(f"wheel ships remote code in a model folder: {name}")
tops = {name.split("/")[0] for name in in_wheel}
if tops != {"modeling_xlstm", dist_info}:
    problems.append(f"wheel installs more than modeling_xlstm at the top level: {sorted(tops)}")
if f"{dist_info}/licenses/LICENSE" not in in_wheel:
    problems.append("wheel lacks the LICENSE file")
expected = {"License-Expression": "Apache-2.0", "Description-Content-Type": "text/markdown",
            "Requires-Python": ">=3.11"}
for key, value in expected.items():
    if metadata.get(key) != value:
        problems.append(f"METADATA {key} is {metadata.get(key)!r}, expected {value!r}")
if not metadata.get_payload() or "modeling_xlstm" not in metadata.get_payload():
    problems.append("METADATA has no long description (README.md)")
size = wheel.stat().st_size
if size > 12_000_000:
    problems.append(f"the wheel takes {size:,} bytes; only the tiny bundled model (about 8 MB) should ship")
print(f"sdist: {len(in_sdist)} entries, wheel: {len(in_wheel)} files, {size:,} bytes, version {metadata['Version']}")
if problems:
    sys.exit("\n".join(problems))
PY

# ---------------------------------------------------------------------------------------------------------------
step "fresh venv: $TORCH_REQUIREMENT (CPU build), then the wheel"
unset PYTHONPATH PYTHONHOME
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
run_logged "$WORK/torch-resolve.log" "$VPY" -m pip install --dry-run --report "$WORK/torch.json" "$TORCH_REQUIREMENT"
"$VPY" - "$WORK/torch.json" <<'PY'
import json, sys
chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
          for item in json.load(open(sys.argv[1]))["install"]}
gpu = sorted(name for name in chosen if name.startswith("nvidia-") or name == "triton")
if not chosen.get("torch", "").endswith("+cpu") or gpu:
    sys.exit(f"pip would install torch {chosen.get('torch')} with {gpu or 'no CUDA packages'}, not the CPU build; "
             "make the torch CPU wheel available to pip (find-links or the PyTorch CPU index) and run again")
print(f"torch {chosen['torch']}")
PY
run_logged "$WORK/pip-torch.log" "$VPY" -m pip install "$TORCH_REQUIREMENT"
run_logged "$WORK/pip-wheel.log" "$VPY" -m pip install "$WHEEL"
"$VPY" -c "import torch; assert torch.version.cuda is None, torch.__version__" || fail "a CUDA build of torch got installed"
"$VPY" -m pip list 2>/dev/null | grep -E -i '^(torch|transformers|modeling-xlstm|triton) '

# ---------------------------------------------------------------------------------------------------------------
RUN="$WORK/run"  # outside the source tree: nothing there but what the tests copy
mkdir -p "$RUN"
cd "$RUN"
export HF_HOME="$WORK/hf" HF_MODULES_CACHE="$WORK/hf/modules" HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

step "the package is the installed one"
PKG="$("$VPY" -c 'import modeling_xlstm, pathlib; print(pathlib.Path(modeling_xlstm.__file__).resolve().parent)')"
case "$PKG" in
    "$WORK/venv/"*) echo "modeling_xlstm imported from $PKG" ;;
    *) fail "modeling_xlstm was imported from $PKG, not from the fresh venv" ;;
esac

step "python -m modeling_xlstm --version / generate --help / convert --help"
"$VPY" -m modeling_xlstm --version
"$VPY" -m modeling_xlstm generate --help >"$WORK/generate-help.txt" || fail "generate --help"
grep -q -- "--max-new-tokens" "$WORK/generate-help.txt" || fail "generate --help lacks --max-new-tokens"
"$VPY" -m modeling_xlstm convert --help >"$WORK/convert-help.txt" || fail "convert --help"
grep -q -- "--from" "$WORK/convert-help.txt" || fail "convert --help lacks --from"
echo "ok"

step "python -m modeling_xlstm generate (the bundled model, greedy)"
PROMPT="def f(x):"
if ! "$VPY" -m modeling_xlstm generate "$PROMPT" --greedy --max-new-tokens 8 >"$WORK/generate.out" 2>"$WORK/generate.err"; then
    cat "$WORK/generate.err" >&2
    fail "generate"
fi
cat "$WORK/generate.out"
"$VPY" - "$PROMPT" "$WORK/generate.out" "$WORK/generate.err" <<'PY' || fail "generate's output"
import sys
prompt, out, err = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
assert out.startswith(prompt) and out[len(prompt):].strip(), f"no continuation of the prompt: {out!r}"
assert "Traceback" not in err, err
PY

step "AutoModelForCausalLM after import modeling_xlstm: the bundled model and a config-only hub config"
"$VPY" - <<'PY' || fail "loading the bundled model"
import torch
import modeling_xlstm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from modeling_xlstm.hub_configs import model_path, names

folder = model_path("xlstm-tiny-stdlib")
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
assert type(model).__name__ == "XLSTMForCausalLM", type(model)
ids = tokenizer("import os\n", return_tensors="pt").input_ids
with torch.inference_mode():
    logits = model(ids).logits
assert logits.shape == (1, ids.shape[1], model.config.vocab_size) and torch.isfinite(logits).all()
config = AutoConfig.from_pretrained(model_path("xlstm-7-1-125m"))
with torch.device("meta"):
    params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
assert params > 100_000_000, params
print(f"ok: {len(names())} model folders installed; xlstm-7-1-125m builds with {params:,} parameters")
PY

step "trust_remote_code=True on an exported model folder, without importing the package first"
"$VPY" -m modeling_xlstm.hub_configs export --help >"$WORK/export-help.txt" || fail "hub_configs export --help"
grep -q -- "--overwrite" "$WORK/export-help.txt" || fail "hub_configs export --help lacks --overwrite"
"$VPY" -m modeling_xlstm.hub_configs export xlstm-tiny-stdlib "$RUN/copied-model" || fail "hub_configs export"
[[ -f "$RUN/copied-model/xlstm_stack_remote.py" ]] || fail "the exported folder has no xlstm_stack_remote.py"
# a fresh interpreter (-I: isolated, no user site, no PYTHON* variables) that imports only torch and transformers
"$VPY" -I - "$RUN/copied-model" <<'PY' || fail "trust_remote_code load"
import json
import sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

assert "modeling_xlstm" not in sys.modules
assert "auto_map" in json.load(open(f"{sys.argv[1]}/config.json")), "export wrote no auto_map"
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model).__module__.endswith(".xlstm_stack_remote"), type(model).__module__
ids = AutoTokenizer.from_pretrained(sys.argv[1])("def f(x):", return_tensors="pt").input_ids
with torch.inference_mode():
    logits = model(ids).logits
import modeling_xlstm  # only now: the reference, the shipped folder loaded by the package
from modeling_xlstm.hub_configs import model_path

reference = modeling_xlstm.XLSTMForCausalLM.from_pretrained(model_path("xlstm-tiny-stdlib")).eval()
with torch.inference_mode():
    assert torch.isfinite(logits).all() and torch.equal(logits, reference(ids).logits)
print("ok:", type(model).__module__, "gives the package model's logits")
PY

step "the package still imports with a model folder as the working directory"
(cd "$RUN/copied-model" && "$VPY" -m modeling_xlstm --help >/dev/null) || fail "python -m modeling_xlstm --help inside a model folder"
echo "ok"

step "wheel check passed"
