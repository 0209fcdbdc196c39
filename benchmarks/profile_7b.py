"""Where the 7B's prefill and decode time goes, kernel by kernel: a tuning aid, not a figure.

    python -m benchmarks.profile_7b                        # GPU: the 8 x 8,192 prefill and 8 eager decode steps
    python -m benchmarks.profile_7b --small --device cpu   # the same code on a tiny 7B-style model (CI)

On the H200 (2026-11-30) our 7B prefill ran at 32,950 tokens/s, level with transformers' xLSTM and below the 50,000
target, while its matmuls alone would allow about 61,000 (12.9 GFLOP per token at the ~790 TFLOP/s of a large bf16
matmul there). This script
runs ours (`bench_7b_inference.build_ours`, fused projections, the same weights) under `torch.profiler` and prints,
for the prefill and for eager decode steps, the device time split into matmuls, our Triton kernels and everything
else (elementwise, norms, copies), then the most expensive kernels. On a CPU the split is of CPU op time instead.
Nothing is written to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import re

from benchmarks.bench_7b_inference import FULL, SMALL, build_ours, prompt_ids

# kernel / op names, by what they are (CUDA: cuBLAS/CUTLASS kernels; CPU: aten ops)
MATMUL = re.compile(r"gemm|cutlass|xmma|nvjet|cublas|aten::(mm|addmm|bmm|baddbmm)$", re.IGNORECASE)
OURS = re.compile(r"^_(fwd|bwd|step|slstm)\w*_kernel")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny 7B-style config (CPU check)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--decode-steps", type=int, default=8)
    parser.add_argument("--top", type=int, default=25, help="kernels listed per phase")
    return parser.parse_args(argv)


def kind(name: str) -> str:
    if MATMUL.search(name):
        return "matmul"
    return "our Triton kernels" if OURS.search(name) else "other"


def split(events, device: bool) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """(milliseconds per kind, [(name, milliseconds, calls)] by time) of the leaf work in `events`."""
    rows = []
    for event in events:
        if device:
            ms = event.self_device_time_total / 1e3
        elif event.key.startswith("aten::") or OURS.search(event.key):
            ms = event.self_cpu_time_total / 1e3
        else:
            continue  # Python-level and profiler frames: their time is their children's
        if ms > 0:
            rows.append((event.key, ms, event.count))
    rows.sort(key=lambda row: -row[1])
    kinds: dict[str, float] = {}
    for name, ms, _ in rows:
        kinds[kind(name)] = kinds.get(kind(name), 0.0) + ms
    return kinds, rows


def profile(phase: str, run, device) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    run()  # compiles and warms up outside the profile
    if device.type == "cuda":
        torch.cuda.synchronize()
    with torch_profile(activities=activities) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    kinds, rows = split(prof.key_averages(), device.type == "cuda")
    total = sum(kinds.values())
    print(f"\n== {phase}: {total:.1f} ms of {'device' if device.type == 'cuda' else 'CPU op'} time")
    for name, ms in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"   {name:20s} {ms:9.2f} ms  {100 * ms / total:5.1f} %")
    return kinds, rows


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    device = torch.device(args.device)
    scale = SMALL if args.small else FULL
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_ours(scale, device, dtype).fuse_projections()
    vocab = model.config.vocab_size
    batch, length = scale.prefill_shape
    ids = prompt_ids(batch, length, vocab, device)
    token = prompt_ids(1, 1, vocab, device)

    def prefill():
        with torch.no_grad():
            model(ids, use_cache=True, logits_to_keep=1)

    def decode():
        with torch.no_grad():
            cache = model(token, use_cache=True).past_key_values
            for _ in range(args.decode_steps):
                cache = model(token, past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values

    print(f"ours, {model.config.num_hidden_layers} blocks, hidden {model.config.hidden_size}, {dtype}, fused "
          f"projections; prefill {batch} x {length}, decode batch 1 x {args.decode_steps} eager steps")
    report = {}
    for phase, run in (("prefill", prefill), ("decode", decode)):
        kinds, rows = profile(phase, run, device)
        report[phase] = kinds
        for name, ms, calls in rows[: args.top]:
            print(f"   {ms:9.2f} ms {calls:6d} x  {kind(name):18s} {name[:110]}")
    return report


if __name__ == "__main__":
    main()
