"""CPU decode of a paper-style xLSTM (sLSTM + mLSTM blocks, the bundled model's architecture) beside NX-AI's own
`xLSTMLMModel` on the same weights: ours `model(token, cache=cache)` one token per call, and ours `generate()`, against
theirs `model.step(token, state=state)` one token per call, greedy.

Their model is built by the `xlstm` package (vanilla sLSTM backend, the one that runs on a CPU), its weights
perturbed so that no gate or recurrent kernel is zero, and converted to ours with `modeling_xlstm.conversion`.
Every side first consumes the same prompt (ours in one forward, theirs token by token with `step`, the only stateful
call its API has; not timed), then decodes `--new-tokens` tokens greedily: the loops one call per token, `generate()`
continuing from the prompt's cache (so it feeds only the first generated token, then runs its decoding steps through
`FlatDecodeStep`, copies included; its logits processors and stopping checks count too). Those decodes are timed, the
sides alternated `--repeats` times, and the medians compared. The generated tokens must be identical (checked on every
run). Figures, new tokens per second: `cpu_decode_tok_s_paper_b1` and `_b8` (our loop), `cpu_generate_tok_s_paper_b1`
and `_b8` (our generate()), each beside their loop.

    python -m benchmarks.bench_decode_paper_cpu [--threads 1] [--repeats 7] [--new-tokens 64] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.competitors import nxai_paper_model
from benchmarks.results import cpu_name, expect, record
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
from modeling_xlstm.conversion import convert_checkpoint
from modeling_xlstm.conversion.formats import to_nxai_paper_config
from modeling_xlstm.hub_configs import model_path

BATCHES = (1, 8)
COMPETITOR = "xlstm 2.0.6 xLSTMLMModel.step (vanilla sLSTM backend), same weights"
for _batch in BATCHES:
    expect(f"cpu_decode_tok_s_paper_b{_batch}", f"CPU greedy decode new tokens/s, batch {_batch}, paper-style xLSTM "
           "(the bundled model's architecture), one model call per token, vs NX-AI's xLSTMLMModel.step")
    expect(f"cpu_generate_tok_s_paper_b{_batch}", f"CPU greedy decode new tokens/s, batch {_batch}, paper-style xLSTM "
           "(the bundled model's architecture), generate(), vs NX-AI's xLSTMLMModel.step")
# figure name -> the side of ours it times
OUR_SIDES = {"cpu_decode_tok_s_paper": "ours", "cpu_generate_tok_s_paper": "ours_generate"}


def bundled_architecture() -> XLSTMConfig:
    """The bundled xlstm-tiny-stdlib's architecture without its soft caps (NX-AI's paper models have none)."""
    settings = json.loads((Path(model_path("xlstm-tiny-stdlib")) / "config.json").read_text())
    settings.update(gate_soft_cap=None, output_logit_soft_cap=None, backend="native")
    return XLSTMConfig.from_dict(settings)


def build_models(config: XLSTMConfig, context_length: int) -> tuple[XLSTMForCausalLM, torch.nn.Module]:
    """NX-AI's model with perturbed weights, and ours converted from it."""
    torch.manual_seed(0)
    theirs = nxai_paper_model(config, context_length=context_length).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "source"
        source.mkdir()
        torch.save(theirs.state_dict(), source / "model.pt")
        (source / "config.json").write_text(json.dumps(to_nxai_paper_config(config, context_length=context_length)))
        convert_checkpoint(source, Path(folder) / "converted", progress=False)
        ours = XLSTMForCausalLM.from_pretrained(Path(folder) / "converted").eval()
    return ours, theirs


def decoders(ours, theirs, prompt: torch.Tensor, new_tokens: int) -> dict:
    """Per side: a function that consumes the prompt (untimed) and returns a timed greedy decode loop."""

    def our_loop():
        out = ours(prompt, use_cache=True)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)

        def decode():
            nonlocal token
            tokens = []
            for _ in range(new_tokens):
                token = ours(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
                tokens.append(token)
            return torch.cat(tokens, dim=1)

        return decode

    def our_generate():
        out = ours(prompt, use_cache=True)
        sequence = torch.cat([prompt, out.logits[:, -1:].argmax(-1)], dim=1)  # its last token not fed yet

        def decode():
            generated = ours.generate(
                sequence, attention_mask=torch.ones_like(sequence), cache=out.cache, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False,
            )
            return generated[:, sequence.shape[1]:]

        return decode

    def their_loop():
        state = None
        for position in range(prompt.shape[1]):
            logits, state = theirs.step(prompt[:, position : position + 1], state=state)
        token = logits[:, -1:].argmax(-1)

        def decode():
            nonlocal token, state
            tokens = []
            for _ in range(new_tokens):
                logits, state = theirs.step(token, state=state)
                token = logits[:, -1:].argmax(-1)
                tokens.append(token)
            return torch.cat(tokens, dim=1)

        return decode

    return {"ours": our_loop, "ours_generate": our_generate, "theirs": their_loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = f"CPU {cpu_name()}, torch threads={args.threads}"
    config = bundled_architecture()
    ours, theirs = build_models(config, context_length=args.prompt_tokens + args.new_tokens)
    kinds = "".join("s" if kind == "slstm" else "m" for kind in config.block_types)
    generator = torch.Generator().manual_seed(1)
    for batch in BATCHES:
        prompt = torch.randint(1, config.vocab_size, (batch, args.prompt_tokens), generator=generator)
        sides = decoders(ours, theirs, prompt, args.new_tokens)
        times = {side: [] for side in sides}
        with torch.no_grad():
            for _ in tqdm(range(args.repeats), desc=f"decode batch {batch}"):
                generated = {}
                for side, start_decoding in sides.items():
                    decode = start_decoding()
                    start = time.perf_counter()
                    generated[side] = decode()
                    times[side].append(time.perf_counter() - start)
                if not all(torch.equal(generated[side], generated["theirs"]) for side in OUR_SIDES.values()):
                    raise SystemExit("error: ours and NX-AI's model generated different tokens from the same weights")
        tps = {side: batch * args.new_tokens / statistics.median(times[side]) for side in sides}
        for prefix, side in OUR_SIDES.items():
            name, how = f"{prefix}_b{batch}", "one call each" if side == "ours" else "by generate()"
            print(f"{name}: ours {tps[side]:.1f} tok/s, theirs {tps['theirs']:.1f} tok/s, "
                  f"ratio {tps[side] / tps['theirs']:.2f}")
            if not args.no_record:
                record(
                    name, round(tps[side], 1), round(tps["theirs"], 1), COMPETITOR, "new tokens/s", "higher", device,
                    f"B={batch}, {args.prompt_tokens}-token prompt (untimed), {args.new_tokens} greedy tokens {how} "
                    f"(theirs one call each), median of {args.repeats} alternated; paper style `{kinds}`, hidden "
                    f"{config.hidden_size}, vocab {config.vocab_size}, 4 heads, fp32",
                )


if __name__ == "__main__":
    main()
