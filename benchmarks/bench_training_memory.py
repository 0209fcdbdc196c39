"""Peak memory and time of one training step (forward + backward) on CPU, with and without gradient
checkpointing, on the same model and batch.

Each setting runs in a fresh subprocess; its peak is the growth of the process's maximum resident set size
during the step (after the model and batch exist), which is what the step's activations and gradients cost.

    python -m benchmarks.bench_training_memory [--seq-len 1024] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

from benchmarks.results import expect, record

expect(
    "train_step_peak_memory_cpu_gradient_checkpointing",
    "CPU peak memory of one forward+backward with gradient checkpointing vs without (paper-style xLSTM[5:1])",
)
expect(
    "train_step_time_cpu_gradient_checkpointing",
    "CPU time of one forward+backward with gradient checkpointing vs without (same model and batch)",
)

STEP = r"""
import json, resource, sys, time, torch
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
checkpointing, batch, seq_len = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
config = XLSTMConfig(vocab_size=2048, hidden_size=256, num_hidden_layers=6, slstm_at=[1], num_heads=4,
                     block_style="paper", chunk_size=64)
model = XLSTMForCausalLM(config).train()
if checkpointing:
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
ids = torch.randint(0, 2048, (batch, seq_len))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model(ids, labels=ids).loss.backward()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"peak_mb": (peak - before) / 1024, "seconds": seconds}))
"""


def run_step(checkpointing: bool, batch: int, seq_len: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", STEP, "1" if checkpointing else "0", str(batch), str(seq_len)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    from tqdm import tqdm

    measured = {}
    for checkpointing in tqdm([False, True], desc="training steps"):
        measured[checkpointing] = run_step(checkpointing, args.batch, args.seq_len)
    device = f"CPU ({platform.processor() or platform.machine()})"
    shape = f"B={args.batch} T={args.seq_len} hidden=256 blocks=6 (sLSTM at 1) paper style, fp32"
    baseline = "same model without gradient checkpointing"
    memory = record(
        "train_step_peak_memory_cpu_gradient_checkpointing",
        ours=round(measured[True]["peak_mb"], 1),
        theirs=round(measured[False]["peak_mb"], 1),
        competitor=baseline,
        unit="MB",
        better="lower",
        device=device,
        shape=shape,
    )
    timing = record(
        "train_step_time_cpu_gradient_checkpointing",
        ours=round(measured[True]["seconds"], 3),
        theirs=round(measured[False]["seconds"], 3),
        competitor=baseline,
        unit="s",
        better="lower",
        device=device,
        shape=shape,
    )
    print(json.dumps([memory, timing], indent=2))


if __name__ == "__main__":
    main()
