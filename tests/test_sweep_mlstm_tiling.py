"""benchmarks/sweep_mlstm_tiling.py on CPU (our Triton kernels in the interpreter, which conftest.py selects without
a GPU; tiny shapes): the search keeps only candidates that compute what the defaults compute, reports every
candidate and picks the fastest."""

import json

import pytest

from benchmarks import sweep_mlstm_tiling as sweep


def test_sweep_reports_every_candidate_and_picks_the_fastest(tmp_path):
    out = tmp_path / "sweep.jsonl"
    result = sweep.main(["--small", "--device", "cpu", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == result["tried"] >= len(sweep.SMALL_SEARCH) and result["complete"]
    assert all(row["rel_error"] < sweep.AGREEMENT and "fwdbwd" in row for row in rows)
    assert result["best_ms"] == min(row["fwdbwd"] for row in rows)
    assert result["default_ms"] == rows[0]["fwdbwd"]  # the defaults come first
    assert rows[0]["settings"]["num_stages"] == sweep.DEFAULTS["num_stages"]
    assert result["speedup"] == pytest.approx(result["default_ms"] / result["best_ms"])


def test_candidate_that_computes_something_else_is_never_chosen(monkeypatch, capsys):
    outputs = sweep.Candidate.outputs

    def wrong_when_pipelined(self):
        values = outputs(self)
        if self.settings["num_stages"] == 2:  # a miscompiled setting: off by O(1)
            values[0] = values[0] + 1.0
        return values

    monkeypatch.setattr(sweep.Candidate, "outputs", wrong_when_pipelined)
    monkeypatch.setattr(sweep.Candidate, "time", lambda self, objective: {
        "fwd": 1.0, "fwdbwd": 0.5 if self.settings["num_stages"] == 2 else 1.0})  # and the "fastest"
    result = sweep.main(["--small", "--device", "cpu"])
    assert result["best"]["num_stages"] != 2
    rejected = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                if line.startswith("{") and json.loads(line)["settings"]["num_stages"] == 2]
    assert rejected and all(row["rel_error"] > sweep.AGREEMENT and "fwdbwd" not in row for row in rejected)


def test_budget_ends_the_search_with_the_defaults_measured():
    result = sweep.main(["--small", "--device", "cpu", "--budget", "0"])
    assert result["tried"] == 1 and not result["complete"] and result["speedup"] == 1.0
