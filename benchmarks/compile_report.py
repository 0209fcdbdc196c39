"""Compile every Triton kernel launch of the model ahead of time for an NVIDIA architecture, without a GPU.

    python -m benchmarks.compile_report --arch 90          # H100: table of per-launch resources
    python -m benchmarks.compile_report --arch 86 --json   # RTX 30xx, machine-readable

The Triton interpreter (how the CPU tests run the kernels) never compiles them, so it cannot catch what only the
compiler sees: a kernel that fails to lower, a launch that needs more shared memory than the GPU has, register
spills. This tool runs the real launchers (`mlstm_chunkwise`, `slstm_sequence`, ... forward and backward) on
`meta` tensors at realistic shapes, intercepts each kernel launch, compiles it for `--arch` with Triton's own
compiler and ptxas (both ship in the triton wheel), and reads shared memory from the compiled kernel and
registers and spill stack from `cuobjdump`. A launch whose shared memory exceeds the architecture's limit
raises `triton.OutOfResources`, exactly as the real launch would on that GPU, so the launchers' fallbacks run too.

Nothing is executed: the report says whether each launch compiles and fits, not how fast it is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

# Largest dynamic shared memory per block (opt-in), in bytes, from the CUDA programming guide's table of
# compute-capability limits.
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
ARCH_NAMES = {80: "A100", 86: "RTX 30xx / A10 / A40", 89: "RTX 40xx / L4 / L40", 90: "H100 / H200"}

_POINTER_TYPES = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.uint8: "*u8"}


@dataclass
class Launch:
    """One compiled kernel launch. `fits` is False when its shared memory exceeds the architecture's limit."""

    case: str
    kernel: str
    constants: dict
    num_warps: int
    num_stages: int
    shared_bytes: int
    registers: int
    spill_stack_bytes: int
    fits: bool


@dataclass
class CaseResult:
    case: str
    launches: list[Launch] = field(default_factory=list)
    error: str | None = None


def _signature(fn: JITFunction, args: tuple, kwargs: dict) -> tuple[dict, dict, dict]:
    """Triton signature, constants and attributes of one launch, specialised as the JIT would for aligned data."""
    params = {p.name: p for p in fn.params}
    values = dict(zip(fn.arg_names, args), **kwargs)
    signature, constants, attrs = {}, {}, {}
    for index, name in enumerate(fn.arg_names):
        if name not in values:  # a constexpr left at its default
            continue
        value = values[name]
        if params[name].is_constexpr or value is None:  # the JIT also specialises None pointers as constants
            signature[name] = "constexpr"
            constants[name] = value
        elif isinstance(value, torch.Tensor):
            signature[name] = _POINTER_TYPES[value.dtype]
            attrs[(index,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int) and value == 1:  # as the JIT does: a 1 (a unit stride, say) becomes a constant
            signature[name] = "constexpr"
            constants[name] = 1
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: cannot type argument {name}={value!r}")
    return signature, constants, attrs


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, spill stack bytes) of a cubin, read with the cuobjdump that ships with Triton."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        out = subprocess.run([cuobjdump, "-res-usage", file.name], capture_output=True, text=True, check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if match is None:
        raise RuntimeError(f"unexpected cuobjdump output: {out!r}")
    return int(match[1]), int(match[2])


