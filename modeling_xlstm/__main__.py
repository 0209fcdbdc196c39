"""Command line: `python -m modeling_xlstm {generate,convert} ...`. Run with --help for the options.

    python -m modeling_xlstm generate "def fibonacci(n):"           # the bundled tiny model, streamed to stdout
    echo "import os" | python -m modeling_xlstm generate - --greedy  # prompt from stdin
    python -m modeling_xlstm generate --prompt-file p.py --model DIR --max-new-tokens 200 --top-p 0.9 --seed 1
    python -m modeling_xlstm convert SRC OUT --verify               # = python -m modeling_xlstm.conversion
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "python -m modeling_xlstm"
BUNDLED_MODEL = "xlstm-tiny-stdlib"
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
EXIT_USAGE = 2


class CLIError(Exception):
    """A problem with the user's input: printed as one `error: ...` line, exit status 2."""


def bundled_model_dir() -> Path | None:
    """hub_configs/xlstm-tiny-stdlib of the source checkout this package is installed from (editable install)."""
    package_dir = Path(__file__).resolve().parent
    for root in (package_dir.parent, *package_dir.parents[1:3]):
        candidate = root / "hub_configs" / BUNDLED_MODEL
        if candidate.is_dir():
            return candidate
    return None


# --------------------------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="modeling_xlstm command line: generate text with an xLSTM (or any causal LM folder), "
        "or convert a public xLSTM checkpoint.",
        epilog=f'example: {PROG} generate "def fibonacci(n):"',
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "generate",
        help="continue a prompt, streaming the text to stdout",
        description="Continue a prompt with a causal language model and stream the text to stdout.\n"
        "Sampling settings default to the model's generation_config.json (the bundled model samples\n"
        "with temperature 0.7, top-k 40, top-p 0.95); --greedy gives deterministic output.",
        epilog="examples:\n"
        f'  {PROG} generate "def fibonacci(n):"\n'
        f"  cat start.py | {PROG} generate - --greedy --max-new-tokens 64\n"
        f"  {PROG} generate --prompt-file start.py --model path/to/model --temperature 0.9 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("prompt", nargs="?", metavar="PROMPT", help="the prompt text, or '-' to read it from stdin")
    gen.add_argument("--prompt-file", metavar="FILE", help="read the prompt from this UTF-8 text file")
    gen.add_argument(
        "--model", metavar="DIR",
        help=f"model folder written by save_pretrained (config.json, weights, tokenizer files); default: the "
        f"bundled hub_configs/{BUNDLED_MODEL} of the source checkout",
    )
    gen.add_argument("--max-new-tokens", type=positive_int, metavar="N",
                     help="number of tokens to generate at most (default: the model's, else 128)")
    mode = gen.add_mutually_exclusive_group()
    mode.add_argument("--greedy", dest="do_sample", action="store_false", default=None,
                      help="always take the most likely token (deterministic)")
    mode.add_argument("--do-sample", dest="do_sample", action="store_true", default=None,
                      help="sample from the (temperature / top-k / top-p filtered) distribution")
    gen.add_argument("--temperature", type=positive_float, metavar="T",
                     help="sampling temperature (implies --do-sample)")
    gen.add_argument("--top-k", type=non_negative_int, metavar="K",
                     help="sample among the K most likely tokens, 0 = no limit (implies --do-sample)")
    gen.add_argument("--top-p", type=probability, metavar="P",
                     help="nucleus sampling: the smallest set of tokens with probability >= P (implies --do-sample)")
    gen.add_argument("--repetition-penalty", type=positive_float, metavar="R",
                     help="penalise tokens already present (1.0 = none)")
    gen.add_argument("--seed", type=int, help="random seed, for reproducible sampling")
    gen.add_argument("--device", default="auto", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    gen.add_argument("--no-stream", action="store_true", help="print the text once at the end instead of streaming")
    gen.add_argument("--verbose", action="store_true", help="show transformers' warnings and info messages")

    commands.add_parser(
        "convert",
        help="convert a public xLSTM checkpoint into a save_pretrained folder "
        "(same as python -m modeling_xlstm.conversion; see convert --help)",
        add_help=False,
    )
    return parser


# --------------------------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------------------------


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.prompt_file is not None:
        raise CLIError("give the prompt either as PROMPT or with --prompt-file, not both")
    if args.prompt_file is not None:
        path = Path(args.prompt_file)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CLIError(f"prompt file {str(path)!r} does not exist; pass an existing text file to --prompt-file")
        except IsADirectoryError:
            raise CLIError(f"prompt file {str(path)!r} is a directory; pass a text file to --prompt-file")
        except OSError as error:
            raise CLIError(f"cannot read prompt file {str(path)!r} ({error.strerror}); check its permissions")
        prompt = decode_prompt(data, f"prompt file {str(path)!r}")
    elif args.prompt == "-":
        prompt = decode_prompt(sys.stdin.buffer.read(), "the prompt read from stdin")
    elif args.prompt is not None:
        prompt = args.prompt
    else:
        raise CLIError('no prompt: give it as an argument ("def f():"), as - to read stdin, or with --prompt-file FILE')
    if not prompt.strip():
        raise CLIError("the prompt is empty; give some text to continue")
    return prompt


def decode_prompt(data: bytes, what: str) -> str:
    if b"\x00" in data:
        raise CLIError(f"{what} contains NUL bytes, so it is not a text file; give a UTF-8 text prompt")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CLIError(
            f"{what} is not valid UTF-8 (byte {error.start}: {data[error.start:error.start + 1]!r}); "
            "save it as UTF-8 text"
        )


def resolve_model_dir(model: str | None) -> Path:
    if model is None:
        found = bundled_model_dir()
        if found is None:
            raise CLIError(
                f"the bundled model hub_configs/{BUNDLED_MODEL} was not found (it ships with the source checkout, "
                "not with a wheel); pass --model DIR with a save_pretrained folder"
            )
        return found
    path = Path(model)
    if not path.exists():
        raise CLIError(f"model folder {model!r} does not exist; pass --model DIR with a save_pretrained folder")
    if not path.is_dir():
        raise CLIError(f"--model {model!r} is a file, not a folder; pass the folder that holds config.json")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (model.safetensors)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json)")
    if missing:
        raise CLIError(
            f"model folder {model!r} has no {', no '.join(missing)}; pass --model DIR with a complete "
            "save_pretrained folder (model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR))"
        )
    return path


