"""mLSTM kernels: our Triton chunkwise and decode-step kernels against mlstm_kernels' (NX-AI) in the same run.

Figures (issue 5, DESIGN §8), bf16 inputs, float32 states, median times in milliseconds:

* chunkwise forward (no grad, final state returned) and forward+backward (gradients of q, k, v, i, f) of
  `modeling_xlstm.kernels.mlstm.triton.mlstm_chunkwise` vs mlstm_kernels' TFLA kernel
  `chunkwise--triton_xl_chunk` (its default chunk size 128), at 65,536 tokens per batch: B x S = 8 x 8192 and
  1 x 65536, 16 heads, dqk 128, dv 256. Published for TFLA on an H100: 6.4 ms forward, 15.3 ms fwd+bwd.
  Ours is measured at chunk sizes 64 and 128 and the faster is recorded (the chunk size is in the shape field).
* decode step: `mlstm_recurrent_step` (C updated in place) vs mlstm_kernels' Triton step kernel (registry name
  "triton"), batch 1, 8 heads, dqk 256, dv 512. Target: <= 0.05 ms.

Competitor availability: every mlstm_kernels 2.0.6 Triton kernel (TFLA and the step) uses `tl.make_block_ptr`,
which Triton 3.9 removed (it raises NotImplementedError); Triton 3.6 (the one torch 2.11 pins) still has it, but
compiling TFLA's forward kernel for sm_90 with it aborts the process in LLVM. So the competitor (its adapters:
`competitors.py`) is measured in a child process (`isolated.py`): a crash costs its figure, not ours, and a child
killed by a signal is retried once with DISABLE_LLVM_OPT=1, which the competitor field then states. When a
competitor cannot run at all, its figure is recorded with theirs=None and the reason in the competitor field. Each
job measures ours first, then the competitor (its child's time limit cut to the step's deadline when
benchmarks/gpu_suite.sh runs it), and records its figures at once, so a run stopped later keeps them.

Timing: triton.testing.do_bench on CUDA (CUDA events, L2 flushed between repetitions, median); on CPU (`--small`)
the median of a few wall-clock repetitions.

Run on a CUDA machine:  python -m benchmarks.bench_mlstm_kernels   (figures go to results.jsonl / RESULTS.md)
                        python -m benchmarks.bench_mlstm_kernels --jobs step     (only the decode step)
CPU check of the same code (tiny shapes, float32, our Triton kernels in the interpreter, competitor skipped: it
needs CUDA), seconds, records nothing unless --record (then under small_* names):
                        python -m benchmarks.bench_mlstm_kernels --small --device cpu
benchmarks/gpu_suite.sh runs this script as its steps mlstm_chunk and mlstm_step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import NamedTuple

from benchmarks.competitors import mlstm_kernels_step, tfla_chunkwise
from benchmarks.isolated import measure_isolated, write_child_result
from benchmarks.results import child_timeout, cpu_name, dry_run_figure, expect, record, record_skip


class Sizes(NamedTuple):
    """The shapes of one run: the published benchmark's, or tiny stand-ins (`--small`) for a CPU check."""

    nh: int
    dqk: int
    dv: int
    chunk_shapes: tuple[tuple[int, int], ...]  # (B, S), each 65,536 tokens at full size
    our_chunk_sizes: tuple[int, ...]
    their_chunk_size: int
    step_nh: int
    step_dqk: int
    step_dv: int


FULL = Sizes(16, 128, 256, ((8, 8192), (1, 65536)), (64, 128), 128, 8, 256, 512)
SMALL = Sizes(2, 16, 32, ((2, 32), (1, 64)), (16, 32), 16, 2, 32, 64)
# the names the module-level constants had (tests and other scripts may read them)
TOKENS = 65536
NH, DHQK, DHV = FULL.nh, FULL.dqk, FULL.dv
CHUNK_SHAPES = FULL.chunk_shapes
STEP_NH, STEP_DHQK, STEP_DHV = FULL.step_nh, FULL.step_dqk, FULL.step_dv
OUR_CHUNK_SIZES = FULL.our_chunk_sizes
JOBS = ("chunk", "step")
CPU_SKIP_REASON = "mlstm_kernels' Triton kernels need a CUDA GPU (not run in the CPU check)"


