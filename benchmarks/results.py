"""Recording measured figures: one JSON line per figure in results.jsonl, and RESULTS.md regenerated from it.

Every benchmark script calls `record(...)` for each figure it measured. RESULTS.md shows the latest entry of
each figure name, and lists the figures of `EXPECTED_FIGURES` that no run has measured yet.

Runs driven by benchmarks/gpu_suite.sh (environment variables the suite sets for each step):
- XLSTM_RESULTS_JSONL: `record` appends there instead (the suite's $OUT/results.jsonl, written figure by figure so
  that a step cut off by its time budget keeps what it measured) and leaves RESULTS.md alone. Bring such a file
  into benchmarks/ afterwards with `python -m benchmarks.results --merge PATH`.
- XLSTM_SUITE_LEDGER, XLSTM_SUITE_STEP: `record_skip` appends a skip record (what was not measured, and why) to
  the suite's ledger ($OUT/steps.jsonl).
- XLSTM_STEP_DEADLINE: when the step's budget runs out (Unix time); `child_timeout` keeps a competitor's child
  process inside it, so that our figure is still recorded (with theirs=None) when the competitor is too slow.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_JSONL = HERE / "results.jsonl"
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_ENV = "XLSTM_RESULTS_JSONL"
LEDGER_ENV = "XLSTM_SUITE_LEDGER"
STEP_ENV = "XLSTM_SUITE_STEP"
DEADLINE_ENV = "XLSTM_STEP_DEADLINE"
FIGURE_KEYS = ("name", "ours", "theirs", "competitor", "unit", "ratio", "better", "device", "date", "command", "shape")

# name -> what it measures and where (the figures the project's issues ask for)
EXPECTED_FIGURES: dict[str, str] = {}


def expect(name: str, description: str) -> None:
    """Declare a figure a benchmark is meant to measure, so RESULTS.md lists it while unmeasured."""
    EXPECTED_FIGURES[name] = description


def record(
    name: str,
    ours: float,
    theirs: float | None,
    competitor: str | None,
    unit: str,
    better: str,
    device: str,
    shape: str,
    command: str | None = None,
) -> dict:
    """Append one measured figure to results.jsonl and regenerate RESULTS.md.

    `theirs` is the competitor measured in the same run (None when nothing was). `ratio` is always expressed so that > 1 means we are better: theirs/ours when lower is better (time),
    ours/theirs when higher is better (throughput).
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    ratio = None
    if theirs is not None and ours:
        ratio = theirs / ours if better == "lower" else ours / theirs
    entry = {
        "name": name,
        "ours": ours,
        "theirs": theirs,
        "competitor": competitor,
        "unit": unit,
        "ratio": None if ratio is None else round(ratio, 4),
        "better": better,
        "device": device,
        "date": datetime.date.today().isoformat(),
        "command": command or invocation(),
        "shape": shape,
    }
    redirected = os.environ.get(RESULTS_ENV)
    target = Path(redirected) if redirected else RESULTS_JSONL
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as fh:  # one write per figure, closed at once: a later kill keeps it
        fh.write(json.dumps(entry) + "\n")
    if not redirected:
        write_markdown()
    return entry


