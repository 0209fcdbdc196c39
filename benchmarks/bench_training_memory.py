"""Peak memory and time of one training step (forward + backward) on CPU, on the same model and batch:

- with and without gradient checkpointing (vocabulary 2,048);
- with the loss computed without the logits (`logits_with_loss=False`) and from them, at the 7B models' vocabulary
  of 50,304, where the [B, T, V] float32 logits and their gradients outweigh the activations.

Each step runs in a fresh subprocess; its peak is the growth of the process's maximum resident set size during the
step (after the model and batch exist), which is what the step's activations and gradients cost. The settings
alternate, `--repeats` rounds, and each figure is the median of its rounds.

    python -m benchmarks.bench_training_memory [--seq-len 1024] [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from benchmarks.results import cpu_name, expect, record

expect(
    "train_step_peak_memory_cpu_gradient_checkpointing",
    "CPU peak memory of one forward+backward with gradient checkpointing vs without (paper-style xLSTM[5:1])",
)
expect(
    "train_step_time_cpu_gradient_checkpointing",
    "CPU time of one forward+backward with gradient checkpointing vs without (same model and batch)",
)
expect(
    "train_step_peak_memory_cpu_fused_loss",
    "CPU peak memory of one forward+backward with logits_with_loss=False vs True (vocabulary 50,304)",
)
expect(
    "train_step_time_cpu_fused_loss",
    "CPU time of one forward+backward with logits_with_loss=False vs True (vocabulary 50,304)",
)

# setting -> (vocabulary, gradient checkpointing, logits_with_loss)
SETTINGS = {
    "plain": (2048, False, True),
    "checkpointing": (2048, True, True),
    "plain_large_vocab": (50304, False, True),
    "fused_loss_large_vocab": (50304, False, False),
}

STEP = r"""
import json, resource, sys, time, torch
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
vocab, checkpointing, logits_with_loss, batch, seq_len = json.loads(sys.argv[1])
torch.manual_seed(0)
config = XLSTMConfig(vocab_size=vocab, hidden_size=256, num_hidden_layers=6, slstm_at=[1], num_heads=4,
                     block_style="paper", chunk_size=64, logits_with_loss=logits_with_loss)
model = XLSTMForCausalLM(config).train()
if checkpointing:
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
ids = torch.randint(0, vocab, (batch, seq_len))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model(ids, labels=ids).loss.backward()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"peak_mb": (peak - before) / 1024, "seconds": seconds}))
"""


def run_step(setting: str, batch: int, seq_len: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", STEP, json.dumps([*SETTINGS[setting], batch, seq_len])],
        capture_output=True,
        text=True,
        check=True,
    )
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="alternated rounds of every setting")
    args = parser.parse_args()
    from tqdm import tqdm

    runs = {setting: [] for setting in SETTINGS}
    for _ in tqdm(range(args.repeats), desc="rounds of training steps"):
        for setting in SETTINGS:
            runs[setting].append(run_step(setting, args.batch, args.seq_len))
    device = f"CPU {cpu_name()}, torch threads={torch.get_num_threads()}"
    shape = (f"B={args.batch} T={args.seq_len} hidden=256 blocks=6 (sLSTM at 1) paper style, fp32, "
             f"median of {args.repeats}")
    figures = []
    for name, ours, theirs, baseline in (
        ("gradient_checkpointing", "checkpointing", "plain", "same model without gradient checkpointing"),
        ("fused_loss", "fused_loss_large_vocab", "plain_large_vocab",
         "same model computing the loss from the full logits (logits_with_loss=True)"),
    ):
        for figure, key, unit, digits in (("peak_memory", "peak_mb", "MB", 1), ("time", "seconds", "s", 3)):
            figures.append(record(
                f"train_step_{figure}_cpu_{name}",
                ours=round(statistics.median(run[key] for run in runs[ours]), digits),
                theirs=round(statistics.median(run[key] for run in runs[theirs]), digits),
                competitor=baseline,
                unit=unit,
                better="lower",
                device=device,
                shape=f"{shape}, vocabulary {SETTINGS[ours][0]}",
            ))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
