"""The benchmark scripts: each measures ours and a competitor side by side in one run and records the figures in
results.jsonl / RESULTS.md (DESIGN section 8).

A package, not a wheel part: run the scripts from the repo root as modules, e.g.
`python -m benchmarks.bench_generate_cpu` (`python benchmarks/<script>.py` does not work: they import their
siblings as `benchmarks.results`, `benchmarks.isolated`, `benchmarks.competitors`). The tests import them the
same way (pytest puts the repo root on the path: pyproject.toml, `[tool.pytest.ini_options] pythonpath`).

- results.py      recording figures, RESULTS.md, merging the GPU suite's figures
- isolated.py     measuring a competitor in a child process (`python -m benchmarks.<script> ... --child-json`)
- competitors.py  every competitor the scripts run: transformers' xLSTM on our weights, mlstm_kernels' TFLA and
                  step kernels, the xlstm package's sLSTM cell, FlashRNN
- bench_*.py      the benchmarks; gpu_suite.sh runs the GPU ones in one call on a GPU machine
"""
