"""Command line: python -m modeling_xlstm.hub_configs {list,export} ... Run with --help for the options."""

from __future__ import annotations

import argparse
import sys

from . import BUNDLED_MODEL, REMOTE_MODULE, export, names

PROG = "python -m modeling_xlstm.hub_configs"
EXIT_ERROR = 2

EPILOG = f"""\
The shipped model folders hold no remote code: load them after `import modeling_xlstm`. Before copying a
model folder elsewhere or uploading it to the Hub for users who load it with trust_remote_code=True, export it:
the copy gets {REMOTE_MODULE}.py (it subclasses the installed package's classes, so loading still needs
`pip install modeling-xlstm`) and an `auto_map` in its config.json that points there.

examples:
  {PROG} list
  {PROG} export {BUNDLED_MODEL} my-model      # then upload my-model/ to the Hub
  {PROG} export ./xlstm-7b-converted upload --overwrite

On an error nothing is written and the exit status is {EXIT_ERROR}."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The model folders that ship with modeling_xlstm, and their export for trust_remote_code=True.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,export}")
    commands.add_parser("list", help="print the names of the shipped model folders")
    exporter = commands.add_parser(
        "export",
        help="copy a model folder to OUT, loadable there with trust_remote_code=True",
        description=f"Copy a model folder to OUT and write {REMOTE_MODULE}.py and config.json's auto_map there, so "
        "that AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True) works without `import "
        "modeling_xlstm`. The source folder is left as it is.",
    )
    exporter.add_argument("model", metavar="NAME_OR_DIR",
                          help="a shipped model (see `list`) or any model folder of this package (holding config.json)")
    exporter.add_argument("out", metavar="OUT", help="output folder (must not exist unless --overwrite)")
    exporter.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        print("\n".join(names()))
        return 0
    try:
        out = export(args.model, args.out, overwrite=args.overwrite)
    except (ValueError, OSError) as error:  # OSError: FileExistsError, and unreadable or unwritable folders
        print(f"{PROG} export: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"exported {args.model} to {out} (loadable with trust_remote_code=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
