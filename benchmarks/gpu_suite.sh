#!/usr/bin/env bash
# Every GPU test and benchmark of this project, in priority order, in one call on a fresh GPU machine.
#
#   bash benchmarks/gpu_suite.sh                 # on the GPU machine (see README, "Running the GPU suite")
#   bash benchmarks/gpu_suite.sh --dry-run       # on a CPU: the same steps at tiny shapes (tests/test_gpu_suite.py)
#   bash benchmarks/gpu_suite.sh --list          # the steps, their budgets and commands
#
# Setup: installs the wheels carried in .whl/ (benchmarks/fetch_gpu_wheels.sh fetches them) into /tmp/site
# (`pip install --no-index --no-deps --target`), puts it first on PYTHONPATH, installs this checkout with
# `pip install --no-deps --no-build-isolation -e .` (a carried setuptools wheel goes into /tmp/site-build, on the
# path of that command only; if the install fails, the subpackages that pyproject.toml maps from other folders are
# linked into modeling_xlstm/ and the checkout is put on PYTHONPATH), and prints the device.
# Then the steps, each under `timeout` with its own budget in seconds (the benchmarks run from the repo root as
# modules, `python -m benchmarks.<script>`):
#   1 pytest_gpu   pytest -m gpu tests/
#   2 mlstm_chunk  mLSTM chunkwise fwd and fwd+bwd vs TFLA, 65,536 tokens, 16 heads, dqk 128, dv 256, bf16
#   3 mlstm_step   mLSTM decode step vs mlstm_kernels' Triton step, 8 heads, dqk 256, dv 512, batch 1
#   4 slstm        sLSTM fwd and fwd+bwd, B 16, T 1024, hidden 768, vs xlstm cuda/vanilla, FlashRNN cuda_fused/triton_fused
#   5 7b_decode    7B decode at batch 1 and 8 after 128 prompt tokens, with the copy bandwidth and the bound fraction
#                  (8,192-token prompts too: GPU_SUITE_ARGS_7b_decode="--decode-prompts 128,8192")
#   6 7b_prefill   7B prefill at 65,536 tokens per batch (8 x 8,192)
#   7 7b_ttft      7B time to first token at 16,384 tokens
#   8 7b_profile   where the 7B's prefill and decode time goes, kernel by kernel (benchmarks/profile_7b.py; no figure)
#   9 mlstm_tune   search the mLSTM chunkwise kernels' tiling (benchmarks/sweep_mlstm_tiling.py; no figure: its
#                  candidates go to mlstm.log, the best with its speed-up over the defaults at the end)
# A step that needs more than its budget is cut off (its figures measured so far are kept) and the next one runs;
# a step that would start with too little of the total budget left is skipped. The benchmarks record each figure
# the moment it is measured (XLSTM_RESULTS_JSONL) and end a competitor's child process before the step's deadline
# (XLSTM_STEP_DEADLINE), so that our own figure is kept with theirs=None when the competitor is too slow.
#
# Output, in $OUT (default: out/gpu-suite-<time>/, or a new temporary folder with --dry-run); at most 7 files, as
# the device tool returns at most 8:
#   results.jsonl  one figure per line, the format of benchmarks/results.jsonl (DESIGN section 8); merge it with
#                  `python -m benchmarks.results --merge $OUT/results.jsonl`
#   steps.jsonl    the ledger: {"kind": "env"} (device, versions), one {"kind": "step"} per step (status ok / failed /
#                  timeout / skipped, seconds, budget, figures written, log) and {"kind": "skip"} records for what was
#                  not measured and why (a competitor that needs CUDA in the dry run or failed, a step not selected)
#   setup.log, pytest.log, mlstm.log, slstm.log, 7b.log   the steps' output
#
# Options (environment variables in brackets):
#   --dry-run            CPU, tiny shapes, our Triton kernels in the interpreter, CUDA-only competitors skipped
#                        (and, to keep it short, transformers' xLSTM measured in 7b_decode only, not in 7b_prefill/ttft)
#   --out DIR            output folder [OUT]
#   --only a,b / --skip a,b   run only / all but these steps [GPU_SUITE_ONLY, GPU_SUITE_SKIP]; two group names
#                        split the suite for two calls on one lent machine: `kernels` (pytest_gpu, mlstm_chunk,
#                        mlstm_step, slstm: about 450 s on the H200) and `7b` (7b_decode, 7b_prefill, 7b_ttft: about
#                        330 s); the machine stays warm 30 s after a call, so the second call starts no new machine
#   --budget STEP=SECONDS     one step's budget, repeatable [GPU_SUITE_BUDGET_<step>, e.g. GPU_SUITE_BUDGET_slstm=200]
#   --budget-scale X     multiply every default budget by X [GPU_SUITE_BUDGET_SCALE]
#   --total-budget S     seconds for the whole suite, setup included (default 540 on a GPU, 170 dry) [GPU_SUITE_TOTAL_BUDGET]
#   --wheels DIR         the carried wheels (default .whl) [GPU_SUITE_WHEELS]
#   --no-install         use the current environment as it is (always so with --dry-run)
#   [GPU_SUITE_ARGS_<step>]   extra arguments for a step's command, e.g. GPU_SUITE_ARGS_7b_decode="--decode-prompts 128"
#   [PYTHON]             the interpreter (default python3)
# Exit status: 0 when every step that ran finished well, 1 when one failed or was cut off, 2 on bad usage or no GPU.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
STEPS=(pytest_gpu mlstm_chunk mlstm_step slstm 7b_decode 7b_prefill 7b_ttft 7b_profile mlstm_tune)
# default budgets (seconds) on the GPU: first compiles of Triton / CUDA kernels included
# (measured on the H200, 2026-11-30: pytest_gpu 133 s, mlstm_chunk 101, mlstm_step 23, slstm 141 without the
# xlstm CUDA kernel's compile at 4 heads (about 60 s more), 7b_prefill 65, 7b_ttft 49; 7b_decode: ours 90 s, theirs
# about 150 s with the retry after their Triton compile aborts)
declare -A GPU_BUDGET=([pytest_gpu]=150 [mlstm_chunk]=120 [mlstm_step]=45 [slstm]=210 [7b_decode]=250
                       [7b_prefill]=90 [7b_ttft]=70 [7b_profile]=90
                       [mlstm_tune]=180)
