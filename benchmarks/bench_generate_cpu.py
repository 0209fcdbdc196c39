"""CPU generation throughput of our xLSTM and transformers' own `xLSTMForCausalLM`, side by side in one run, on the
same small 7B-style configuration with the same weights; plus prefill throughput at 2,048 tokens and the flatness of
our per-token decode time and memory over 2,000 generated tokens.

Two model sizes (`--size`): `medium` (vocab 50304, hidden 512, 6 blocks; figure names as below) and `small` (vocab
2048, hidden 256, 4 blocks, where per-token overhead weighs most; the same names with a `_small` suffix).

Figures (all recorded in results.jsonl / RESULTS.md):
- generate() new tokens/s at batch 1 and batch 8 (greedy, 16-token prompt, 64 new tokens), ours vs theirs, ours both
  eager (the default) and with `cache_implementation="static"` and a `compile_config` (inductor compiles the decoding
  step once; its compile time is excluded, it is paid once per batch shape);
- prefill tokens/s at 2,048 tokens: the forward that generate() runs on the prompt (ours computes only the last
  position's logits, theirs all of them, as their generate() does), and the backbone alone (a like-for-like
  comparison of the layers and kernels);
- our decode step time at token 2,000 / at token 50 (median of 31 steps of each, alternated; target <= 1.3), and the
  growth of the cache and of the process's resident memory between them (medium only);
- the matmul floor (benchmarks/matmul_bound.py) of a decode step at batch 1 and 8 and of the backbone prefill: the
  time of the model's matmuls alone, beside the competitor's time. Its ratio is the most any implementation of the
  model could reach against transformers' xLSTM at that shape.

Times are the best of `--repeats` runs, ours and theirs interleaved, so that load from other processes on a shared
machine hits both alike. By default torch uses one thread: on a small, shared machine several OpenMP threads wait on
each other for every small decode op, and the figures become erratic.

    python -m benchmarks.bench_generate_cpu [--size medium|small] [--threads 1] [--repeats 3] [--new-tokens 64]
                                            [--decode-tokens 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.competitors import transformers_xlstm
from benchmarks.matmul_bound import linear_layers_step
from benchmarks.results import cpu_name, expect, record


def competitor() -> str:
    import transformers

    return f"transformers xLSTMForCausalLM ({transformers.__version__}, native kernels, float32)"


# a small xLSTM 7B: its block structure and defaults, with hidden_size * qk_dim_factor a multiple of 64 (transformers'
# xLSTM crashes otherwise, see DESIGN §7); name suffix, config, description
SIZES = {
    "medium": ("", dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_heads=4, qk_dim_factor=0.5,
                        v_dim_factor=1.0), "vocab 50304, hidden 512, 6 mLSTM blocks, 4 heads, qk 0.5, 7B style, fp32"),
    "small": ("_small", dict(vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_heads=4, qk_dim_factor=0.5,
                             v_dim_factor=1.0),
              "vocab 2048, hidden 256, 4 mLSTM blocks, 4 heads, qk 0.5, 7B style, fp32"),
}
for _suffix, _, _text in SIZES.values():
    for _batch in (1, 8):
        expect(f"cpu_generate_tok_s_b{_batch}{_suffix}",
               f"CPU generate() new tokens/s, batch {_batch}, {_text}, vs transformers' xLSTM")
        expect(f"cpu_generate_tok_s_b{_batch}_static_compiled{_suffix}",
               f"CPU generate(cache_implementation='static', compile_config=...) new tokens/s, batch {_batch}, "
               f"{_text}, vs transformers' xLSTM")
        expect(f"cpu_generate_b{_batch}_matmul_floor{_suffix}",
               f"CPU decode step, batch {_batch}, {_text}: the model's matmuls alone vs transformers' xLSTM per new "
               "token (the ratio is the bound of any implementation)")
    expect(f"cpu_prefill_tok_s_2048{_suffix}", f"CPU prefill tokens/s of the forward generate() runs on a 2,048-token "
           f"prompt, {_text}")
    expect(f"cpu_prefill_backbone_tok_s_2048{_suffix}", f"CPU prefill tokens/s of the backbone alone on 2,048 tokens, "
           f"{_text}")
    expect(f"cpu_prefill_backbone_2048_matmul_floor{_suffix}", f"CPU backbone prefill of 2,048 tokens, {_text}: the "
           "backbone's matmuls alone vs transformers' xLSTM (the ratio is the bound of any implementation)")
expect("cpu_decode_step_time_ratio_t2000_vs_t50", "CPU decode time per token at token 2,000 / at token 50 (<= 1.3)")
expect("cpu_decode_cache_growth_t50_to_t2000", "bytes the cache grows by between token 50 and token 2,000 (0 = flat)")
expect("cpu_decode_rss_growth_mb_t50_to_t2000", "process resident memory growth between decode tokens 50 and 2,000")


def cpu_device(threads: int) -> str:
    return f"CPU {cpu_name()}, {os.cpu_count()} cores shared with other processes, torch threads={threads}"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_models(config: dict):
    """Ours (native kernels, float32) and transformers' xLSTM with a copy of its weights (native kernels)."""
    import torch
    from transformers import GenerationConfig

    from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM

    torch.manual_seed(0)
    ours = XLSTMForCausalLM(XLSTMConfig(**config, slstm_at=[], block_style="large", backend="native")).eval()
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
    parser.add_argument("--size", choices=sorted(SIZES), default="medium")
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
    suffix, config, config_text = SIZES[args.size]
    ours, theirs = build_models(config)
    generator = torch.Generator().manual_seed(1)
    vocab = config["vocab_size"]

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
        floor = linear_layers_step(ours, batch, 1, lm_head_positions=1)
        runs = {
            "ours": lambda: run(ours),
            "ours_static_compiled": lambda: run(ours, **static),
            "theirs": lambda: run(theirs),
            "matmul_floor": lambda: [floor() for _ in range(n)],
        }
        with tqdm(total=len(runs) * args.repeats, desc=f"generate batch {batch}") as progress:
            seconds = best_of(args.repeats, runs, progress)
        theirs_tps = batch * n / seconds["theirs"]
        shape = f"B={batch}, prompt {args.prompt_tokens}, {n} new tokens greedy, best of {args.repeats}; {config_text}"
        for name, key in ((f"cpu_generate_tok_s_b{batch}{suffix}", "ours"),
                          (f"cpu_generate_tok_s_b{batch}_static_compiled{suffix}", "ours_static_compiled")):
            entry = record(name, batch * n / seconds[key], theirs_tps, competitor(), "new tokens/s", "higher", device,
                           shape)
            print(f"{name}: ours {entry['ours']:.1f} tok/s, theirs {theirs_tps:.1f} tok/s, ratio {entry['ratio']}")
        entry = record(
            f"cpu_generate_b{batch}_matmul_floor{suffix}", seconds["matmul_floor"] / n * 1e3,
            seconds["theirs"] / n * 1e3, competitor(), "ms per new token (ours: the model's matmuls alone, a bound for any implementation)", "lower",
            device, shape,
        )
        print(f"batch {batch}: the matmuls alone take {entry['ours']:.2f} ms per step, theirs {entry['theirs']:.2f} ms "
              f"per new token: no implementation can be more than {entry['ratio']:.2f}x faster")

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
            "matmul_floor": linear_layers_step(ours.backbone, 1, T),
        },
    }
    shape = f"B=1, T={T}, chunk 64, best of {args.repeats}; {config_text}"
    for name, functions in cases.items():
        with tqdm(total=len(functions) * args.repeats, desc=name) as progress:
            seconds = best_of(args.repeats, functions, progress)
        entry = record(name + suffix, T / seconds["ours"], T / seconds["theirs"], competitor(), "tokens/s", "higher",
                       device, shape)
        print(f"{name}{suffix}: ours {entry['ours']:.0f} tok/s, theirs {entry['theirs']:.0f} tok/s, "
              f"ratio {entry['ratio']}")
        if "matmul_floor" in seconds:
            entry = record(
                f"cpu_prefill_backbone_2048_matmul_floor{suffix}", seconds["matmul_floor"] * 1e3,
                seconds["theirs"] * 1e3, competitor(), "ms (ours: the backbone's matmuls alone, a bound for any "
                "implementation)", "lower", device, shape,
            )
            print(f"prefill: the matmuls alone take {entry['ours']:.0f} ms, theirs {entry['theirs']:.0f} ms: no "
                  f"implementation can be more than {entry['ratio']:.2f}x faster")
    if args.size != "medium":
        return

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
             f"{config_text}")
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
