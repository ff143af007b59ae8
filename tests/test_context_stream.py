"""Streaming cleaning (large pages) writes exactly what cleaning the whole tree writes."""

import gzip
import json
import random
import re

import pytest
from _context_fixtures import ARTICLE, DATA
from _context_fuzz import page
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenprune.context import clean_html
from tokenprune.context.clean import clean_tree, parse_html
from tokenprune.context.render import render
from tokenprune.context.stream import stream_clean_html

OUTPUTS = ("html", "text", "markdown")
# Pages without noscript and template content stream (cleaning those needs the whole page first).
_FALLBACK_CONTENT = re.compile(
    rb"(?is)<noscript.*?</noscript>|<template.*?</template>|<script[^>]*type[^>]*>"
)


def whole_tree(html, output, keep_hidden):
    return render(clean_tree(parse_html(html), keep_hidden), output)


def assert_same(html, output, keep_hidden) -> bool:
    """Equal outputs where the page streams; whether it did."""
    streamed = stream_clean_html(html, output, keep_hidden)
    if streamed is not None:
        assert streamed == whole_tree(html, output, keep_hidden)
    return streamed is not None


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.randoms(use_true_random=True), st.sampled_from(OUTPUTS), st.booleans())
def test_generated_pages_stream_to_the_same_output(rng: random.Random, output: str, keep_hidden: bool):
    html = page(rng)
    assert_same(html, output, keep_hidden)
    if isinstance(html, str):  # the same page without what makes it fall back
        assert_same(_FALLBACK_CONTENT.sub(b"", html.encode("utf-8", "surrogatepass")), output, keep_hidden)


def _real_pages(limit: int) -> list[bytes]:
    if not DATA.exists():
        pytest.skip("shared data not present")
    keys = sorted(json.loads((DATA / "ground-truth.json").read_text()))
    return [gzip.decompress((DATA / "html" / f"{key}.html.gz").read_bytes()) for key in keys[:limit]]


def test_real_pages_stream_to_the_same_output():
    streamed = 0
    for html in _real_pages(60):
        for variant in (html, _FALLBACK_CONTENT.sub(b"", html)):
            for output in OUTPUTS:
                for keep_hidden in (False, True):
                    streamed += assert_same(variant, output, keep_hidden)
    assert streamed >= 600  # all but pages with markup after </html>


@pytest.mark.parametrize(
    "html",
    [
        "<p>a<span> </span><span>b</span>  c</p>" * 3,
        "<div><div><div><p>one</p></div></div></div><pre>  x\n  y </pre><textarea> a  b </textarea>",
        "<ol><li>one</li><li></li><li>two</li></ol><table><tr><td>a</td><td></td><td colspan=2>b</td></tr></table>",
        "<div hidden> <script>x</script> tail</div>after<div style='display:none'><p>gone</p></div> end",
        "<html hidden><body><p aria-hidden=true>x</p><p>y</p></body></html>",
        "<p>a&#1;b <o:p>word</o:p></p><b>x</b> <i>y</i> <span><span><b>z</b></span></span>",
        "text only",
        "<div "
        + " ".join(f"a{i}='v'" for i in range(1500))
        + " title='t'>x</div><img src='"
        + "x" * 9000
        + "' alt='p'>",
        "<title>T</title><noscript><p>An article of several words, <b>shown</b> without scripts.</p></noscript>",
        "<p>Short.</p><noscript><p>one</p></noscript><template><p>two words</p></template>",
        "<p>a</p><script type='text/x-template'> <p>Post <i>body</i> with   words</p><noscript>n</noscript>"
        "<div hidden>h</div></script>tail<script type='text/template'>x</script>",
        "<pre><script type='text/html'><b> a  b </b> c</script></pre><noscript hidden><p>x y z</p></noscript>",
        "",
        "<span> </span>",
    ],
)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("keep_hidden", [False, True])
def test_edge_cases_stream_to_the_same_output(html, output, keep_hidden):
    assert_same(html, output, keep_hidden)


def test_wide_page_streams_with_many_final_children():
    rows = "".join(
        f"<div><h3>Item {i}</h3><p>Some <a href='/x'>link</a> and <b>bold</b>.</p></div>\n"
        for i in range(5000)
    )
    html = f"<html><body><div>{rows}</div><ul>{'<li>x</li>' * 3000}</ul></body></html>"
    for output in OUTPUTS:
        assert assert_same(html, output, False)


def test_clean_html_streams_large_pages(monkeypatch):
    import tokenprune.context.clean as clean_module
    import tokenprune.context.stream as stream_module

    calls = []
    original = stream_module.stream_clean_html
    monkeypatch.setattr(
        stream_module, "stream_clean_html", lambda *args: calls.append(args) or original(*args)
    )
    assert clean_html(ARTICLE) == whole_tree(ARTICLE, "html", False)
    assert not calls
    monkeypatch.setattr(clean_module, "STREAM_MIN_SIZE", 0)
    for output in OUTPUTS:
        assert clean_html(ARTICLE, output=output) == whole_tree(ARTICLE, output, False)
    assert len(calls) == 3


def test_deeply_nested_wide_elements_stream():
    """Each level holds more finished elements than stay in the tree, and the innermost more text than
    is written into its parent at once: placeholders nest 1,500 deep."""
    html = ("<div>" + "<p>x</p>" * 70) * 1500 + ("<p>" + "lava " * 200 + "</p>") * 200 + "</div>" * 1500
    for output in OUTPUTS:
        assert assert_same(html, output, False)
