"""xLSTM 7B inference on one GPU: ours vs transformers' `xLSTMForCausalLM`, side by side in one run, on the same
randomly initialised weights of the xLSTM 7B config (hub_configs/xlstm-7b, bf16; nothing is downloaded).

Figures (recorded in results.jsonl / RESULTS.md; see docs/inference_7b.md):
- decode new tokens/s at batch 1, 8 and 64, after a 128- and an 8,192-token prompt (greedy; the prompt is prefilled
  untimed, then 128 decode steps are timed between two device synchronisations);
- time to first token at 2,048 and 16,384 prompt tokens (batch 1: prompt in, first token id on the host);
- prefill tokens/s at 65,536 tokens per batch (8 x 8,192): the forward that generation runs on a prompt;
- peak GPU memory of each of these scenarios (torch.cuda.max_memory_allocated; see `peak_gb` for the definition).

How each side runs:
- ours: `fuse_projections()` (one matmul for q/k/v/o, one for the gates, one for the FFN gate/up), Triton kernels
  (`backend="auto"` on CUDA: chunkwise for prompts, the fused step kernel for decode), float32 states in an
  `XLSTMCache`. Decode is a greedy step (forward over one token, argmax, token written back into a static buffer)
  captured once per batch size in a CUDA graph and replayed per token: no host synchronisation and no Python per
  token. Decode modes (`--decode-modes`): "compile-graph" (the step compiled by inductor, then captured), "graph"
  (the eager step captured), "eager" (no capture; CPU). Each listed mode is measured; the fastest is recorded, and
  the mode appears in the figure's shape.
- theirs: transformers' xLSTM with `xlstm`/`mlstm-kernels` installed. Their Triton kernels are tried first
  (`chunkwise--triton_xl_chunk`, `native_sequence__triton`, `triton`, as NX-AI run the 7B); mlstm-kernels 2.0.6's
  Triton kernels use `tl.make_block_ptr`, which Triton 3.9 removed, so on this project's stack they fail and the
  script falls back to their native kernels (`chunkwise--native_autograd`, `native_sequence__native`, `native`);
  the `competitor` field says which ran. Their decode step goes through the same CUDA-graph harness (modes
  `--their-decode-modes`), their cache is their default (`xLSTMCache`, states in the model dtype). For prefill and
  time to first token their backbone runs on the prompt and the LM head on the last position only, as ours does
  (their own forward would compute the logits of every prompt position; this is the like-for-like comparison).

Weights: ours is built on the device in bf16; theirs is built on the meta device and takes our tensors by name
(`assign=True`: one copy of the weights, shared), before ours fuses its projections (a second copy of those).

    python benchmarks/bench_7b_inference.py                           # H100: all figures (several minutes)
    python benchmarks/bench_7b_inference.py --parts decode --batches 1 # a subset (a run is limited to 10 minutes)
    python benchmarks/bench_7b_inference.py --small --device cpu      # tiny 7B-style config on CPU, seconds, no record
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from pathlib import Path
from typing import NamedTuple

from results import cpu_name, expect, record

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


PREFILL_NAME = prefill_name(PREFILL_SHAPE)
PEAK_SUFFIX = "_peak_gb"

for _batch in DECODE_BATCHES:
    for _prompt in DECODE_PROMPTS:
        expect(decode_name(_batch, _prompt), f"H100 7B bf16 decode new tokens/s, batch {_batch}, after {_prompt} prompt "
               "tokens, CUDA-graph greedy step, vs transformers' xLSTM"
               + (" (target >= 190; published 157)" if _batch == 1 else ""))
        expect(decode_name(_batch, _prompt) + PEAK_SUFFIX,
               f"H100 7B bf16 peak GPU memory (GB) of prefill {_prompt} + decode at batch {_batch}, vs transformers' xLSTM")
for _prompt in TTFT_PROMPTS:
    expect(ttft_name(_prompt), f"H100 7B bf16 time to first token (ms) at {_prompt} prompt tokens, batch 1, vs "
           "transformers' xLSTM" + (" (target <= 330 ms; published 349 ms)" if _prompt == 16384 else ""))
    expect(ttft_name(_prompt) + PEAK_SUFFIX, f"H100 7B bf16 peak GPU memory (GB) of the {_prompt}-token first token")
expect(PREFILL_NAME, "H100 7B bf16 prefill tokens/s at 65,536 tokens per batch (8 x 8,192), vs transformers' xLSTM "
       "(target >= 50,000; published 47,600)")
expect(PREFILL_NAME + PEAK_SUFFIX, "H100 7B bf16 peak GPU memory (GB) of the 8 x 8,192 prefill")


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

THEIR_TRITON_KERNELS = ("chunkwise--triton_xl_chunk", "native_sequence__triton", "triton")
THEIR_NATIVE_KERNELS = ("chunkwise--native_autograd", "native_sequence__native", "native")


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def our_config(scale: Scale, backend: str):
    from modeling_xlstm import XLSTMConfig

    return XLSTMConfig.from_pretrained(str(CONFIG_7B), backend=backend, **(scale.config_overrides or {}))


def their_config(config, dtype_name: str, kernels: tuple[str, str, str]):
    """transformers' xLSTMConfig with the same architecture as our (7B-style, all-mLSTM) config."""
    from transformers.models.xlstm import xLSTMConfig

    if config.block_style != "large" or any(kind != "mlstm" for kind in config.block_types):
        raise ValueError("transformers' xLSTM has 7B-style mLSTM blocks only")
    chunkwise, sequence, step = kernels
    return xLSTMConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_heads=config.num_heads, qk_dim_factor=config.qk_dim_factor, v_dim_factor=config.v_dim_factor,
        gate_soft_cap=config.gate_soft_cap, output_logit_soft_cap=config.output_logit_soft_cap,
        ffn_proj_factor=config.ffn_proj_factor, ffn_round_up_to_multiple_of=config.ffn_round_up_to_multiple_of,
        norm_eps=config.norm_eps, eps=config.eps, use_bias=config.use_bias, chunk_size=config.chunk_size,
        add_out_norm=config.add_out_norm, tie_word_embeddings=config.tie_word_embeddings, weight_mode="single",
        norm_reduction_force_float32=config.norm_reduction_force_float32,
        mode="inference", chunkwise_kernel=chunkwise, sequence_kernel=sequence, step_kernel=step,
        autocast_kernel_dtype=dtype_name, inference_state_dtype="float32",
    )


