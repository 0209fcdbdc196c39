"""CPU training throughput: tokens per second of one training step (forward, backward, AdamW update), ours beside
the competitor on the same architecture, in one run, native kernels, float32.

- `cpu_train_tok_s_mlstm`: a small 7B-style all-mLSTM model vs transformers' `xLSTMForCausalLM` (mode "train",
  mlstm_kernels' native chunkwise kernel), on the same weights;
- `cpu_train_tok_s_paper_slstm`: a paper-style model with two sLSTM blocks vs NX-AI's `xLSTMLMModel` with its
  vanilla (PyTorch) sLSTM backend, same architecture;
- `cpu_train_mlstm_matmul_floor`: the mLSTM-only model's matmuls alone, forward and backward
  (benchmarks/matmul_bound.py), beside transformers' xLSTM: the most any implementation could gain on it;
- `cpu_train_tok_s_mlstm_fused_loss`, `cpu_train_tok_s_paper_slstm_fused_loss`: the same two comparisons with our model
  configured `logits_with_loss=False` (the loss straight from the hidden states, `modeling_xlstm.kernels.lm_loss`),
  timed in the same alternation;
- `cpu_train_tok_s_bundled_fused_loss`: the bundled model's architecture (`xlstm-tiny-stdlib`, random weights) at
  `examples/train_tiny.py`'s batch of 16, its loss without the logits against the same model with them.

Every side's step computes the mean next-token cross-entropy of the batch; ours with the full logits takes them from
the model's output, as theirs do.

The two sides alternate step by step and the medians are compared, so load from other processes hits both alike.

    python -m benchmarks.bench_training_cpu [--batch 8] [--seq-len 256] [--steps 7] [--threads 1] [--no-record]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import transformers
from tqdm import tqdm

from benchmarks.competitors import nxai_paper_model, transformers_xlstm
from benchmarks.matmul_bound import linear_layers_step
from benchmarks.results import cpu_name, expect, record
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
from modeling_xlstm.hub_configs import model_path

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
for _name in ("cpu_train_tok_s_mlstm", "cpu_train_tok_s_paper_slstm"):
    expect(f"{_name}_fused_loss", f"as {_name}, ours with logits_with_loss=False (the loss without the logits)")
expect(
    "cpu_train_tok_s_bundled_fused_loss",
    "CPU training tokens/s of the bundled model's architecture at train_tiny's batch, logits_with_loss=False vs True",
)

SIZES = dict(vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_heads=4)


def loss_from_logits(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def fused_loss_model(model: XLSTMForCausalLM) -> XLSTMForCausalLM:
    """A copy of `model` that computes its loss without the logits."""
    fused = copy.deepcopy(model)
    fused.config.logits_with_loss = False
    return fused


def step_function(model, ids, loss_of):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        start = time.perf_counter()
        loss = loss_of(model, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def compare(ours_steps: dict, theirs_step, steps: int, tokens: int, competitor: str, device: str, shape: str,
            record_it: bool, floor_step=None) -> None:
    """Median tokens/s of each of our steps ({figure name: step}) and of theirs, all alternated; with `floor_step`
    (the model's matmuls alone, forward and backward: benchmarks/matmul_bound.py) also the bound it puts on any
    implementation's ratio, recorded under the first figure's name."""
    sides = {**ours_steps, "theirs": theirs_step}
    if floor_step is not None:
        def timed_floor() -> float:
            start = time.perf_counter()
            floor_step()
            return time.perf_counter() - start

        sides["matmul_floor"] = timed_floor
    for step in sides.values():  # warm-up
        step()
    times = {side: [] for side in sides}
    for _ in tqdm(range(steps), desc=", ".join(ours_steps)):
        for side, step in sides.items():
            times[side].append(step())
    theirs = tokens / statistics.median(times["theirs"])
    for name in ours_steps:
        ours = tokens / statistics.median(times[name])
        print(f"{name}: ours {ours:.0f} tok/s, theirs {theirs:.0f} tok/s, ratio {ours / theirs:.2f}")
        if record_it:
            record(name, round(ours, 1), round(theirs, 1), competitor, "tokens/s", "higher", device, shape)
    if floor_step is not None:
        name = next(iter(ours_steps))
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

    def our_loss(model, x):  # labels = inputs, shifted inside: the same mean cross-entropy as loss_from_logits
        return model(x, labels=x, use_cache=False).loss

    torch.manual_seed(0)
    ours = XLSTMForCausalLM(XLSTMConfig(**SIZES, block_style="large", backend="native")).train()
    theirs = transformers_xlstm(ours, share_weights=False, mode="train")
    compare(
        {"cpu_train_tok_s_mlstm": step_function(ours, ids, our_loss),
         "cpu_train_tok_s_mlstm_fused_loss": step_function(fused_loss_model(ours), ids, our_loss)},
        step_function(theirs, ids, lambda model, x: loss_from_logits(model(x, use_cache=False).logits, x)),
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
        {"cpu_train_tok_s_paper_slstm": step_function(ours, ids, our_loss),
         "cpu_train_tok_s_paper_slstm_fused_loss": step_function(fused_loss_model(ours), ids, our_loss)},
        step_function(theirs, ids, lambda model, x: loss_from_logits(model(x), x)),
        args.steps, tokens, "xlstm 2.0.6 xLSTMLMModel, vanilla sLSTM backend", device,
        shape + ", paper style, sLSTM at blocks 1 and 3", not args.no_record,
    )

    # the bundled model's architecture at examples/train_tiny.py's batch: its loss with and without the logits
    config = XLSTMConfig.from_pretrained(model_path("xlstm-tiny-stdlib"), backend="native")
    torch.manual_seed(0)
    ours = XLSTMForCausalLM(config).train()
    B = 16
    ids = torch.randint(0, config.vocab_size, (B, args.seq_len), generator=torch.Generator().manual_seed(0))
    compare(
        {"cpu_train_tok_s_bundled_fused_loss": step_function(fused_loss_model(ours), ids, our_loss)},
        step_function(ours, ids, our_loss),
        args.steps, B * args.seq_len,
        "the same model computing its loss from the full logits (logits_with_loss=True)", device,
        f"B={B}, T={args.seq_len}, the bundled xlstm-tiny-stdlib architecture (vocab {config.vocab_size}, hidden "
        f"{config.hidden_size}, {config.num_hidden_layers} blocks, sLSTM at 1, paper style), random weights, fp32, "
        f"median of {args.steps}", not args.no_record,
    )


if __name__ == "__main__":
    main()
