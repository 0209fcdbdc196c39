"""CPU generation throughput of our xLSTM and transformers' own `xLSTMForCausalLM`, side by side in one run, on the
same small 7B-style configuration with the same weights; plus prefill throughput at 2,048 tokens and the flatness of
the per-token decode time (both models) and memory over 2,000 generated tokens.

Two model sizes (`--size`): `medium` (vocab 50304, hidden 512, 6 blocks; figure names as below) and `small` (vocab
2048, hidden 256, 4 blocks, where per-token overhead weighs most; the same names with a `_small` suffix).

Figures (all recorded in results.jsonl / RESULTS.md):
- generate() new tokens/s at batch 1 and batch 8 (greedy, 16-token prompt, 64 new tokens), ours vs theirs, ours both
  eager (the default) and with `cache_implementation="static"` and a `compile_config` (inductor compiles the decoding
  step once; its compile time is excluded, it is paid once per batch shape);
- prefill tokens/s at 2,048 tokens: the forward that generate() runs on the prompt (ours computes only the last
  position's logits, theirs all of them, as their generate() does), and the backbone alone (a like-for-like
  comparison of the layers and kernels);
- the decode step time at token 2,000 / at token 50 (median of 31 steps of each, alternated; target <= 1.3), and the
  growth of the cache and of the process's resident memory between them, ours beside theirs (medium only);
- the matmul floor (benchmarks/matmul_bound.py) of a decode step at batch 1 and 8 and of the backbone prefill: the
  time of the model's matmuls alone, beside the competitor's time. Its ratio is the most any implementation of the
  model could reach against transformers' xLSTM at that shape.

Times are the median of `--repeats` runs, ours and theirs interleaved, so that load from other processes on a shared
machine hits both alike (until 2026-12-07 the best run: on this shared machine, best-of ratios of consecutive
invocations differed by up to 0.3). By default torch uses one thread: on a small, shared machine several OpenMP
threads wait on each other for every small decode op, and the figures become erratic.

    python -m benchmarks.bench_generate_cpu [--size medium|small] [--threads 1] [--repeats 3] [--new-tokens 64]
                                            [--decode-tokens 2000] [--parts generate prefill decode]
"""

from __future__ import annotations

import argparse
import inspect
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


PARTS = ("generate", "prefill", "decode")


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