def set_their_kernels(theirs, kernels: tuple[str, str, str]) -> None:
    """Swap the mLSTM kernels of every block of transformers' xLSTM (the backends hold no weights)."""
    from mlstm_kernels.torch.backend_module import mLSTMBackend, mLSTMBackendConfig

    chunkwise, sequence, step = kernels
    theirs.config.chunkwise_kernel, theirs.config.sequence_kernel, theirs.config.step_kernel = kernels
    for block in theirs.backbone.blocks:
        old = block.mlstm_layer.mlstm_backend.config
        block.mlstm_layer.mlstm_backend = mLSTMBackend(mLSTMBackendConfig(
            chunkwise_kernel=chunkwise, sequence_kernel=sequence, step_kernel=step, mode=old.mode,
            chunk_size=old.chunk_size, return_last_states=old.return_last_states,
            autocast_kernel_dtype=old.autocast_kernel_dtype, eps=old.eps, inference_state_dtype=old.inference_state_dtype,
        ))


def probe_their_kernels(theirs, device, vocab: int) -> tuple[str, str | None]:
    """Try their Triton kernels on a short prompt (chunkwise + sequence remainder) and one step; fall back to their
    native kernels if that fails. Returns (kernel names that ran, the Triton failure or None)."""
    import torch

    ids = torch.randint(1, vocab, (1, 70), device=device)
    try:
        set_their_kernels(theirs, THEIR_TRITON_KERNELS)
        with torch.no_grad():
            out = theirs.backbone(ids, use_cache=True)
            theirs.backbone(ids[:, :1], cache_params=out.cache_params, use_cache=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return " / ".join(THEIR_TRITON_KERNELS), None
    except Exception as error:  # noqa: BLE001 -- any failure of their Triton path means: use their native kernels
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
        set_their_kernels(theirs, THEIR_NATIVE_KERNELS)
        return " / ".join(THEIR_NATIVE_KERNELS), reason


def build_models(scale: Scale, device, dtype, fuse: bool):
    """Ours (on `device`, `dtype`, projections fused if asked) and theirs sharing our weights by name."""
    import torch
    from transformers.models.xlstm import xLSTMForCausalLM

    from modeling_xlstm import XLSTMForCausalLM

    dtype_name = str(dtype).removeprefix("torch.")
    config = our_config(scale, backend="auto")
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            ours = XLSTMForCausalLM(config).eval()
        with torch.device("meta"):
            theirs = xLSTMForCausalLM(their_config(config, dtype_name, THEIR_NATIVE_KERNELS)).eval()
    finally:
        torch.set_default_dtype(previous)
    renamed = {  # our names are theirs with "mixer"/"norm_mixer" for "mlstm_layer"/"norm_mlstm" (HF_XLSTM_KEY_MAPPING)
        key.replace(".mixer.", ".mlstm_layer.").replace(".norm_mixer.", ".norm_mlstm."): value
        for key, value in ours.state_dict().items()
    }
    theirs.load_state_dict(renamed, strict=True, assign=True)
    if fuse:
        ours.fuse_projections()
    for model in (ours, theirs):
        model.requires_grad_(False)
    return ours, theirs


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
        return self.model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

    def first_token_logits(self, ids):
        return self.model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]

    def step_logits(self, token, cache):
        return self.model(token, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]


