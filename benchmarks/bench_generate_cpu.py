"""CPU generation throughput of our xLSTM and transformers' own `xLSTMForCausalLM`, side by side in one run, on the
same small 7B-style configuration with the same weights; plus prefill throughput at 2,048 tokens and the flatness of
our per-token decode time and memory over 2,000 generated tokens.

Figures (all recorded in results.jsonl / RESULTS.md):
- generate() new tokens/s at batch 1 and batch 8 (greedy, 16-token prompt, 64 new tokens), ours vs theirs, ours both
  eager (the default) and with `cache_implementation="static"` and a `compile_config` (inductor compiles the decoding
  step once; its compile time is excluded, it is paid once per batch shape);
- prefill tokens/s at 2,048 tokens: the forward that generate() runs on the prompt (ours computes only the last
  position's logits, theirs all of them, as their generate() does), and the backbone alone (a like-for-like
  comparison of the layers and kernels);
- our decode step time at token 2,000 / at token 50 (median of 31 steps of each, alternated; target <= 1.3), and the
  growth of the cache and of the process's resident memory between them.

Times are the best of `--repeats` runs, ours and theirs interleaved, so that load from other processes on a shared
machine hits both alike. By default torch uses one thread: on a small, shared machine several OpenMP threads wait on
each other for every small decode op, and the figures become erratic.

    python -m benchmarks.bench_generate_cpu [--threads 1] [--repeats 3] [--new-tokens 64] [--decode-tokens 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.competitors import transformers_xlstm
from benchmarks.results import cpu_name, expect, record


def competitor() -> str:
    import transformers

    return f"transformers xLSTMForCausalLM ({transformers.__version__}, native kernels, float32)"


expect("cpu_generate_tok_s_b1", "CPU generate() new tokens/s, batch 1, small 7B-style config, vs transformers' xLSTM")
expect("cpu_generate_tok_s_b8", "CPU generate() new tokens/s, batch 8, small 7B-style config, vs transformers' xLSTM")
expect(
    "cpu_generate_tok_s_b1_static_compiled",
    "CPU generate(cache_implementation='static', compile_config=...) new tokens/s, batch 1, vs transformers' xLSTM",
)
expect(
    "cpu_generate_tok_s_b8_static_compiled",
    "CPU generate(cache_implementation='static', compile_config=...) new tokens/s, batch 8, vs transformers' xLSTM",
)
expect("cpu_prefill_tok_s_2048", "CPU prefill tokens/s of the forward generate() runs on a 2,048-token prompt")
expect("cpu_prefill_backbone_tok_s_2048", "CPU prefill tokens/s of the backbone alone on 2,048 tokens")
expect("cpu_decode_step_time_ratio_t2000_vs_t50", "CPU decode time per token at token 2,000 / at token 50 (<= 1.3)")
expect("cpu_decode_cache_growth_t50_to_t2000", "bytes the cache grows by between token 50 and token 2,000 (0 = flat)")
expect("cpu_decode_rss_growth_mb_t50_to_t2000", "process resident memory growth between decode tokens 50 and 2,000")

# a small xLSTM 7B: its block structure and defaults, with hidden_size * qk_dim_factor a multiple of 64 (transformers'
# xLSTM crashes otherwise, see DESIGN §7)
CONFIG = dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_heads=4, qk_dim_factor=0.5, v_dim_factor=1.0)
CONFIG_TEXT = "vocab 50304, hidden 512, 6 mLSTM blocks, 4 heads, qk 0.5, 7B style, fp32"


def cpu_device(threads: int) -> str:
    return f"CPU {cpu_name()}, {os.cpu_count()} cores shared with other processes, torch threads={threads}"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_models():
    """Ours (native kernels, float32) and transformers' xLSTM with a copy of its weights (native kernels)."""
    import torch
    from transformers import GenerationConfig

    from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM

    torch.manual_seed(0)
    ours = XLSTMForCausalLM(XLSTMConfig(**CONFIG, slstm_at=[], block_style="large", backend="native")).eval()
    theirs = transformers_xlstm(ours, share_weights=False)
    for model in (ours, theirs):
        model.generation_config = GenerationConfig(pad_token_id=0, eos_token_id=None, bos_token_id=None, do_sample=False)
    return ours, theirs


