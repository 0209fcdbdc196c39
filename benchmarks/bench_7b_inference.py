"""xLSTM 7B inference on one GPU: ours vs transformers' `xLSTMForCausalLM`, side by side in one run, on the same
randomly initialised weights of the xLSTM 7B config (hub_configs/xlstm-7b, bf16; nothing is downloaded).

Figures (recorded in results.jsonl / RESULTS.md; see docs/inference_7b.md):
- decode new tokens/s at batch 1, 8 and 64, after a 128- and an 8,192-token prompt (greedy; the prompt is prefilled
  untimed, then 128 decode steps are timed between two device synchronisations);
- time to first token at 2,048 and 16,384 prompt tokens (batch 1: prompt in, first token id on the host);
- prefill tokens/s at 65,536 tokens per batch (8 x 8,192): the forward that generation runs on a prompt;
- peak GPU memory of each of these scenarios (torch.cuda.max_memory_allocated; see `peak_gb` for the definition);
- with decode: the device's copy bandwidth, measured in the same run (a device-to-device copy of 4 GiB, bytes read +
  written per second), and each decode figure as a fraction of the bound it implies: batch x bandwidth / the bytes
  of our model's weights (every weight is read once per decode step; the recurrent states' traffic is not counted).
  On an H100 (3.0 TB/s measured, 14.2 GB of bf16 weights) the bound at batch 1 is about 210 tokens/s.

How each side runs:
- ours: `fuse_projections()` (one matmul for q/k/v/o, one for the gates, one for the FFN gate/up), Triton kernels
  (`backend="auto"` on CUDA: chunkwise for prompts, the fused step kernel for decode), float32 states in an
  `XLSTMCache`. Decode is a greedy step (forward over one token, argmax, token written back into a static buffer)
  captured once per batch size in a CUDA graph and replayed per token: no host synchronisation and no Python per
  token. Decode modes (`--decode-modes`): "compile-graph" (the step compiled by inductor, then captured), "graph"
  (the eager step captured), "eager" (no capture; CPU). Each listed mode is measured; the fastest is recorded, and
  the mode appears in the figure's shape.
- theirs: transformers' xLSTM with `xlstm`/`mlstm-kernels` installed (built on our weights by
  `competitors.transformers_xlstm`), measured after ours in a child process of this script (`isolated.py`):
  compiling their TFLA kernel with the Triton 3.6 wheel aborts the process in LLVM, which would take our figures
  with it. A crashed child is retried once with DISABLE_LLVM_OPT=1, and the
  `competitor` field says so. Their Triton kernels are tried first (`chunkwise--triton_xl_chunk`,
  `native_sequence__triton`, `triton`, as NX-AI run the 7B); where they raise (Triton 3.9 removed the
  `tl.make_block_ptr` they use) the script falls back to their native kernels (`chunkwise--native_autograd`,
  `native_sequence__native`, `native`); the `competitor` field says which ran. Their decode step goes through the
  same CUDA-graph harness (modes `--their-decode-modes`), their cache is their default (`xLSTMCache`, states in the
  model dtype). For prefill and time to first token their backbone runs on the prompt and the LM head on the last
  position only, as ours does (their own forward would compute the logits of every prompt position; this is the
  like-for-like comparison).

Weights: both processes build our model from seed 0 on the device; the child hands those tensors to theirs by
name (`assign=True`, no copy) and drops ours, so both measure the same weights, each with the GPU to itself. Ours
saves its last-position logits on a check prompt; the child reports how far theirs are from them.

    python -m benchmarks.bench_7b_inference                           # GPU: all figures (several minutes)
    python -m benchmarks.bench_7b_inference --parts decode --batches 1 # a subset (a run is limited to 10 minutes)
    python -m benchmarks.bench_7b_inference --parts ttft --ttft-prompts 16384
    python -m benchmarks.bench_7b_inference --small --device cpu      # tiny 7B-style config on CPU, seconds, no record
benchmarks/gpu_suite.sh runs it as its steps 7b_decode (batches 1 and 8), 7b_prefill and 7b_ttft (16,384 tokens).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from pathlib import Path
from typing import NamedTuple

from benchmarks.competitors import THEIR_NATIVE_KERNELS, probe_their_kernels, their_cache_keyword, transformers_xlstm
from benchmarks.isolated import measure_isolated, write_child_result
from benchmarks.results import child_timeout, cpu_name, dry_run_figure, expect, record, record_skip

ROOT = Path(__file__).resolve().parent.parent
CONFIG_7B = ROOT / "hub_configs" / "xlstm-7b"

DECODE_BATCHES = (1, 8, 64)
DECODE_PROMPTS = (128, 8192)
TTFT_PROMPTS = (2048, 16384)
PREFILL_SHAPE = (8, 8192)


def decode_name(batch: int, prompt: int) -> str:
    return f"gpu_7b_decode_tok_s_b{batch}_p{prompt}"


def ttft_name(prompt: int) -> str:
    return f"gpu_7b_ttft_ms_p{prompt}"


def prefill_name(shape: tuple[int, int]) -> str:
    return f"gpu_7b_prefill_tok_s_{shape[0]}x{shape[1]}"


def bound_name(batch: int, prompt: int) -> str:
    return f"gpu_7b_decode_bound_fraction_b{batch}_p{prompt}"


COPY_BANDWIDTH_NAME = "gpu_copy_bandwidth_gb_s"


PREFILL_NAME = prefill_name(PREFILL_SHAPE)
PEAK_SUFFIX = "_peak_gb"

for _batch in DECODE_BATCHES:
    for _prompt in DECODE_PROMPTS:
        expect(decode_name(_batch, _prompt), f"GPU 7B bf16 decode new tokens/s, batch {_batch}, after {_prompt} prompt "
               "tokens, CUDA-graph greedy step, vs transformers' xLSTM"
               + (" (published 157 on an H100; target there >= 190)" if _batch == 1 else ""))
        expect(decode_name(_batch, _prompt) + PEAK_SUFFIX,
               f"GPU 7B bf16 peak GPU memory (GB) of prefill {_prompt} + decode at batch {_batch}, vs transformers' xLSTM")
        expect(bound_name(_batch, _prompt),
               f"GPU 7B bf16 decode at batch {_batch} after {_prompt} prompt tokens as a fraction of the bound "
               "batch x copy bandwidth (same run) / weight bytes, ours beside transformers' xLSTM"
               + (" (the figure that counts; bound about 210 tok/s on an H100)" if _batch == 1 else ""))
expect(COPY_BANDWIDTH_NAME, "GPU device-to-device copy bandwidth (GB/s, bytes read + written), measured in the run of "
       "the 7B decode figures (the bound of their fractions)")
for _prompt in TTFT_PROMPTS:
    expect(ttft_name(_prompt), f"GPU 7B bf16 time to first token (ms) at {_prompt} prompt tokens, batch 1, vs "
           "transformers' xLSTM" + (" (published 349 ms on an H100; target there <= 330 ms)" if _prompt == 16384 else ""))
    expect(ttft_name(_prompt) + PEAK_SUFFIX, f"GPU 7B bf16 peak GPU memory (GB) of the {_prompt}-token first token")
expect(PREFILL_NAME, "GPU 7B bf16 prefill tokens/s at 65,536 tokens per batch (8 x 8,192), vs transformers' xLSTM "
       "(published 47,600 on an H100; target there >= 50,000)")
expect(PREFILL_NAME + PEAK_SUFFIX, "GPU 7B bf16 peak GPU memory (GB) of the 8 x 8,192 prefill")


class Scale(NamedTuple):
    """Sizes of one run: the real figures, or a tiny stand-in (`--small`) that runs the same code in seconds."""

    batches: tuple[int, ...]
    decode_prompts: tuple[int, ...]
    ttft_prompts: tuple[int, ...]
    prefill_shape: tuple[int, int]
    new_tokens: int
    repeats: int
    prefill_tokens_per_call: int  # untimed prompt prefill for decode is run in pieces of at most this many tokens
    config_overrides: dict | None = None


FULL = Scale(DECODE_BATCHES, DECODE_PROMPTS, TTFT_PROMPTS, PREFILL_SHAPE, new_tokens=128, repeats=3,
             prefill_tokens_per_call=65536)
# a tiny xLSTM 7B: same block structure, hidden * qk_dim_factor a multiple of 64 (transformers' xLSTM needs it)
SMALL = Scale((1, 2, 4), (16, 80), (32, 130), (2, 130), new_tokens=8, repeats=2, prefill_tokens_per_call=256,
              config_overrides=dict(vocab_size=1024, hidden_size=256, num_hidden_layers=2, num_heads=4,
                                    block_types=["mlstm"] * 2, slstm_at=[]))

# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def our_config(scale: Scale, backend: str):
    from modeling_xlstm import XLSTMConfig

    return XLSTMConfig.from_pretrained(str(CONFIG_7B), backend=backend, **(scale.config_overrides or {}))


def build_ours(scale: Scale, device, dtype):
    """Our model of the benchmark config, randomly initialised from seed 0 (so every process gets the same weights)."""
    import torch

    from modeling_xlstm import XLSTMForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = XLSTMForCausalLM(our_config(scale, backend="auto")).eval()
    finally:
        torch.set_default_dtype(previous)
    return model.requires_grad_(False)


def param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# The two models behind one interface
# ----------------------------------------------------------------------------------------------------------------


class Ours:
    label = "ours"

    def __init__(self, model):
        self.model = model
        self.caches = {}

    def cache(self, batch: int):
        """One cache per batch size, zeroed in place between prompts: its tensors keep their addresses, so a decode
        step captured in a CUDA graph stays valid for every prompt of that batch size."""
        from modeling_xlstm import XLSTMCache

        if batch not in self.caches:
            self.caches[batch] = XLSTMCache(self.model.config)
        self.caches[batch].reset()
        return self.caches[batch]

    def prefill(self, ids, cache):
        """Feed `ids` through the model continuing from `cache`; logits of the last position [B, V]."""
        return self.model(ids, cache=cache, logits_to_keep=1).logits[:, -1]

    def first_token_logits(self, ids):
        return self.model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]

    def step_logits(self, token, cache):
        return self.model(token, cache=cache, logits_to_keep=1).logits[:, -1]


class Theirs:
    label = "theirs"

    def __init__(self, model):
        self.model = model
        self.caches = {}
        self.cache_keyword = their_cache_keyword(model)  # the model's and its backbone's

    def cache(self, batch: int):
        from transformers.models.xlstm.modeling_xlstm import xLSTMCache

        model = self.model
        if batch not in self.caches:
            self.caches[batch] = xLSTMCache(model.config, batch, dtype=model.dtype, device=model.device)
        cache = self.caches[batch]
        for states in cache.rnn_state.values():  # their reset() makes new tensors; zero in place instead
            for tensor in states:
                tensor.zero_()
        cache.seqlen_offset.zero_()
        return cache

    def _last_logits(self, hidden):
        from transformers.models.xlstm.modeling_xlstm import soft_cap

        logits = self.model.lm_head(hidden[:, -1].to(self.model.lm_head.weight.dtype)).float()
        return soft_cap(logits, self.model.config.output_logit_soft_cap)

    def prefill(self, ids, cache):
        hidden = self.model.backbone(ids, **{self.cache_keyword: cache}, use_cache=True).last_hidden_state
        return self._last_logits(hidden)

    def first_token_logits(self, ids):
        return self._last_logits(self.model.backbone(ids, use_cache=True).last_hidden_state)

    def step_logits(self, token, cache):
        return self.model(token, **{self.cache_keyword: cache}, use_cache=True).logits[:, -1]


# ----------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak GPU memory of one scenario: the model's weights plus everything allocated above the resting level (the
    weights) while the scenario ran. Each model is measured in a process of its own. None on CPU."""

    def __init__(self, device, own_weight_bytes: int):
        self.device, self.own = device, own_weight_bytes

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.rest = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        self.gb = None
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda" and exc[0] is None:
            torch.cuda.synchronize()
            self.gb = (torch.cuda.max_memory_allocated() - self.rest + self.own) / 1e9
        return False


