"""`tokenprune` command line: a small dispatcher; each subcommand's module is imported only when run.

To add a subcommand, add a ``Subcommand`` whose ``module`` defines ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

# `demos/` lives in the source checkout next to the package, not inside it
SOURCE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Subcommand:
    name: str
    module: str
    help: str


SUBCOMMANDS = (
    Subcommand("prune-html", "tokenprune.context.cli", "prune a web page to a token budget for a query"),
    Subcommand("eval", "tokenprune.eval.cli", "accuracy vs token budget of pruners on a VLM or an LM"),
    Subcommand("demo", "demos.app", "the Gradio demo app (source checkout, extra `demo`)"),
)


def load_module(name: str):
    """Import a subcommand's module; `demos.*` modules are loaded from the source checkout's files."""
    if not name.startswith("demos."):
        return importlib.import_module(name)
    if name in sys.modules:
        return sys.modules[name]
    path = SOURCE_ROOT / (name.replace(".", "/") + ".py")
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: the demo app ships with the source checkout; "
            "clone the repository and run `make demo` (or `pip install -e '.[demo]'`)"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="tokenprune", description="Cut tokens before and during LLM inference."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        sub = commands.add_parser(subcommand.name, help=subcommand.help, description=subcommand.help)
        if argv[:1] == [subcommand.name]:  # import only the module of the subcommand being run
            module = load_module(subcommand.module)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
