"""Main content: trafilatura's extraction laid onto the cleaned page's block tree, then corrected there.

trafilatura decides which text is the article. Its choice is mapped onto the blocks of the lossless
cleaned page (so the output keeps the page's own elements and paths) and corrected with signals of
the page's structure that a text extractor does not use:

- link density: a block that is mostly link text (related articles, tag lists, "Read more: ...") goes;
- structure: paragraphs with the same tag path as kept paragraphs, under the same grandparent, come
  back (an article split into several containers around an ad or an inset, of which trafilatura
  took one);
- position: short lines that are not sentences before the first paragraph go (datelines, bylines,
  reading times).

The constants were chosen on one half of an annotated set (``benchmarks/main_content.py``), and are
reported on the other half there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from tokenprune.context.blocks import BlockTree
from tokenprune.context.clean import clean_tree, decode_html, main_content_html, parse_html

_WORD = re.compile(r"\w+")
_ENDS_SENTENCE = re.compile(r"""[.!?…。！？]["'”’)\]]*$""")
_INDEX = re.compile(r"\[\d+\]")
# Paragraph-sized blocks: whole paragraphs, without mixing an article's last paragraph with the list
# of links after it.
BLOCK_WORDS = 64
# A block is in trafilatura's extraction when this share of its word 3-grams is.
COVERED = 0.5
# The extraction must be found on the cleaned page (else it came from markup that cleaning drops, and
# trafilatura's own output is used).
MIN_FOUND = 0.7
LINK_DENSITY = 0.5
# Prose: a complete sentence of at least this many words, with at most this share of link text.
PROSE_WORDS = 6
PROSE_LINK_DENSITY = 0.2
# Lines before the first paragraph (a sentence of this many words) with at most this many words and no
# sentence end are not content.
PARAGRAPH_WORDS = 20
HEAD_LINE_WORDS = 12


@dataclass(frozen=True)
class _Signals:
    words: int
    link_density: float
    ends_sentence: bool
    shape: tuple[str, str]  # (tag path without indices, path of the grandparent)

    @property
    def prose(self) -> bool:
        return self.ends_sentence and self.words >= PROSE_WORDS and self.link_density <= PROSE_LINK_DENSITY


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def extract_text(text: str) -> str | None:
    """trafilatura's main text of a page (tables included, comments not); ``None`` when it finds none."""
    try:
        import trafilatura
    except ImportError as error:
        raise ImportError(
            "main_content=True needs trafilatura: pip install 'tokenprune[main-content]'"
        ) from error
    if not text.strip():
        return None
    return trafilatura.extract(text, include_tables=True, include_comments=False)


def _signals(tree: BlockTree, block: int) -> _Signals:
    text, path = tree.blocks[block].text, tree.blocks[block].path
    words = len(_words(text))
    link_words = sum(len(_words("".join(a.itertext()))) for a in tree.block_fragment(block).iter("a"))
    return _Signals(
        words=words,
        link_density=min(link_words, words) / max(words, 1),
        ends_sentence=bool(_ENDS_SENTENCE.search(text)),
        shape=(_INDEX.sub("", path), path.rsplit("/", 2)[0]),
    )


def select_blocks(tree: BlockTree, extracted: str) -> set[int] | None:
    """The blocks holding the main content; ``None`` when the extraction is not on the page."""
    extracted_words = _words(extracted)
    # Word 1-, 2- and 3-grams of the extraction: sets, so that mapping stays linear in the page size.
    extracted_grams = [_ngrams(extracted_words, size) for size in (1, 2, 3)]
    found_words = 0
    covered = set()
    for block, value in enumerate(tree.blocks):
        words = _words(value.text)
        if len(words) >= 3:
            grams = _ngrams(words, 3)
            found = len(grams & extracted_grams[2]) >= COVERED * len(grams)
        else:  # a heading or a label: found as such
            found = bool(words) and tuple(words) in extracted_grams[len(words) - 1]
        if found:
            covered.add(block)
            found_words += len(words)
    if found_words < MIN_FOUND * len(extracted_words):
        return None
    signals = [_signals(tree, block) for block in range(len(tree.blocks))]
    kept = {block for block in covered if signals[block].link_density < LINK_DENSITY}
    shapes = {signals[block].shape for block in kept if signals[block].prose}
    kept |= {block for block, signal in enumerate(signals) if signal.prose and signal.shape in shapes}
    first_paragraph = min(
        (b for b in kept if signals[b].ends_sentence and signals[b].words >= PARAGRAPH_WORDS), default=None
    )
    if first_paragraph is not None:
        kept -= {
            block
            for block in kept
            if block < first_paragraph
            and signals[block].words <= HEAD_LINE_WORDS
            and not signals[block].ends_sentence
        }
    return kept


def main_content_root(html: str | bytes, keep_hidden: bool = False) -> etree._Element:
    """The cleaned page cut down to its main content. When trafilatura's extraction is not on the
    cleaned page, its own HTML output is cleaned instead; when it finds nothing, the whole page."""
    text = decode_html(html) if isinstance(html, bytes) else html
    root = clean_tree(parse_html(text), keep_hidden)
    extracted = extract_text(text)
    if extracted:
        tree = BlockTree(root, max_words=BLOCK_WORDS)
        kept = select_blocks(tree, extracted)
        if kept:
            return tree.assemble(kept)
        extracted_html = main_content_html(text)
        if extracted_html is not None:
            return clean_tree(parse_html(extracted_html), keep_hidden)
    return root
