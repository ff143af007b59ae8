"""`tokenprune prune-html`: prune a page for a query; pruned content on stdout, stats on stderr."""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

from tokenprune.context.render import OUTPUTS
from tokenprune.context.scorers import SCORER_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("page", help="HTML file (.html or .html.gz), or - for standard input")
    parser.add_argument(
        "--query", "-q", help="what the content is needed for (omit to keep the page from the top)"
    )
    parser.add_argument("--budget", "-b", type=int, required=True, help="maximum tokens of the output")
    parser.add_argument("--output", "-o", choices=OUTPUTS, default="html")
    parser.add_argument("--scorer", choices=SCORER_NAMES, default="bm25")
    parser.add_argument(
        "--tokenizer",
        "-t",
        help="local tokenizer.json or tokenizer directory (default: count words and punctuation)",
    )
    parser.add_argument("--main-content", action="store_true", help="drop navigation, footers, sidebars, ads")
    parser.add_argument("--max-words", type=int, default=256, help="largest block, in words")


def _read_page(page: str, parser_error) -> bytes:
    if page == "-":
        return sys.stdin.buffer.read()
    path = Path(page)
    if not path.is_file():
        parser_error(f"no such file: {page}")
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def run(args: argparse.Namespace) -> int:
    from tokenprune.context.html_pruner import HtmlPruner

    def fail(message: str):
        print(f"tokenprune prune-html: error: {message}", file=sys.stderr)
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
        )
    except (TypeError, ValueError, ImportError) as error:
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