def free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def prompt_ids(batch: int, length: int, vocab: int, device):
    """The same random prompt for both models (seeded by its shape)."""
    import torch

    generator = torch.Generator().manual_seed(1_000_003 * batch + length)
    return torch.randint(1, vocab, (batch, length), generator=generator).to(device)


def prefill_in_pieces(side, cache, ids, tokens_per_call: int):
    """Untimed prompt prefill for decode, in sequence pieces of at most `tokens_per_call` tokens (B x piece) so that
    no implementation materialises more than that many tokens' activations at once."""
    batch, length = ids.shape
    piece = max(1, tokens_per_call // batch)
    logits = None
    for start in range(0, length, piece):
        logits = side.prefill(ids[:, start : start + piece], cache)
    return logits


def measure_decode(side, batch, prompts, scale, modes, device, vocab, own_bytes, progress):
    """{prompt: {"tok_s", "mode", "peak_gb", "tokens", "modes": {mode: tok_s or error}}} for one model and batch."""
    import torch

    from modeling_xlstm.decoding import GreedyDecoder

    results = {}
    decoders = {}
    n = scale.new_tokens
    for prompt in prompts:
        ids = prompt_ids(batch, prompt, vocab, device)
        entry = {"modes": {}}
        with PeakMemory(device, own_bytes) as peak, torch.no_grad():
            for mode in modes:
                try:
                    cache = side.cache(batch)
                    if mode not in decoders:  # capture once per batch size; the warm-up steps need a state
                        decoder = GreedyDecoder(
                            lambda token, cache=cache: side.step_logits(token, cache), batch, n, device, mode
                        )
                        decoder.start(prefill_in_pieces(side, cache, ids[:, :16], scale.prefill_tokens_per_call).argmax(-1))
                        start = time.perf_counter()
                        decoder.capture()
                        sync(device)
                        entry.setdefault("prepare_s", {})[mode] = time.perf_counter() - start
                        decoders[mode] = decoder
                        cache = side.cache(batch)
                    decoder = decoders[mode]
                    first = prefill_in_pieces(side, cache, ids, scale.prefill_tokens_per_call).argmax(-1)
                    decoder.start(first)
                    sync(device)
                    start = time.perf_counter()
                    for _ in range(n):
                        decoder.step()
                    sync(device)
                    seconds = time.perf_counter() - start
                    entry["modes"][mode] = batch * n / seconds
                    if "tok_s" not in entry or entry["modes"][mode] > entry["tok_s"]:
                        entry.update(tok_s=entry["modes"][mode], mode=mode, tokens=decoder.tokens[:, 1 : n + 1].cpu())
                except Exception as error:  # noqa: BLE001 -- a mode that cannot run on this stack is reported, not fatal
                    entry["modes"][mode] = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
                    decoders.pop(mode, None)
                progress.update(1)
        entry["peak_gb"] = peak.gb
        results[prompt] = entry
    decoders.clear()
    return results


def measure_ttft(side, prompt, repeats, device, vocab, own_bytes, progress):
    """Best-of-`repeats` milliseconds from a batch-1 prompt to the first token id on the host (after one warm-up)."""
    import torch

    ids = prompt_ids(1, prompt, vocab, device)
    times = []
    with PeakMemory(device, own_bytes) as peak, torch.no_grad():
        for _ in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            int(side.first_token_logits(ids).argmax(-1)[0])  # the token on the host: includes the sync
            times.append(time.perf_counter() - start)
            progress.update(1)
    return {"ms": min(times[1:]) * 1e3, "peak_gb": peak.gb}


def measure_prefill(side, shape, repeats, device, vocab, own_bytes, progress):
    import torch

    batch, length = shape
    ids = prompt_ids(batch, length, vocab, device)
    times = []
    with PeakMemory(device, own_bytes) as peak, torch.no_grad():
        for _ in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            side.first_token_logits(ids)
            sync(device)
            times.append(time.perf_counter() - start)
            progress.update(1)
    return {"tok_s": batch * length / min(times[1:]), "peak_gb": peak.gb}


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny 7B-style config (seconds on CPU); not recorded")
    parser.add_argument("--record", action="store_true", help="with --small: record anyway, under small_* names")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="bfloat16 (default on CUDA) or float32 (default on CPU)")
    parser.add_argument("--parts", default="decode,ttft,prefill", help="comma-separated subset to run")
    parser.add_argument("--batches", default=None, help="decode batch sizes, comma-separated (default 1,8,64)")
    parser.add_argument("--decode-prompts", default=None, help="decode prompt lengths, comma-separated (default 128,8192)")
    parser.add_argument("--ttft-prompts", default=None, help="time-to-first-token prompt lengths (default 2048,16384)")
    parser.add_argument("--decode-modes", default=None, help="ours: compile-graph,graph (CUDA) / eager (CPU)")
    parser.add_argument("--their-decode-modes", default=None, help="theirs: same choices and defaults as ours")
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-fuse", action="store_true", help="keep our projections unfused (weight_mode single)")
    parser.add_argument("--no-theirs", action="store_true", help="measure ours only (theirs recorded as None)")
    parser.add_argument("--child-timeout", type=float, default=3600,
                        help="seconds for the child that measures theirs (cut to the GPU suite's step deadline)")
    parser.add_argument("--child-json", help=argparse.SUPPRESS)  # child process: measure theirs, write JSON here
    parser.add_argument("--compare-logits", help=argparse.SUPPRESS)  # child process: our check-prompt logits
    return parser.parse_args(argv)