declare -A DRY_BUDGET=([pytest_gpu]=60 [mlstm_chunk]=60 [mlstm_step]=40 [slstm]=60 [7b_decode]=90
                       [7b_prefill]=45 [7b_ttft]=45 [7b_profile]=45
                       [mlstm_tune]=60)
declare -A LOGFILE=([pytest_gpu]=pytest.log [mlstm_chunk]=mlstm.log [mlstm_step]=mlstm.log [slstm]=slstm.log
                    [7b_decode]=7b.log [7b_prefill]=7b.log [7b_ttft]=7b.log [7b_profile]=7b.log
                    [mlstm_tune]=mlstm.log)
SETUP_BUDGET=150
MARGIN=5       # seconds kept for the summary at the end
MIN_START=10   # a step starts only if min(its budget, this) seconds of the total budget are left

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

DRY=0; INSTALL=1; LIST=0
ONLY="${GPU_SUITE_ONLY:-}"; SKIP="${GPU_SUITE_SKIP:-}"
SCALE="${GPU_SUITE_BUDGET_SCALE:-1}"; TOTAL="${GPU_SUITE_TOTAL_BUDGET:-}"
WHEELS="${GPU_SUITE_WHEELS:-$ROOT/.whl}"
OUT_DIR="${OUT:-}"
declare -A OVERRIDE=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1; shift ;;
        --out) OUT_DIR="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --skip) SKIP="$2"; shift 2 ;;
        --budget) OVERRIDE["${2%%=*}"]="${2#*=}"; shift 2 ;;
        --budget-scale) SCALE="$2"; shift 2 ;;
        --total-budget) TOTAL="$2"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --list) LIST=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_suite.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
