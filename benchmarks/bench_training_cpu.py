"""CPU training throughput: tokens per second of one training step (forward, backward, AdamW update), ours beside
the competitor on the same architecture, in one run, native kernels, float32.

- `cpu_train_tok_s_mlstm`: a small 7B-style all-mLSTM model vs transformers' `xLSTMForCausalLM` (mode "train",
  mlstm_kernels' native chunkwise kernel), on the same weights;
- `cpu_train_tok_s_paper_slstm`: a paper-style model with two sLSTM blocks vs NX-AI's `xLSTMLMModel` with its
  vanilla (PyTorch) sLSTM backend, same architecture;
- `cpu_train_mlstm_matmul_floor`: the mLSTM-only model's matmuls alone, forward and backward
  (benchmarks/matmul_bound.py), beside transformers' xLSTM: the most any implementation could gain on it.

The two sides alternate step by step and the medians are compared, so load from other processes hits both alike.

    python -m benchmarks.bench_training_cpu [--batch 8] [--seq-len 256] [--steps 7] [--threads 1] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers
from tqdm import tqdm

from benchmarks.competitors import nxai_paper_model, transformers_xlstm
from benchmarks.matmul_bound import linear_layers_step
from benchmarks.results import cpu_name, expect, record
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM

expect("cpu_train_tok_s_mlstm", "CPU training tokens/s (fwd+bwd+AdamW), 7B-style mLSTM-only, vs transformers' xLSTM")
expect(
    "cpu_train_mlstm_matmul_floor",
    "CPU training, 7B-style mLSTM-only: the model's matmuls alone (fwd+bwd) vs transformers' xLSTM (bound of any "
    "implementation)",
)
expect(
    "cpu_train_tok_s_paper_slstm",
    "CPU training tokens/s (fwd+bwd+AdamW), paper style with two sLSTM blocks, vs NX-AI's xLSTMLMModel (vanilla)",
)

SIZES = dict(vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_heads=4)


def step_function(model, ids, logits_of):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        start = time.perf_counter()
        logits = logits_of(model, ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def compare(name: str, ours_step, theirs_step, steps: int, tokens: int, competitor: str, device: str, shape: str,
            record_it: bool, floor_step=None) -> None:
    """Median tokens/s of both steps, alternated; with `floor_step` (the model's matmuls alone, forward and
    backward: benchmarks/matmul_bound.py) also the bound it puts on any implementation's ratio."""
    sides = {"ours": ours_step, "theirs": theirs_step}
    if floor_step is not None:
        def timed_floor() -> float:
            start = time.perf_counter()
            floor_step()
            return time.perf_counter() - start

        sides["matmul_floor"] = timed_floor
    for step in sides.values():  # warm-up
        step()
    times = {side: [] for side in sides}
    for _ in tqdm(range(steps), desc=name):
        for side, step in sides.items():
            times[side].append(step())
    ours, theirs = (tokens / statistics.median(times[side]) for side in ("ours", "theirs"))
    print(f"{name}: ours {ours:.0f} tok/s, theirs {theirs:.0f} tok/s, ratio {ours / theirs:.2f}")
    if record_it:
        record(name, round(ours, 1), round(theirs, 1), competitor, "tokens/s", "higher", device, shape)
    if floor_step is not None:
        floor = tokens / statistics.median(times["matmul_floor"])
        print(f"{name}: the matmuls alone (forward and backward) run at {floor:.0f} tok/s: no implementation can be "
              f"more than {floor / theirs:.2f}x faster than theirs")
        if record_it:
            record(name.replace("_tok_s", "") + "_matmul_floor", round(floor, 1), round(theirs, 1), competitor,
                   "tokens/s (ours: the model's matmuls alone, forward and backward, a bound for any implementation)",
                   "higher", device, shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = f"CPU {cpu_name()}, torch threads={args.threads}"
    ids = torch.randint(0, SIZES["vocab_size"], (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0))
    tokens = args.batch * args.seq_len
    shape = f"B={args.batch}, T={args.seq_len}, vocab 2048, hidden 256, 4 blocks, 4 heads, fp32, median of {args.steps}"

    torch.manual_seed(0)
    ours = XLSTMForCausalLM(XLSTMConfig(**SIZES, block_style="large", backend="native")).train()
    theirs = transformers_xlstm(ours, share_weights=False, mode="train")
    compare(
        "cpu_train_tok_s_mlstm",
        step_function(ours, ids, lambda model, x: model(x, use_cache=False).logits),
        step_function(theirs, ids, lambda model, x: model(x, use_cache=False).logits),
        args.steps, tokens,
        f"transformers {transformers.__version__} xLSTMForCausalLM (mode train, mlstm_kernels native chunkwise kernel)",
        device, shape + ", 7B style, mLSTM only", not args.no_record,
        floor_step=linear_layers_step(ours, args.batch, args.seq_len, backward=True),
    )

    config = XLSTMConfig(**SIZES, block_style="paper", slstm_at=[1, 3], slstm_num_heads=4, backend="native",
                         gate_soft_cap=None, output_logit_soft_cap=None)
    ours = XLSTMForCausalLM(config).train()
    theirs = nxai_paper_model(config, context_length=args.seq_len)
    compare(
        "cpu_train_tok_s_paper_slstm",
        step_function(ours, ids, lambda model, x: model(x, use_cache=False).logits),
        step_function(theirs, ids, lambda model, x: model(x)),
        args.steps, tokens, "xlstm 2.0.6 xLSTMLMModel, vanilla sLSTM backend", device,
        shape + ", paper style, sLSTM at blocks 1 and 3", not args.no_record,
    )


if __name__ == "__main__":
    main()