class _Compiler:
    """Stands in for `JITFunction.run`: compiles the launch for `arch` instead of running it."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)
        self.limit = SHARED_MEMORY_LIMIT[arch]
        self.case = ""
        self.launches: list[Launch] = []

    def run(self, fn: JITFunction, *args, grid, warmup, **kwargs):
        options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        signature, constants, attrs = _signature(fn, args, kwargs)
        compiled = triton.compile(ASTSource(fn, signature, constants, attrs), target=self.target, options=options)
        registers, stack = _resource_usage(compiled.asm["cubin"])
        shared = compiled.metadata.shared
        self.launches.append(
            Launch(
                case=self.case, kernel=fn.__name__, constants=constants,
                num_warps=compiled.metadata.num_warps, num_stages=compiled.metadata.num_stages,
                shared_bytes=shared, registers=registers, spill_stack_bytes=stack, fits=shared <= self.limit,
            )
        )
        if shared > self.limit:
            raise triton.OutOfResources(shared, self.limit, "shared memory")


def _cases() -> dict[str, Callable[[], None]]:
    """Realistic launches: the mLSTM benchmark shapes and xLSTM 7B heads, the sLSTM shapes of xLSTM[7:1] 125M
    (hidden 768, 4 heads of 192) and the 12-head variant, forward + backward and the decode steps."""
    from modeling_xlstm.kernels.mlstm import triton as mlstm
    from modeling_xlstm.kernels.slstm import triton as slstm

    def t(*shape, dtype, grad=True):
        return torch.empty(*shape, device="meta", dtype=dtype, requires_grad=grad)

    def mlstm_train(B, NH, S, DHQK, DHV, dtype):
        q, k, v = t(B, NH, S, DHQK, dtype=dtype), t(B, NH, S, DHQK, dtype=dtype), t(B, NH, S, DHV, dtype=dtype)
        h, _ = mlstm.mlstm_chunkwise(q, k, v, t(B, NH, S, dtype=dtype), t(B, NH, S, dtype=dtype))
        h.sum().backward()

    def mlstm_decode(B, NH, DHQK, DHV, dtype):
        q, k, v = t(B, NH, DHQK, dtype=dtype, grad=False), t(B, NH, DHQK, dtype=dtype, grad=False), t(
            B, NH, DHV, dtype=dtype, grad=False
        )
        mlstm.mlstm_recurrent_step(q, k, v, t(B, NH, dtype=dtype, grad=False), t(B, NH, dtype=dtype, grad=False))

    def slstm_train(B, T, hidden, NH, dtype):
        DH = hidden // NH
        gates_x, kernel = t(B, T, 4, NH, DH, dtype=dtype), t(NH, DH, 4, DH, dtype=dtype)
        mask = torch.empty(B, T, device="meta", dtype=torch.bool)
        y, _ = slstm.slstm_sequence(gates_x, kernel, t(NH, 4, DH, dtype=torch.float32), None, mask)
        y.float().sum().backward()

    def slstm_decode(B, hidden, NH, dtype):
        DH = hidden // NH
        gates_x, kernel = t(B, 4, NH, DH, dtype=dtype, grad=False), t(NH, DH, 4, DH, dtype=dtype, grad=False)
        slstm.slstm_step(gates_x, kernel, t(NH, 4, DH, dtype=torch.float32, grad=False))

    bf16, fp32 = torch.bfloat16, torch.float32
    return {
        "mlstm chunkwise fwd+bwd bf16 B8 S8192 NH16 dqk128 dv256": lambda: mlstm_train(8, 16, 8192, 128, 256, bf16),
        "mlstm chunkwise fwd+bwd bf16 7B heads (dqk256 dv512)": lambda: mlstm_train(1, 8, 4096, 256, 512, bf16),
        "mlstm chunkwise fwd+bwd fp32 7B heads (dqk256 dv512)": lambda: mlstm_train(1, 8, 1024, 256, 512, fp32),
        "mlstm step bf16 B1 NH8 dqk256 dv512": lambda: mlstm_decode(1, 8, 256, 512, bf16),
        "slstm sequence fwd+bwd bf16 B16 T1024 hidden768 NH4": lambda: slstm_train(16, 1024, 768, 4, bf16),
        "slstm sequence fwd+bwd fp32 B16 T1024 hidden768 NH4": lambda: slstm_train(16, 1024, 768, 4, fp32),
        "slstm sequence fwd+bwd bf16 B16 T1024 hidden768 NH12": lambda: slstm_train(16, 1024, 768, 12, bf16),
        "slstm sequence fwd+bwd fp32 B16 T1024 hidden768 NH12": lambda: slstm_train(16, 1024, 768, 12, fp32),
        "slstm step fp32 B8 hidden768 NH4": lambda: slstm_decode(8, 768, 4, fp32),
    }


def compile_cases(arch: int, only: str | None = None) -> list[CaseResult]:
    """Run each case's launchers with every launch compiled for `arch` (see the module docstring)."""
    if arch not in SHARED_MEMORY_LIMIT:
        raise ValueError(f"unknown arch {arch}; choose one of {sorted(SHARED_MEMORY_LIMIT)}")
    compiler = _Compiler(arch)
    results = []
    original_run = JITFunction.run
    JITFunction.run = lambda fn, *args, **kwargs: compiler.run(fn, *args, **kwargs)
    try:
        for name, case in _cases().items():
            if only and only not in name:
                continue
            compiler.case, compiler.launches = name, []
            result = CaseResult(name)
            try:
                case()
            except Exception as err:  # reported per case: one failing launch must not hide the others
                result.error = f"{type(err).__name__}: {err}"
            result.launches = compiler.launches
            results.append(result)
    finally:
        JITFunction.run = original_run
    return results


def _table(arch: int, results: list[CaseResult]) -> str:
    limit_kib = SHARED_MEMORY_LIMIT[arch] // 1024
    rows = [
        f"sm_{arch} ({ARCH_NAMES[arch]}), shared memory limit {limit_kib} KiB per block, triton {triton.__version__}",
        f"{'kernel':22} {'warps':>5} {'stages':>6} {'shared KiB':>10} {'regs':>4} {'spill B':>7}  fits",
    ]
    for result in results:
        rows.append(f"-- {result.case}")
        seen = set()
        for launch in result.launches:
            key = (launch.kernel, tuple(sorted(launch.constants.items())), launch.num_stages)
            if key in seen:
                continue
            seen.add(key)
            rows.append(
                f"{launch.kernel:22} {launch.num_warps:5d} {launch.num_stages:6d} {launch.shared_bytes / 1024:10.1f} "
                f"{launch.registers:4d} {launch.spill_stack_bytes:7d}  {'yes' if launch.fits else 'NO'}"
            )
        if result.error:
            rows.append(f"   FAILED: {result.error}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compile_report",
        description="Compile every Triton kernel launch at realistic shapes for one NVIDIA architecture, without "
        "a GPU, and report shared memory, registers and spills per launch. Exit status 1 if a case fails.",
    )
    parser.add_argument("--arch", type=int, default=90, choices=sorted(SHARED_MEMORY_LIMIT),
                        help="compute capability x 10 (default 90: H100)")
    parser.add_argument("--only", help="run only the cases whose name contains this text (e.g. 'slstm')")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per case) instead of a table")
    args = parser.parse_args(argv)
    results = compile_cases(args.arch, args.only)
    if args.json:
        print(json.dumps([asdict(r) for r in results], default=str))
    else:
        print(_table(args.arch, results))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