in_list() { [[ ",$2," == *",$1,"* ]]; }
declare -A GROUP=([kernels]=pytest_gpu,mlstm_chunk,mlstm_step,slstm [7b]=7b_decode,7b_prefill,7b_ttft
                  [tune]=7b_profile,mlstm_tune)
expand_groups() {  # a comma-separated list with group names replaced by their steps
    local item out=()
    for item in ${1//,/ }; do out+=("${GROUP[$item]:-$item}"); done
    (IFS=,; echo "${out[*]}")
}
ONLY="$(expand_groups "$ONLY")"; SKIP="$(expand_groups "$SKIP")"
selected() { { [[ -z "$ONLY" ]] || in_list "$1" "$ONLY"; } && { [[ -z "$SKIP" ]] || ! in_list "$1" "$SKIP"; }; }
for name in "${!OVERRIDE[@]}" ${ONLY//,/ } ${SKIP//,/ }; do
    in_list "$name" "$(IFS=,; echo "${STEPS[*]}")" || { echo "gpu_suite.sh: unknown step '$name' (steps: ${STEPS[*]})" >&2; exit 2; }
done
for name in "${!OVERRIDE[@]}"; do
    [[ "${OVERRIDE[$name]}" =~ ^[0-9]+$ ]] || { echo "gpu_suite.sh: --budget $name=${OVERRIDE[$name]}: whole seconds" >&2; exit 2; }
done
if [[ $DRY == 1 ]]; then INSTALL=0; TOTAL="${TOTAL:-170}"; else TOTAL="${TOTAL:-540}"; fi

budget_of() {  # the step's budget: --budget / GPU_SUITE_BUDGET_<step>, else its default x the scale
    local name=$1 var="GPU_SUITE_BUDGET_$1"
    if [[ -n "${OVERRIDE[$name]:-}" ]]; then echo "${OVERRIDE[$name]}"; return; fi
    if [[ -n "${!var:-}" ]]; then echo "${!var}"; return; fi
    local base
    if [[ $DRY == 1 ]]; then base=${DRY_BUDGET[$name]}; else base=${GPU_BUDGET[$name]}; fi
    awk -v b="$base" -v s="$SCALE" 'BEGIN { v = int(b * s + 0.5); print (v < 1 ? 1 : v) }'
}

step_command() {  # sets CMD to the step's command line
    local name=$1 extra_var="GPU_SUITE_ARGS_$1"
    local small=()
    [[ $DRY == 1 ]] && small=(--small --device cpu --record)
    case "$name" in
        pytest_gpu) CMD=("$PY" -m pytest -m gpu tests/ -q -p no:cacheprovider -rfEs --continue-on-collection-errors) ;;
        mlstm_chunk) CMD=("$PY" -m benchmarks.bench_mlstm_kernels --jobs chunk ${small[@]+"${small[@]}"}) ;;
        mlstm_step) CMD=("$PY" -m benchmarks.bench_mlstm_kernels --jobs step ${small[@]+"${small[@]}"}) ;;
        slstm)
            if [[ $DRY == 1 ]]; then CMD=("$PY" -m benchmarks.bench_slstm_kernels ${small[@]+"${small[@]}"})
            else CMD=("$PY" -m benchmarks.bench_slstm_kernels --heads 12 4); fi ;;  # 12 heads: every competitor runs
        7b_decode)
            if [[ $DRY == 1 ]]; then CMD=("$PY" -m benchmarks.bench_7b_inference --parts decode --batches 1,8
                                          --decode-prompts 16 --new-tokens 4 --repeats 1 ${small[@]+"${small[@]}"})
            else CMD=("$PY" -m benchmarks.bench_7b_inference --parts decode --batches 1,8 --decode-prompts 128); fi ;;
        7b_prefill)
            if [[ $DRY == 1 ]]; then CMD=("$PY" -m benchmarks.bench_7b_inference --parts prefill --repeats 1 --no-theirs
                                          ${small[@]+"${small[@]}"})
            else CMD=("$PY" -m benchmarks.bench_7b_inference --parts prefill); fi ;;
        7b_ttft)
            if [[ $DRY == 1 ]]; then CMD=("$PY" -m benchmarks.bench_7b_inference --parts ttft --ttft-prompts 130
                                          --repeats 1 --no-theirs ${small[@]+"${small[@]}"})
            else CMD=("$PY" -m benchmarks.bench_7b_inference --parts ttft --ttft-prompts 16384 --repeats 2); fi ;;
        7b_profile) CMD=("$PY" -m benchmarks.profile_7b)
                    [[ $DRY == 1 ]] && CMD+=(--small --device cpu) ;;
        mlstm_tune) CMD=("$PY" -m benchmarks.sweep_mlstm_tiling)
                    [[ $DRY == 1 ]] && CMD+=(--small --device cpu) ;;  # records nothing: no --record
    esac
    if [[ -n "${!extra_var:-}" ]]; then read -r -a extra <<<"${!extra_var}"; CMD+=("${extra[@]}"); fi
}