class Theirs:
    label = "theirs"

    def __init__(self, model):
        self.model = model
        self.caches = {}

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
        return self._last_logits(self.model.backbone(ids, cache_params=cache, use_cache=True).last_hidden_state)

    def first_token_logits(self, ids):
        return self._last_logits(self.model.backbone(ids, use_cache=True).last_hidden_state)

    def step_logits(self, token, cache):
        return self.model(token, cache_params=cache, use_cache=True).logits[:, -1]


# ----------------------------------------------------------------------------------------------------------------
# Decode harness: one greedy step on static buffers, captured in a CUDA graph
# ----------------------------------------------------------------------------------------------------------------


class GreedyDecoder:
    """Greedy decoding of `side` at one batch size: `step()` reads the current token from `self.token` [B, 1], runs the
    model one token on the cache, writes the argmax back into `self.token` and into `self.tokens[:, position]`, and
    advances `position` -- all on the device, so the replayed graph needs nothing from the host."""

    def __init__(self, side, cache, batch: int, max_tokens: int, mode: str, device):
        import torch

        self.side, self.cache, self.mode, self.device = side, cache, mode, device
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.tokens = torch.zeros(batch, max_tokens + 1, dtype=torch.long, device=device)
        self.position = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.graph = None
        function = self._step
        if mode == "compile-graph":
            function = torch.compile(self._step, dynamic=False, fullgraph=False)
        self.function = function

    def _step(self) -> None:
        logits = self.side.step_logits(self.token, self.cache)
        next_token = logits.argmax(-1, keepdim=True)
        self.token.copy_(next_token)
        self.tokens.scatter_(1, self.position, next_token)
        self.position.add_(1)

    def start(self, first_token) -> None:
        self.token.copy_(first_token.view(-1, 1))
        self.position.zero_()

    def prepare(self, warmup_steps: int = 3) -> None:
        """Run the step a few times (Triton/inductor compilation, cuBLAS workspaces), then capture it. The warm-up
        steps advance the cache; callers re-prefill afterwards."""
        import torch

        if self.mode == "eager" or self.device.type != "cuda":
            self.function()
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup_steps):
                self.function()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.function()
        torch.cuda.synchronize()

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.function()


