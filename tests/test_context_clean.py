"""Cleaning rules, output formats and bad input for tokenprune.context.clean_html."""

import re
import time

import pytest
from _context_fixtures import ARTICLE
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from tokenprune.context import clean_html, parse_html
from tokenprune.context.render import render


def body(html: str) -> str:
    return re.search(r"<body>(.*)</body>", clean_html(html), re.S).group(1)


@pytest.mark.parametrize("tag", ["script", "style", "noscript", "template", "svg", "iframe"])
def test_drops_non_content_elements_but_keeps_following_text(tag):
    assert body(f"<p>before<{tag}>secret()</{tag}>after</p>") == "<p>beforeafter</p>"


def test_drops_comments():
    assert body("<p>a<!-- hidden note -->b</p>") == "<p>ab</p>"


@pytest.mark.parametrize(
    "hidden",
    [
        '<div hidden="">x</div>',
        '<div aria-hidden="true">x</div>',
        '<div style="color:red; display: none">x</div>',
        '<span style="VISIBILITY:hidden">x</span>',
        '<input type="hidden" value="x">',
    ],
)
def test_drops_hidden_elements(hidden):
    assert body(f"<p>shown</p>{hidden}<p>too</p>") == "<p>shown</p><p>too</p>"


def test_keeps_only_allowed_attributes():
    html = (
        '<a href="/doc" class="c" id="i" onclick="x()" data-x="1" style="s" title="Doc">doc</a>'
        '<img src="a.png" alt="diagram" width="3"><td colspan="2" rowspan="1">c</td>'
    )
    out = clean_html(f"<table><tr>{html}</tr></table>")
    assert '<a href="/doc" title="Doc">doc</a>' in out
    assert '<img alt="diagram">' in out
    assert '<td colspan="2">c</td>' in out  # rowspan="1" is the default, so it is noise
    assert not re.search(r"\b(class|id|onclick|data-x|style|src|width)=", out)


def test_drops_script_links():
    assert body('<a href="javascript:void(0)">menu</a>') == "<a>menu</a>"


def test_keeps_table_geometry_including_empty_cells():
    table = "<table><tr><th>a</th><th></th><th>c</th></tr><tr><td></td><td>2</td><td></td></tr></table>"
    root = etree.fromstring(clean_html(table), etree.HTMLParser())
    assert [len(row) for row in root.iter("tr")] == [3, 3]


def test_unwraps_single_child_wrappers_and_keeps_tag_names():
    assert body("<div><div><section><p>x</p></section></div></div>") == "<p>x</p>"
    assert body("<p>a<span><b>x</b></span></p>") == "<p>a<b>x</b></p>"
    assert (
        body("<div>a<div><b>x</b></div></div>") == "<div>a<div><b>x</b></div></div>"
    )  # keeps the line break
    # not wrappers: own text, two children, or a meaningful tag
    assert body("<div>t<p>x</p></div>") == "<div>t<p>x</p></div>"
    assert body("<div><p>x</p><p>y</p></div>") == "<div><p>x</p><p>y</p></div>"
    assert body("<ul><li><a href='/a'>x</a></li></ul>") == '<ul><li><a href="/a">x</a></li></ul>'


def test_removes_empty_elements_bottom_up_in_one_pass():
    assert body("<div><p> </p><span><b></b></span></div><p>x</p><img src='a.png'>") == "<p>x</p>"
    assert body("<p>a<br>b</p><hr>") == "<p>a<br>b</p><hr>"


def test_collapses_whitespace_but_not_in_pre():
    assert body("<p>a  \n\t b</p>\n\n  <p>c</p>") == "<p>a b</p><p>c</p>"
    assert body("<pre>x\n    y</pre>") == "<pre>x\n    y</pre>"


def test_no_htmlrag_style_renaming_and_no_doctype():
    out = clean_html(
        "<!DOCTYPE html><?xml version='1.0'?><html><body><div><p>a</p><p>b</p></div></body></html>"
    )
    assert out == "<html><body><div><p>a</p><p>b</p></div></body></html>"


def test_markdown_output():
    md = clean_html(
        "<h2>Title</h2><p>Some <b>bold</b> and <a href='/x'>link</a>.</p><ul><li>one</li><li>two</li></ul>"
        "<ol><li>first</li></ol><table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td></td></tr></table>"
        "<pre>code  here</pre><blockquote>quoted</blockquote>",
        output="markdown",
    )
    assert "## Title" in md
    assert "Some **bold** and [link](/x)." in md
    assert "- one\n- two" in md
    assert "1. first" in md
    assert "| k | v |\n|---|---|\n| a |  |" in md
    assert "```\ncode  here\n```" in md
    assert "> quoted" in md


def test_text_output_has_no_markup():
    text = clean_html(ARTICLE, output="text")
    assert "<" not in text and "**" not in text
    assert "Mount Etna, the tallest active volcano in Europe" in text
    assert "Etna erupts again\n\nMount Etna" in text


