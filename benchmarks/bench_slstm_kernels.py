"""sLSTM kernels: our fused Triton sequence kernel against the `xlstm` package's sLSTM backends and FlashRNN, same run.

Shape (issue 6): B=16, T=1024, hidden 768 with 4 heads (head dim 192) and 12 heads (head dim 64), bfloat16.
Measures the forward (no grad) and forward+backward (gradients of the input pre-activations, the recurrent
kernel and the bias) times, in milliseconds (median over CUDA-event-timed repetitions), of

* ours: `modeling_xlstm.kernels.slstm.triton.slstm_sequence` (one launch per (batch block, head));
* `xlstm` 2.0.6 `sLSTMCell` with backend="cuda" (NX-AI's fused CUDA kernel; it compiles at first use with
  torch.utils.cpp_extension, and when that fails the figure is recorded with theirs=None and the failure in
  the competitor note);
* `xlstm` `sLSTMCell` with backend="vanilla" (its PyTorch per-step loop);
* FlashRNN 1.0.8 (NX-AI's newer sLSTM kernels), `flashrnn(Wx, R, b, function="slstm", backend=...)` with the
  backends "cuda_fused" (fused CUDA kernel, compiled at first use like xlstm's) and "triton_fused" (Triton; its
  README limits it to head dims <= 64, so it is skipped, with that reason, at 4 heads).

Each competitor (its adapter: `competitors.py`) is timed in a child process (`isolated.py`), so that a failed
runtime compile or a CUDA error in its kernel costs that figure only, not ours or the CUDA context of this run.
Order: ours at every head count first, then the competitors that are quick to set up (vanilla, triton_fused), then
the ones that compile CUDA code at first use (xlstm cuda, FlashRNN cuda_fused); each pair of figures is recorded
as soon as it is measured, and under benchmarks/gpu_suite.sh every child's time limit is cut to the step's
deadline.

Targets (issue 6): >= 30x faster than vanilla; not slower than the CUDA kernel (the FlashRNN paper reports
about 3.2 ms forward and 9 ms forward+backward for its fused kernel on an H100 at this shape).

Run on a CUDA machine:  python -m benchmarks.bench_slstm_kernels   (figures go to results.jsonl/RESULTS.md)
CPU check of the same code (B=2 T=16 hidden 32, float32, our Triton kernel in the interpreter, xlstm vanilla in
its child; the CUDA-only competitors skipped), seconds, records nothing unless --record (then as small_*):
                        python -m benchmarks.bench_slstm_kernels --small --device cpu
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import NamedTuple

from benchmarks.competitors import flashrnn_slstm, xlstm_slstm_cell
from benchmarks.isolated import measure_isolated, write_child_result
from benchmarks.results import child_timeout, cpu_name, dry_run_figure, expect, record, record_skip


class Sizes(NamedTuple):
    batch: int
    steps: int
    hidden: int
    heads: tuple[int, ...]


FULL = Sizes(16, 1024, 768, (4, 12))
SMALL = Sizes(2, 16, 32, (2,))
B, T, HIDDEN = FULL.batch, FULL.steps, FULL.hidden
HEADS = FULL.heads
SHAPE = "B={b} T={t} hidden={hidden} NH={nh} (head dim {dh}) {dtype}"
TRITON_FUSED_MAX_HEAD_DIM = 64  # FlashRNN's README: "For the fused `triton` backend, heads are limited to ... <= 64"


class Competitor(NamedTuple):
    package: str  # "xlstm" or "flashrnn"
    backend: str
    label: str
    needs_cuda: bool
    compiles_cuda: bool  # compiles CUDA code at first use (slow to set up): measured after the others


COMPETITORS = {
    "xlstm_vanilla": Competitor("xlstm", "vanilla", "xlstm 2.0.6 sLSTM vanilla (PyTorch) backend", False, False),
    "flashrnn_triton_fused": Competitor("flashrnn", "triton_fused", 'flashrnn 1.0.8 function="slstm" backend triton_fused',
                                        True, False),
    "xlstm_cuda": Competitor("xlstm", "cuda", "xlstm 2.0.6 sLSTM cuda backend", True, True),
    "flashrnn_cuda_fused": Competitor("flashrnn", "cuda_fused", 'flashrnn 1.0.8 function="slstm" backend cuda_fused',
                                      True, True),
}
CPU_SKIP_REASON = "needs a CUDA GPU (not run in the CPU check)"


def _name(kind: str, nh: int, competitor: str, sizes: Sizes = FULL, dtype: str = "bf16") -> str:
    return f"slstm_{kind}_ms_B{sizes.batch}_T{sizes.steps}_H{sizes.hidden}_NH{nh}_{dtype}_vs_{competitor}"


for _nh in HEADS:
    for _kind, _what in (("fwd", "forward (no grad)"), ("fwdbwd", "forward+backward")):
        for _key, _competitor in COMPETITORS.items():
            expect(
                _name(_kind, _nh, _key),
                f"sLSTM {_what} time on the GPU, Triton vs {_competitor.label}, B=16 T=1024 hidden 768 {_nh} heads "
                "bf16",
            )


class Run(NamedTuple):
    sizes: Sizes
    device: str
    dtype: object
    dtype_name: str


def _run(args) -> Run:
    import torch

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32  # the interpreter mishandles bf16 dots
    return Run(SMALL if args.small else FULL, args.device, dtype, "bf16" if dtype == torch.bfloat16 else "fp32")


def _time_ms(fn, warmup: int, reps: int, device: str) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    if device != "cuda":
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize()
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _ours(nh: int, reps: int, run: Run):
    import torch

    from modeling_xlstm.kernels.slstm.triton import slstm_sequence

    sizes, dev, dtype = run.sizes, run.device, run.dtype
    dh = sizes.hidden // nh
    gates = torch.randn(sizes.batch, sizes.steps, 4, nh, dh, device=dev, dtype=dtype)
    gates[:, :, 1] += 3.0
    recurrent = (torch.randn(nh, dh, 4, dh, device=dev) / dh**0.5).to(dtype)
    bias = torch.zeros(nh, 4, dh, device=dev)
    dy = torch.randn(sizes.batch, sizes.steps, nh, dh, device=dev, dtype=dtype)

    def fwd():
        with torch.no_grad():
            slstm_sequence(gates, recurrent, bias)

    leaves = [x.clone().requires_grad_() for x in (gates, recurrent, bias)]

    def fwdbwd():
        h, _ = slstm_sequence(*leaves)
        torch.autograd.grad(h, leaves, dy)

    warmup = 3 if dev == "cuda" else 1
    return _time_ms(fwd, warmup, reps, dev), _time_ms(fwdbwd, warmup, reps, dev)


def _xlstm_cell(nh: int, backend: str, reps: int, warmup: int, run: Run):
    import torch

    sizes, dev = run.sizes, run.device
    cell = xlstm_slstm_cell(sizes.hidden, nh, backend, sizes.batch, run.dtype, dev)
    x = torch.randn(sizes.batch, sizes.steps, 4 * sizes.hidden, device=dev, dtype=run.dtype)
    x[:, :, sizes.hidden : 2 * sizes.hidden] += 3.0
    out, _ = cell(x)
    dy = torch.randn_like(out)

    def fwd():
        with torch.no_grad():
            cell(x)

    xg = x.clone().requires_grad_()
    params = [p for p in cell.parameters() if p.requires_grad]

    def fwdbwd():
        y, _ = cell(xg)
        torch.autograd.grad(y, [xg, *params], dy)

    return _time_ms(fwd, warmup, reps, dev), _time_ms(fwdbwd, warmup, reps, dev)


def _flashrnn(nh: int, backend: str, reps: int, warmup: int, run: Run):
    """FlashRNN's sLSTM (`competitors.flashrnn_slstm`) on our shapes; gradients of Wx, R and b, from h."""
    import torch

    sizes, dev, dtype = run.sizes, run.device, run.dtype
    dh = sizes.hidden // nh
    call = flashrnn_slstm(backend, dtype)
    wx = torch.randn(sizes.batch, sizes.steps, 4, nh, dh, device=dev, dtype=dtype)
    wx[:, :, 1] += 3.0  # forget gates near 1, as for ours
    recurrent = (torch.randn(4, nh, dh, dh, device=dev) / dh**0.5).to(dtype)
    bias = torch.zeros(4, nh, dh, device=dev, dtype=dtype)

    def fwd():
        with torch.no_grad():
            call(wx, recurrent, bias)

    leaves = [t.clone().requires_grad_() for t in (wx, recurrent, bias)]
    dy = torch.randn_like(call(*leaves))

    def fwdbwd():
        torch.autograd.grad(call(*leaves), leaves, dy)

    return _time_ms(fwd, warmup, reps, dev), _time_ms(fwdbwd, warmup, reps, dev)


