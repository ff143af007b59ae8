"""`python -m tokenprune.zoo export|train-vlm|train-lm ...`: the same as `tokenprune zoo` (see zoo/cli.py)."""

from __future__ import annotations

import argparse
import sys

from tokenprune.zoo import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenprune.zoo",
        description=cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