def sampling_options(args: argparse.Namespace) -> dict:
    """The sampling flags given on the command line; an error if they contradict --greedy."""
    options = {
        name: value
        for name, value in (("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p))
        if value is not None
    }
    if args.do_sample is False and options:
        flags = ", ".join("--" + name.replace("_", "-") for name in options)
        raise CLIError(f"{flags} apply only to sampling; drop --greedy or drop {flags}")
    return options


def generation_settings(args: argparse.Namespace, model):
    from transformers import GenerationConfig

    base = model.generation_config
    requested = sampling_options(args)
    if args.do_sample is not None:
        do_sample = args.do_sample
    else:
        do_sample = bool(requested) or bool(base.do_sample)
    settings = dict(
        max_new_tokens=args.max_new_tokens or base.max_new_tokens or 128,
        do_sample=do_sample,
        eos_token_id=base.eos_token_id,
        bos_token_id=base.bos_token_id,
        pad_token_id=base.pad_token_id if base.pad_token_id is not None else base.eos_token_id,
    )
    if args.repetition_penalty is not None:
        settings["repetition_penalty"] = args.repetition_penalty
    if do_sample:
        for name in ("temperature", "top_k", "top_p"):
            value = requested.get(name, getattr(base, name, None))
            if value is not None:
                settings[name] = value
    return GenerationConfig(**settings)


def run_generate(args: argparse.Namespace) -> int:
    prompt = read_prompt(args)
    sampling_options(args)
    model_dir = resolve_model_dir(args.model)

    import transformers

    import modeling_xlstm  # noqa: F401  (registers the xlstm_stack model type)

    verbosity, progress_bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    if not args.verbose:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    try:
        return generate_text(args, prompt, model_dir)
    finally:  # restore the logging settings (main() may be called in-process)
        transformers.logging.set_verbosity(verbosity)
        if progress_bars:
            transformers.logging.enable_progress_bar()


def generate_text(args: argparse.Namespace, prompt: str, model_dir: Path) -> int:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as error:  # noqa: BLE001  (any loading failure becomes one clear line)
        raise CLIError(f"cannot load the tokenizer from {str(model_dir)!r}: {first_line(error)}")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    except Exception as error:  # noqa: BLE001
        raise CLIError(f"cannot load the model from {str(model_dir)!r}: {first_line(error)}")
    generation_config = generation_settings(args, model)
    if args.seed is not None:
        transformers.set_seed(args.seed)

    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    streamer = None if args.no_stream else TextStreamer(tokenizer, skip_special_tokens=True)
    with torch.inference_mode():
        output = model.generate(**inputs, generation_config=generation_config, streamer=streamer)
    if args.no_stream:
        print(tokenizer.decode(output[0], skip_special_tokens=True))
    return 0


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --------------------------------------------------------------------------------------------------------------
# convert: the conversion package's own CLI, so the two cannot drift apart
# --------------------------------------------------------------------------------------------------------------


def run_convert(argv: list[str]) -> int:
    try:
        from modeling_xlstm.conversion.__main__ import main as conversion_main
    except ImportError:
        import subprocess

        return subprocess.call([sys.executable, "-m", "modeling_xlstm.conversion", *argv])
    return int(conversion_main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "convert":
        return run_convert(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return run_generate(args)
    except CLIError as error:
        print(f"{PROG} generate: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
