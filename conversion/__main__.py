"""Command line: python -m modeling_xlstm.conversion SRC OUT [options]. Run with --help for the options."""

from __future__ import annotations

import argparse
import sys

from .convert import DEFAULT_MAX_SHARD_SIZE, DTYPES, convert_checkpoint
from .errors import ConversionError
from .formats import FORMAT_DESCRIPTIONS, FORMATS

EPILOG = "source formats:\n" + "\n".join(f"  {name:<11} {text}" for name, text in FORMAT_DESCRIPTIONS.items()) + """

examples:
  # NX-AI/xLSTM-7b (downloaded with `huggingface-cli download NX-AI/xLSTM-7b --local-dir xlstm-7b`)
  python -m modeling_xlstm.conversion xlstm-7b xlstm-7b-converted --dtype bfloat16
  # a paper model trained with the xlstm package: state_dict + its experiment YAML
  python -m modeling_xlstm.conversion model.pt out --config experiments/my_run.yaml --verify

On any error nothing is written and the exit status is 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_xlstm.conversion",
        description="Convert a public xLSTM checkpoint into a modeling_xlstm save_pretrained folder "
        "(sharded safetensors, config.json, generation_config.json, tokenizer files), loadable with "
        "AutoModelForCausalLM.from_pretrained after `import modeling_xlstm`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="source folder, or a single weight file (.safetensors/.pt/.bin)")
    parser.add_argument("out", metavar="OUT", help="output folder (must not exist unless --overwrite)")
    parser.add_argument(
        "--from", dest="source_format", default="auto", choices=("auto",) + FORMATS,
        help="source format (default: detect from the config and tensor names)",
    )
    parser.add_argument(
        "--dtype", default="auto", choices=("auto",) + tuple(DTYPES),
        help="dtype of the written weights (default auto: keep the source's)",
    )
    parser.add_argument(
        "--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE,
        help=f"largest output shard, e.g. 5GB, 500MB, 2GiB (default {DEFAULT_MAX_SHARD_SIZE})",
    )
    parser.add_argument("--config", default=None, help="source config file when it is not next to the weights")
    parser.add_argument(
        "--verify", action="store_true",
        help="run the source implementation (if installed) and print the max logit difference",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = convert_checkpoint(
            args.src,
            args.out,
            source_format=args.source_format,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            verify=args.verify,
            config=args.config,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"converted {args.src} ({result.source_format}) -> {result.out}: {result.num_tensors} tensors, "
        f"{result.num_shards} shard(s), {result.total_bytes / 1e6:.1f} MB"
    )
    if result.max_logit_diff is not None:
        print(f"verify: max |logit difference| to the {result.source_format} implementation: {result.max_logit_diff:.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