def best_of(repeats: int, functions: dict, progress) -> dict:
    """Run every function `repeats` times, interleaved; the best (lowest) seconds of each."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
            progress.update(1)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--decode-tokens", type=int, default=2000)
    args = parser.parse_args()

    import torch
    from tqdm import tqdm
    from transformers import CompileConfig

    torch.set_num_threads(args.threads)
    device = cpu_device(args.threads)
    ours, theirs = build_models()
    generator = torch.Generator().manual_seed(1)
    vocab = CONFIG["vocab_size"]

    # sanity: same weights, same greedy tokens (so both generate the same amount of work)
    prompt = torch.randint(1, vocab, (2, args.prompt_tokens), generator=generator)
    with torch.no_grad():
        same = torch.equal(ours.generate(prompt, max_new_tokens=8), theirs.generate(prompt, max_new_tokens=8))
    print(f"greedy tokens identical to transformers' xLSTM on the same weights: {same}")

    # 1. generate() throughput at batch 1 and 8 ------------------------------------------------------------------
    n = args.new_tokens
    for batch in (1, 8):
        prompt = torch.randint(1, vocab, (batch, args.prompt_tokens), generator=generator)

        static = dict(
            cache_implementation="static",
            compile_config=CompileConfig(backend="inductor", mode="default", fullgraph=True, dynamic=False),
        )

        def run(model, new=n, prompt=prompt, **kwargs):
            with torch.no_grad():
                out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, **kwargs)
            assert out.shape == (batch, args.prompt_tokens + new)
            return out

        for model in (ours, theirs):  # warm-up
            run(model, 2)
        start = time.perf_counter()
        compiled_tokens = run(ours, 8, **static)  # compiles the decoding step (once per batch shape)
        print(f"batch {batch}: compiling the decoding step took {time.perf_counter() - start:.0f} s; compiled and eager "
              f"tokens identical: {torch.equal(compiled_tokens, run(ours, 8))}")
        runs = {"ours": lambda: run(ours), "ours_static_compiled": lambda: run(ours, **static), "theirs": lambda: run(theirs)}
        with tqdm(total=3 * args.repeats, desc=f"generate batch {batch}") as progress:
            seconds = best_of(args.repeats, runs, progress)
        theirs_tps = batch * n / seconds["theirs"]
        for name, key in ((f"cpu_generate_tok_s_b{batch}", "ours"), (f"cpu_generate_tok_s_b{batch}_static_compiled", "ours_static_compiled")):
            entry = record(
                name, batch * n / seconds[key], theirs_tps, competitor(), "new tokens/s", "higher", device,
                f"B={batch}, prompt {args.prompt_tokens}, {n} new tokens greedy, best of {args.repeats}; {CONFIG_TEXT}",
            )
            print(f"{name}: ours {entry['ours']:.1f} tok/s, theirs {theirs_tps:.1f} tok/s, ratio {entry['ratio']}")

    # 2. prefill at 2,048 tokens -----------------------------------------------------------------------------------
    T = args.prefill_tokens
    ids = torch.randint(1, vocab, (1, T), generator=generator)

    def prefill(function):
        def run():
            with torch.no_grad():
                function()

        return run

    cases = {
        "cpu_prefill_tok_s_2048": {
            # what each generate() runs on the prompt: ours needs the last position's logits only
            "ours": prefill(lambda: ours(ids, use_cache=True, logits_to_keep=1)),
            "theirs": prefill(lambda: theirs(ids, use_cache=True)),
        },
        "cpu_prefill_backbone_tok_s_2048": {
            "ours": prefill(lambda: ours.backbone(ids, use_cache=True)),
            "theirs": prefill(lambda: theirs.backbone(ids, use_cache=True)),
        },
    }
    for name, functions in cases.items():
        with tqdm(total=2 * args.repeats, desc=name) as progress:
            seconds = best_of(args.repeats, functions, progress)
        entry = record(
            name, T / seconds["ours"], T / seconds["theirs"], competitor(), "tokens/s", "higher", device,
            f"B=1, T={T}, chunk 64, best of {args.repeats}; {CONFIG_TEXT}",
        )
        print(f"{name}: ours {entry['ours']:.0f} tok/s, theirs {entry['theirs']:.0f} tok/s, ratio {entry['ratio']}")

    # 3. decode time and memory over 2,000 tokens (ours) -----------------------------------------------------------
    # One sequence is decoded to token 50, another to token 2,000; then steps of the two are timed alternately, so
    # that load from other processes, which drifts over the minutes the 2,000 tokens take, hits both alike.
    steps, samples = args.decode_tokens, 31

    def cache_bytes(cache) -> int:
        tensors = [x for layer in cache.layers for store in (layer.recurrent_states, layer.conv_states)
                   for x in store.values() if x is not None]
        return sum(x.numel() * x.element_size() for x in tensors)

    def step(sequence):
        cache, token = sequence
        out = ours(token, cache=cache, use_cache=True, logits_to_keep=1)
        return cache, out.logits[:, -1:].argmax(-1)

    with torch.no_grad():
        first = torch.randint(1, vocab, (1, 1), generator=generator)
        out = ours(first, use_cache=True)
        early = (out.cache, out.logits[:, -1:].argmax(-1))
        for _ in range(50 - 1):
            early = step(early)
        out = ours(first, use_cache=True)
        late = (out.cache, out.logits[:, -1:].argmax(-1))
        for t in tqdm(range(2, steps + 1), desc=f"decode to token {steps}"):
            late = step(late)
            if t == 50:
                marks = {50: (cache_bytes(late[0]), rss_mb())}
        marks[steps] = (cache_bytes(late[0]), rss_mb())
        assert early[0].get_seq_length() == 50 and late[0].get_seq_length() == steps
        times = {"early": [], "late": []}
        for _ in tqdm(range(samples), desc="alternating steps"):
            for key in ("early", "late"):
                start = time.perf_counter()
                sequence = step(early if key == "early" else late)
                times[key].append(time.perf_counter() - start)
                early, late = (sequence, late) if key == "early" else (early, sequence)

    t_early, t_late = statistics.median(times["early"]), statistics.median(times["late"])
    ratio = t_late / t_early
    shape = (f"B=1, greedy decode, median of {samples} steps from token 50 and from token {steps}, alternated; "
             f"{CONFIG_TEXT}")
    record(
        "cpu_decode_step_time_ratio_t2000_vs_t50", ratio, None, None,
        f"x (t{steps} {t_late * 1e3:.1f} ms / t50 {t_early * 1e3:.1f} ms)", "lower", device, shape,
    )
    record(
        "cpu_decode_cache_growth_t50_to_t2000", float(marks[steps][0] - marks[50][0]), None, None,
        f"bytes (cache {marks[50][0]} bytes at t50)", "lower", device, shape,
    )
    record(
        "cpu_decode_rss_growth_mb_t50_to_t2000", marks[steps][1] - marks[50][1], None, None, "MB", "lower", device,
        shape,
    )
    print(
        f"decode step: {t_early * 1e3:.1f} ms at token 50, {t_late * 1e3:.1f} ms at token {steps} (ratio {ratio:.3f}); "
        f"cache {marks[50][0]} -> {marks[steps][0]} bytes; RSS {marks[50][1]:.1f} -> {marks[steps][1]:.1f} MB"
    )


if __name__ == "__main__":
    main()