def device_text(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU {cpu_name()}, {os.cpu_count()} cores, torch threads={torch.get_num_threads()}"


class Setting(NamedTuple):
    """What one run measures, resolved from the command line (the same in the parent and the child)."""

    device: object
    dtype: object
    scale: Scale
    parts: frozenset
    modes: dict  # side label -> decode modes


def resolve_setting(args) -> Setting:
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA GPU is available; use --small --device cpu to test the script")
    if not args.small and device.type != "cuda":
        raise SystemExit("the 7B figures are GPU figures: use --device cuda, or --small for a CPU test run")
    scale = SMALL if args.small else FULL
    scale = scale._replace(
        batches=tuple(int(b) for b in args.batches.split(",")) if args.batches else scale.batches,
        decode_prompts=tuple(int(p) for p in args.decode_prompts.split(",")) if args.decode_prompts
        else scale.decode_prompts,
        ttft_prompts=tuple(int(p) for p in args.ttft_prompts.split(",")) if args.ttft_prompts else scale.ttft_prompts,
        new_tokens=args.new_tokens or scale.new_tokens, repeats=args.repeats or scale.repeats,
    )
    default_modes = "compile-graph,graph" if device.type == "cuda" else "eager"
    modes = {"ours": (args.decode_modes or default_modes).split(","),
             "theirs": (args.their_decode_modes or default_modes).split(",")}
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    return Setting(device, dtype, scale, frozenset(args.parts.split(",")), modes)


def check_logits(side, vocab: int, device):
    """Last-position logits of both models on one short prompt (same weights: they must agree)."""
    import torch

    with torch.no_grad():
        return side.first_token_logits(prompt_ids(2, 80, vocab, device)).float().cpu()


def measure_side(side, cfg: Setting, vocab: int) -> dict[str, dict]:
    """Every requested scenario for one model: {figure name: what was measured}. JSON-ready (tokens as lists)."""
    from tqdm import tqdm

    scale, device = cfg.scale, cfg.device
    own = param_bytes(side.model)
    modes = cfg.modes[side.label]
    results = {}
    if "decode" in cfg.parts:
        total = len(modes) * len(scale.decode_prompts) * len(scale.batches)
        with tqdm(total=total, desc=f"decode ({side.label})") as progress:
            for batch in scale.batches:
                measured = measure_decode(side, batch, scale.decode_prompts, scale, modes, device, vocab, own, progress)
                for prompt, entry in measured.items():
                    if "tokens" in entry:
                        entry["tokens"] = entry["tokens"].tolist()
                    results[decode_name(batch, prompt)] = entry
                side.caches.clear()
                free_memory(device)
    if "ttft" in cfg.parts:
        with tqdm(total=len(scale.ttft_prompts) * (scale.repeats + 1), desc=f"time to first token ({side.label})") as bar:
            for prompt in scale.ttft_prompts:
                results[ttft_name(prompt)] = measure_ttft(side, prompt, scale.repeats, device, vocab, own, bar)
                free_memory(device)
    if "prefill" in cfg.parts:
        with tqdm(total=scale.repeats + 1, desc=f"prefill ({side.label})") as bar:
            results[prefill_name(scale.prefill_shape)] = measure_prefill(
                side, scale.prefill_shape, scale.repeats, device, vocab, own, bar
            )
            free_memory(device)
    return results


def child_args(args, logits_path: str) -> list[str]:
    """The command line of the child that measures theirs: the parent's settings that concern theirs."""
    out = ["--device", args.device, "--parts", args.parts, "--compare-logits", logits_path]
    for flag, value in (("--dtype", args.dtype), ("--batches", args.batches), ("--repeats", args.repeats),
                        ("--their-decode-modes", args.their_decode_modes), ("--new-tokens", args.new_tokens),
                        ("--decode-prompts", args.decode_prompts), ("--ttft-prompts", args.ttft_prompts)):
        if value is not None:
            out += [flag, str(value)]
    return out + (["--small"] if args.small else [])


def measure_theirs_child(args) -> dict:
    """The child's work: theirs on the same weights (built as ours is, then handed over), every requested part."""
    import torch

    cfg = resolve_setting(args)
    ours_model = build_ours(cfg.scale, cfg.device, cfg.dtype)
    theirs_model = transformers_xlstm(ours_model, THEIR_NATIVE_KERNELS)  # shares ours' tensors
    del ours_model  # theirs holds the tensors
    free_memory(cfg.device)
    vocab = theirs_model.config.vocab_size
    kernels, triton_failure = probe_their_kernels(theirs_model, cfg.device, vocab)
    print(f"their kernels: {kernels}" + (f" (their Triton kernels failed: {triton_failure})" if triton_failure else ""))
    theirs = Theirs(theirs_model)
    ours_logits = torch.load(args.compare_logits, weights_only=True)
    logits_diff = (check_logits(theirs, vocab, cfg.device) - ours_logits).abs().max().item()
    return dict(results=measure_side(theirs, cfg, vocab), kernels=kernels, triton_failure=triton_failure,
                logits_diff=logits_diff)


def measure_theirs(args, ours_logits) -> tuple[dict | None, str, str | None]:
    """Theirs, measured in a child process (see the module docstring); returns (child result or None, competitor,
    why it is missing or None). Under benchmarks/gpu_suite.sh the child must end before the step's deadline, so that
    our figures are recorded (with theirs=None) even when theirs take too long."""
    import tempfile

    import torch

    transformers_version = __import__("transformers").__version__
    timeout = child_timeout(args.child_timeout)
    if timeout is None:
        child, failure = None, "no time left in the step's budget"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            logits_path = os.path.join(tmp, "ours_logits.pt")
            torch.save(ours_logits, logits_path)
            child, failure, note = measure_isolated(__spec__.name, child_args(args, logits_path), timeout=timeout,
                                                    crash_key="tfla")  # their 7B runs TFLA
    if child is None:
        return None, f"transformers {transformers_version} xLSTMForCausalLM (could not run: {failure})", failure
    competitor = (f"transformers {transformers_version} xLSTMForCausalLM, {child['kernels']}"
                  + (" (their Triton kernels fail on this stack)" if child["triton_failure"] else "") + note)
    return child, competitor, None


def measure_copy_bandwidth(device, nbytes: int | None = None, reps: int = 20) -> dict:
    """The device's copy bandwidth: median time of `dst.copy_(src)` over `nbytes` bytes (4 GiB on a GPU, several times
    its L2; 64 MiB on a CPU), as bytes read + written per second (the convention under which an H100 copies about
    3.0 TB/s). Run before the model is built, with the device to itself."""
    import statistics

    import torch

    cuda = device.type == "cuda"
    nbytes = nbytes or (4 << 30 if cuda else 64 << 20)
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    times = []
    for _ in range(reps if cuda else 5):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - start)
    del src, dst
    free_memory(device)
    seconds = statistics.median(times)
    return {"gb_s": 2 * nbytes / seconds / 1e9, "bytes": nbytes, "reps": len(times), "device": device.type}


