"""benchmarks/isolated.py: a competitor that crashes its process costs its own figure, not the benchmark run.

The children here stand in for a competitor whose Triton compile aborts the process (as mlstm_kernels' TFLA does
under Triton 3.6 for sm_90) unless DISABLE_LLVM_OPT=1 is set, and for one that fails with a Python error. Like the
benchmark scripts, they run as modules (`python -m NAME`) in the repo root, where `benchmarks` is importable; they
lie in a scratch folder put on the children's PYTHONPATH.
"""

import json
import os
import re

import pytest

from benchmarks import isolated, results

CHILD = """
import os, sys
from benchmarks.isolated import write_child_result

mode = sys.argv[1]
if os.environ.get("RUNS_FILE"):  # one line per run, with the workaround's setting
    with open(os.environ["RUNS_FILE"], "a") as fh:
        fh.write(os.environ.get("DISABLE_LLVM_OPT", "-") + "\\n")
if mode == "abort" and os.environ.get("DISABLE_LLVM_OPT") != "1":
    os.abort()  # what a failed LLVM assertion does to the compiling process
if mode == "always-abort":
    os.abort()
if mode == "error":
    raise RuntimeError("their kernel needs a GPU")
print("child measured")
result = {"ms": 1.5, "mode": mode, "module": __spec__.name, "cwd": os.getcwd()}
write_child_result(sys.argv[sys.argv.index("--child-json") + 1], result)
"""


@pytest.fixture
def child(tmp_path, monkeypatch):
    """The name of the child module (and of a hanging one, "isolated_hang"), importable by the children."""
    (tmp_path / "isolated_child.py").write_text(CHILD)
    (tmp_path / "isolated_hang.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return "isolated_child"


def test_child_measurement_comes_back(child, capfd):
    result, failure, note = isolated.measure_isolated(child, ["ok"], timeout=60)
    assert failure is None and note == ""
    # run as a module (`python -m`), in the repo root
    assert result == {"ms": 1.5, "mode": "ok", "module": child, "cwd": str(isolated.ROOT)}
    assert "child measured" in capfd.readouterr().out  # the child's progress is shown


def test_child_that_hangs_is_stopped_and_not_retried(child):
    result, failure, note = isolated.measure_isolated("isolated_hang", [], timeout=1)
    assert result is None and failure == "child process timed out after 1 s" and note == ""


def test_crashed_child_is_retried_without_llvm_optimisation_and_says_so(child):
    result, failure, note = isolated.measure_isolated(child, ["abort"], timeout=60)
    assert result["mode"] == "abort" and result["ms"] == 1.5 and failure is None
    assert "DISABLE_LLVM_OPT=1" in note and "may slow them" in note


def test_child_that_always_crashes_gives_a_reason(child):
    result, failure, note = isolated.measure_isolated(child, ["always-abort"], timeout=60)
    assert result is None and note == ""
    assert failure.count("killed by SIGABRT") == 2  # the plain run and the retry


def test_python_error_is_not_retried_and_names_the_error(child):
    result, failure, _ = isolated.measure_isolated(child, ["error"], timeout=60)
    assert result is None
    assert "exited with status 1" in failure and "their kernel needs a GPU" in failure
    assert "DISABLE_LLVM_OPT" not in failure


def test_retry_gets_only_the_time_left(child, tmp_path):
    """The timeout covers the crashed run and the retry together: on the H200 the retry of a crashed TFLA child got
    the whole timeout again, ran past the GPU suite's step deadline, and the step was killed with our own figures."""
    (tmp_path / "isolated_slow_abort.py").write_text(
        "import os, time\ntime.sleep(1.5)\nif os.environ.get('DISABLE_LLVM_OPT') != '1':\n    os.abort()\n"
        "time.sleep(60)\n"
    )
    result, failure, note = isolated.measure_isolated("isolated_slow_abort", [], timeout=4)
    assert result is None and note == ""
    assert "killed by SIGABRT" in failure
    retry_seconds = int(re.search(r"timed out after (\d+) s", failure).group(1))
    assert retry_seconds <= 3  # 4 s in all, of which the first run took at least 1.5


def test_later_steps_of_a_suite_run_start_with_the_workaround(child, tmp_path, monkeypatch):
    """Under the GPU suite, a crash cured by the workaround is noted in the ledger, and the next child of the same
    competitor (a later step) starts with the workaround instead of crashing first; other competitors do not."""
    runs, ledger = tmp_path / "runs", tmp_path / "steps.jsonl"
    monkeypatch.setenv("RUNS_FILE", str(runs))
    monkeypatch.setenv(results.LEDGER_ENV, str(ledger))
    monkeypatch.setenv(results.STEP_ENV, "mlstm_chunk")
    first, _, note = isolated.measure_isolated(child, ["abort"], timeout=60, crash_key="tfla")
    assert first["ms"] == 1.5 and "DISABLE_LLVM_OPT=1" in note
    assert runs.read_text().split() == ["-", "1"]  # crashed, then cured
    entry = json.loads(ledger.read_text())
    assert entry["kind"] == "llvm_workaround" and entry["crash_key"] == "tfla" and entry["step"] == "mlstm_chunk"
    assert "SIGABRT" in entry["crash"]

    monkeypatch.setenv(results.STEP_ENV, "7b_prefill")
    second, failure, note = isolated.measure_isolated(child, ["abort"], timeout=60, crash_key="tfla")
    assert second["ms"] == 1.5 and failure is None and "DISABLE_LLVM_OPT=1" in note
    assert runs.read_text().split() == ["-", "1", "1"]  # no second crash

    # another competitor (or one without a key) compiles normally: never slowed by the workaround
    third, _, note = isolated.measure_isolated(child, ["ok"], timeout=60, crash_key="mlstm_kernels step")
    fourth, _, _ = isolated.measure_isolated(child, ["ok"], timeout=60)
    assert third["ms"] == fourth["ms"] == 1.5 and note == ""
    assert runs.read_text().split() == ["-", "1", "1", "-", "-"]


def test_without_the_suite_nothing_is_remembered(child, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("RUNS_FILE", str(runs))
    monkeypatch.delenv(results.LEDGER_ENV, raising=False)
    for _ in range(2):
        isolated.measure_isolated(child, ["abort"], timeout=60, crash_key="tfla")
    assert runs.read_text().split() == ["-", "1", "-", "1"]
