"""`tokenprune` command line: a small dispatcher; each subcommand's module is imported only when run.

To add a subcommand, add a ``Subcommand`` whose ``module`` defines ``add_arguments(parser)`` and
``run(args) -> int``. A subcommand that hands unknown arguments on to another program sets the
default ``extra_args=[]``; they arrive there in order.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    name: str
    module: str
    help: str


SUBCOMMANDS = (
    Subcommand("prune-html", "tokenprune.context.cli", "prune a web page to a token budget for a query"),
    Subcommand("eval", "tokenprune.eval.cli", "accuracy vs token budget of pruners on a VLM or an LM"),
    Subcommand("demo", "tokenprune.demos.app", "the Gradio demo app (extra `demo`)"),
    Subcommand(
        "serve",
        "tokenprune.adapters.vllm.serve",
        "vLLM's OpenAI-compatible server with image tokens pruned (extra `vllm`)",
    ),
    Subcommand("zoo", "tokenprune.zoo.cli", "the bundled reference models: export for vLLM, retrain"),
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="tokenprune", description="Cut tokens before and during LLM inference."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        sub = commands.add_parser(subcommand.name, help=subcommand.help, description=subcommand.help)
        if argv[:1] == [subcommand.name]:  # import only the module of the subcommand being run
            module = importlib.import_module(subcommand.module)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "extra_args"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra_args = extra
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