# ----------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak GPU memory of one scenario attributable to one model: its own weights plus everything allocated above
    the resting level (both models' weights) while the scenario ran. None on CPU."""

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
                        decoder = GreedyDecoder(side, cache, batch, n, mode, device)
                        decoder.start(prefill_in_pieces(side, cache, ids[:, :16], scale.prefill_tokens_per_call).argmax(-1))
                        start = time.perf_counter()
                        decoder.prepare()
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
                        entry.update(tok_s=entry["modes"][mode], mode=mode, tokens=decoder.tokens[:, :n].cpu())
                except Exception as error:  # noqa: BLE001 -- a mode that cannot run on this stack is reported, not fatal
                    entry["modes"][mode] = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
                    decoders.pop(mode, None)
                progress.update(1)
        entry["peak_gb"] = peak.gb
        results[prompt] = entry
    decoders.clear()
    return results


def measure_ttft(side, prompt, repeats, device, vocab, own_bytes, progress):
    """Best-of-`repeats` seconds from a batch-1 prompt to the first token id on the host (after one warm-up)."""
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
    return {"seconds": min(times[1:]), "peak_gb": peak.gb}


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
    parser.add_argument("--decode-modes", default=None, help="ours: compile-graph,graph (CUDA) / eager (CPU)")
    parser.add_argument("--their-decode-modes", default=None, help="theirs: same choices and defaults as ours")
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-fuse", action="store_true", help="keep our projections unfused (weight_mode single)")
    parser.add_argument("--no-theirs", action="store_true", help="measure ours only (theirs recorded as None)")
    return parser.parse_args(argv)


def device_text(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU {cpu_name()}, {os.cpu_count()} cores, torch threads={torch.get_num_threads()}"


def run(args) -> dict:
    """Measure; return {"figures": [figure dicts], "competitor": ..., ...}. Records nothing (see `main`)."""
    import torch
    from tqdm import tqdm

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA GPU is available; use --small --device cpu to test the script")
    if not args.small and device.type != "cuda":
        raise SystemExit("the 7B figures are GPU figures: use --device cuda, or --small for a CPU test run")
    scale = SMALL if args.small else FULL
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    parts = set(args.parts.split(","))
    batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else scale.batches
    default_modes = "compile-graph,graph" if device.type == "cuda" else "eager"
    our_modes = (args.decode_modes or default_modes).split(",")
    their_modes = (args.their_decode_modes or default_modes).split(",")
    n = args.new_tokens or scale.new_tokens
    scale = scale._replace(new_tokens=n, repeats=args.repeats or scale.repeats)

    start = time.perf_counter()
    ours_model, theirs_model = build_models(scale, device, dtype, fuse=not args.no_fuse)
    vocab = ours_model.config.vocab_size
    competitor_kernels, triton_failure = probe_their_kernels(theirs_model, device, vocab)
    print(f"models built in {time.perf_counter() - start:.0f} s; their kernels: {competitor_kernels}"
          + (f" (their Triton kernels failed: {triton_failure})" if triton_failure else ""))
    free_memory(device)
    ours, theirs = Ours(ours_model), Theirs(theirs_model)
    bytes_ = {"ours": param_bytes(ours_model), "theirs": param_bytes(theirs_model)}
    sides = [ours] if args.no_theirs else [ours, theirs]
    modes = {"ours": our_modes, "theirs": their_modes}

    # same weights: the two must agree on a short prompt (float32: closely; bf16: loosely, different kernels)
    with torch.no_grad():
        ids = prompt_ids(2, 80, vocab, device)
        a, b = ours.first_token_logits(ids).float(), theirs.first_token_logits(ids).float()
        logits_diff = (a - b).abs().max().item()
    print(f"last-position logits, ours vs theirs on the same weights: max |diff| = {logits_diff:.3g}")

    competitor = (f"transformers {__import__('transformers').__version__} xLSTMForCausalLM, {competitor_kernels}"
                  + (" (their Triton kernels fail on this stack)" if triton_failure else ""))
    config_text = (f"{'small 7B-style' if args.small else '7B'} config ({ours_model.config.num_hidden_layers} blocks, "
                   f"hidden {ours_model.config.hidden_size}), {str(dtype).removeprefix('torch.')}, random weights, "
                   f"ours {'fused' if not args.no_fuse else 'single'} projections")
    figures = []

    def add(name, better, unit, shape, values):
        figures.append(dict(name=name, better=better, unit=unit, shape=f"{shape}; {config_text}",
                            ours=values.get("ours"), theirs=values.get("theirs")))

    if "decode" in parts:
        total = sum(len(modes[s.label]) * len(scale.decode_prompts) for s in sides) * len(batches)
        same_tokens = {}
        with tqdm(total=total, desc="decode") as progress:
            for batch in batches:
                measured = {}
                for side in sides:
                    measured[side.label] = measure_decode(side, batch, scale.decode_prompts, scale, modes[side.label],
                                                          device, vocab, bytes_[side.label], progress)
                    side.caches.clear()
                    free_memory(device)
                for prompt in scale.decode_prompts:
                    entries = {label: measured[label][prompt] for label in measured}
                    for label, entry in entries.items():
                        print(f"decode B={batch} P={prompt} {label}: {entry['modes']}")
                    if "theirs" in entries and "tokens" in entries["ours"] and "tokens" in entries["theirs"]:
                        same_tokens[(batch, prompt)] = bool(torch.equal(entries["ours"]["tokens"],
                                                                        entries["theirs"]["tokens"]))
                    shape = (f"B={batch}, prompt {prompt} (prefilled untimed), {n} greedy steps timed; ours: "
                             f"{entries['ours'].get('mode')}, theirs: {entries.get('theirs', {}).get('mode')}")
                    add(decode_name(batch, prompt), "higher", "new tokens/s", shape,
                        {label: entry.get("tok_s") for label, entry in entries.items()})
                    add(decode_name(batch, prompt) + PEAK_SUFFIX, "lower", "GB", shape,
                        {label: entry.get("peak_gb") for label, entry in entries.items()})
        print(f"greedy tokens identical to theirs (batch, prompt): {same_tokens}")
    else:
        same_tokens = {}

    if "ttft" in parts:
        with tqdm(total=len(sides) * len(scale.ttft_prompts) * (scale.repeats + 1), desc="time to first token") as bar:
            for prompt in scale.ttft_prompts:
                values = {}
                for side in sides:
                    values[side.label] = measure_ttft(side, prompt, scale.repeats, device, vocab, bytes_[side.label], bar)
                    free_memory(device)
                shape = f"B=1, prompt {prompt}, prompt in -> first token id on the host, best of {scale.repeats}"
                add(ttft_name(prompt), "lower", "ms", shape, {k: v["seconds"] * 1e3 for k, v in values.items()})
                add(ttft_name(prompt) + PEAK_SUFFIX, "lower", "GB", shape, {k: v["peak_gb"] for k, v in values.items()})

    if "prefill" in parts:
        with tqdm(total=len(sides) * (scale.repeats + 1), desc="prefill") as bar:
            values = {}
            for side in sides:
                values[side.label] = measure_prefill(side, scale.prefill_shape, scale.repeats, device, vocab,
                                                     bytes_[side.label], bar)
                free_memory(device)
        B, T = scale.prefill_shape
        shape = f"B={B} x T={T} tokens per forward, last-position logits, best of {scale.repeats}"
        add(prefill_name(scale.prefill_shape), "higher", "tokens/s", shape, {k: v["tok_s"] for k, v in values.items()})
        add(prefill_name(scale.prefill_shape) + PEAK_SUFFIX, "lower", "GB", shape, {k: v["peak_gb"] for k, v in values.items()})

    return dict(figures=figures, competitor=competitor, triton_failure=triton_failure, logits_diff=logits_diff,
                same_tokens=same_tokens, device=device_text(device), dtype=str(dtype))


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    write = not args.small or args.record
    for figure in result["figures"]:
        ours, theirs = figure["ours"], figure["theirs"]
        line = f"{figure['name']}: ours {ours if ours is None else f'{ours:.4g}'}, theirs " \
               f"{theirs if theirs is None else f'{theirs:.4g}'} {figure['unit']}"
        print(line)
        if write and ours is not None and not (isinstance(ours, float) and math.isnan(ours)):
            name = ("small_" + figure["name"].removeprefix("gpu_")) if args.small else figure["name"]
            record(name, ours, theirs, result["competitor"], figure["unit"], figure["better"], result["device"],
                   figure["shape"])
    if not write:
        print("(--small: nothing recorded; pass --record to record under small_* names)")
    return result


if __name__ == "__main__":
    main()