def _chunk_name(kind: str, B: int, S: int, sizes: Sizes = FULL, dtype: str = "bf16") -> str:
    return f"mlstm_chunkwise_{kind}_ms_B{B}_S{S}_NH{sizes.nh}_dqk{sizes.dqk}_dv{sizes.dv}_{dtype}_vs_tfla"


def _step_name(sizes: Sizes = FULL, dtype: str = "bf16") -> str:
    return f"mlstm_step_ms_B1_NH{sizes.step_nh}_dqk{sizes.step_dqk}_dv{sizes.step_dv}_{dtype}_vs_mlstm_kernels_triton"


STEP_NAME = _step_name()

for _B, _S in CHUNK_SHAPES:
    expect(
        _chunk_name("fwd", _B, _S),
        f"mLSTM chunkwise forward time on the GPU, Triton vs mlstm_kernels TFLA (chunkwise--triton_xl_chunk), "
        f"B={_B} S={_S} NH={NH} dqk={DHQK} dv={DHV} bf16 (published for TFLA on an H100: 6.4 ms)",
    )
    expect(
        _chunk_name("fwdbwd", _B, _S),
        f"mLSTM chunkwise forward+backward time on the GPU, Triton vs TFLA, B={_B} S={_S} NH={NH} dqk={DHQK} "
        f"dv={DHV} bf16 (published for TFLA on an H100: 15.3 ms)",
    )
expect(
    STEP_NAME,
    f"mLSTM decode step time on the GPU, Triton vs mlstm_kernels Triton step, B=1 NH={STEP_NH} dqk={STEP_DHQK} "
    f"dv={STEP_DHV} bf16 (target <= 0.05 ms)",
)


class Run(NamedTuple):
    """What this process measures: sizes, device and input dtype (bf16 on CUDA; float32 on CPU, where our Triton
    kernels run in the interpreter, which mishandles bf16 dots)."""

    sizes: Sizes
    device: str
    dtype: object
    dtype_name: str


def _run(args) -> Run:
    import torch

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    return Run(SMALL if args.small else FULL, args.device, dtype, "bf16" if dtype == torch.bfloat16 else "fp32")


def _bench(fn, device: str) -> float:
    """Median milliseconds of `fn`."""
    if device == "cuda":
        import triton

        return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))
    times = []  # a check of the code more than a figure: two calls, the faster (the first parses the kernels)
    for _ in range(2):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def _chunk_inputs(B: int, S: int, run: Run, requires_grad: bool):
    import torch

    g = torch.Generator(device=run.device).manual_seed(0)
    nh, dqk, dv = run.sizes.nh, run.sizes.dqk, run.sizes.dv

    def randn(*shape):
        return torch.randn(*shape, device=run.device, generator=g, dtype=run.dtype)

    q, k, v = randn(B, nh, S, dqk), randn(B, nh, S, dqk), randn(B, nh, S, dv)
    i = randn(B, nh, S)
    f = randn(B, nh, S) + 3.0  # forget gates near 1, as after training
    tensors = [q, k, v, i, f]
    if requires_grad:
        tensors = [t.requires_grad_() for t in tensors]
    return tensors


def _chunk_fns(B: int, S: int, chunk_size: int | None, run: Run):
    """(forward, forward+backward) closures of ours (chunk_size given) or TFLA (chunk_size None)."""
    import torch

    if chunk_size is None:
        call = tfla_chunkwise(run.sizes.their_chunk_size, run.dtype)
    else:
        from modeling_xlstm.kernels.mlstm.triton import mlstm_chunkwise

        def call(q, k, v, i, f):
            h, _ = mlstm_chunkwise(q, k, v, i, f, chunk_size=chunk_size)
            return h

    inputs = _chunk_inputs(B, S, run, requires_grad=True)
    dh = torch.randn(B, run.sizes.nh, S, run.sizes.dv, device=run.device, dtype=run.dtype)
    return timed_closures(lambda: call(*inputs), inputs, dh)


