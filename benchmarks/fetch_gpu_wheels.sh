#!/usr/bin/env bash
# Download, on a machine with internet access, the wheels that the lent GPU machine lacks, into .whl/ at the repo root
# (or the folder given with --dest). benchmarks/gpu_suite.sh installs them there with
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl
# and puts /tmp/site first on PYTHONPATH, so they take precedence over the image's own versions.
#
# The GPU image (Python 3.12, torch 2.11, Triton 3.6, transformers 5.17; no internet) already holds torch, triton,
# accelerate, safetensors, tokenizers, huggingface-hub, typer, numpy, pyyaml, tqdm, packaging, einops, matplotlib,
# ninja, pytest, setuptools and wheel (see /work/.library/device/KINDS.md). What it lacks or has too old:
#   transformers   newest release pyproject.toml allows (>= 5.23; the image's 5.17 is too old for this package)
#   xlstm, mlstm-kernels 2.0.6   the reference implementations / competitors (DESIGN section 7)
#   flashrnn 1.0.8 NX-AI's newer sLSTM kernels, a competitor of the sLSTM benchmark (DESIGN section 8)
#   dacite         used by the conversion verifier (pure Python)
#   regex          transformers >= 5.24 requires regex >= 2025.10.22 and checks it at import; the image's may be older
#   setuptools     only to build the editable install (pip install --no-build-isolation -e .): pyproject.toml's
#                  build-system may need a newer one than the image has; gpu_suite.sh puts it on the path of that
#                  command alone, never of the tests and benchmarks (torch's cpp_extension imports setuptools)
# Every wheel is fetched with --no-deps (the list above is explicit) and for CPython 3.12 on manylinux x86-64.
# Pure-Python packages that only come as an sdist are built into a wheel here (pip wheel --no-deps).
#
#   bash benchmarks/fetch_gpu_wheels.sh                # into .whl/
#   bash benchmarks/fetch_gpu_wheels.sh --dest DIR     # elsewhere
#
# .whl/ must be git-ignored (it is carried to the GPU machine as an ignored path: run(..., carry=[".whl"])).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
PY="${PYTHON:-python3}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dest) DEST="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

# transformers: the requirement exactly as pyproject.toml states it, so pip picks the newest release it allows.
TRANSFORMERS_REQ="$("$PY" - "$ROOT/pyproject.toml" <<'EOF'
import re, sys
try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None
text = open(sys.argv[1], encoding="utf-8").read()
if tomllib is not None:
    deps = tomllib.loads(text)["project"]["dependencies"]
else:
    deps = re.findall(r'"([^"]+)"', text.split("dependencies", 1)[1].split("]", 1)[0])
print(next(d.replace(" ", "") for d in deps if re.match(r"transformers\b", d)))
EOF
)"

PURE=("$TRANSFORMERS_REQ" "xlstm==2.0.6" "mlstm-kernels==2.0.6" "flashrnn==1.0.8" "dacite" "setuptools")
BINARY=("regex")
TARGET=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform any)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two versions of a package stop the whole install there
for req in "${PURE[@]}" "${BINARY[@]}"; do
    echo "== $req"
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: "${TARGET[@]}" -d "$DEST" "$req"; then
        for b in "${BINARY[@]}"; do
            if [[ "$req" == "$b" ]]; then echo "no CPython 3.12 manylinux wheel for $req" >&2; exit 1; fi
        done
        echo "   no wheel on the index: building one from the sdist (pure Python)"
        "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "$req"
    fi
done

echo
echo "wheels in $DEST:"
ls -l "$DEST"/*.whl
du -ch "$DEST"/*.whl | tail -1
# a package present twice (e.g. an older wheel left behind) would stop the install on the GPU machine
dupes="$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)"
if [[ -n "$dupes" ]]; then echo "more than one wheel of: $dupes" >&2; exit 1; fi