def median_of(repeats: int, functions: dict, progress) -> dict:
    """Run every function `repeats` times, interleaved; the median seconds of each."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
            progress.update(1)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="medium")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--decode-tokens", type=int, default=2000)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="which measurements to run (decode: medium size only)")
    args = parser.parse_args()

    import torch

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

    if "generate" in args.parts:
        generate_throughput(ours, theirs, args, generator, device, suffix, config_text)
    if "prefill" in args.parts:
        prefill_throughput(ours, theirs, args, generator, device, suffix, config_text)
    if "decode" in args.parts:
        if args.size == "medium":
            decode_flatness(ours, theirs, args.decode_tokens, generator, device, config_text)
        else:
            print("decode flatness: measured at --size medium only")


def generate_throughput(ours, theirs, args, generator, device: str, suffix: str, config_text: str) -> None:
    """generate() new tokens/s at batch 1 and 8: ours eager and static-cache compiled, theirs, and the matmul floor."""
    import torch
    from tqdm import tqdm
    from transformers import CompileConfig

    vocab = ours.config.vocab_size
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
        floors = [linear_layers_step(ours, batch, 1, lm_head_positions=1, transposed=transposed)
                  for transposed in (False, True)]
        runs = {
            "ours": lambda: run(ours),
            "ours_static_compiled": lambda: run(ours, **static),
            "theirs": lambda: run(theirs),
            "matmul_floor": lambda: [floors[0]() for _ in range(n)],
            "matmul_floor_transposed": lambda: [floors[1]() for _ in range(n)],
        }
        with tqdm(total=len(runs) * args.repeats, desc=f"generate batch {batch}") as progress:
            seconds = median_of(args.repeats, runs, progress)
        theirs_tps = batch * n / seconds["theirs"]
        shape = (f"B={batch}, prompt {args.prompt_tokens}, {n} new tokens greedy, median of {args.repeats}; "
                 f"{config_text}")
        for name, key in ((f"cpu_generate_tok_s_b{batch}{suffix}", "ours"),
                          (f"cpu_generate_tok_s_b{batch}_static_compiled{suffix}", "ours_static_compiled")):
            entry = record(name, batch * n / seconds[key], theirs_tps, competitor(), "new tokens/s", "higher", device,
                           shape)
            print(f"{name}: ours {entry['ours']:.1f} tok/s, theirs {theirs_tps:.1f} tok/s, ratio {entry['ratio']}")
        layouts = {"nn.Linear's": seconds["matmul_floor"], "transposed": seconds["matmul_floor_transposed"]}
        layout = min(layouts, key=layouts.get)
        entry = record(
            f"cpu_generate_b{batch}_matmul_floor{suffix}", layouts[layout] / n * 1e3, seconds["theirs"] / n * 1e3,
            competitor(), "ms per new token (ours: the model's matmuls alone, in the faster weight layout, a bound for "
            "any implementation)", "lower", device, shape + f"; faster layout: {layout}",
        )
        each = ", ".join(f"{name} weights {value / n * 1e3:.2f}" for name, value in layouts.items())
        print(f"batch {batch}: the matmuls alone take {entry['ours']:.2f} ms per step ({each}), theirs "
              f"{entry['theirs']:.2f} ms per new token: no implementation can be more than {entry['ratio']:.2f}x "
              "faster")

def prefill_throughput(ours, theirs, args, generator, device: str, suffix: str, config_text: str) -> None:
    """Prefill tokens/s at --prefill-tokens: the forward generate() runs on the prompt, and the backbone alone (with
    its matmul floor)."""
    import torch
    from tqdm import tqdm

    vocab = ours.config.vocab_size
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
    shape = f"B=1, T={T}, chunk 64, median of {args.repeats}; {config_text}"
    for name, functions in cases.items():
        with tqdm(total=len(functions) * args.repeats, desc=name) as progress:
            seconds = median_of(args.repeats, functions, progress)
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

def decode_flatness(ours, theirs, steps: int, generator, device: str, config_text: str) -> None:
    """Each model decodes one sequence to token 50 and another to token `steps`; then single steps of the four
    sequences are timed in turn (ours early, ours late, theirs early, theirs late), so that load from other processes,
    which drifts over the minutes the long sequences take, hits all alike. Also the bytes of each cache and the
    process's resident memory at token 50 and at the end of each model's long sequence (ours decodes first)."""
    import torch
    from tqdm import tqdm

    samples = 31
    vocab = ours.config.vocab_size
    # transformers 5.24 renamed the cache argument and output field from `cache_params` to `cache`
    their_cache_name = "cache" if "cache" in inspect.signature(theirs.forward).parameters else "cache_params"

    def our_cache_bytes(cache) -> int:
        tensors = [x for layer in cache.layers for store in (layer.recurrent_states, layer.conv_states)
                   for x in store.values() if x is not None]
        return sum(x.numel() * x.element_size() for x in tensors)

    def their_cache_bytes(cache) -> int:
        tensors = [x for state in cache.rnn_state.values() for x in state] + [cache.seqlen_offset]
        return sum(x.numel() * x.element_size() for x in tensors)

    def our_step(cache, token):
        out = ours(token, cache=cache, use_cache=True, logits_to_keep=1)
        return out.cache, out.logits[:, -1:].argmax(-1)

    def their_step(cache, token):
        out = theirs(token, use_cache=True, **({} if cache is None else {their_cache_name: cache}))
        return getattr(out, their_cache_name), out.logits[:, -1:].argmax(-1)

    sides = {"ours": (our_step, our_cache_bytes), "theirs": (their_step, their_cache_bytes)}
    sequences, marks = {}, {}
    first = torch.randint(1, vocab, (1, 1), generator=generator)
    with torch.no_grad():
        for side, (step, cache_bytes) in sides.items():
            early = step(None, first)
            for _ in range(50 - 1):
                early = step(*early)
            late = step(None, first)
            for t in tqdm(range(2, steps + 1), desc=f"{side}: decode to token {steps}"):
                late = step(*late)
                if t == 50:
                    marks[side] = {50: (cache_bytes(late[0]), rss_mb())}
            marks[side][steps] = (cache_bytes(late[0]), rss_mb())
            sequences[side, "early"], sequences[side, "late"] = early, late
        assert sequences["ours", "early"][0].get_seq_length() == 50
        assert sequences["ours", "late"][0].get_seq_length() == steps
        assert int(sequences["theirs", "late"][0].seqlen_offset) == steps
        times = {key: [] for key in sequences}
        for _ in tqdm(range(samples), desc="alternating steps"):
            for key in sequences:
                step = sides[key[0]][0]
                start = time.perf_counter()
                sequences[key] = step(*sequences[key])
                times[key].append(time.perf_counter() - start)

    shape = (f"B=1, greedy decode, median of {samples} steps from token 50 and from token {steps}, the four sequences "
             f"alternated; {config_text}")
    median_ms = {key: statistics.median(values) * 1e3 for key, values in times.items()}
    growth = {side: (marks[side][steps][0] - marks[side][50][0], marks[side][steps][1] - marks[side][50][1])
              for side in sides}
    time_ratio = {side: median_ms[side, "late"] / median_ms[side, "early"] for side in sides}
    entry = record(
        "cpu_decode_step_time_ratio_t2000_vs_t50", time_ratio["ours"], time_ratio["theirs"], competitor(),
        f"x (ours t{steps} {median_ms['ours', 'late']:.1f} ms / t50 {median_ms['ours', 'early']:.1f} ms; theirs "
        f"{median_ms['theirs', 'late']:.1f} / {median_ms['theirs', 'early']:.1f} ms)", "lower", device, shape,
    )
    print(f"decode step at token {steps} / at token 50: ours {entry['ours']:.3f}, theirs {entry['theirs']:.3f}")
    record(
        "cpu_decode_cache_growth_t50_to_t2000", float(growth["ours"][0]), float(growth["theirs"][0]), competitor(),
        f"bytes (cache at t50: ours {marks['ours'][50][0]}, theirs {marks['theirs'][50][0]} bytes)", "lower", device,
        shape,
    )
    # in whole MB: a few pages more or less are the allocator's noise, and a ratio of two such numbers would mean nothing
    record(
        "cpu_decode_rss_growth_mb_t50_to_t2000", float(round(growth["ours"][1])), float(round(growth["theirs"][1])),
        competitor(), "MB (whole MB)", "lower", device, shape,
    )
    for side in sides:
        print(f"{side}: cache {marks[side][50][0]} -> {marks[side][steps][0]} bytes; RSS {marks[side][50][1]:.1f} -> "
              f"{marks[side][steps][1]:.1f} MB")

if __name__ == "__main__":
    main()
