"""`tokenprune prune-html`: prune a page for a query; pruned content on stdout, stats on stderr. Several
pages, a directory or JSONL: one JSONL record per page, pruned by `--workers` processes."""

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
        "page",
        nargs="+",
        help="HTML file (.html, or gzip-compressed .html.gz), or - for standard input; several files, "
        'directories of them, or JSONL files of {"id", "html", "query"} records make a batch, written as JSONL',
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
    batch = parser.add_argument_group("batches (several pages, a directory or JSONL)")
    batch.add_argument("--workers", "-j", type=int, default=1, help="worker processes (default: 1)")
    batch.add_argument("--out", help="JSONL file for the records (.gz: compressed; default: standard output)")
    batch.add_argument(
        "--count-raw",
        action="store_true",
        help="also count the raw page's tokens (tokens_before; slower than pruning; default: off)",
    )
    batch.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on standard error (default: when it is a terminal)",
    )


def _read_page(page: str, fail) -> bytes:
    if page == "-":
        return sys.stdin.buffer.read()
    path = Path(page)
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

    settings = {
        "budget": args.budget,
        "tokenizer": args.tokenizer,
        "scorer": args.scorer,
        "output": args.output,
        "main_content": args.main_content,
        "max_words": args.max_words,
        "keep_hidden": args.keep_hidden,
    }
    if _is_batch(args):
        return _run_batch(args, {**settings, "count_raw": args.count_raw}, fail)
    html = _read_page(args.page[0], fail)
    try:
        pruner = HtmlPruner(**settings)
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


def _is_batch(args: argparse.Namespace) -> bool:
    from tokenprune.context.batch import is_jsonl

    page = args.page[0]
    return len(args.page) > 1 or args.out is not None or is_jsonl(page) or Path(page).is_dir()


def _run_batch(args: argparse.Namespace, settings: dict, fail) -> int:
    """Prune every page into a JSONL record; a summary with pages/s (wall time) on stderr."""
    import json
    import time

    from tqdm import tqdm

    from tokenprune.context.batch import count_pages, prune_corpus, read_pages

    if "-" in args.page:
        fail("- (standard input) is a single page; a batch reads files, directories or JSONL")
    if args.workers < 1:
        fail(f"--workers must be >= 1, got {args.workers}")
    missing = [page for page in args.page if not Path(page).exists()]
    if missing:
        fail(f"no such file or directory: {', '.join(missing)}")
    pages = failed = before = after = 0
    started = time.perf_counter()
    try:
        with _output(args.out) as out:
            records = prune_corpus(read_pages(args.page, args.query), settings, workers=args.workers)
            bar = tqdm(
                records,
                total=count_pages(args.page),
                unit="page",
                file=sys.stderr,
                disable=None if args.progress is None else not args.progress,
            )
            for record in bar:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                pages += 1
                if record["error"] is None:
                    before += record.get("tokens_before", 0)
                    after += record["tokens_after"]
                else:
                    failed += 1
    except (TypeError, ValueError, ImportError, OSError) as error:
        fail(str(error))
    seconds = time.perf_counter() - started
    tokens = f"tokens {before} -> {after}" if args.count_raw else f"{after} tokens kept"
    print(
        f"{pages} pages ({failed} failed) in {seconds:.1f} s: {pages / seconds:.1f} pages/s with "
        f"{args.workers} worker{'s' if args.workers > 1 else ''}; {tokens}",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _output(path: str | None):
    """The JSONL destination: a file (gzip-compressed for .gz) or standard output."""
    from contextlib import nullcontext

    if path is None:
        return nullcontext(sys.stdout)
    if path.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")
