"""benchmarks/bench_decode_paper_cpu.py runs end to end at a small length, checks that every side of ours generates
NX-AI's tokens, and prints every figure it can record (the script is run by hand on an idle machine; a broken side
would otherwise surface only there)."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = {
    f"{prefix}_b{batch}" for prefix in ("cpu_decode_tok_s_paper", "cpu_generate_tok_s_paper") for batch in (1, 8)
}


def test_every_side_generates_their_tokens_and_nothing_is_recorded_with_no_record():
    results = REPO / "benchmarks" / "results.jsonl"
    before = results.read_bytes()
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_decode_paper_cpu", "--repeats", "1", "--prompt-tokens", "5",
         "--new-tokens", "4", "--no-record"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]  # exits 1 where tokens differ
    printed = set(re.findall(r"^(\w+): ours [\d.]+ tok/s, theirs [\d.]+ tok/s, ratio [\d.]+$", run.stdout, re.M))
    assert printed == FIGURES
    assert results.read_bytes() == before