def _measure_theirs(args, run: Run) -> dict:
    """The child's work: forward and forward+backward ms of one competitor at args.heads[0] heads."""
    competitor = COMPETITORS[args.theirs]
    reps, warmup = (args.vanilla_reps, 1) if competitor.backend == "vanilla" else (args.reps, 3)
    measure = _xlstm_cell if competitor.package == "xlstm" else _flashrnn
    fwd, fwdbwd = measure(args.heads[0], competitor.backend, reps, warmup, run)
    return {"fwd": fwd, "fwdbwd": fwdbwd}


def _skip_reason(key: str, nh: int, run: Run) -> str | None:
    competitor = COMPETITORS[key]
    if competitor.needs_cuda and run.device != "cuda":
        return CPU_SKIP_REASON
    if competitor.backend == "triton_fused" and run.sizes.hidden // nh > TRITON_FUSED_MAX_HEAD_DIM:
        return (f"FlashRNN's triton_fused backend supports head dims <= {TRITON_FUSED_MAX_HEAD_DIM} (its README); "
                f"this one is {run.sizes.hidden // nh}")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions of our kernel and the CUDA kernels")
    parser.add_argument("--vanilla-reps", type=int, default=3, help="timed repetitions of the slow vanilla loop")
    parser.add_argument("--heads", type=int, nargs="+", default=None, help="head counts (default 4 12; --small: 2)")
    parser.add_argument("--competitors", default=",".join(COMPETITORS),
                        help=f"comma-separated subset of {', '.join(COMPETITORS)}")
    parser.add_argument("--small", action="store_true", help="tiny shapes (CPU check); not recorded unless --record")
    parser.add_argument("--record", action="store_true", help="with --small: record anyway, under small_* names")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu only with --small")
    parser.add_argument("--child-timeout", type=float, default=900, help="seconds for each competitor child")
    parser.add_argument("--theirs", choices=sorted(COMPETITORS), help=argparse.SUPPRESS)  # child: which competitor
    parser.add_argument("--child-json", help=argparse.SUPPRESS)  # child: where to write its times
    args = parser.parse_args()
    keys = [key for key in args.competitors.split(",") if key]
    if unknown := set(keys) - set(COMPETITORS):
        parser.error(f"unknown competitors {sorted(unknown)}; choose from {', '.join(COMPETITORS)}")
    if args.device == "cpu":
        if not args.small:
            parser.error("the figures are GPU figures: --device cpu needs --small (a check of the code, not a figure)")
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before our kernel is defined
    if args.small and args.device == "cpu":
        args.reps = min(args.reps, 2)
        args.vanilla_reps = min(args.vanilla_reps, 2)

    import torch

    run = _run(args)
    args.heads = args.heads or list(run.sizes.heads)
    if run.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_slstm_kernels.py needs a CUDA GPU (Triton kernels and the xlstm CUDA backend); none found "
                 "(--small --device cpu checks the script).")
    if args.child_json:
        write_child_result(args.child_json, _measure_theirs(args, run))
        return
    device = torch.cuda.get_device_name() if run.device == "cuda" else f"CPU {cpu_name()} (Triton interpreter)"
    write = not args.small or args.record
    sizes = run.sizes
    common = ["--reps", str(args.reps), "--vanilla-reps", str(args.vanilla_reps), "--device", run.device]
    common += ["--small"] if args.small else []

    def shape_of(nh: int) -> str:
        return SHAPE.format(b=sizes.batch, t=sizes.steps, hidden=sizes.hidden, nh=nh, dh=sizes.hidden // nh,
                            dtype=run.dtype_name)

    ours = {}
    for nh in args.heads:
        ours[nh] = _ours(nh, args.reps, run)
        print(f"[{shape_of(nh)}] ours: forward {ours[nh][0]:.3f} ms, forward+backward {ours[nh][1]:.3f} ms", flush=True)

    # quick competitors at every head count first, then the ones that compile CUDA code at first use
    todo = [(nh, key) for slow in (False, True) for nh in args.heads for key in keys
            if COMPETITORS[key].compiles_cuda == slow]
    for nh, key in todo:
        shape, label = shape_of(nh), COMPETITORS[key].label
        theirs, failure, note = {}, _skip_reason(key, nh, run), ""
        if failure is None:
            timeout = child_timeout(args.child_timeout)
            if timeout is None:
                failure = "no time left in the step's budget"
            else:
                theirs, failure, note = measure_isolated(
                    __spec__.name, ["--theirs", key, "--heads", str(nh), *common], timeout=timeout)
                theirs = theirs or {}
        label += note
        if failure is not None:  # the runtime nvcc compile fails on many machines: record that, don't abort
            print(f"[{shape}] {key} unavailable: {failure}", flush=True)
            label += f" (skipped: {failure})" if failure == CPU_SKIP_REASON else f" (unavailable: {failure})"
        names = []
        for kind, mine in (("fwd", ours[nh][0]), ("fwdbwd", ours[nh][1])):
            name = _name(kind, nh, key, sizes, run.dtype_name)
            name = dry_run_figure(name) if args.small else name
            names.append(name)
            ratio = None
            if write:
                ratio = record(name, ours=mine, theirs=theirs.get(kind), competitor=label, unit="ms",
                               better="lower", device=device, shape=shape)["ratio"]
            elif theirs.get(kind):
                ratio = round(theirs[kind] / mine, 4)
            shown = "-" if theirs.get(kind) is None else f"{theirs[kind]:.3f} ms, ratio {ratio}"
            print(f"[{shape}] {kind:7s} vs {key}: ours {mine:.3f} ms, theirs {shown}", flush=True)
        if failure is not None:
            record_skip(f"{label.split(' (')[0]} at {nh} heads", failure, names)

    print("Targets: >= 30x vs vanilla; <= the CUDA kernel (FlashRNN paper, H100: ~3.2 ms fwd, ~9 ms fwd+bwd).")


if __name__ == "__main__":
    main()
