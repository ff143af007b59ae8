"""`tokenprune prune-html`: prune a page for a query; pruned content on stdout, stats on stderr. Several
pages, a directory or JSONL: one JSONL record per page, pruned by `--workers` processes."""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

from tokenprune.context.render import OUTPUTS
from tokenprune.context.scorers import SCORER_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "page",
        nargs="+",
        help="HTML file (.html or .html.gz), or - for standard input; several files, directories of them, "
        'or JSONL files of {"id", "html", "query"} records make a batch, written as JSONL',
    )
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
    batch = parser.add_argument_group("batches (several pages, a directory or JSONL)")
    batch.add_argument("--workers", "-j", type=int, default=1, help="worker processes (default 1)")
    batch.add_argument("--out", help="JSONL file for the records (.gz: compressed; default: standard output)")
    batch.add_argument(
        "--count-raw",
        action="store_true",
        help="also count the raw page's tokens (tokens_before; slower than pruning)",
    )
    batch.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on standard error (default: when it is a terminal)",
    )


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

    settings = {
        "budget": args.budget,
        "tokenizer": args.tokenizer,
        "scorer": args.scorer,
        "output": args.output,
        "main_content": args.main_content,
        "max_words": args.max_words,
    }
    if _is_batch(args):
        return _run_batch(args, {**settings, "count_raw": args.count_raw}, fail)
    html = _read_page(args.page[0], fail)
    try:
        pruner = HtmlPruner(**settings)
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
