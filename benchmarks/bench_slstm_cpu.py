"""CPU training speed of the native sLSTM sequence: forward + backward of `slstm_sequence` (one autograd.Function
with a hand-written backward through time) against the plain step loop it replaced (`slstm_sequence_reference`,
differentiated step by step by autograd) and against the `xlstm` package's (2.0.6) vanilla sLSTM cell, in one run.

Shapes (issue 16): batch 8, 256 steps, hidden 256 and 128, 4 heads, float32; torch threads 1 and 2. Each side gets
the same gate pre-activations [B, T, 4 * hidden] and computes the gradients of the gate pre-activations, the
recurrent kernel and the bias for a fixed random output gradient. The xlstm cell is `sLSTMCell` with
backend="vanilla" (its PyTorch loop; its only CPU backend), fed the same inputs in its layout; it runs in this
process, so that the three sides can alternate: every repeat times each side once, in a rotating order, and the
table shows the median over repeats (wall clock). Also shown, not recorded: the forward alone under no_grad.

Target (issue 16): ours >= 2x faster forward+backward than the reference loop.

    python -m benchmarks.bench_slstm_cpu [--threads 1 2] [--hidden 256 128] [--repeats 7] [--xlstm-repeats 3]
                                        [--record]

Nothing is written unless --record is given; then each forward+backward figure (ours vs the reference loop, ours
vs xlstm vanilla) is appended through benchmarks/results.py (results.jsonl, RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.competitors import xlstm_slstm_cell
from benchmarks.results import cpu_name, expect, record

B, T, NH = 8, 256, 4
HIDDEN = (256, 128)
THREADS = (1, 2)
COMPETITORS = {
    "reference_loop": "modeling_xlstm native slstm_sequence_reference (step loop, autograd per step), same run",
    "xlstm_vanilla": "xlstm 2.0.6 sLSTMCell backend='vanilla' (PyTorch loop), same run",
}


def figure_name(hidden: int, threads: int, competitor: str) -> str:
    return f"cpu_slstm_fwdbwd_ms_B{B}_T{T}_H{hidden}_NH{NH}_fp32_threads{threads}_vs_{competitor}"


for _hidden in HIDDEN:
    for _threads in THREADS:
        for _key, _what in COMPETITORS.items():
            expect(
                figure_name(_hidden, _threads, _key),
                f"CPU sLSTM sequence forward+backward time, native autograd.Function vs {_what.split(',')[0]}, "
                f"B={B} T={T} hidden {_hidden} {NH} heads fp32, {_threads} torch thread(s)",
            )


def shape_text(hidden: int) -> str:
    return f"B={B} T={T} hidden={hidden} NH={NH} (head dim {hidden // NH}) fp32"


def cpu_device(threads: int) -> str:
    return f"CPU {cpu_name()}, {os.cpu_count()} cores, torch threads={threads}"


def make_sides(hidden: int, seed: int = 0) -> tuple[dict, dict]:
    """The functions to time: forward+backward of each side, and the forward alone (no grad) of ours and the
    reference loop."""
    import torch

    from modeling_xlstm.kernels.slstm import slstm_sequence, slstm_sequence_reference

    dh = hidden // NH
    g = torch.Generator().manual_seed(seed)
    gates = torch.randn(B, T, 4, NH, dh, generator=g)
    gates[:, :, 1] += 3.0  # forget gates mostly open, as after the published bias init
    recurrent = torch.randn(NH, dh, 4, dh, generator=g) / dh**0.5
    bias = torch.randn(NH, 4, dh, generator=g) * 0.1
    dy = torch.randn(B, T, NH, dh, generator=g)
    leaves = [x.clone().requires_grad_() for x in (gates, recurrent, bias)]

    def native(fn):
        def fwdbwd():
            h, _ = fn(*leaves)
            torch.autograd.grad(h, leaves, dy)

        def fwd():
            with torch.no_grad():
                fn(gates, recurrent, bias)

        return fwdbwd, fwd

    ours_fb, ours_f = native(slstm_sequence)
    ref_fb, ref_f = native(slstm_sequence_reference)
    fwdbwd = {"ours": ours_fb, "reference_loop": ref_fb}
    forward = {"ours": ours_f, "reference_loop": ref_f}

    try:  # with our weights, in its layouts
        cell = xlstm_slstm_cell(hidden, NH, "vanilla", B, torch.float32, recurrent=recurrent, bias=bias)
    except ImportError as error:  # the oracle is a dev dependency
        print(f"xlstm vanilla unavailable: {error}")
        return fwdbwd, forward
    # its input: [B, T, (4, NH, DH)], gate order i, f, z, o as ours
    x = gates.reshape(B, T, 4 * hidden).clone().requires_grad_()
    params = [p for p in cell.parameters() if p.requires_grad]
    out, _ = cell(x)
    dy_theirs = dy.permute(0, 2, 1, 3).reshape(out.shape) if out.shape != dy.shape else dy
    # sanity: the same h as ours (the cell returns [B, NH, T, DH] in this version)
    with torch.no_grad():
        h_ours, _ = slstm_sequence(gates, recurrent, bias)
        h_theirs = out if out.shape == h_ours.shape else out.permute(0, 2, 1, 3)
        err = (h_ours - h_theirs.reshape(h_ours.shape)).abs().max().item()
    print(f"[hidden {hidden}] max |h ours - h xlstm vanilla| = {err:.2e}")

    def theirs_fb():
        y, _ = cell(x)
        torch.autograd.grad(y, [x, *params], dy_theirs)

    fwdbwd["xlstm_vanilla"] = theirs_fb
    return fwdbwd, forward


def alternate(functions: dict, repeats: dict) -> dict:
    """Time each function once per round, rotating the order every round (so that load from other processes and
    cache effects hit every side alike); a side drops out after its own number of repeats. One untimed warm-up
    call each. Returns the median seconds of each side."""
    for fn in functions.values():
        fn()
    times = {name: [] for name in functions}
    names = list(functions)
    for r in range(max(repeats.values())):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if len(times[name]) >= repeats[name]:
                continue
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=list(THREADS))
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN))
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds of ours and the reference loop")
    parser.add_argument("--xlstm-repeats", type=int, default=3, help="timed rounds of the (slow) xlstm vanilla cell")
    parser.add_argument("--record", action="store_true", help="append the figures to results.jsonl / RESULTS.md")
    args = parser.parse_args()

    import torch

    rows = []
    for hidden in args.hidden:
        fwdbwd, forward = make_sides(hidden)
        for threads in args.threads:
            torch.set_num_threads(threads)
            repeats = {name: args.xlstm_repeats if name == "xlstm_vanilla" else args.repeats for name in fwdbwd}
            fb = alternate(fwdbwd, repeats)
            fw = alternate(forward, {name: args.repeats for name in forward})
            rows.append((hidden, threads, fb, fw))
            print(
                f"[hidden {hidden}, {threads} thread(s)] fwd+bwd ms: "
                + ", ".join(f"{name} {1e3 * value:.1f}" for name, value in fb.items())
            )
            if args.record:
                for key, label in COMPETITORS.items():
                    if key not in fb:
                        continue
                    entry = record(
                        figure_name(hidden, threads, key), ours=1e3 * fb["ours"], theirs=1e3 * fb[key],
                        competitor=label, unit="ms", better="lower", device=cpu_device(threads),
                        shape=shape_text(hidden),
                    )
                    print(f"recorded {entry['name']}: ratio {entry['ratio']}")

    print()
    print(f"sLSTM sequence, B={B} T={T} {NH} heads, float32, wall-clock medians ({cpu_name()}, {os.cpu_count()} cores)")
    header = (
        f"{'hidden':>6} {'thr':>3} | {'ours fwd+bwd':>12} {'ref loop':>9} {'xlstm van.':>10} | "
        f"{'vs ref':>6} {'vs xlstm':>8} | {'ours fwd':>8} {'ref fwd':>8} {'vs ref':>6}"
    )
    print(header)
    print("-" * len(header))
    for hidden, threads, fb, fw in rows:
        xl = fb.get("xlstm_vanilla")
        print(
            f"{hidden:>6} {threads:>3} | {1e3 * fb['ours']:>10.1f}ms {1e3 * fb['reference_loop']:>7.1f}ms "
            + (f"{1e3 * xl:>8.1f}ms" if xl else f"{'-':>10}")
            + f" | {fb['reference_loop'] / fb['ours']:>5.1f}x "
            + (f"{xl / fb['ours']:>7.1f}x" if xl else f"{'-':>8}")
            + f" | {1e3 * fw['ours']:>6.1f}ms {1e3 * fw['reference_loop']:>6.1f}ms "
            f"{fw['reference_loop'] / fw['ours']:>5.1f}x"
        )
    print("Target (issue 16): ours >= 2x faster forward+backward than the reference loop.")


if __name__ == "__main__":
    main()
