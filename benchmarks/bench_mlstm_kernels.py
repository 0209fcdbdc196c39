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
compiling TFLA's forward kernel for sm_90 with it aborts the process in LLVM. So the competitor is measured in a
child process (`isolated.py`): a crash costs its figure, not ours, and a child killed by a signal is retried once
with DISABLE_LLVM_OPT=1, which the competitor field then states. When a competitor cannot run at all, its figure
is recorded with theirs=None and the reason in the competitor field.

Timing: triton.testing.do_bench (CUDA events, L2 flushed between repetitions, median).
Run on a CUDA machine:  python benchmarks/bench_mlstm_kernels.py   (figures go to results.jsonl / RESULTS.md)
"""

from __future__ import annotations

import argparse
import sys

from isolated import measure_isolated, write_child_result
from results import expect, record

TOKENS = 65536
NH, DHQK, DHV = 16, 128, 256
CHUNK_SHAPES = ((8, 8192), (1, 65536))
STEP_NH, STEP_DHQK, STEP_DHV = 8, 256, 512
OUR_CHUNK_SIZES = (64, 128)


def _chunk_name(kind: str, B: int, S: int) -> str:
    return f"mlstm_chunkwise_{kind}_ms_B{B}_S{S}_NH{NH}_dqk{DHQK}_dv{DHV}_bf16_vs_tfla"


STEP_NAME = f"mlstm_step_ms_B1_NH{STEP_NH}_dqk{STEP_DHQK}_dv{STEP_DHV}_bf16_vs_mlstm_kernels_triton"

for _B, _S in CHUNK_SHAPES:
    expect(
        _chunk_name("fwd", _B, _S),
        f"mLSTM chunkwise forward time, Triton vs mlstm_kernels TFLA (chunkwise--triton_xl_chunk), B={_B} S={_S} "
        f"NH={NH} dqk={DHQK} dv={DHV} bf16 (H100; published TFLA 6.4 ms)",
    )
    expect(
        _chunk_name("fwdbwd", _B, _S),
        f"mLSTM chunkwise forward+backward time, Triton vs TFLA, B={_B} S={_S} NH={NH} dqk={DHQK} dv={DHV} bf16 "
        "(H100; published TFLA 15.3 ms)",
    )
expect(
    STEP_NAME,
    f"mLSTM decode step time, Triton vs mlstm_kernels Triton step, B=1 NH={STEP_NH} dqk={STEP_DHQK} "
    f"dv={STEP_DHV} bf16 (H100; target <= 0.05 ms)",
)


def _bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def _chunk_inputs(B: int, S: int, requires_grad: bool):
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device="cuda", generator=g, dtype=torch.bfloat16)

    q, k, v = randn(B, NH, S, DHQK), randn(B, NH, S, DHQK), randn(B, NH, S, DHV)
    i = randn(B, NH, S)
    f = randn(B, NH, S) + 3.0  # forget gates near 1, as after training
    tensors = [q, k, v, i, f]
    if requires_grad:
        tensors = [t.requires_grad_() for t in tensors]
    return tensors


def _chunk_fns(B: int, S: int, chunk_size: int | None):
    """(forward, forward+backward) closures of ours (chunk_size given) or TFLA (chunk_size None)."""
    import torch

    if chunk_size is None:
        from mlstm_kernels.torch import get_mlstm_kernel

        tfla = get_mlstm_kernel("chunkwise--triton_xl_chunk")

        def call(q, k, v, i, f):
            h, _ = tfla(q, k, v, i, f, return_last_states=True, chunk_size=128, autocast_kernel_dtype=torch.bfloat16)
            return h
    else:
        from modeling_xlstm.kernels.mlstm.triton import mlstm_chunkwise

        def call(q, k, v, i, f):
            h, _ = mlstm_chunkwise(q, k, v, i, f, chunk_size=chunk_size)
            return h

    inputs = _chunk_inputs(B, S, requires_grad=True)
    dh = torch.randn(B, NH, S, DHV, device="cuda", dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            call(*inputs)

    def fwdbwd():
        for t in inputs:
            t.grad = None
        call(*inputs).backward(dh)

    return fwd, fwdbwd


def _step_fns():
    import torch
    from mlstm_kernels.torch import get_mlstm_step_kernel

    from modeling_xlstm.kernels.mlstm.triton import mlstm_recurrent_step

    g = torch.Generator(device="cuda").manual_seed(0)
    B = 1
    q, k = (torch.randn(B, STEP_NH, STEP_DHQK, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, STEP_NH, STEP_DHV, device="cuda", generator=g, dtype=torch.bfloat16)
    i, f = (torch.randn(B, STEP_NH, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    c = torch.randn(B, STEP_NH, STEP_DHQK, STEP_DHV, device="cuda", generator=g) * 0.01
    n = torch.randn(B, STEP_NH, STEP_DHQK, device="cuda", generator=g) * 0.01
    m = torch.zeros(B, STEP_NH, 1, device="cuda")
    theirs_kernel = get_mlstm_step_kernel("triton")

    def ours():
        mlstm_recurrent_step(q, k, v, i, f, (c, n, m))

    def theirs():
        theirs_kernel(q, k, v, i.unsqueeze(-1), f.unsqueeze(-1), c, n, m)

    return ours, theirs


def _measure_theirs(job: str) -> dict:
    """The child's work: time the competitor for one job ("chunk:B:S" or "step"), in milliseconds."""
    if job == "step":
        _, theirs = _step_fns()
        return {"step": _bench(theirs)}
    _, B, S = job.split(":")
    fwd, fwdbwd = _chunk_fns(int(B), int(S), None)
    return {"fwd": _bench(fwd), "fwdbwd": _bench(fwdbwd)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="measure but do not record")
    parser.add_argument("--theirs-job", help=argparse.SUPPRESS)  # child process: what to measure
    parser.add_argument("--child-json", help=argparse.SUPPRESS)  # child process: where to write it
    args = parser.parse_args()
    if args.child_json:
        write_child_result(args.child_json, _measure_theirs(args.theirs_job))
        return 0

    import torch

    if not torch.cuda.is_available():
        print(
            "bench_mlstm_kernels.py needs a CUDA GPU (it times Triton kernels against mlstm_kernels' TFLA); none is "
            "available here. The figures stay listed as unmeasured in benchmarks/RESULTS.md.",
            file=sys.stderr,
        )
        return 2
    try:
        import mlstm_kernels  # noqa: F401
    except ImportError:
        print("bench_mlstm_kernels.py needs mlstm-kernels==2.0.6 (pip install -e '.[dev]').", file=sys.stderr)
        return 2
    from tqdm import tqdm

    device = torch.cuda.get_device_name()
    jobs = [("chunk", B, S) for B, S in CHUNK_SHAPES] + [("step", 1, 1)]
    rows = []
    for kind, B, S in tqdm(jobs, desc="mLSTM benchmarks"):
        job = "step" if kind == "step" else f"chunk:{B}:{S}"
        theirs, error, note = measure_isolated(__file__, ["--theirs-job", job])
        theirs = theirs or {}
        if kind == "chunk":
            best = None
            for cs in OUR_CHUNK_SIZES:
                ours_fwd, ours_fb = _chunk_fns(B, S, cs)
                o_fwd, o_fb = _bench(ours_fwd), _bench(ours_fb)
                del ours_fwd, ours_fb
                tqdm.write(f"  ours chunk {cs}: fwd {o_fwd:.3f} ms, fwd+bwd {o_fb:.3f} ms")
                if best is None or o_fwd + o_fb < best[1] + best[2]:
                    best = (cs, o_fwd, o_fb)
            torch.cuda.empty_cache()
            cs, o_fwd, o_fb = best
            shape = f"B={B} S={S} NH={NH} dqk={DHQK} dv={DHV} bf16, ours chunk {cs}, TFLA chunk 128"
            rows.append((_chunk_name("fwd", B, S), o_fwd, theirs.get("fwd"), error, note, shape))
            rows.append((_chunk_name("fwdbwd", B, S), o_fb, theirs.get("fwdbwd"), error, note, shape))
        else:
            ours, _ = _step_fns()
            shape = f"B=1 NH={STEP_NH} dqk={STEP_DHQK} dv={STEP_DHV} bf16 inputs, float32 state"
            rows.append((STEP_NAME, _bench(ours), theirs.get("step"), error, note, shape))

    for name, ours_ms, theirs_ms, error, note, shape in rows:
        competitor = "mlstm_kernels 2.0.6 " + ("triton step" if name == STEP_NAME else "chunkwise--triton_xl_chunk")
        competitor += note
        if error is not None:
            competitor += f" (could not run: {error})"
            print(f"{name}: ours {ours_ms:.4f} ms, theirs not measured ({error})")
        else:
            print(f"{name}: ours {ours_ms:.4f} ms, theirs {theirs_ms:.4f} ms, ratio {theirs_ms / ours_ms:.3f}")
        if not args.dry_run:
            record(name, ours_ms, theirs_ms, competitor, "ms", "lower", device, shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
