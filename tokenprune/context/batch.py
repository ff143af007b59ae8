"""Pruning a corpus: pages from files, directories or JSONL, pruned in batches by `BatchPruner`, in
worker processes (`prune_corpus`) or on any engine that maps a function over batches of columns (Ray
Data's `map_batches`, see docs/context.md)."""

from __future__ import annotations

import gzip
import json
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from tokenprune.context.html_pruner import HtmlPruner

PAGE_SUFFIXES = (".html", ".htm", ".html.gz", ".htm.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class Page:
    id: object  # a JSONL record's "id" (any JSON value), or a file's path
    html: str | bytes
    query: str | None = None


def is_jsonl(source: str) -> bool:
    return source.endswith(JSONL_SUFFIXES)


def is_page_file(path: Path) -> bool:
    return path.name.endswith(PAGE_SUFFIXES)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def read_jsonl(path: Path, query: str | None = None) -> Iterator[Page]:
    """One page per line of `{"id", "html", "query"}` records; "id" defaults to the line number and
    "query" to `query`. A line that is not such a record raises ValueError naming the file and line."""
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("html"), str):
                raise ValueError(f'{path}:{number}: expected an object with an "html" string')
            page_query = query if record.get("query") is None else record["query"]
            if page_query is not None and not isinstance(page_query, str):
                raise ValueError(f'{path}:{number}: "query" must be a string or null')
            yield Page(record.get("id", number), record["html"], page_query)


def page_files(directory: Path) -> list[Path]:
    """The HTML pages under `directory` (.html, .htm, optionally gzipped), in sorted order."""
    return sorted(path for path in directory.rglob("*") if path.is_file() and is_page_file(path))


def read_pages(sources: Sequence[str], query: str | None = None) -> Iterator[Page]:
    """Pages from HTML files (id: the path as given), directories of them (id: the path below the
    directory) and JSONL files, lazily and in order; a missing source raises FileNotFoundError before
    any page is read."""
    paths = [Path(source) for source in sources]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
    for path in paths:
        if path.is_dir():
            for file in page_files(path):
                yield Page(str(file.relative_to(path)), _read_bytes(file), query)
        elif is_jsonl(str(path)):
            yield from read_jsonl(path, query)
        else:
            yield Page(str(path), _read_bytes(path), query)


def count_pages(sources: Sequence[str]) -> int | None:
    """How many pages `read_pages` yields, when known without reading them (no JSONL among the sources)."""
    if any(is_jsonl(source) for source in sources):
        return None
    return sum(len(page_files(Path(s))) if Path(s).is_dir() else 1 for s in sources)


class BatchPruner:
    """`HtmlPruner(**settings)` over a batch of pages given as columns: "html" (str or bytes) and,
    optionally, "query" (None or "" for no query) plus any other columns, which are passed through.
    Returns the batch with `columns` added ("text", "tokens_after", "error", and "tokens_before" with
    `count_raw`: counting the raw HTML costs more than pruning it), as lists. A page that fails gets
    its error message in "error" (None otherwise) instead of stopping the batch.

    Built from plain settings, so each worker process or Ray actor builds its own pruner (and loads the
    tokenizer) once:

        ray.data.read_json("corpus.jsonl").map_batches(BatchPruner, fn_constructor_kwargs={"budget": 1000})
    """

    def __init__(self, count_raw: bool = False, **settings) -> None:
        self.pruner = HtmlPruner(**settings)
        self.columns = ("text", *(("tokens_before",) if count_raw else ()), "tokens_after", "error")

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, list]:
        htmls = list(batch["html"])
        queries = list(batch["query"]) if "query" in batch else [None] * len(htmls)
        out: dict[str, list] = {name: list(values) for name, values in batch.items()}
        for column in self.columns:
            out[column] = []
        for html, query in zip(htmls, queries):
            try:
                result = self.pruner.prune(html, query=query or None)
                row = {"text": result.text, "tokens_after": result.tokens_after, "error": None}
                if "tokens_before" in self.columns:
                    row["tokens_before"] = result.tokens_before
            except Exception as error:  # one bad page must not stop a corpus: its record says why
                row = {"error": f"{type(error).__name__}: {error}"}
            for column in self.columns:
                out[column].append(row.get(column))
        return out


def _columns(pages: Sequence[Page]) -> dict[str, list]:
    return {
        "id": [page.id for page in pages],
        "html": [page.html for page in pages],
        "query": [page.query for page in pages],
    }


def _records(pruner: BatchPruner, pages: Sequence[Page]) -> list[dict]:
    pruned = pruner(_columns(pages))
    names = ("id", *pruner.columns)
    return [dict(zip(names, row)) for row in zip(*(pruned[name] for name in names))]


_worker_pruner: BatchPruner | None = None


def _start_worker(settings: dict) -> None:
    global _worker_pruner
    _worker_pruner = BatchPruner(**settings)


def _prune_in_worker(pages: list[Page]) -> list[dict]:
    return _records(_worker_pruner, pages)


def _batches(pages: Iterable[Page], size: int) -> Iterator[list[Page]]:
    pages = iter(pages)
    while batch := list(islice(pages, size)):
        yield batch


def prune_corpus(
    pages: Iterable[Page], settings: dict, workers: int = 1, batch_size: int = 8
) -> Iterator[dict]:
    """One record `{"id", "text", "tokens_after", "error"}` per page (and "tokens_before" with
    `count_raw` among the settings), in input order.

    `workers` > 1 prunes in that many processes (started fresh, so nothing of the caller's state is
    shared), each with its own `BatchPruner(**settings)`; at most two batches per worker are in flight,
    so memory stays bounded however long the corpus is. The processes are spawned: a script that calls
    this with workers > 1 needs the usual `if __name__ == "__main__":` guard."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if workers == 1:
        pruner = BatchPruner(**settings)
        for batch in _batches(pages, batch_size):
            yield from _records(pruner, batch)
        return
    BatchPruner(**settings)  # bad settings fail here, with their message, not in a worker
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(settings,)
    ) as pool:
        pending: deque[Future] = deque()
        for batch in _batches(pages, batch_size):
            pending.append(pool.submit(_prune_in_worker, batch))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
