"""What packing costs: one training step (forward + backward) over the same tokens, as a packed row of documents
(DataCollatorWithFlattening's `position_ids`) and as a plain batch of the same documents, native kernels on CPU.

Equal-length documents (the figure that counts): the packed row runs as the same batch plus a gather and a scatter.
The two sides alternate and the medians are compared.

    python -m benchmarks.bench_packing_cpu [--docs 4] [--doc-len 256] [--repeats 7] [--threads 1] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.results import cpu_name, expect, record
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM

expect(
    "cpu_packing_train_step_time",
    "CPU time of one forward+backward over a packed row of equal-length documents vs the same documents as a batch",
)


def step_seconds(model, inputs: dict) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(**inputs).loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--doc-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = XLSTMConfig(vocab_size=2048, hidden_size=256, num_hidden_layers=4, slstm_at=[1], num_heads=4,
                         block_style="paper", chunk_size=64, backend="native")
    model = XLSTMForCausalLM(config).train()
    docs = torch.randint(0, 2048, (args.docs, args.doc_len))
    batch = {"input_ids": docs, "labels": docs}
    packed_ids = docs.reshape(1, -1)
    labels = packed_ids.clone()
    labels[0, :: args.doc_len] = -100  # as the collator marks document starts
    positions = torch.arange(args.doc_len).repeat(args.docs)[None]
    packed = {"input_ids": packed_ids, "labels": labels, "position_ids": positions}
    step_seconds(model, batch), step_seconds(model, packed)  # warm-up
    times = {"batch": [], "packed": []}
    for _ in range(args.repeats):
        times["batch"].append(step_seconds(model, batch))
        times["packed"].append(step_seconds(model, packed))
    ours, theirs = statistics.median(times["packed"]), statistics.median(times["batch"])
    print(f"packed row: {ours * 1e3:.1f} ms   same documents as a batch: {theirs * 1e3:.1f} ms   "
          f"ratio {theirs / ours:.3f}")
    if not args.no_record:
        record(
            "cpu_packing_train_step_time", round(ours * 1e3, 2), round(theirs * 1e3, 2),
            "the same documents as a plain batch (no packing)", "ms per forward+backward", "lower",
            f"CPU {cpu_name()}, torch threads={args.threads}",
            f"{args.docs} documents x {args.doc_len} tokens, paper style, hidden 256, 4 blocks (sLSTM at 1), fp32, "
            f"median of {args.repeats} alternated",
        )


if __name__ == "__main__":
    main()
