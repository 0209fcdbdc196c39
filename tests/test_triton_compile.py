"""The Triton kernels compile for real GPUs, and fit their shared memory, without a GPU in CI.

The interpreter tests check the kernels' arithmetic but never compile them. Here every launch the model makes at
realistic shapes (mLSTM at the benchmark and 7B head dims, sLSTM at hidden 768 with 4 and 12 heads, forward,
backward and decode) is compiled for the architecture with Triton's compiler and ptxas, through
`benchmarks/compile_report.py` (a development tool, not installed with the package), which raises
`triton.OutOfResources` for a launch that would not fit, as the GPU would. Each architecture runs in its own process: the interpreter mode that conftest sets for this
process would turn the kernels into interpreted functions.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
from modeling_xlstm.kernels.slstm import triton as slstm_triton  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
needs_toolchain = pytest.mark.skipif(
    not os.path.exists(CUOBJDUMP), reason="the triton wheel's NVIDIA toolchain (ptxas, cuobjdump) is not here"
)


ROOT = Path(__file__).resolve().parents[1]


def _start_report(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.Popen(
        [sys.executable, "-W", "ignore", "-m", "benchmarks.compile_report", "--json", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def _finish(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate(timeout=900)
    assert out.strip(), f"compile_report produced no output (exit {proc.returncode}):\n{err[-3000:]}"
    return json.loads(out)


@pytest.fixture(scope="module")
def reports() -> dict[int, list[dict]]:
    # Started together: the two compilations share the machine's cores instead of running back to back.
    procs = {90: _start_report("--arch", "90"), 86: _start_report("--arch", "86", "--only", "slstm")}
    return {arch: _finish(proc) for arch, proc in procs.items()}


def _errors(report: list[dict]) -> list[str]:
    return [f"{case['case']}: {case['error']}" for case in report if case["error"]]


@needs_toolchain
def test_every_kernel_compiles_and_fits_an_h100_at_full_pipeline_depth(reports):
    report = reports[90]
    assert not _errors(report), _errors(report)
    launched = {launch["kernel"] for case in report for launch in case["launches"]}
    assert launched == {
        "_fwd_state_kernel", "_fwd_intra_kernel", "_bwd_delta_kernel", "_bwd_state_kernel", "_bwd_dq_kernel",
        "_bwd_dk_kernel", "_bwd_dv_kernel", "_step_kernel",
        "_slstm_fwd_kernel", "_slstm_bwd_kernel", "_slstm_step_kernel",
    }
    # 227 KiB per block: no launch should need the shallower fallback pipelines on the target GPU.
    too_big = [(c["case"], l["kernel"], l["shared_bytes"]) for c in report for l in c["launches"] if not l["fits"]]
    assert not too_big, too_big


@needs_toolchain
def test_slstm_training_fits_99_kib_consumer_gpus(reports):
    """RTX 30xx/40xx give a block 99 KiB of shared memory; the sLSTM launchers fall back to shallower software
    pipelines until the kernel fits, so training and decode work there too."""
    report = reports[86]
    assert [case["case"] for case in report] and all("slstm" in case["case"] for case in report)
    assert not _errors(report), _errors(report)
    for case in report:
        final = {}
        for launch in case["launches"]:  # the last launch of each kernel is the one that ran
            final[launch["kernel"]] = launch
        assert final and all(launch["fits"] for launch in final.values()), case


class _FakeKernel:
    """Records the pipeline depths it was launched with; runs out of shared memory above `max_depth`."""

    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self.depths: list[int] = []

    def __getitem__(self, grid):
        def launch(*args, num_stages, **meta):
            self.depths.append(num_stages)
            if num_stages > self.max_depth:
                raise triton.OutOfResources(200 * 1024, 99 * 1024, "shared memory")

        return launch


def test_launch_retries_shallower_pipelines_and_remembers_what_fitted(monkeypatch):
    monkeypatch.setattr(slstm_triton, "_STAGES_THAT_FIT", {})
    kernel = _FakeKernel(max_depth=1)
    slstm_triton._launch(kernel, (1,), torch.device("cpu"), DH=64, num_warps=8)
    assert kernel.depths == [3, 2, 1]
    slstm_triton._launch(kernel, (1,), torch.device("cpu"), DH=64, num_warps=8)
    assert kernel.depths == [3, 2, 1, 1]  # the depth that fitted is reused: no second round of failures
    slstm_triton._launch(kernel, (1,), torch.device("cpu"), DH=32, num_warps=8)
    assert kernel.depths[-3:] == [3, 2, 1]  # other launch constants are another configuration


def test_launch_that_never_fits_names_the_fix(monkeypatch):
    monkeypatch.setattr(slstm_triton, "_STAGES_THAT_FIT", {})
    with pytest.raises(RuntimeError, match="more sLSTM heads .* or backend='native'"):
        slstm_triton._launch(_FakeKernel(max_depth=0), (1,), torch.device("cpu"), DH=256, num_warps=8)
