"""Command line: `python -m modeling_xlstm {generate,convert} ...`. Run with --help for the options.

    python -m modeling_xlstm generate "def fibonacci(n):"           # the bundled tiny model, streamed to stdout
    echo "import os" | python -m modeling_xlstm generate - --greedy  # prompt from stdin
    python -m modeling_xlstm generate --prompt-file p.py --model DIR --max-new-tokens 200 --top-p 0.9 --seed 1
    python -m modeling_xlstm convert SRC OUT --verify               # = python -m modeling_xlstm.conversion
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from modeling_xlstm import __version__
from modeling_xlstm.hub_configs import BUNDLED_MODEL, model_path

PROG = "python -m modeling_xlstm"
DEFAULT_MAX_NEW_TOKENS = 128
MAX_LISTED = 20  # tensors named in an error message about mismatched or missing weights
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE (`... | head`)


class CLIError(Exception):
    """A problem with the user's input: printed as one `error: ...` message, exit status 2."""


def bundled_model_dir() -> Path | None:
    """The bundled xlstm-tiny-stdlib: package data of `modeling_xlstm.hub_configs` (found alike in a wheel install
    and in an editable one), or None when the installation lacks it."""
    try:
        return model_path(BUNDLED_MODEL)
    except ValueError:
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
    parser.add_argument("--version", action="version", version=f"modeling_xlstm {__version__}")
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
        help=f"model folder written by save_pretrained (config.json, weights, tokenizer files); default: "
        f"{BUNDLED_MODEL}, the tiny model that ships with the package",
    )
    gen.add_argument("--max-new-tokens", type=positive_int, metavar="N",
                     help="number of tokens to generate at most (default: max_new_tokens of the model's "
                     f"generation_config.json if it sets one, else {DEFAULT_MAX_NEW_TOKENS})")
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
    gen.add_argument("--device", default="auto",
                     help="torch device: cpu, cuda, cuda:N or mps (default: auto = cuda if available, else cpu)")
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
                f"the bundled model {BUNDLED_MODEL} is missing from this installation (it ships as package data "
                "of modeling_xlstm.hub_configs); reinstall modeling-xlstm, or pass --model DIR with a "
                "save_pretrained folder"
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
        max_new_tokens=args.max_new_tokens or base.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
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
    with warnings.catch_warnings():  # restores the warning filters on the way out (main() may run in-process)
        if not args.verbose:  # stdout carries the text only; stderr only our own error messages
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
            warnings.simplefilter("ignore")
        try:
            return generate_text(args, prompt, model_dir)
        finally:  # restore the logging settings (main() may be called in-process)
            transformers.logging.set_verbosity(verbosity)
            if progress_bars:
                transformers.logging.enable_progress_bar()


def resolve_device(name: str):
    """The torch device for --device; a CLIError that says what to pass instead when it is unusable."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise CLIError(f"--device {name!r} is not a torch device ({first_line(error)}); use cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = (
                f"this torch {torch.__version__} is built without CUDA" if torch.version.cuda is None
                else "no GPU is visible to this process"
            )
            raise CLIError(f"--device {name}: no CUDA device is available ({reason}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CLIError(
                f"--device {name}: there is no CUDA device {device.index} ({count} visible: "
                f"cuda:0 to cuda:{count - 1}); use one of those, or --device cpu"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: no MPS (Apple GPU) device is available; use --device cpu")
    return device


def load_config(model_dir: Path):
    """config.json, read and checked before anything else, so that its problems are reported as such."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = model_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CLIError(
            f"{str(path)!r} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); fix it, or "
            "write it again with model.config.save_pretrained(DIR)"
        )
    except UnicodeDecodeError as error:
        raise CLIError(f"{str(path)!r} is not UTF-8 text (byte {error.start}); it must be the JSON file that "
                       "save_pretrained writes")
    except OSError as error:
        raise CLIError(f"cannot read {str(path)!r} ({error.strerror}); check its permissions")
    if not isinstance(data, dict):
        raise CLIError(f"{str(path)!r} holds a JSON {type(data).__name__}, not the JSON object of config fields "
                       "that save_pretrained writes")
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except Exception as error:  # noqa: BLE001  (any failure here is a problem of config.json)
        raise CLIError(f"{str(path)!r} is not a valid model config: {first_line(error)}")
    try:  # settings that only building the model checks (e.g. heads that do not divide a width): on no memory
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)
    except ValueError as error:
        raise CLIError(f"{str(path)!r} describes no valid causal language model: {first_line(error)}")
    except Exception:  # noqa: BLE001  (a model that cannot be built on the meta device: the real load will tell)
        pass
    return config


def load_model(model_dir: Path, config, device):
    """The model, with one error listing every tensor whose shape does not fit config.json (transformers would
    point to a report that the CLI's log level hides) or that the weights lack (it would be random)."""
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, config=config, ignore_mismatched_sizes=True, output_loading_info=True
        )
    except Exception as error:  # noqa: BLE001  (any loading failure becomes one clear message)
        raise CLIError(f"cannot load the model weights from {str(model_dir)!r}: {first_line(error)}")
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        lines = [
            f"  - {name}: {list(saved)} in the weights, {list(expected)} from config.json"
            for name, saved, expected in mismatched[:MAX_LISTED]
        ]
        if len(mismatched) > MAX_LISTED:
            lines.append(f"  - ... and {len(mismatched) - MAX_LISTED} more")
        raise CLIError(
            f"the weights in {str(model_dir)!r} do not fit its config.json: {len(mismatched)} tensor(s) have "
            "another shape:\n" + "\n".join(lines) + "\nuse the config.json that was saved with these weights "
            "(save_pretrained writes both), or correct the sizes in config.json that produce these shapes"
        )
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:MAX_LISTED])
        shown += f", ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise CLIError(
            f"the weights in {str(model_dir)!r} lack {len(missing)} tensor(s) of the model that config.json "
            f"describes: {shown}; the model would generate from random values there. Use the config.json that was "
            "saved with these weights, or weights written by save_pretrained for this config"
        )
    try:
        return model.to(device).eval()
    except Exception as error:  # noqa: BLE001
        raise CLIError(f"cannot move the model to --device {device}: {first_line(error)}; try --device cpu")


def generate_text(args: argparse.Namespace, prompt: str, model_dir: Path) -> int:
    import torch
    import transformers
    from transformers import AutoTokenizer, TextStreamer

    device = resolve_device(args.device)
    config = load_config(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as error:  # noqa: BLE001  (any loading failure becomes one clear line)
        raise CLIError(f"cannot load the tokenizer from {str(model_dir)!r}: {first_line(error)}")
    model = load_model(model_dir, config, device)
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
    try:
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
    except BrokenPipeError:  # the reader of stdout went away (`... | head`): stop quietly
        silence_stdout()
        return EXIT_BROKEN_PIPE


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is no file (e.g. captured in-process)
        pass


if __name__ == "__main__":
    sys.exit(main())
