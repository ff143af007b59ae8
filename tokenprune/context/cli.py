"""`tokenprune prune-html`: prune a page for a query; pruned content on stdout, stats on stderr."""

from __future__ import annotations

import argparse
import functools
import gzip
import sys
import zlib
from pathlib import Path
from typing import NoReturn

from tokenprune.context.render import OUTPUTS
from tokenprune.context.scorers import SCORER_NAMES


def _usage_error(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message} (see --help)", file=sys.stderr)
    raise SystemExit(2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Usage errors are one line too: the usage itself is a --help away.
    parser.error = functools.partial(_usage_error, parser.prog)
    parser.add_argument(
        "page", help="HTML file (.html, or gzip-compressed .html.gz), or - for standard input"
    )
    parser.add_argument(
        "--query", "-q", help="what the content is needed for (default: none, the page is kept from the top)"
    )
    parser.add_argument(
        "--budget", "-b", type=int, required=True, help="maximum tokens of the output (required)"
    )
    parser.add_argument(
        "--output", "-o", choices=OUTPUTS, default="html", help="output format (default: %(default)s)"
    )
    parser.add_argument(
        "--scorer",
        choices=SCORER_NAMES,
        default="bm25",
        help="relevance of blocks to the query: BM25, embedding similarity, or both (default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer",
        "-t",
        help="local tokenizer.json or tokenizer directory (default: count words and punctuation)",
    )
    parser.add_argument(
        "--main-content",
        action="store_true",
        help="drop navigation, footers, sidebars, ads (default: keep the whole page)",
    )
    parser.add_argument(
        "--keep-hidden",
        action="store_true",
        help="keep elements hidden with hidden, aria-hidden or CSS (default: drop them)",
    )
    parser.add_argument(
        "--max-words", type=int, default=256, help="largest block, in words (default: %(default)s)"
    )


def _read_page(page: str, fail) -> bytes:
    if page == "-":
        return sys.stdin.buffer.read()
    path = Path(page)
    if path.is_dir():
        fail(f"{page} is a directory, not an HTML file")
    if not path.exists():
        fail(f"no such file: {page}")
    try:
        data = path.read_bytes()
    except OSError as error:
        fail(f"cannot read {page}: {error.strerror or error}")
    if path.suffix != ".gz":
        return data
    if not data.startswith(b"\x1f\x8b"):
        fail(f"{page} is not a valid gzip file (no gzip header)")
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:  # not gzip, or truncated
        fail(f"{page} is not a valid gzip file ({error})")


def run(args: argparse.Namespace) -> int:
    from tokenprune.context.html_pruner import HtmlPruner

    def fail(message: str):
        print(f"tokenprune prune-html: error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)

    html = _read_page(args.page, fail)
    try:
        pruner = HtmlPruner(
            budget=args.budget,
            tokenizer=args.tokenizer,
            scorer=args.scorer,
            output=args.output,
            main_content=args.main_content,
            max_words=args.max_words,
            keep_hidden=args.keep_hidden,
        )
    except (TypeError, ValueError, ImportError, OSError) as error:
        fail(str(error))
    result = pruner.prune(html, query=args.query)
    sys.stdout.write(result.text + "\n")
    saved = 1 - result.tokens_after / result.tokens_before if result.tokens_before else 0.0
    print(
        f"tokens {result.tokens_before} -> {result.tokens_after} (budget {result.budget}, {saved:.1%} saved, "
        f"{len(result.kept)} blocks kept, tokenizer {pruner.counter.name})",
        file=sys.stderr,
    )
    return 0