def bandwidth_figure(bandwidth: dict) -> dict:
    return dict(name=COPY_BANDWIDTH_NAME, better="higher", unit="GB/s (bytes read + written)", ours=bandwidth["gb_s"],
                theirs=None, competitor=None, shape=f"{'device-to-device' if bandwidth['device'] == 'cuda' else 'memory'} "
                f"copy of {bandwidth['bytes'] / 2**30:.3g} GiB, median of {bandwidth['reps']}, in the run of the 7B decode "
                "figures")


def figures(ours: dict, theirs: dict, cfg: Setting, config_text: str, bandwidth: dict | None = None,
            weight_bytes: int | None = None) -> list[dict]:
    """The recorded figures: each measured scenario as ours vs theirs, plus its peak memory; with decode and a measured
    copy bandwidth, that bandwidth and each decode figure as a fraction of the bound it implies."""
    scale = cfg.scale
    out = []

    def add(name, better, unit, shape, key):
        mine, other = ours.get(name, {}), theirs.get(name, {})
        shape = f"{shape}; {config_text}"
        out.append(dict(name=name, better=better, unit=unit, shape=shape, ours=mine.get(key), theirs=other.get(key)))
        out.append(dict(name=name + PEAK_SUFFIX, better="lower", unit="GB", shape=shape, ours=mine.get("peak_gb"),
                        theirs=other.get("peak_gb")))

    if "decode" in cfg.parts:
        for batch in scale.batches:
            for prompt in scale.decode_prompts:
                name = decode_name(batch, prompt)
                shape = (f"B={batch}, prompt {prompt} (prefilled untimed), {scale.new_tokens} greedy steps timed; ours: "
                         f"{ours[name].get('mode')}, theirs: {theirs.get(name, {}).get('mode')}")
                add(name, "higher", "new tokens/s", shape, "tok_s")
                if bandwidth and weight_bytes:
                    # each decode step reads every weight once and yields `batch` tokens
                    bound = batch * bandwidth["gb_s"] * 1e9 / weight_bytes

                    def fraction(side, name=name):
                        value = side.get(name, {}).get("tok_s")
                        return None if value is None else value / bound

                    out.append(dict(
                        name=bound_name(batch, prompt), better="higher", unit="fraction of the bandwidth bound",
                        ours=fraction(ours), theirs=fraction(theirs),
                        shape=(f"B={batch}, prompt {prompt}; bound = {batch} x {bandwidth['gb_s']:.0f} GB/s copy "
                               f"bandwidth (same run) / {weight_bytes / 1e9:.2f} GB of weights = {bound:.4g} tok/s "
                               f"(weights read once per step; state traffic not counted); {config_text}"),
                    ))
        if bandwidth:
            out.append(bandwidth_figure(bandwidth))
    if "ttft" in cfg.parts:
        for prompt in scale.ttft_prompts:
            shape = f"B=1, prompt {prompt}, prompt in -> first token id on the host, best of {scale.repeats}"
            add(ttft_name(prompt), "lower", "ms", shape, "ms")
    if "prefill" in cfg.parts:
        B, T = scale.prefill_shape
        shape = f"B={B} x T={T} tokens per forward, last-position logits, best of {scale.repeats}"
        add(prefill_name(scale.prefill_shape), "higher", "tokens/s", shape, "tok_s")
    return out


