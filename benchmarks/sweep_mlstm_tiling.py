"""Search the launch settings of the Triton mLSTM chunkwise kernels on a GPU: a tuning aid, not a figure.

    python -m benchmarks.sweep_mlstm_tiling                       # the TFLA benchmark's first shape, fwd+bwd
    python -m benchmarks.sweep_mlstm_tiling --objective fwd       # prefill: the forward alone
    python -m benchmarks.sweep_mlstm_tiling --small --device cpu  # the harness on CPU (interpreter; CI)

On the H200 (2026-11-30) our kernels at their defaults (chunk 128, 64-wide tiles, 4 warps, no software pipelining)
were 0.89-1.02x TFLA. This script finds better settings in one short GPU call, by coordinate descent from the
defaults: for each setting in turn (chunk size, sequence sub-block, DHQK tile, DHV tile, warps, pipelining depth)
every value is tried with the others at the best so far, and the fastest is kept. A candidate counts only if its
output and input gradients agree with those of the defaults (relative error of the whole tensor < 2e-2: two bf16
tilings sum in different orders, a wrong one is off by O(1)); one that fails to compile or needs more shared memory
than the GPU has is reported and skipped. `--budget` seconds end the search early, keeping the best so far.

Every candidate is printed and appended to `--out` (JSON lines); the best is printed as a `TilingOverride` with its
speed-up over the defaults in the same run. Nothing is written to benchmarks/results.jsonl: the figure that counts
is bench_mlstm_kernels' against TFLA, measured after the defaults in kernels/mlstm/triton.py are changed.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks.bench_mlstm_kernels import Run, _bench, _chunk_inputs, _run, timed_closures
from benchmarks.results import DEADLINE_ENV
from modeling_xlstm.kernels.mlstm.triton import DEFAULT_BLOCK_DH, DEFAULT_BLOCK_L

# the values tried for each setting, in the order they are tuned (sizes above a dimension are clipped to it)
SEARCH = {
    "chunk_size": (64, 128, 256),
    "block_l": (32, 64, 128),
    "block_k": (32, 64, 128),
    "block_v": (32, 64, 128),
    "num_warps": (4, 8),
    "num_stages": (1, 2, 3),
}
SMALL_SEARCH = {"chunk_size": (16, 32), "block_l": (16,), "block_k": (16,), "block_v": (16, 32), "num_warps": (4,),
                "num_stages": (1, 2)}
# the kernels' defaults, spelled out where they are constants, so that trying a default value again is seen as a repeat
DEFAULTS = {"chunk_size": 128, "block_l": DEFAULT_BLOCK_L, "block_k": DEFAULT_BLOCK_DH, "block_v": DEFAULT_BLOCK_DH,
            "num_warps": None, "num_stages": 1}
AGREEMENT = 2e-2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", choices=("fwdbwd", "fwd"), default="fwdbwd",
                        help="what is minimised (default: forward+backward, training)")
    parser.add_argument("--shape", default=None, help="B,S (default: the benchmark's first, 8,8192)")
    parser.add_argument("--budget", type=float, default=170.0,
                        help="seconds for the whole search (under gpu_suite.sh: at most the step's time left)")
    parser.add_argument("--out", default=None, help="append every candidate here (JSON lines)")
    parser.add_argument("--small", action="store_true", help="tiny shapes and search (CPU check of the harness)")
    parser.add_argument("--device", default="cuda")
    return parser.parse_args(argv)


class Candidate:
    """One setting of the chunkwise kernels: its closures, its outputs, its times."""

    def __init__(self, settings: dict, inputs, dh, run: Run):
        from modeling_xlstm.kernels.mlstm.triton import TilingOverride, mlstm_chunkwise

        self.settings = dict(settings)
        tiling = TilingOverride(*(settings[key] for key in TilingOverride._fields))
        self.inputs, self.dh, self.device = inputs, dh, run.device
        self.call = lambda: mlstm_chunkwise(*inputs, chunk_size=settings["chunk_size"], tiling=tiling)[0]

    def outputs(self):
        """h and the input gradients, float32."""
        for t in self.inputs:
            t.grad = None
        h = self.call()
        h.backward(self.dh)
        return [h.detach().float()] + [t.grad.float() for t in self.inputs]

    def time(self, objective: str) -> dict:
        fwd, fwdbwd = timed_closures(self.call, self.inputs, self.dh)
        times = {"fwd": _bench(fwd, self.device)}
        if objective == "fwdbwd":
            times["fwdbwd"] = _bench(fwdbwd, self.device)
        return times


def clipped(settings: dict) -> dict:
    """The settings as the kernels apply them: a sequence sub-block longer than the chunk is the chunk (so that the
    search does not time one launch twice under two names)."""
    return dict(settings, block_l=min(settings["block_l"], settings["chunk_size"]))


def relative_error(ours, reference) -> float:
    return max(float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(ours, reference))


def sweep(args) -> dict:
    import torch

    run = _run(args)
    B, S = (int(x) for x in args.shape.split(",")) if args.shape else run.sizes.chunk_shapes[0]
    search = SMALL_SEARCH if args.small else SEARCH
    inputs = _chunk_inputs(B, S, run, requires_grad=True)
    dh = torch.randn(B, run.sizes.nh, S, run.sizes.dv, device=run.device, dtype=run.dtype)
    seconds = args.budget
    if os.environ.get(DEADLINE_ENV):  # under gpu_suite.sh: end in time for the step's summary
        seconds = min(seconds, float(os.environ[DEADLINE_ENV]) - time.time() - 10)
    deadline = time.monotonic() + seconds
    shape = f"B={B} S={S} NH={run.sizes.nh} dqk={run.sizes.dqk} dv={run.sizes.dv} {run.dtype_name}"
    print(f"mLSTM chunkwise tiling sweep, {shape}, objective {args.objective}, budget {seconds:.0f} s", flush=True)

    defaults = clipped(dict(DEFAULTS, chunk_size=DEFAULTS["chunk_size"] if not args.small else search["chunk_size"][0]))
    baseline = Candidate(defaults, inputs, dh, run)
    reference = baseline.outputs()
    tried: dict[tuple, dict] = {}

    def measure(settings: dict) -> dict:
        key = tuple(sorted(settings.items(), key=lambda item: item[0]))
        if key in tried:
            return tried[key]
        entry = {"settings": settings}
        try:
            candidate = Candidate(settings, inputs, dh, run)
            entry["rel_error"] = relative_error(candidate.outputs(), reference)
            if entry["rel_error"] < AGREEMENT:
                entry.update(candidate.time(args.objective))
        except Exception as error:  # noqa: BLE001 -- a setting that does not compile or fit is reported, not fatal
            entry["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
        tried[key] = entry
        print(json.dumps(entry), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(dict(entry, shape=shape, objective=args.objective)) + "\n")
        return entry

    best_settings = defaults
    best = measure(defaults)
    if args.objective not in best:
        raise RuntimeError(f"the default settings did not run: {best}")
    start = best
    for name, values in search.items():
        for value in values:
            if time.monotonic() > deadline:
                break
            settings = clipped(dict(best_settings, **{name: value}))
            entry = measure(settings)
            if entry.get(args.objective, float("inf")) < best[args.objective]:
                best_settings, best = settings, entry
    speedup = start[args.objective] / best[args.objective]
    out_of_time = time.monotonic() > deadline
    print(f"best of {len(tried)} ({'budget spent' if out_of_time else 'search complete'}): {best_settings}, "
          f"{args.objective} {best[args.objective]:.4g} ms vs defaults {start[args.objective]:.4g} ms "
          f"({speedup:.3f}x)", flush=True)
    return {"best": best_settings, "best_ms": best[args.objective], "default_ms": start[args.objective],
            "speedup": speedup, "tried": len(tried), "complete": not out_of_time}


def main(argv=None) -> dict:
    return sweep(parse_args(argv))


if __name__ == "__main__":
    main()
