"""benchmarks/bench_training_cpu.py runs end to end at a small shape and prints every figure it can record.

The script is run by hand on an idle machine; a mistake in one of its later comparisons would otherwise surface only
after the earlier ones had been timed and recorded.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = (
    "cpu_train_tok_s_mlstm",
    "cpu_train_tok_s_mlstm_fused_loss",
    "cpu_train_tok_s_paper_slstm",
    "cpu_train_tok_s_paper_slstm_fused_loss",
    "cpu_train_tok_s_bundled_fused_loss",
)


def test_every_comparison_runs_and_nothing_is_recorded_with_no_record():
    results = REPO / "benchmarks" / "results.jsonl"
    before = results.read_bytes()
    # T 64: the competitor's native chunkwise kernel needs a multiple of its chunk size of 64
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_training_cpu", "--batch", "1", "--seq-len", "64", "--steps", "1",
         "--no-record"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    printed = set(re.findall(r"^(\w+): ours [\d.]+ tok/s, theirs [\d.]+ tok/s, ratio [\d.]+$", run.stdout, re.M))
    assert printed == set(FIGURES)
    assert "the matmuls alone" in run.stdout
    assert results.read_bytes() == before
