"""Main-content extraction on an annotated set built from the article-extraction-benchmark pages.

    .venv/bin/python benchmarks/main_content.py [--data DIR] [--pages N] [--per-page 10] [--out JSON]

Annotation, per page (cut by fixed rules from the pages and their `articleBody`, never by the tools):
  - "with" snippets: sentences of `articleBody` (at least 6 words) that also appear in the page's own
    text: they must be kept;
  - "without" snippets: lines of the page's text (one per block element, at least 5 words) that share
    no word 3-gram with `articleBody` and are not the page's title or headline: they must go.
Up to `--per-page` of each, spread evenly over the page. A snippet is found in an output when its
lowercased word sequence appears there contiguously (punctuation and whitespace do not matter).

The pages are split by the first hex digit of their sha256 id: 0-7 is the tuning half (any rule or
constant of `main_content=True` was chosen looking at it only), 8-f is held out. Both are reported:
kept (share of "with" snippets in the output) and removed (share of "without" snippets not in it),
for trafilatura alone (`trafilatura.extract` with its defaults) and `clean_html(main_content=True)`;
`--ablation` adds tokenprune with each of its corrections switched off.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from context import DEFAULT_DATA, RESULTS, body_sentences, load_pages  # noqa: E402

_WORD = re.compile(r"\w+")
# Reference linearisation of a page: text outside these is not text a reader sees.
_INVISIBLE = ("script", "style", "noscript", "template", "head", "svg", "select", "option", "button")
_LINE_TAGS = frozenset(
    {
        "html", "body", "div", "p", "section", "article", "main", "header", "footer", "nav", "aside", "h1",
        "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "table", "thead", "tbody",
        "tfoot", "tr", "td", "th", "caption", "blockquote", "pre", "figure", "figcaption", "form",
        "fieldset", "address", "hr", "br", "center", "details", "summary", "menu", "legend", "label",
    }
)  # fmt: skip
MIN_WITH_WORDS = 6
MIN_WITHOUT_WORDS = 5


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalised(text: str) -> str:
    """Lowercased words joined by single spaces, padded so that matches fall on word boundaries."""
    return " " + " ".join(words(text)) + " "


def page_lines(html: bytes) -> list[str]:
    """The page's visible text, one line per block element (an independent, simple linearisation)."""
    from tokenprune.context import decode_html

    parser = etree.HTMLParser(huge_tree=True, remove_comments=True)
    root = etree.fromstring(decode_html(html).encode("utf-8", "replace"), parser)
    if root is None:
        return []
    etree.strip_elements(root, *_INVISIBLE, with_tail=False)
    lines, current = [], []

    def flush() -> None:
        line = " ".join(" ".join(current).split())
        if line:
            lines.append(line)
        current.clear()

    stack = [(root, False)]
    while stack:
        element, closing = stack.pop()
        if closing:
            if isinstance(element.tag, str) and element.tag in _LINE_TAGS:
                flush()
            if element.tail:
                current.append(element.tail)
            continue
        if isinstance(element.tag, str) and element.tag in _LINE_TAGS:
            flush()
        if element.text and isinstance(element.tag, str):
            current.append(element.text)
        stack.append((element, True))
        stack.extend((child, False) for child in reversed(element))
    flush()
    return lines


def _spread(items: list[str], count: int) -> list[str]:
    if len(items) <= count:
        return items
    return [items[i * len(items) // count] for i in range(count)]


def _trigrams(tokens: list[str]) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


def annotate(page: dict, per_page: int) -> dict:
    lines = page_lines(page["html"])
    text = normalised(" ".join(lines))
    body_grams = _trigrams(words(page["body"]))
    with_ = [
        s for s in body_sentences(page["body"]) if len(words(s)) >= MIN_WITH_WORDS and normalised(s) in text
    ]
    root = etree.fromstring(page["html"], etree.HTMLParser(huge_tree=True)) if page["html"].strip() else None
    titles = set()
    if root is not None:
        titles = {normalised("".join(e.itertext())) for e in root.iter("title", "h1")}
    seen, without = set(), []
    for line in lines:
        tokens = words(line)
        key = normalised(line)
        if len(tokens) < MIN_WITHOUT_WORDS or key in seen or key in titles:
            continue
        seen.add(key)
        if not _trigrams(tokens) & body_grams:
            without.append(line)
    return {"with": _spread(list(dict.fromkeys(with_)), per_page), "without": _spread(without, per_page)}


def tools() -> dict:
    import trafilatura

    from tokenprune.context import clean_html, decode_html

    return {
        "trafilatura alone": lambda html: trafilatura.extract(decode_html(html)) or "",
        "tokenprune main_content=True": lambda html: clean_html(html, output="text", main_content=True),
    }


# Each of tokenprune's corrections switched off in turn (module constants set so that it never fires).
ABLATIONS = {
    "trafilatura mapped onto blocks, no correction": {
        "LINK_DENSITY": float("inf"),
        "PROSE_WORDS": 10**9,
        "HEAD_LINE_WORDS": -1,
    },
    "without link density": {"LINK_DENSITY": float("inf")},
    "without paragraph shape": {"PROSE_WORDS": 10**9},
    "without head lines": {"HEAD_LINE_WORDS": -1},
}


def ablation_tools() -> dict:
    from tokenprune.context import clean_html
    from tokenprune.context import main_content as module

    def variant(settings: dict):
        def run(html: bytes) -> str:
            saved = {name: getattr(module, name) for name in settings}
            for name, value in settings.items():
                setattr(module, name, value)
            try:
                return clean_html(html, output="text", main_content=True)
            finally:
                for name, value in saved.items():
                    setattr(module, name, value)

        return run

    return {name: variant(settings) for name, settings in ABLATIONS.items()}


def evaluate(pages: list[dict], annotations: dict, runs: dict) -> dict:
    results = {}
    for split in ("tune", "held-out"):
        chosen = [p for p in pages if split_of(p["id"]) == split]
        for name, run in runs.items():
            kept = removed = with_total = without_total = 0
            seconds = 0.0
            for page in chosen:
                start = time.process_time()
                output = normalised(run(page["html"]))
                seconds += time.process_time() - start
                note = annotations[page["id"]]
                kept += sum(normalised(s) in output for s in note["with"])
                removed += sum(normalised(s) not in output for s in note["without"])
                with_total += len(note["with"])
                without_total += len(note["without"])
            results[f"{split}/{name}"] = {
                "pages": len(chosen),
                "with": with_total,
                "without": without_total,
                "kept": kept / with_total,
                "removed": removed / without_total,
                "ms_per_page": 1e3 * seconds / len(chosen),
            }
    return results


def split_of(page_id: str) -> str:
    return "tune" if page_id[0] in "01234567" else "held-out"


def report(results: dict) -> str:
    lines = [
        "| pages | tool | with | kept | without | removed | ms/page |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in results.items():
        split, name = key.split("/", 1)
        lines.append(
            f"| {split} ({row['pages']}) | {name} | {row['with']} | {row['kept']:.3f} | {row['without']} | "
            f"{row['removed']:.3f} | {row['ms_per_page']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pages", type=int, help="use only the first N pages")
    parser.add_argument("--per-page", type=int, default=10, help="most snippets of each kind per page")
    parser.add_argument("--ablation", action="store_true", help="also each correction switched off")
    parser.add_argument("--out", type=Path, default=RESULTS / "main_content.json")
    args = parser.parse_args()
    pages = load_pages(args.data, args.pages)
    annotations = {page["id"]: annotate(page, args.per_page) for page in pages}
    results = evaluate(pages, annotations, {**tools(), **(ablation_tools() if args.ablation else {})})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