def timed_closures(call, inputs, dh):
    """(forward, forward+backward) closures around `call() -> h`, which reads `inputs` (they carry the gradients)."""
    import torch

    def fwd():
        with torch.no_grad():
            call()

    def fwdbwd():
        for t in inputs:
            t.grad = None
        call().backward(dh)

    return fwd, fwdbwd


def _step_fns(run: Run, theirs: bool):
    """The decode step of ours, or of mlstm_kernels' Triton step kernel (theirs=True)."""
    import torch

    sizes, dev = run.sizes, run.device
    g = torch.Generator(device=dev).manual_seed(0)
    B = 1
    q, k = (torch.randn(B, sizes.step_nh, sizes.step_dqk, device=dev, generator=g, dtype=run.dtype) for _ in range(2))
    v = torch.randn(B, sizes.step_nh, sizes.step_dv, device=dev, generator=g, dtype=run.dtype)
    i, f = (torch.randn(B, sizes.step_nh, device=dev, generator=g, dtype=run.dtype) for _ in range(2))
    c = torch.randn(B, sizes.step_nh, sizes.step_dqk, sizes.step_dv, device=dev, generator=g) * 0.01
    n = torch.randn(B, sizes.step_nh, sizes.step_dqk, device=dev, generator=g) * 0.01
    m = torch.zeros(B, sizes.step_nh, 1, device=dev)
    if theirs:
        step = mlstm_kernels_step()
    else:
        from modeling_xlstm.kernels.mlstm.triton import mlstm_recurrent_step as step

    return lambda: step(q, k, v, i, f, (c, n, m))


def _measure_theirs(job: str, run: Run) -> dict:
    """The child's work: time the competitor for one job ("chunk:B:S" or "step"), in milliseconds."""
    if job == "step":
        return {"step": _bench(_step_fns(run, theirs=True), run.device)}
    _, B, S = job.split(":")
    fwd, fwdbwd = _chunk_fns(int(B), int(S), None, run)
    return {"fwd": _bench(fwd, run.device), "fwdbwd": _bench(fwdbwd, run.device)}


