"""The context pruner's fuzzing: a generator of hostile web pages and the property every page must satisfy.

Shared by the property test in the main suite (tests/test_context_fuzz.py) and `make fuzz`
(tests/fuzz_context.py, many more cases in worker processes).
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass

from _context_fixtures import bpe_count, bpe_tokenizer
from hypothesis import strategies as st

from tokenprune.context import HtmlPruner, clean_html
from tokenprune.context.tokens import count_words_and_punctuation

HANG_SECONDS = 10

_WORDS = [
    "lava", "ash", "Etna", "the", "airport", "vine", "Dr.", "e.g.", "A.", "end.", "why?", "东京", "人口。",
    "Москва", "café", "🙂", "&amp;", "&lt;", "&#1;", "&#0;", "&#xFFFE;", "&#xffff;", "&#x1FFFE;", "&#xFDD0;",
    "&#55296;", "&#x110000;", "&#128;", "&nbsp;", "&bogus;", "&", "<", ">", "\x00", "\x01", "\x0b", "\x1f",
    "\x7f", "\x85", "\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\ud800", "\u2028", "\u200b", "\r\n", "\t",
]  # fmt: skip
_TAGS = [
    "div", "p", "span", "a", "b", "em", "table", "tr", "td", "th", "ul", "ol", "li", "h1", "h2", "pre",
    "br", "hr", "img", "section", "article", "nav", "footer", "center", "font", "blockquote", "code",
    "textarea", "select", "iframe", "svg", "math", "head", "title", "body", "html", "form", "input",
    "o:p", "fb:like", "esi:remove", "a:b:c", "svg:rect", "x-y", "1a", "é", "a<div", "DIV", "Table",
]  # fmt: skip
_ATTRIBUTE_NAMES = [
    "href", "title", "alt", "colspan", "rowspan", "class", "id", "style", "hidden", "aria-hidden", "type",
    "xml:lang", "a:b", "x&y", "data-x", "onclick", "src",
]  # fmt: skip
_ATTRIBUTE_VALUES = [
    "", "x", "/a?b=c&d=e", "javascript:void(0)", "#top", "display:none", "visibility: hidden", "true",
    "hidden", "2", "1", "a>b", 'q"uote', "&#1;t", "\ufffe", "text/template", "text/html", "0",
]  # fmt: skip
_ENCODINGS = ["utf-8", "cp1252", "utf-16", "shift_jis", "koi8-r", "gbk", "latin-1", "utf-32"]
_DECLARED = [
    "utf-8",
    "utf-16",
    "utf-32",
    "windows-1252",
    "iso-8859-1",
    "shift_jis",
    "klingon",
    "koi8-r",
    "gbk",
]


def _attributes(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 4)):
        name, value = rng.choice(_ATTRIBUTE_NAMES), rng.choice(_ATTRIBUTE_VALUES)
        quote = rng.choice(["'", '"', ""])
        parts.append(name if rng.random() < 0.15 else f"{name}={quote}{value}{quote}")
    return "".join(" " + part for part in parts)


def _text(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(0, 12))
    if rng.random() < 0.1:  # arbitrary code points
        words.append("".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 8))))
    return rng.choice([" ", "", "\n"]).join(words)


def _big(rng: random.Random) -> str:
    """One large part (pages stay under a megabyte: the property is about crashes and hangs, the
    benchmark measures time per MB): thousands of attributes on a start tag (libxml2 compares each
    with all earlier ones), a long attribute value, a giant text node or unsplittable word."""
    size = rng.randint(1000, 100_000)
    kind = rng.randint(0, 3)
    name = rng.choice(_ATTRIBUTE_NAMES)
    if kind == 0:
        filler = " ".join(f"data-a{i}='{i}'" for i in range(size // 30))
        return f"<p {filler} {name}='{rng.choice(_ATTRIBUTE_VALUES)}'>{_text(rng)}</p>"
    if kind == 1:
        return f"<a {name}='{'v=' * (size // 2)}'>{_text(rng)}</a>"
    return "<p>" + rng.choice(["x", "word ", "A. ", "é", "東"]) * size + _text(rng) + "</p>"


_WRAPPED = [
    "<noscript>{}</noscript>",
    "<template>{}</template>",
    "<script type='text/template'>{}</script>",
    "<script type='text/x-handlebars-template'>{}</script>",
    "<script>var x = '{}';</script>",
    "<style>p {{ color: red }}</style>{}",
    "<div style='display:none'>{}</div>",
    "<div hidden>{}</div>",
    "<p aria-hidden=true>{}</p>",
]
_ODDITIES = ["<!-- c -->", "<!--", "<![CDATA[x]]>", "<?php echo 1 ?>", "<!DOCTYPE html>", "</", "<", "<>"]


def _markup(rng: random.Random) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(0, 30)):
        kind = rng.randint(0, 11)
        tag = rng.choice(_TAGS)
        if kind <= 2:
            parts.append(f"<{tag}{_attributes(rng)}>")
        elif kind == 3:
            parts.append(f"</{tag}>")
        elif kind <= 6:
            parts.append(_text(rng))
        elif kind == 7:  # content shown without scripts, by scripts, or hidden
            inner = "".join(f"<p>{_text(rng)}</p>" for _ in range(rng.randint(0, 20)))
            parts.append(rng.choice(_WRAPPED).format(inner))
        elif kind == 8:  # deep nesting, sometimes past libxml2's limit of 2048
            depth = rng.choice([5, 50, 500, 2100, 3000])
            parts.append(f"<{tag}>" * depth + _text(rng) + f"</{tag}>" * rng.choice([0, depth]))
        elif kind == 9:
            parts.append(rng.choice(_ODDITIES))
        elif kind == 10:
            parts.append(f"<{tag}{_attributes(rng)}/>")
        else:
            parts.append(f"<{tag}>{_text(rng)}</{tag}>")
    if rng.random() < 0.05:
        parts.insert(rng.randint(0, len(parts)), _big(rng))
    return "".join(parts)


def page(rng: random.Random) -> str | bytes:
    """A web page as str or bytes: markup of every kind above, as a fragment or a document, possibly in
    another encoding with a (lying) charset declaration, or plain garbage bytes."""
    form = rng.randint(0, 9)
    if form == 0:
        return rng.randbytes(rng.randint(0, 300))
    body = _markup(rng)
    if rng.random() < 0.5:
        head = f'<meta charset="{rng.choice(_DECLARED)}">' if rng.random() < 0.5 else ""
        body = f"<html><head><title>{_text(rng)}</title>{head}</head><body>{body}</body></html>"
    if form <= 3:
        encoding = rng.choice(_ENCODINGS)
        errors = rng.choice(["replace", "ignore", "xmlcharrefreplace", "surrogatepass"])
        try:
            return body.encode(encoding, errors=errors)
        except UnicodeEncodeError:  # surrogatepass passes only surrogates, and only in UTF codecs
            return body.encode(encoding, errors="replace")
    return body


@dataclass(frozen=True)
class Case:
    html: str | bytes
    query: str | None
    budget: int
    output: str
    keep_hidden: bool
    main_content: bool
    bpe: bool  # the caller's tokenizer: a trained BPE, else the default words+punctuation count


@st.composite
def cases(draw) -> Case:
    """Pages are built from one seeded ``random.Random`` (drawing every choice through hypothesis
    costs more than the pruning); the failing case is reported whole."""
    rng = draw(st.randoms(use_true_random=True))
    return Case(
        html=page(rng),
        query=rng.choice([None, "lava ash", "东京 人口", "Москва", "x", " ", "why?"]),
        budget=rng.choice([1, 5, 20, 100, 1000]),
        output=rng.choice(["html", "markdown", "text"]),
        keep_hidden=rng.random() < 0.5,
        main_content=rng.random() < 0.1,  # trafilatura is slow: a tenth of the cases
        bpe=rng.random() < 0.5,
    )


class Hang(Exception):
    pass


def _interrupt(signum, frame):
    raise Hang(f"no result after {HANG_SECONDS} CPU seconds")


def check(case: Case) -> None:
    """The property: cleaning and pruning raise nothing, finish within HANG_SECONDS of CPU time
    (interrupted by a CPU-time timer where there is one: wall time on a shared machine measures the
    load, not a hang), and ``tokens_after`` recounted with the caller's tokenizer is the count of the
    text and within the budget."""
    count = bpe_count if case.bpe else count_words_and_punctuation
    timer = hasattr(signal, "setitimer")
    if timer:
        previous = signal.signal(signal.SIGPROF, _interrupt)
        signal.setitimer(signal.ITIMER_PROF, HANG_SECONDS)
    start = time.process_time()
    try:
        pruner = HtmlPruner(
            budget=case.budget,
            tokenizer=bpe_tokenizer() if case.bpe else None,
            output=case.output,
            keep_hidden=case.keep_hidden,
            main_content=case.main_content,
        )
        result = pruner.prune(case.html, query=case.query)
        clean_html(case.html, output=case.output, keep_hidden=case.keep_hidden)
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
    elapsed = time.process_time() - start
    if elapsed > HANG_SECONDS:  # a long call in C code defers the timer's signal to its end
        raise Hang(f"took {elapsed:.1f} CPU seconds")
    recounted = count(result.text)
    assert recounted == result.tokens_after, f"tokens_after {result.tokens_after}, recounted {recounted}"
    assert recounted <= case.budget, f"{recounted} tokens over the budget of {case.budget}"
