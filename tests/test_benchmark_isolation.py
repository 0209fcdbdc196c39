"""benchmarks/isolated.py: a competitor that crashes its process costs its own figure, not the benchmark run.

The children here stand in for a competitor whose Triton compile aborts the process (as mlstm_kernels' TFLA does
under Triton 3.6 for sm_90) unless DISABLE_LLVM_OPT=1 is set, and for one that fails with a Python error.
"""

import pytest
from helpers import BENCHMARKS, benchmark_module

CHILD = """
import os, sys
sys.path.insert(0, {benchmarks!r})
from isolated import write_child_result

mode = sys.argv[1]
if mode == "abort" and os.environ.get("DISABLE_LLVM_OPT") != "1":
    os.abort()  # what a failed LLVM assertion does to the compiling process
if mode == "always-abort":
    os.abort()
if mode == "error":
    raise RuntimeError("their kernel needs a GPU")
print("child measured")
write_child_result(sys.argv[sys.argv.index("--child-json") + 1], {{"ms": 1.5, "mode": mode}})
"""


@pytest.fixture(scope="module")
def isolated():
    with benchmark_module("isolated") as module:
        yield module


@pytest.fixture
def child(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(benchmarks=str(BENCHMARKS)))
    return script


def test_child_measurement_comes_back(isolated, child, capfd):
    result, failure, note = isolated.measure_isolated(child, ["ok"], timeout=60)
    assert result == {"ms": 1.5, "mode": "ok"} and failure is None and note == ""
    assert "child measured" in capfd.readouterr().out  # the child's progress is shown


def test_child_that_hangs_is_stopped_and_not_retried(isolated, tmp_path):
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(60)\n")
    result, failure, note = isolated.measure_isolated(script, [], timeout=1)
    assert result is None and failure == "child process timed out after 1 s" and note == ""


def test_crashed_child_is_retried_without_llvm_optimisation_and_says_so(isolated, child):
    result, failure, note = isolated.measure_isolated(child, ["abort"], timeout=60)
    assert result == {"ms": 1.5, "mode": "abort"} and failure is None
    assert "DISABLE_LLVM_OPT=1" in note and "may slow them" in note


def test_child_that_always_crashes_gives_a_reason(isolated, child):
    result, failure, note = isolated.measure_isolated(child, ["always-abort"], timeout=60)
    assert result is None and note == ""
    assert failure.count("killed by SIGABRT") == 2  # the plain run and the retry


def test_python_error_is_not_retried_and_names_the_error(isolated, child):
    result, failure, _ = isolated.measure_isolated(child, ["error"], timeout=60)
    assert result is None
    assert "exited with status 1" in failure and "their kernel needs a GPU" in failure
    assert "DISABLE_LLVM_OPT" not in failure