if [[ $LIST == 1 ]]; then
    echo "steps in priority order ($([[ $DRY == 1 ]] && echo dry run || echo GPU); total budget ${TOTAL}s):"
    for name in "${STEPS[@]}"; do
        selected "$name" || continue
        step_command "$name"
        printf '  %-12s %4ss  %s\n' "$name" "$(budget_of "$name")" "${CMD[*]}"
    done
    exit 0
fi

START=$(date +%s)
DEADLINE=$((START + TOTAL))
if [[ -z "$OUT_DIR" ]]; then
    if [[ $DRY == 1 ]]; then OUT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/gpu-suite-dry.XXXXXX")"
    else OUT_DIR="$ROOT/out/gpu-suite-$(date -u +%Y%m%dT%H%M%S)"; fi
fi
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
RESULTS="$OUT_DIR/results.jsonl"
LEDGER="$OUT_DIR/steps.jsonl"
: >>"$RESULTS"; : >>"$LEDGER"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
export XLSTM_RESULTS_JSONL="$RESULTS" XLSTM_SUITE_LEDGER="$LEDGER"
if [[ $DRY == 1 ]]; then
    export CUDA_VISIBLE_DEVICES="" TRITON_INTERPRET=1  # a CPU run even on a GPU machine; Triton in its interpreter
fi

ledger() {  # ledger key=value ...: one JSON object (numbers and null as such, the rest as strings)
    "$PY" - "$LEDGER" "$@" <<'EOF'
import json, re, sys
entry = {}
for item in sys.argv[2:]:
    key, _, value = item.partition("=")
    if value == "null":
        entry[key] = None
    elif re.fullmatch(r"-?\d+", value):
        entry[key] = int(value)
    elif re.fullmatch(r"-?\d+\.\d+", value):
        entry[key] = float(value)
    else:
        entry[key] = value
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps(entry) + "\n")
EOF
}
say() { echo "[gpu_suite $(date -u +%H:%M:%S)] $*"; }
lines() { if [[ -f "$1" ]]; then wc -l <"$1" | tr -d ' '; else echo 0; fi; }

