"""Measure a competitor in a child process, so that a crash in its kernels costs that figure, not the run.

Why: with the Triton 3.6 wheel (the one torch 2.11 pins), compiling mlstm_kernels 2.0.6's TFLA kernel
`mlstm_chunkwise__parallel_fw_Hintra_kernel` for sm_90 aborts the whole Python process inside LLVM's SLP vectoriser
(an assertion, SIGABRT; reproduced here by compiling it ahead of time, see benchmarks/compile_report.py). No
`except` can catch that, and it would take our figures of the same run with it. A CUDA error in a competitor's
kernel would likewise poison the process's CUDA context.

Protocol: the benchmark script re-runs itself as the child, `python -m benchmarks.<script> ... --child-json PATH`
(plus what to measure) in the repo root; the child writes its measurements as one JSON object to PATH and exits
0. If the child dies from a signal, it is run once more with Triton's LLVM optimisation pipeline switched off
(`DISABLE_LLVM_OPT=1`, read by libtriton), which avoids the vectoriser; the returned note says so, because it may
make the competitor slower than it would be with a Triton that compiles it normally. Under benchmarks/gpu_suite.sh
the cure is noted in the suite's ledger, and the later steps' children of the same competitor start with the
workaround.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.results import LEDGER_ENV, STEP_ENV

ROOT = Path(__file__).resolve().parent.parent  # the child runs here, so that `benchmarks` is importable
LLVM_WORKAROUND_ENV = {"DISABLE_LLVM_OPT": "1"}
LLVM_WORKAROUND_NOTE = (
    "; its Triton kernels compiled with DISABLE_LLVM_OPT=1 because the normal compile aborted the process "
    "(Triton {triton} LLVM assertion), which may slow them"
)


def _triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return "?"


def _describe_exit(code: int, stderr: str) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"child process killed by {name}"
    else:
        what = f"child process exited with status {code}"
    last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or [""]
    return f"{what}: {last[0][:200]}"


def run_child(module: str, args: list[str], timeout: float, extra_env: dict | None = None):
    """Run `python -m module *args --child-json PATH` in the repo root. Returns (the JSON the child wrote, None) or
    (None, reason). `module` is the dotted name of the script, e.g. "benchmarks.bench_mlstm_kernels" (a script
    passes its own: `__spec__.name`, which is that also when it runs as `__main__`).

    The child's output streams through (its progress bars included); the end of its stderr also goes into the
    reason when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        env = dict(os.environ, **(extra_env or {}))
        cmd = [sys.executable, "-m", module, *args, "--child-json", str(out)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        tail: collections.deque[str] = collections.deque(maxlen=20)
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line)
        proc.wait()
        timer.cancel()
        if timed_out.is_set():
            return None, f"child process timed out after {timeout:.0f} s"
        if proc.returncode != 0 or not out.exists():
            return None, _describe_exit(proc.returncode, "".join(tail))
        return json.loads(out.read_text()), None


def _crashed_earlier_in_suite(crash_key: str | None) -> bool:
    """Whether an earlier child of this GPU suite run with the same `crash_key` needed the LLVM workaround (a record
    in the suite's ledger)."""
    ledger = os.environ.get(LEDGER_ENV)
    if crash_key is None or not ledger or not os.path.exists(ledger):
        return False
    with open(ledger) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    return any(r.get("kind") == "llvm_workaround" and r.get("crash_key") == crash_key for r in records)


def _remember_crash(crash_key: str | None, failure: str) -> None:
    ledger = os.environ.get(LEDGER_ENV)
    if crash_key is not None and ledger:
        entry = {"kind": "llvm_workaround", "crash_key": crash_key, "step": os.environ.get(STEP_ENV), "crash": failure}
        with open(ledger, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def measure_isolated(
    module: str, args: list[str], timeout: float = 600, crash_key: str | None = None
) -> tuple[dict | None, str | None, str]:
    """Run the child; after a death by signal, once more with the LLVM workaround.

    `timeout` bounds both runs together: the GPU suite gives the child the time left before its step's deadline,
    and a retry that started the clock afresh would run past it and take the step's own figures with it.

    `crash_key` names the competitor's kernels (e.g. "tfla"). Under the suite, a crash of that competitor that the
    workaround cured is noted in the ledger, and later children with the same key start with the workaround (each
    crashed compile costs a step 10-20 s of a short GPU lease). Only the same key: the workaround may slow a
    competitor, so one that compiles normally must never get it.

    Returns (measurements or None, why they are missing or None, a note for the competitor label: "" normally,
    LLVM_WORKAROUND_NOTE when the workaround was needed)."""
    note = LLVM_WORKAROUND_NOTE.format(triton=_triton_version())
    if _crashed_earlier_in_suite(crash_key):
        print(f"an earlier competitor child of this suite run needed {LLVM_WORKAROUND_ENV}: starting with it",
              flush=True)
        result, failure = run_child(module, args, timeout, LLVM_WORKAROUND_ENV)
        if result is None:
            return None, f"with {LLVM_WORKAROUND_ENV}: {failure}", ""
        return result, None, note
    deadline = time.monotonic() + timeout
    result, failure = run_child(module, args, timeout)
    if result is not None or "killed by" not in (failure or ""):
        return result, failure, ""
    left = deadline - time.monotonic()
    if left < 1:
        return None, f"{failure}; no time left to retry with {LLVM_WORKAROUND_ENV}", ""
    print(f"competitor child crashed ({failure}); retrying with {LLVM_WORKAROUND_ENV} ({left:.0f} s left)", flush=True)
    retry, retry_failure = run_child(module, args, left, LLVM_WORKAROUND_ENV)
    if retry is None:
        return None, f"{failure}; with {LLVM_WORKAROUND_ENV}: {retry_failure}", ""
    _remember_crash(crash_key, failure)
    return retry, None, note


def write_child_result(path: str | Path, result: dict) -> None:
    """The child's side of the protocol."""
    Path(path).write_text(json.dumps(result))
