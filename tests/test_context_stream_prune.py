"""Pruning a large page from its streamed block table gives exactly what pruning its whole tree gives."""

import gzip
import json
import random

import pytest
from _context_fixtures import ARTICLE, DATA, bpe_tokenizer
from _context_fuzz import cases
from hypothesis import HealthCheck, given, settings

from tokenprune.context import HtmlPruner
from tokenprune.context import clean as clean_module
from tokenprune.context.stream_blocks import StreamDocument

OUTPUTS = ("html", "text", "markdown")


def outcome(result):
    return result.text, result.tokens_after, result.kept


def assert_same(pruner: HtmlPruner, html, query) -> bool:
    """Equal results whether the page streams or not (every page streams with the size threshold at 0);
    whether it streamed."""
    streamed = []
    build = StreamDocument.build

    def spy(*args):
        document = build(*args)
        streamed.append(document is not None)
        return document

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clean_module, "STREAM_MIN_SIZE", float("inf"))
        expected = outcome(pruner.prune(html, query))
        patch.setattr(clean_module, "STREAM_MIN_SIZE", 0)
        patch.setattr(StreamDocument, "build", spy)
        assert outcome(pruner.prune(html, query)) == expected
    return streamed == [True]


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_generated_pages_prune_the_same_streamed(case):
    pruner = HtmlPruner(
        budget=case.budget,
        tokenizer=bpe_tokenizer() if case.bpe else None,
        output=case.output,
        keep_hidden=case.keep_hidden,
    )
    assert_same(pruner, case.html, case.query)


def test_real_pages_prune_the_same_streamed():
    if not DATA.exists():
        pytest.skip("shared data not present")
    keys = sorted(json.loads((DATA / "ground-truth.json").read_text()))
    rng = random.Random(0)
    streamed = total = 0
    for key in keys:
        html = gzip.decompress((DATA / "html" / f"{key}.html.gz").read_bytes())
        output = OUTPUTS[total % 3]
        budget = rng.choice([50, 300, 1000, 4000])
        pruner = HtmlPruner(
            budget=budget, output=output, keep_hidden=rng.random() < 0.3, max_words=rng.choice([64, 256])
        )
        streamed += assert_same(pruner, html, rng.choice([None, "the", "price of the new model"]))
        total += 1
    assert streamed >= 0.9 * total  # all but pages with markup after </html>


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("budget", [3, 40, 120, 10_000])
def test_article_prunes_the_same_streamed(output, budget):
    for query in (None, "lava ash", "farmers vineyards"):
        pruner = HtmlPruner(budget=budget, tokenizer=bpe_tokenizer(), output=output, max_words=20)
        assert assert_same(pruner, ARTICLE, query)


def test_refined_blocks_and_wide_pages_prune_the_same_streamed():
    long_sentences = "<div><p>" + " ".join(f"word{i} is here, and" for i in range(400)) + "</p></div>"
    links = (
        "<ul>"
        + "".join(f"<li><a href='https://example.com/{i}/a/very/long/path'>l{i}</a></li>" for i in range(300))
        + "</ul>"
    )
    wide = "<body>" + "<p>The lava reached the sea at night.</p><p>x</p>" * 400 + "</body>"
    one_block = "<p>" + "One two three four five six seven eight nine ten. " * 6 + "</p>"  # split finer
    # blocks of links cost far more tokens than words in HTML and Markdown: split finer by their cost
    dense_links = (
        "<div>"
        + " ".join(
            f"<a href='https://example.com/a/long/path/{i}?q=lava&amp;s=sea'>w{i} lava</a>" for i in range(60)
        )
        + "</div>"
    )
    for html in (long_sentences, links, wide, links + long_sentences + wide, one_block, dense_links * 4):
        for output in OUTPUTS:
            assert assert_same(HtmlPruner(budget=60, output=output), html, "lava sea")
            assert assert_same(HtmlPruner(budget=1000, output=output), html * 3, "lava sea")


def test_large_pages_prune_streamed(monkeypatch):
    streamed = []
    build = StreamDocument.build
    monkeypatch.setattr(StreamDocument, "build", lambda *args: streamed.append(1) or build(*args))
    monkeypatch.setattr(clean_module, "STREAM_MIN_SIZE", len(ARTICLE))
    HtmlPruner(budget=50).prune(ARTICLE)
    HtmlPruner(budget=50, main_content=True).prune(ARTICLE)  # trafilatura parses the whole page itself
    HtmlPruner(budget=50).prune(ARTICLE[:-1])
    assert streamed == [1]