def run(args, bandwidth: dict | None = None) -> dict:
    """Measure ours here, then theirs in a child process; return {"figures": [figure dicts], "competitor": ...}.
    Records nothing (see `main`). With decode, the copy bandwidth is measured first unless `bandwidth` is given."""
    cfg = resolve_setting(args)
    device = cfg.device
    if "decode" in cfg.parts and bandwidth is None:
        bandwidth = measure_copy_bandwidth(device)
        print(f"copy bandwidth: {bandwidth['gb_s']:.1f} GB/s (bytes read + written)", flush=True)
    start = time.perf_counter()
    ours_model = build_ours(cfg.scale, device, cfg.dtype)
    if not args.no_fuse:
        ours_model.fuse_projections()
    vocab = ours_model.config.vocab_size
    weight_bytes = param_bytes(ours_model)
    print(f"our model built in {time.perf_counter() - start:.0f} s")
    ours = Ours(ours_model)
    ours_logits = check_logits(ours, vocab, device)
    ours_results = measure_side(ours, cfg, vocab)
    for name, entry in ours_results.items():  # in the log before theirs run, whatever becomes of that
        measured = {key: entry[key] for key in ("tok_s", "ms", "modes", "peak_gb") if key in entry}
        print(f"ours, {name}: {measured}", flush=True)
    config_text = (f"{'small 7B-style' if args.small else '7B'} config ({ours_model.config.num_hidden_layers} blocks, "
                   f"hidden {ours_model.config.hidden_size}), {str(cfg.dtype).removeprefix('torch.')}, random "
                   f"weights, ours {'fused' if not args.no_fuse else 'single'} projections")
    del ours, ours_model  # theirs gets the GPU to itself
    free_memory(device)

    child, competitor, failure = (None, None, None) if args.no_theirs else measure_theirs(args, ours_logits)
    theirs_results = child["results"] if child else {}
    logits_diff = child["logits_diff"] if child else None
    if child:
        print(f"last-position logits, ours vs theirs on the same weights: max |diff| = {logits_diff:.3g}")
    same_tokens = {
        name: ours_results[name]["tokens"] == theirs_results[name]["tokens"]
        for name in ours_results
        if "tokens" in ours_results[name] and "tokens" in theirs_results.get(name, {})
    }
    if "decode" in cfg.parts:
        for name, entry in ours_results.items():
            if "modes" in entry:
                print(f"{name} ours: {entry['modes']}; theirs: {theirs_results.get(name, {}).get('modes')}")
        print(f"greedy tokens identical to theirs: {same_tokens}")
    return dict(figures=figures(ours_results, theirs_results, cfg, config_text, bandwidth, weight_bytes),
                competitor=competitor, failure=failure, triton_failure=child["triton_failure"] if child else None,
                logits_diff=logits_diff, same_tokens=same_tokens, device=device_text(device), dtype=str(cfg.dtype),
                bandwidth=bandwidth, weight_bytes=weight_bytes)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.child_json:
        write_child_result(args.child_json, measure_theirs_child(args))
        return None
    write = not args.small or args.record
    cfg = resolve_setting(args)
    bandwidth = None
    if "decode" in cfg.parts:  # the bound of the decode figures: recorded the moment it is measured
        bandwidth = measure_copy_bandwidth(cfg.device)
        print(f"copy bandwidth: {bandwidth['gb_s']:.1f} GB/s (bytes read + written)", flush=True)
        if write:
            figure = bandwidth_figure(bandwidth)
            record(dry_run_figure(figure["name"]) if args.small else figure["name"], figure["ours"], None, None,
                   figure["unit"], figure["better"], device_text(cfg.device), figure["shape"])
    result = run(args, bandwidth)
    recorded = []
    for figure in sorted(result["figures"], key=lambda figure: figure["name"] != COPY_BANDWIDTH_NAME):
        ours, theirs = figure["ours"], figure["theirs"]
        line = f"{figure['name']}: ours {ours if ours is None else f'{ours:.4g}'}, theirs " \
               f"{theirs if theirs is None else f'{theirs:.4g}'} {figure['unit']}"
        print(line)
        if figure["name"] == COPY_BANDWIDTH_NAME:
            continue  # recorded above
        if write and ours is not None and not (isinstance(ours, float) and math.isnan(ours)):
            name = dry_run_figure(figure["name"]) if args.small else figure["name"]
            record(name, ours, theirs, figure.get("competitor", result["competitor"]), figure["unit"],
                   figure["better"], result["device"], figure["shape"])
            recorded.append(name)
    failure = "not measured (--no-theirs)" if args.no_theirs else result["failure"]
    if failure is not None:
        record_skip("transformers' xLSTMForCausalLM", failure,
                    [name for name in recorded if not name.endswith("copy_bandwidth_gb_s")])
    if not write:
        print("(--small: nothing recorded; pass --record to record under small_* names)")
    return result


if __name__ == "__main__":
    main()