def invocation() -> str:
    """The command line of this process as it was typed: `python -m benchmarks.bench_x --small` for a script run as
    a module (the way to run them), `python path ...` otherwise."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", sys.argv[0]]
    return " ".join(shlex.quote(a) for a in [*head, *sys.argv[1:]])


def record_skip(what: str, reason: str, figures: list[str] | tuple[str, ...] = ()) -> None:
    """Note, in the GPU suite's ledger, something this run could not measure and why (a competitor that needs CUDA
    in the CPU dry run, a competitor whose child process failed). Outside the suite it only prints the note."""
    print(f"skipped: {what}: {reason}", flush=True)
    ledger = os.environ.get(LEDGER_ENV)
    if not ledger:
        return
    entry = {"kind": "skip", "step": os.environ.get(STEP_ENV), "what": what, "reason": reason,
             "figures": list(figures)}
    with open(ledger, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def child_timeout(default: float, share: int = 1, reserve: float = 10.0) -> float | None:
    """Seconds a competitor's child process may take: `default`, cut so that it ends `reserve` seconds before the
    step's deadline (XLSTM_STEP_DEADLINE, set by the GPU suite) and leaves the step's remaining time to `share`
    children in all (this one included). None when less than 5 seconds would be left: skip the competitor."""
    deadline = os.environ.get(DEADLINE_ENV)
    if not deadline:
        return default
    left = (float(deadline) - time.time() - reserve) / max(1, share)
    return min(default, left) if left >= 5 else None


def dry_run_figure(name: str) -> str:
    """Figures measured at stand-in shapes (the CPU dry runs of the GPU benchmarks) carry this prefix, so that they
    never pass for the figure itself."""
    return name if name.startswith("small_") else "small_" + name.removeprefix("gpu_")


# the widest vector instructions of a CPU, first match wins: machines with one model name ("AMD EPYC") differ there,
# and with them in speed (AVX2 only vs AVX512 with native bfloat16)
VECTOR_ISAS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512"), ("avx2", "AVX2"))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo with its widest vector instructions (the machine type where that is
    unavailable)."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            lines = fh.read().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), ()))
    isa = next((name for flag, name in VECTOR_ISAS if flag in flags), None)
    return f"{model} ({isa})" if isa else model


def load_latest() -> dict[str, dict]:
    latest: dict[str, dict] = {}
    if RESULTS_JSONL.exists():
        for line in RESULTS_JSONL.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                latest[entry["name"]] = entry
    return latest


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_markdown() -> None:
    """Regenerate RESULTS.md from results.jsonl and the expected figures of every benchmark module."""
    _import_benchmark_modules()
    latest = load_latest()
    lines = [
        "# Measured results",
        "",
        "Generated by `benchmarks/results.py` from `results.jsonl` (one line per measurement; this table shows the",
        "latest of each figure). `ratio` > 1 means ours is better (theirs/ours for times, ours/theirs for",
        "throughputs). Never edit by hand: re-run the benchmark. The GPU figures come from `benchmarks/gpu_suite.sh`",
        "(README, \"Running the GPU suite\"), merged with `python -m benchmarks.results --merge OUT/results.jsonl`.",
        "",
        "| figure | ours | theirs | unit | ratio | competitor | device | date | shape | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(latest):
        e = latest[name]
        lines.append(
            f"| {name} | {_fmt(e['ours'])} | {_fmt(e['theirs'])} | {e['unit']} ({e['better']} is better) | "
            f"{_fmt(e['ratio'])} | {e['competitor'] or '-'} | {e['device']} | {e['date']} | {e['shape']} | "
            f"`{e['command']}` |"
        )
    missing = [name for name in sorted(EXPECTED_FIGURES) if name not in latest]
    lines += ["", "## Still unmeasured", ""]
    if missing:
        lines += [f"- `{name}`: {EXPECTED_FIGURES[name]}" for name in missing]
    else:
        lines.append("Every expected figure has been measured at least once.")
    RESULTS_MD.write_text("\n".join(lines) + "\n")


def _import_benchmark_modules() -> None:
    """Benchmark scripts declare their figures with `expect(...)` at import time. Run as `python -m
    benchmarks.results`, this module is `__main__`: it stands in for `benchmarks.results` too, so that the scripts'
    `expect` calls fill this EXPECTED_FIGURES."""
    import importlib

    sys.modules.setdefault(f"{__package__}.results", sys.modules[__name__])
    for path in sorted(HERE.glob("bench_*.py")):
        importlib.import_module(f"{__package__}.{path.stem}")


def merge(path: str | Path) -> tuple[int, list[str]]:
    """Append the figures of another results file (the GPU suite's $OUT/results.jsonl) to results.jsonl and
    regenerate RESULTS.md. Stand-in figures (`small_*`, from a dry run) and malformed lines are left out.
    Returns (figures merged, reasons for each line left out)."""
    kept, left_out = [], []
    present = set(RESULTS_JSONL.read_text().splitlines()) if RESULTS_JSONL.exists() else set()
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            left_out.append(f"line {number}: not JSON ({error})")
            continue
        if not isinstance(entry, dict) or set(entry) != set(FIGURE_KEYS):
            left_out.append(f"line {number}: not a figure (keys {sorted(entry) if isinstance(entry, dict) else '-'})")
        elif entry["name"].startswith("small_"):
            left_out.append(f"line {number}: {entry['name']} is a dry-run stand-in")
        elif json.dumps({key: entry[key] for key in FIGURE_KEYS}) in present:
            left_out.append(f"line {number}: {entry['name']} is in {RESULTS_JSONL.name} already")
        else:
            kept.append(entry)
    if kept:
        with RESULTS_JSONL.open("a") as fh:
            for entry in kept:
                fh.write(json.dumps({key: entry[key] for key in FIGURE_KEYS}) + "\n")
    write_markdown()
    return len(kept), left_out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate RESULTS.md, or first merge another results file.")
    parser.add_argument("--merge", metavar="PATH", help="a results.jsonl written by benchmarks/gpu_suite.sh")
    cli = parser.parse_args()
    if cli.merge:
        merged, skipped = merge(cli.merge)
        for reason in skipped:
            print(f"left out: {reason}")
        print(f"merged {merged} figures from {cli.merge} into {RESULTS_JSONL}")
    else:
        write_markdown()
        print(RESULTS_MD.read_text())
