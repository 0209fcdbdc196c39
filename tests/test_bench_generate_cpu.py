"""benchmarks/bench_generate_cpu.py's decode-flatness part runs end to end and records each figure beside
transformers' xLSTM measured in the same run (issue: every figure beside its competitor)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = (
    "cpu_decode_step_time_ratio_t2000_vs_t50",
    "cpu_decode_cache_growth_t50_to_t2000",
    "cpu_decode_rss_growth_mb_t50_to_t2000",
)


def test_decode_flatness_records_ours_beside_theirs(tmp_path):
    results = tmp_path / "results.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_generate_cpu", "--parts", "decode", "--decode-tokens", "52"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "XLSTM_RESULTS_JSONL": str(results)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    entries = {entry["name"]: entry for entry in map(json.loads, results.read_text().splitlines())}
    assert set(entries) == set(FIGURES)
    for entry in entries.values():
        assert entry["theirs"] is not None and "transformers xLSTMForCausalLM" in entry["competitor"]
    # neither cache grows with the tokens decoded
    assert entries["cpu_decode_cache_growth_t50_to_t2000"]["ours"] == 0
    assert entries["cpu_decode_cache_growth_t50_to_t2000"]["theirs"] == 0