# ------------------------------------------------------------------------------------------------------------------
# setup: carried wheels, this checkout, the device
# ------------------------------------------------------------------------------------------------------------------
SETUP_LOG="$OUT_DIR/setup.log"
say "output in $OUT_DIR ($([[ $DRY == 1 ]] && echo 'dry run on CPU' || echo GPU run), total budget ${TOTAL}s)"
setup_failed=""
if [[ $INSTALL == 1 ]]; then
    SITE="${GPU_SUITE_SITE:-/tmp/site}"
    BUILD_SITE="${SITE}-build"  # setuptools, for the editable install only
    runtime_wheels=(); build_wheels=()
    for wheel in "$WHEELS"/*.whl; do
        [[ -e "$wheel" ]] || continue
        if [[ "$(basename "$wheel")" == setuptools-* ]]; then build_wheels+=("$wheel"); else runtime_wheels+=("$wheel"); fi
    done
    if (( ${#runtime_wheels[@]} )); then
        say "installing ${#runtime_wheels[@]} carried wheels into $SITE"
        if timeout "$SETUP_BUDGET" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" "${runtime_wheels[@]}" >>"$SETUP_LOG" 2>&1; then
            export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
        else
            setup_failed="pip install of the carried wheels failed (see setup.log)"
        fi
    else
        say "no wheels in $WHEELS: using the image's packages (run benchmarks/fetch_gpu_wheels.sh and carry .whl)"
        ledger kind=skip step=setup what="carried wheels" reason="none in $WHEELS"
    fi
    build_path="${PYTHONPATH:-}"
    if (( ${#build_wheels[@]} )) && timeout "$SETUP_BUDGET" "$PY" -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --upgrade --target "$BUILD_SITE" "${build_wheels[@]}" >>"$SETUP_LOG" 2>&1; then
        build_path="$BUILD_SITE${build_path:+:$build_path}"
    fi
    say "installing this checkout (editable)"
    if ! PYTHONPATH="$build_path" timeout "$SETUP_BUDGET" "$PY" -m pip install -q --no-deps --no-build-isolation -e . \
            >>"$SETUP_LOG" 2>&1; then
        say "pip install -e . failed (see setup.log): linking the subpackages into modeling_xlstm/ instead"
        if "$PY" - "$ROOT" >>"$SETUP_LOG" 2>&1 <<'EOF'
# No build: link each subpackage that pyproject.toml maps from another folder (modeling_xlstm.kernels = kernels/,
# ...) into the package folder of this (throwaway) checkout, and put the checkout on PYTHONPATH.
import os, sys, tomllib
root = sys.argv[1]
mapping = tomllib.load(open(os.path.join(root, "pyproject.toml"), "rb"))["tool"]["setuptools"]["package-dir"]
for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
    natural = os.path.join(root, *package.split("."))
    source = os.path.join(root, folder)
    if os.path.realpath(natural) == os.path.realpath(source):
        continue
    if os.path.lexists(natural):
        sys.exit(f"cannot link {package}: {natural} exists")
    os.symlink(os.path.relpath(source, os.path.dirname(natural)), natural)
    print(f"linked {natural} -> {source}")
EOF
        then export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
        else setup_failed="${setup_failed:+$setup_failed; }installing this checkout failed (see setup.log)"; fi
    fi
fi
ENV_JSON="$("$PY" - 2>>"$SETUP_LOG" <<'EOF'
import json, platform, sys
info = {"python": platform.python_version()}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.cuda.is_available()
    info["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    import triton
    info["triton"] = triton.__version__
    import transformers
    info["transformers"] = transformers.__version__
    import modeling_xlstm
    info["modeling_xlstm"] = modeling_xlstm.__file__
except Exception as error:  # noqa: BLE001 -- reported in the ledger and the log
    info["error"] = f"{type(error).__name__}: {error}"
print(json.dumps(info))
EOF
)"
[[ -n "$ENV_JSON" ]] || ENV_JSON='{"error": "python could not report the environment (see setup.log)"}'
{ echo "environment: $ENV_JSON"; command -v nvidia-smi >/dev/null && nvidia-smi -L; } >>"$SETUP_LOG" 2>&1
"$PY" -c 'import json, sys; e = json.loads(sys.argv[1]); e = {"kind": "env", **e, "setup_error": sys.argv[2] or None}
open(sys.argv[3], "a").write(json.dumps(e) + "\n")' "$ENV_JSON" "$setup_failed" "$LEDGER"
say "environment: $ENV_JSON"
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | sed 's/^/[gpu_suite] /'
if [[ -n "$setup_failed" ]]; then say "setup problem: $setup_failed"; fi
if [[ $DRY == 0 ]] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    say "no CUDA GPU visible: this is the GPU suite (use --dry-run on a CPU)"
    exit 2
fi

# ------------------------------------------------------------------------------------------------------------------
# the steps
# ------------------------------------------------------------------------------------------------------------------
declare -A STATUS=()
worst=0
for name in "${STEPS[@]}"; do
    if ! selected "$name"; then
        STATUS[$name]="skipped (not selected)"
        ledger kind=step step="$name" status=skipped reason="not selected (--only/--skip)" figures=0
        continue
    fi
    budget=$(budget_of "$name")
    now=$(date +%s)
    left=$((DEADLINE - MARGIN - now))
    need=$(( budget < MIN_START ? budget : MIN_START ))
    if (( left < need )); then
        STATUS[$name]="skipped (no time left)"
        say "$name: skipped, ${left}s left of the total budget"
        ledger kind=step step="$name" status=skipped reason="no time left in the total budget (${left}s)" \
            budget_s="$budget" figures=0
        continue
    fi
    (( budget > left )) && budget=$left
    step_command "$name"
    log="$OUT_DIR/${LOGFILE[$name]}"
    before=$(lines "$RESULTS")
    log_before=$(lines "$log")
    say "$name: running, budget ${budget}s, log ${LOGFILE[$name]}"
    printf '\n===== %s  step %s  budget %ss =====\n$ %s\n' "$(date -u +%H:%M:%S)" "$name" "$budget" "${CMD[*]}" >>"$log"
    t0=$(date +%s)
    XLSTM_SUITE_STEP="$name" XLSTM_STEP_DEADLINE=$((t0 + budget)) \
        timeout --signal=TERM --kill-after=10 "$budget" "${CMD[@]}" </dev/null >>"$log" 2>&1
    rc=$?
    seconds=$(( $(date +%s) - t0 ))
    figures=$(( $(lines "$RESULTS") - before ))
    case $rc in
        0) status=ok ;;
        124|137) status=timeout; worst=1 ;;
        *) status=failed; worst=1 ;;
    esac
    summary=""
    if [[ $name == pytest_gpu ]]; then
        summary="$(grep -E '[0-9]+ (passed|failed|skipped|deselected|error)' "$log" | tail -1 | tr -d '=' | sed 's/^ *//;s/ *$//')"
    fi
    if [[ $status != ok ]]; then  # the end of this step's output, for the console
        last_lines="$(tail -n +$((log_before + 1)) "$log" | sed 's/.*\r//' | grep -v '^[[:space:]]*$' | tail -n 6)"
    fi
    printf '===== step %s: %s (exit %s) after %ss, %s figures =====\n' "$name" "$status" "$rc" "$seconds" "$figures" >>"$log"
    STATUS[$name]="$status after ${seconds}s, $figures figures${summary:+, $summary}"
    fields=(kind=step step="$name" status="$status" rc="$rc" seconds="$seconds" budget_s="$budget" figures="$figures"
            log="${LOGFILE[$name]}" command="${CMD[*]}")
    [[ -n "$summary" ]] && fields+=(summary="$summary")
    ledger "${fields[@]}"
    say "$name: ${STATUS[$name]}"
    if [[ $status != ok ]]; then sed 's/^/    | /' <<<"$last_lines"; fi
done

# ------------------------------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------------------------------
echo
say "done in $(( $(date +%s) - START ))s; output in $OUT_DIR"
for name in "${STEPS[@]}"; do printf '  %-12s %s\n' "$name" "${STATUS[$name]:-not run}"; done
"$PY" - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"\n{len(rows)} figures in {sys.argv[1]}:")
for r in rows:
    fmt = lambda v: "-" if v is None else f"{v:.4g}"
    print(f"  {r['name']}: ours {fmt(r['ours'])}, theirs {fmt(r['theirs'])} {r['unit']}, ratio {fmt(r['ratio'])}")
EOF
exit $worst
