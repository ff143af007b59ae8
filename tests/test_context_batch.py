"""Batch pruning: `tokenprune prune-html` over several pages, directories and JSONL, in worker processes."""

import gzip
import json

import pytest
from _context_fixtures import ARTICLE

from tokenprune.cli import main
from tokenprune.context import HtmlPruner
from tokenprune.context.batch import BatchPruner, prune_corpus, read_pages

PAGES = {
    "etna": (ARTICLE, "vineyards grapes"),
    "bridge": (
        "<h1>Bridge</h1><p>The restoration cost 3.8 million pounds.</p><p>Work took a year.</p>",
        "cost",
    ),
    "empty": ("", None),
    "cp1252": ("<p>Caf\xe9 cr\xe8me, na\xefve fa\xe7ade.</p>".encode("cp1252"), "cafe"),
}


def expected(html, query, budget=40) -> dict:
    """The record a batch must hold: what HtmlPruner gives for the page alone."""
    result = HtmlPruner(budget=budget).prune(html, query=query)
    return {"text": result.text, "tokens_before": result.tokens_before, "tokens_after": result.tokens_after}


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def write_jsonl(path, pages: dict) -> None:
    lines = [
        json.dumps(
            {"id": name, "html": html if isinstance(html, str) else html.decode("cp1252"), "query": query}
        )
        for name, (html, query) in pages.items()
    ]
    path.write_text("\n".join(lines) + "\n")


def test_jsonl_corpus_gives_each_page_its_own_pruning(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, PAGES)
    argv = ["prune-html", str(corpus), "--budget", "40", "--query", "the default query", "--count-raw"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    got = records(out)
    assert [r["id"] for r in got] == list(PAGES)
    for record, (html, query) in zip(got, PAGES.values()):
        text = html if isinstance(html, str) else html.decode("cp1252")
        # a record's null query is the default (--query), as for files
        assert {k: record[k] for k in ("text", "tokens_before", "tokens_after")} == expected(
            text, query or "the default query"
        )
        assert record["error"] is None and record["tokens_after"] <= 40
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("4 pages (0 failed) in ") and "pages/s with 1 worker; tokens " in summary


def test_files_and_directories_make_a_batch_with_path_ids(tmp_path, capsys):
    site = tmp_path / "site"
    (site / "news").mkdir(parents=True)
    (site / "news" / "etna.html.gz").write_bytes(gzip.compress(ARTICLE.encode()))
    (site / "bridge.htm").write_text(PAGES["bridge"][0])
    (site / "notes.txt").write_text("not a page")
    single = tmp_path / "cp1252.html"
    single.write_bytes(PAGES["cp1252"][0])
    out = tmp_path / "pruned.jsonl.gz"
    assert main(["prune-html", str(site), str(single), "-b", "40", "-q", "cost", "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    got = records(gzip.decompress(out.read_bytes()).decode())
    assert [r["id"] for r in got] == ["bridge.htm", "news/etna.html.gz", str(single)]
    htmls = [PAGES["bridge"][0], ARTICLE, PAGES["cp1252"][0]]
    for record, html in zip(got, htmls):
        reference = expected(html, "cost")
        assert set(record) == {"id", "text", "tokens_after", "error"}  # the raw page is not counted
        assert (record["text"], record["tokens_after"]) == (reference["text"], reference["tokens_after"])


def test_worker_processes_give_the_same_records_in_order(tmp_path):
    pages = list(read_pages([]))  # nothing: no pool is needed either
    assert list(prune_corpus(pages, {"budget": 40}, workers=2)) == []
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, {f"{name}-{i}": page for i in range(3) for name, page in PAGES.items()})
    serial = list(prune_corpus(read_pages([str(corpus)]), {"budget": 40}, workers=1, batch_size=2))
    parallel = list(prune_corpus(read_pages([str(corpus)]), {"budget": 40}, workers=2, batch_size=2))
    assert parallel == serial and len(serial) == 12


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, PAGES)
    assert (
        main(["prune-html", str(corpus), "-b", "40", "--progress", "--out", str(tmp_path / "o.jsonl")]) == 0
    )
    err = capsys.readouterr().err
    assert "4page [" in err  # tqdm's count and rate (a JSONL corpus has no known length)


def test_a_failing_page_is_a_record_with_its_error():
    batch = {"id": ["a", "b", "c"], "html": [ARTICLE, None, "<p>ok</p>"], "query": ["lava", None, ""]}
    out = BatchPruner(budget=40, count_raw=True)(batch)
    assert out["id"] == ["a", "b", "c"] and out["html"] == batch["html"]
    assert out["tokens_before"][0] == expected(ARTICLE, "lava")["tokens_before"]
    assert out["error"][0] is None and out["error"][2] is None
    assert out["error"][1] == "TypeError: html must be str or bytes, got NoneType"
    assert out["text"][1] is None and out["tokens_after"][1] is None and out["tokens_before"][1] is None
    assert out["text"][0] == expected(ARTICLE, "lava")["text"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "corpus.jsonl:2: not JSON"),
        ('{"id": 3}', 'corpus.jsonl:2: expected an object with an "html" string'),
        ('{"html": "<p>x</p>", "query": 5}', 'corpus.jsonl:2: "query" must be a string or null'),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path, capsys, line, message):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": 1, "html": "<p>fine</p>"}\n' + line + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["prune-html", str(corpus), "-b", "40"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["missing.jsonl", "-b", "40"], "no such file or directory: missing.jsonl"),
        (["-", "-b", "40"], "- (standard input) is a single page"),
        (["-b", "40", "--workers", "0"], "--workers must be >= 1, got 0"),
    ],
)
def test_batch_argument_errors(tmp_path, capsys, extra, message):
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, PAGES)
    with pytest.raises(SystemExit) as exit_info:
        main(["prune-html", str(corpus), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