def test_unknown_output_is_rejected():
    with pytest.raises(ValueError, match="html, markdown, text"):
        clean_html("<p>x</p>", output="pdf")


def test_main_content_drops_navigation_and_footer():
    pytest.importorskip("trafilatura")
    text = clean_html(ARTICLE, output="text", main_content=True)
    assert "Lava fountains reached 800 metres" in text
    assert "Etna Rosso" in text
    assert "Copyright" not in text and "Sport" not in text


def test_main_content_falls_back_to_the_whole_page():
    pytest.importorskip("trafilatura")
    assert clean_html("<p>tiny</p>", output="text", main_content=True) == "tiny"


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 12, ["<p>"], b"<p>x</p>".decode().encode("utf-16-le")[:0] or 3.5])
def test_wrong_types_raise_type_error(value):
    with pytest.raises(TypeError, match="str or bytes"):
        clean_html(value)


@pytest.mark.parametrize("html", ["", "   \n\t", b"", "<script>only()</script>", "<!-- only a comment -->"])
def test_empty_input_gives_empty_output(html):
    assert clean_html(html, output="text") == ""
    assert clean_html(html, output="markdown") == ""
    assert clean_html(html) == ""


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("<p>Café naïve</p>".encode(), "Café naïve"),
        ('<meta charset="iso-8859-1"><p>Caf\xe9</p>'.encode("latin-1"), "Café"),
        ("<p>\u201cquoted\u201d</p>".encode("cp1252"), "\u201cquoted\u201d"),
        ("\ufeff<p>Grüße</p>".encode("utf-16"), "Grüße"),
        ("<p>日本語</p>".encode(), "日本語"),
    ],
)
def test_bytes_in_any_encoding(data, expected):
    assert clean_html(data, output="text") == expected


def test_non_html_text_and_control_characters():
    assert clean_html("just some text\nover two lines", output="text") == "just some text over two lines"
    assert "ok" in clean_html("<p>\x00ok\x01\ud800</p>", output="text")


def test_unclosed_tags():
    text = clean_html("<div><p>one<p>two<ul><li>three<li>four<table><tr><td>five", output="text")
    assert [word for word in re.findall(r"\w+", text)] == ["one", "two", "three", "four", "five"]


def test_100000_deep_nesting_keeps_text_before_and_after():
    deep = "<div>" * 100_000 + "needle" + "</div>" * 100_000
    text = clean_html(f"<p>before</p>{deep}<p>after</p>", output="text")
    assert text.split() == ["before", "needle", "after"]
    deep_bold = "<b><i>" * 50_000 + "x" + "</i></b>" * 50_000 + "<p>end</p>"
    assert "end" in clean_html(deep_bold, output="markdown")


def _page(megabytes: float) -> str:
    row = "<div class='c'><p>Words <a href='/x' class='l'>link</a> and <b>more</b>.</p><span></span></div>\n"
    return "<html><body>" + row * int(megabytes * 1_000_000 / len(row)) + "</body></html>"


def test_cleaning_time_grows_linearly_with_size():
    def cpu_seconds(html: str) -> float:
        start = time.process_time()
        clean_html(html)
        return time.process_time() - start

    small, large = _page(0.1), _page(1.6)
    ratio = min(cpu_seconds(large) for _ in range(2)) / max(min(cpu_seconds(small) for _ in range(2)), 1e-3)
    assert ratio < 16 * 4, f"16x the size took {ratio:.1f}x the CPU time"  # quadratic would be ~256x


@pytest.mark.slow
def test_50_megabyte_page():
    text = clean_html(_page(50), output="text")
    assert text.count("link") == text.count("more") > 500_000


# --- properties ------------------------------------------------------------------------------

_TAGS = ["div", "p", "span", "b", "a", "ul", "li", "table", "tr", "td", "h2", "section", "em"]
_WORDS = st.sampled_from(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"])


@st.composite
def random_html(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.integers(0, 3))
        tag = draw(st.sampled_from(_TAGS))
        if kind == 0:
            parts.append(f"<{tag} class='x'>")
        elif kind == 1:
            parts.append(f"</{tag}>")
        else:
            parts.append(
                " ".join(draw(st.lists(_WORDS, max_size=5))) + draw(st.sampled_from(["", " ", "\n"]))
            )
    return "".join(parts)


@settings(max_examples=40, deadline=None)
@given(random_html())
def test_cleaning_is_lossless_for_visible_words(html):
    reference = parse_html(html)
    assert re.findall(r"\w+", clean_html(html, output="text")) == re.findall(
        r"\w+", render(reference, "text")
    )
    # the HTML output, parsed again, shows the same words (inline tags do not separate words)
    assert re.findall(r"\w+", render(parse_html(clean_html(html)), "text")) == re.findall(
        r"\w+", render(reference, "text")
    )
