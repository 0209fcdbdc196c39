"""benchmarks/gpu_suite.sh: its CPU dry run (every step at tiny shapes, the same scripts and code paths as on the GPU
as far as a CPU allows), the per-step budget that cuts a step off while the later ones still run, and the pieces of
benchmarks/results.py the suite relies on (redirected figures, skip records, deadline-bound child timeouts, merge).

One dry run serves all the tests of the first part (about a minute on 2 cores): its mlstm_step budget is set to
2 seconds, less than the script needs to import torch, so that step must be cut off.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import benchmarks
from benchmarks import results as results_module

BENCHMARKS = Path(benchmarks.__file__).resolve().parent
ROOT = BENCHMARKS.parent
SUITE = BENCHMARKS / "gpu_suite.sh"
STEPS = ["pytest_gpu", "mlstm_chunk", "mlstm_step", "slstm", "7b_decode", "7b_prefill", "7b_ttft", "7b_profile",
         "mlstm_tune"]
FIGURE_KEYS = {"name", "ours", "theirs", "competitor", "unit", "ratio", "better", "device", "date", "command", "shape"}
CUT_OFF = "mlstm_step"


def suite_env() -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("XLSTM_", "GPU_SUITE_")) and key != "OUT"}
    env["PYTHON"] = sys.executable
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-suite-out")
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SUITE), "--dry-run", "--out", str(out), "--budget", f"{CUT_OFF}=2", "--total-budget", "400"],
        cwd=ROOT, env=suite_env(), capture_output=True, text=True, timeout=420,
    )
    seconds = time.monotonic() - start
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    ledger = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
    figures = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return dict(proc=proc, out=out, seconds=seconds, ledger=ledger, figures={f["name"]: f for f in figures},
                lines=figures, steps={e["step"]: e for e in ledger if e["kind"] == "step"},
                skips=[e for e in ledger if e["kind"] == "skip"])


def test_dry_run_writes_its_files_and_reports_the_device(dry_run):
    names = sorted(path.name for path in dry_run["out"].iterdir())
    assert names == ["7b.log", "mlstm.log", "pytest.log", "results.jsonl", "setup.log", "slstm.log", "steps.jsonl"]
    assert len(names) <= 8  # the device tool returns at most 8 files from $OUT
    env = dry_run["ledger"][0]
    assert env["kind"] == "env" and env["cuda"] is False and env["device"].startswith("CPU")
    assert env["transformers"] and env["triton"] and "error" not in env
    assert [e["step"] for e in dry_run["ledger"] if e["kind"] == "step"] == STEPS  # priority order, every step
    assert dry_run["proc"].returncode == 1  # a step was cut off
    assert "done in" in dry_run["proc"].stdout and "figures in" in dry_run["proc"].stdout


def test_dry_run_figures_are_well_formed_stand_ins(dry_run):
    lines = dry_run["lines"]
    assert lines
    today = datetime.date.today().isoformat()
    for figure in lines:
        assert set(figure) == FIGURE_KEYS, figure
        assert figure["name"].startswith("small_"), figure["name"]  # never mistaken for the GPU figure
        assert isinstance(figure["ours"], float) and figure["ours"] > 0, figure
        assert figure["better"] in ("lower", "higher") and figure["unit"] and figure["shape"]
        assert figure["device"].startswith("CPU") and "H100" not in figure["device"]
        assert figure["date"] == today and "python -m benchmarks.bench_" in figure["command"]  # as it was run
        if figure["theirs"] is None:
            assert figure["ratio"] is None
        else:
            assert figure["ratio"] > 0
    # every step that can run on a CPU recorded its figures
    steps = dry_run["steps"]
    for step in ("mlstm_chunk", "slstm", "7b_decode", "7b_prefill", "7b_ttft"):
        assert steps[step]["status"] == "ok" and steps[step]["figures"] > 0, steps[step]
    assert sum(steps[step]["figures"] for step in STEPS) == len(lines)
    figures = dry_run["figures"]
    expected = [
        "small_mlstm_chunkwise_fwd_ms_B2_S32_NH2_dqk16_dv32_fp32_vs_tfla",
        "small_mlstm_chunkwise_fwdbwd_ms_B1_S64_NH2_dqk16_dv32_fp32_vs_tfla",
        "small_slstm_fwd_ms_B2_T16_H32_NH2_fp32_vs_xlstm_vanilla",
        "small_slstm_fwdbwd_ms_B2_T16_H32_NH2_fp32_vs_flashrnn_cuda_fused",
        "small_7b_decode_tok_s_b1_p16",
        "small_7b_decode_tok_s_b8_p16",
        "small_7b_decode_bound_fraction_b1_p16",
        "small_copy_bandwidth_gb_s",
        "small_7b_prefill_tok_s_2x130",
        "small_7b_ttft_ms_p130",
    ]
    assert not [name for name in expected if name not in figures]
    # the competitors that run on a CPU were measured beside ours
    for name in ("small_slstm_fwd_ms_B2_T16_H32_NH2_fp32_vs_xlstm_vanilla", "small_7b_decode_tok_s_b1_p16"):
        assert figures[name]["theirs"] > 0 and figures[name]["ratio"] > 0
    # the bound fraction is ours / (batch x bandwidth / weight bytes), beside theirs, with the same ratio as tok/s
    fraction, speed = figures["small_7b_decode_bound_fraction_b1_p16"], figures["small_7b_decode_tok_s_b1_p16"]
    assert fraction["ratio"] == pytest.approx(speed["ratio"], rel=1e-3)
    assert "GB/s copy bandwidth" in fraction["shape"] and "GB of weights" in fraction["shape"]
    assert figures["small_copy_bandwidth_gb_s"]["unit"].startswith("GB/s")


def test_dry_run_records_what_it_could_not_measure(dry_run):
    skips, figures = dry_run["skips"], dry_run["figures"]
    by_what = {}
    for skip in skips:
        assert skip["step"] in STEPS and skip["reason"]
        by_what.setdefault(skip["step"], []).append(skip)
        for name in skip["figures"]:  # each skipped competitor's figure is there, with theirs=None and the reason
            assert figures[name]["theirs"] is None and figures[name]["ratio"] is None
    cuda_only = [s["what"] for s in skips if "CUDA" in s["reason"]]
    for needle in ("TFLA", "cuda backend", "cuda_fused", "triton_fused"):
        assert any(needle in what for what in cuda_only), (needle, cuda_only)
    assert not any("vanilla" in what for what in cuda_only)  # it runs on a CPU, so it was measured
    for name in ("small_slstm_fwd_ms_B2_T16_H32_NH2_fp32_vs_xlstm_cuda",
                 "small_mlstm_chunkwise_fwd_ms_B2_S32_NH2_dqk16_dv32_fp32_vs_tfla"):
        assert "skipped: " in figures[name]["competitor"] and "CUDA" in figures[name]["competitor"]
    assert any("--no-theirs" in s["reason"] for s in by_what["7b_prefill"])


def test_step_over_its_budget_is_cut_off_and_later_steps_still_run(dry_run):
    steps = dry_run["steps"]
    cut = steps[CUT_OFF]
    assert cut["status"] == "timeout" and cut["rc"] in (124, 137) and cut["budget_s"] == 2
    assert cut["seconds"] <= 2 + 10 + 5  # TERM at the budget, KILL 10 s later at the latest
    assert cut["figures"] == 0 and not any(name.startswith("small_mlstm_step") for name in dry_run["figures"])
    later = STEPS[STEPS.index(CUT_OFF) + 1:]
    assert all(steps[step]["status"] == "ok" for step in later), {step: steps[step] for step in later}
    assert "mlstm_step: timeout" in dry_run["proc"].stdout


def test_tuning_steps_profile_and_search_without_figures(dry_run):
    assert dry_run["steps"]["mlstm_tune"]["figures"] == dry_run["steps"]["7b_profile"]["figures"] == 0
    log = (dry_run["out"] / "mlstm.log").read_text()
    assert "mLSTM chunkwise tiling sweep" in log and "vs defaults" in log
    # the search ends when every candidate is measured or its time is up (a slow machine: the interpreter at ~2 s a
    # candidate); either way it measured several and reports the best beside the defaults
    tried = re.search(r"best of (\d+) \((search complete|budget spent)\)", log)
    assert tried and int(tried.group(1)) >= 2, log[-2000:]
    log = (dry_run["out"] / "7b.log").read_text()
    assert "== prefill:" in log and "== decode:" in log and "matmul" in log


def test_pytest_step_runs_the_gpu_tests(dry_run):
    step = dry_run["steps"]["pytest_gpu"]
    assert step["status"] in ("ok", "failed") and step["log"] == "pytest.log"  # it ran to its end
    assert "deselected" in step["summary"]  # -m gpu: the CPU tests are left out, the GPU ones skipped on a CPU
    assert "-m gpu" in step["command"]


# ---------------------------------------------------------------------------------------------------------------
# the suite's options, without running it
# ---------------------------------------------------------------------------------------------------------------


def test_list_shows_the_steps_in_priority_order_with_budgets():
    out = subprocess.run(["bash", str(SUITE), "--list", "--budget", "slstm=7", "--budget-scale", "2"], cwd=ROOT,
                         env=suite_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == STEPS
    budgets = {row[0]: row[1] for row in rows}
    assert budgets["slstm"] == "7s" and budgets["pytest_gpu"] == "300s"  # an override; a default x 2
    commands = {row[0]: " ".join(row[2:]) for row in rows}
    assert "--parts decode --batches 1,8" in commands["7b_decode"]
    assert "--ttft-prompts 16384" in commands["7b_ttft"] and "--jobs chunk" in commands["mlstm_chunk"]
    bad = subprocess.run(["bash", str(SUITE), "--only", "nonsense"], cwd=ROOT, env=suite_env(), capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "unknown step" in bad.stderr


@pytest.mark.parametrize("selection", [["--only", "7b"], ["--skip", "kernels,tune"],
                                       ["--only", "kernels,7b", "--skip", "kernels"]])
def test_step_groups_split_the_suite_for_two_calls(selection):
    out = subprocess.run(["bash", str(SUITE), "--list", *selection], cwd=ROOT, env=suite_env(), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["7b_decode", "7b_prefill", "7b_ttft"]


# ---------------------------------------------------------------------------------------------------------------
# benchmarks/results.py under the suite
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def results(monkeypatch, tmp_path):
    monkeypatch.setattr(results_module, "RESULTS_JSONL", tmp_path / "results.jsonl")
    monkeypatch.setattr(results_module, "RESULTS_MD", tmp_path / "RESULTS.md")
    for var in (results_module.RESULTS_ENV, results_module.LEDGER_ENV, results_module.STEP_ENV,
                results_module.DEADLINE_ENV):
        monkeypatch.delenv(var, raising=False)
    return results_module


def test_redirected_figures_skips_and_deadline(results, monkeypatch, tmp_path):
    out = tmp_path / "out" / "results.jsonl"
    monkeypatch.setenv(results.RESULTS_ENV, str(out))
    monkeypatch.setenv(results.LEDGER_ENV, str(tmp_path / "steps.jsonl"))
    monkeypatch.setenv(results.STEP_ENV, "slstm")
    entry = results.record("x_ms", 2.0, 4.0, "them", "ms", "lower", "GPU", "B=1")
    assert entry["ratio"] == 2.0 and json.loads(out.read_text()) == entry
    assert not results.RESULTS_JSONL.exists() and not results.RESULTS_MD.exists()  # benchmarks/ left alone
    results.record_skip("their kernel", "needs a CUDA GPU", ["x_ms"])
    skip = json.loads((tmp_path / "steps.jsonl").read_text())
    assert skip == {"kind": "skip", "step": "slstm", "what": "their kernel", "reason": "needs a CUDA GPU",
                    "figures": ["x_ms"]}

    assert results.child_timeout(600) == 600  # no deadline: the default
    monkeypatch.setenv(results.DEADLINE_ENV, str(time.time() + 100))
    assert 80 < results.child_timeout(600) <= 90  # ends 10 s before the deadline
    assert 35 < results.child_timeout(600, share=2) <= 45
    assert results.child_timeout(30) == 30
    monkeypatch.setenv(results.DEADLINE_ENV, str(time.time() + 12))
    assert results.child_timeout(600) is None  # too little left: skip the competitor


def test_merge_takes_gpu_figures_only(results, tmp_path):
    gpu = dict(name="gpu_x", ours=1.0, theirs=None, competitor=None, unit="ms", ratio=None, better="lower",
               device="NVIDIA H200", date="2026-01-01", command="python -m benchmarks.x", shape="B=1")
    suite_file = tmp_path / "suite.jsonl"
    suite_file.write_text("\n".join([json.dumps(gpu), json.dumps(dict(gpu, name="small_x")), "not json",
                                     json.dumps({"kind": "skip"})]) + "\n")
    merged, left_out = results.merge(suite_file)
    assert merged == 1 and len(left_out) == 3
    assert [json.loads(line)["name"] for line in results.RESULTS_JSONL.read_text().splitlines()] == ["gpu_x"]
    assert "gpu_x" in results.RESULTS_MD.read_text()
    assert results.merge(suite_file)[0] == 0  # merging the same file twice adds nothing