def _theirs(job: str, args, run: Run) -> tuple[dict, str | None, str]:
    """The competitor's times for one job, measured in a child process: (times or {}, why missing or None, note).
    Under the GPU suite the child may use what is left of the step's budget (jobs run in priority order)."""
    if run.device != "cuda":
        return {}, CPU_SKIP_REASON, ""
    timeout = child_timeout(args.child_timeout)
    if timeout is None:
        return {}, "no time left in the step's budget", ""
    child_args = ["--theirs-job", job, "--device", run.device] + (["--small"] if args.small else [])
    crash_key = "tfla" if job.startswith("chunk") else "mlstm_kernels step"
    theirs, error, note = measure_isolated(__spec__.name, child_args, timeout=timeout, crash_key=crash_key)
    return theirs or {}, error, note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="measure but do not record")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated subset of: chunk, step")
    parser.add_argument("--small", action="store_true", help="tiny shapes (CPU check); not recorded unless --record")
    parser.add_argument("--record", action="store_true", help="with --small: record anyway, under small_* names")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu only with --small")
    parser.add_argument("--child-timeout", type=float, default=600, help="seconds for each competitor child")
    parser.add_argument("--theirs-job", help=argparse.SUPPRESS)  # child process: what to measure
    parser.add_argument("--child-json", help=argparse.SUPPRESS)  # child process: where to write it
    args = parser.parse_args()
    jobs = [job for job in args.jobs.split(",") if job]
    if unknown := set(jobs) - set(JOBS):
        parser.error(f"unknown jobs {sorted(unknown)}; choose from {', '.join(JOBS)}")
    if args.device == "cpu":
        if not args.small:
            parser.error("the figures are GPU figures: --device cpu needs --small (a check of the code, not a figure)")
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before our kernels are defined

    import torch

    run = _run(args)
    if args.child_json:
        write_child_result(args.child_json, _measure_theirs(args.theirs_job, run))
        return 0
    if run.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_mlstm_kernels.py needs a CUDA GPU (it times Triton kernels against mlstm_kernels' TFLA); none is "
            "available here (--small --device cpu checks the script). The figures stay listed as unmeasured in "
            "benchmarks/RESULTS.md.",
            file=sys.stderr,
        )
        return 2
    if run.device == "cuda":
        try:
            import mlstm_kernels  # noqa: F401
        except ImportError:
            print("bench_mlstm_kernels.py needs mlstm-kernels==2.0.6 (pip install -e '.[dev]').", file=sys.stderr)
            return 2

    device = torch.cuda.get_device_name() if run.device == "cuda" else f"CPU {cpu_name()} (Triton interpreter)"
    write = not args.dry_run and (not args.small or args.record)
    sizes = run.sizes
    todo = [("chunk", B, S) for B, S in sizes.chunk_shapes] * ("chunk" in jobs) + [("step", 1, 1)] * ("step" in jobs)

    def report(name, ours_ms, theirs_ms, error, note, shape, competitor):
        """Print one figure and record it at once (a later time-out keeps it)."""
        name = dry_run_figure(name) if args.small else name
        competitor += note
        if error is not None:
            competitor += f" (skipped: {error})" if error == CPU_SKIP_REASON else f" (could not run: {error})"
            print(f"{name}: ours {ours_ms:.4f} ms, theirs not measured ({error})", flush=True)
        else:
            print(f"{name}: ours {ours_ms:.4f} ms, theirs {theirs_ms:.4f} ms, ratio {theirs_ms / ours_ms:.3f}", flush=True)
        if write:
            record(name, ours_ms, theirs_ms, competitor, "ms", "lower", device, shape)
        return name

    for kind, B, S in todo:
        if kind == "chunk":
            best = None
            for cs in sizes.our_chunk_sizes:
                ours_fwd, ours_fb = _chunk_fns(B, S, cs, run)
                o_fwd, o_fb = _bench(ours_fwd, run.device), _bench(ours_fb, run.device)
                del ours_fwd, ours_fb
                print(f"  B={B} S={S} ours chunk {cs}: fwd {o_fwd:.3f} ms, fwd+bwd {o_fb:.3f} ms", flush=True)
                if best is None or o_fwd + o_fb < best[1] + best[2]:
                    best = (cs, o_fwd, o_fb)
            if run.device == "cuda":
                torch.cuda.empty_cache()
            cs, o_fwd, o_fb = best
            theirs, error, note = _theirs(f"chunk:{B}:{S}", args, run)
            shape = (f"B={B} S={S} NH={sizes.nh} dqk={sizes.dqk} dv={sizes.dv} {run.dtype_name}, ours chunk {cs}, "
                     f"TFLA chunk {sizes.their_chunk_size}")
            competitor = "mlstm_kernels 2.0.6 chunkwise--triton_xl_chunk"
            names = [report(_chunk_name(part, B, S, sizes, run.dtype_name), ours, theirs.get(part), error, note, shape,
                            competitor) for part, ours in (("fwd", o_fwd), ("fwdbwd", o_fb))]
        else:
            ours_ms = _bench(_step_fns(run, theirs=False), run.device)
            theirs, error, note = _theirs("step", args, run)
            shape = (f"B=1 NH={sizes.step_nh} dqk={sizes.step_dqk} dv={sizes.step_dv} {run.dtype_name} inputs, "
                     "float32 state")
            names = [report(_step_name(sizes, run.dtype_name), ours_ms, theirs.get("step"), error, note, shape,
                            "mlstm_kernels 2.0.6 triton step")]
        if error is not None:
            what = f"TFLA chunkwise at B={B} S={S}" if kind == "chunk" else "mlstm_kernels triton step"
            record_skip(what, error, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
