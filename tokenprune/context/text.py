"""Plain-text helpers: sentence splitting, sentence pieces for blocks, near-duplicate detection."""

from __future__ import annotations

import functools
import re

# A sentence ends at . ! ? or … (with closing quotes/brackets) followed by space and a word that does
# not start lowercase (a capital in any script, a digit, a letter of a script without case such as
# Hangul), after 。！？, or at a line break; common abbreviations do not end sentences.
_BOUNDARY = re.compile(
    r"""(?:(?<=[.!?…])|(?<=[.!?…]["'”’)\]]))\s+(?=["'“‘(\[]?(\w))|(?<=[。！？])\s*(?=\S)|\n\s*"""
)
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|vs|etc|e\.g|i\.e|Inc|Ltd|Co|Corp|No|Fig|Vol|Jan|Feb|Mar|Apr"
    r"|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|U\.S|U\.K)|\b[A-Z])\.$"
)
_WORD = re.compile(r"\w+")
# Longer runs of non-space characters (base64 blobs, minified code) count as one word per this many
# characters, so that blocks can still be cut inside them.
MAX_WORD_CHARACTERS = 32
_COUNT_CHUNK = 1 << 20
_SPACE = re.compile(r"\s")
_ABBREVIATION_WINDOW = 12  # covers the longest abbreviation with the character before it


def count_words(text: str | None) -> int:
    """Whitespace-separated words, a word over ``MAX_WORD_CHARACTERS`` counting once per that many."""
    if not text:
        return 0
    if len(text) > _COUNT_CHUNK:  # a giant text node: count a chunk at a time, never all words at once
        total, start = 0, 0
        while start < len(text):
            space = _SPACE.search(text, start + _COUNT_CHUNK)
            end = space.start() if space else len(text)
            total += _count(text[start:end])
            start = end
        return total
    return _count(text)


def _count(text: str) -> int:
    words = text.split()
    if not words or max(map(len, words)) <= MAX_WORD_CHARACTERS:
        return len(words)
    return sum(-(-len(word) // MAX_WORD_CHARACTERS) for word in words)


def _sentence_ends(text: str) -> list[int]:
    """Offsets where sentences end, after the whitespace that follows them; abbreviations ("Dr. Smith")
    end none."""
    ends: list[int] = []
    start = 0
    for boundary in _BOUNDARY.finditer(text):
        after_punctuation = boundary.group(1) is not None and "\n" not in boundary.group()
        # Only the end of the sentence so far can be an abbreviation (searching all of it would be
        # quadratic in a run of abbreviations).
        tail = text[max(start, boundary.start() - _ABBREVIATION_WINDOW) : boundary.start()]
        if after_punctuation and (boundary.group(1).islower() or _ABBREVIATION.search(tail)):
            continue
        ends.append(boundary.end())
        start = boundary.end()
    return ends


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of ``text``, without the whitespace around it; only whitespace
    lies between two spans."""
    starts = [0, *_sentence_ends(text)]
    spans = []
    for start, end in zip(starts, [*starts[1:], len(text)]):
        piece = text[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
    return spans


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (stripped, non-empty), joined back over abbreviations."""
    return [text[start:end] for start, end in sentence_spans(text)]


_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def join_sentences(text: str, spans: list[tuple[int, int]], kept: list[int]) -> str:
    """The kept sentences (indices into ``spans``, ascending) with the line structure of ``text``:
    neighbours keep the line breaks and indentation between them; sentences on one line are joined by
    a space (none where there was none, as after "。"); over a gap of dropped sentences that crossed
    lines comes a line break (a blank line if the gap held one) and the next kept line's indentation."""
    parts: list[str] = []
    for position, index in enumerate(kept):
        if position:
            previous = kept[position - 1]
            between = text[spans[previous][1] : spans[index][0]]
            last = text[spans[index - 1][1] : spans[index][0]]  # what precedes the sentence
            if "\n" not in between:
                parts.append(" " if last else "")
            elif index == previous + 1:
                parts.append(between)
            else:
                indent = last.rsplit("\n", 1)[1] if "\n" in last else ""
                parts.append(("\n\n" if _BLANK_LINE.search(between) else "\n") + indent)
        parts.append(text[spans[index][0] : spans[index][1]])
    return "".join(parts)


@functools.lru_cache(maxsize=64)
def _words_run(max_words: int) -> re.Pattern:
    """Up to ``max_words`` words with the whitespace after them (a longer word counting as several)."""
    return re.compile(rf"(?:\S{{1,{MAX_WORD_CHARACTERS}}}\s*){{1,{max_words}}}")


_SENTENCE_END = re.compile(r"""[.!?…]["'”’)\]]*\s*$""")


def sentence_pieces(text: str, max_words: int) -> list[tuple[str, bool]]:
    """Cut text into sentences (those over ``max_words`` words into runs of at most that many words, as
    :func:`count_words` counts them), each
    with whether it ends a sentence. The pieces concatenate back to ``text`` exactly, so block boundaries
    can fall between sentences without changing the text."""
    pieces: list[tuple[str, bool]] = []
    starts = [0, *_sentence_ends(text)]
    for start, end in zip(starts, [*starts[1:], len(text)]):
        sentence = text[start:end]
        if not sentence:
            continue
        ends = end < len(text) or bool(_SENTENCE_END.search(sentence))
        if count_words(sentence) <= max_words:
            pieces.append((sentence, ends))
            continue
        # Runs of words matched whole: a list of every word of a giant text node would take many
        # times its size.
        cuts = _words_run(max_words).findall(sentence)
        cuts[0] = sentence[: len(sentence) - len(sentence.lstrip())] + cuts[0]  # findall skips leading space
        pieces.extend((cut, ends and i == len(cuts) - 1) for i, cut in enumerate(cuts))
    return pieces


def _shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def near_duplicates(texts: list[str], threshold: float = 0.8) -> set[int]:
    """Indices of texts whose word-trigram Jaccard similarity to an earlier kept text is >= threshold."""
    kept: list[set[tuple[str, ...]]] = []
    duplicates: set[int] = set()
    for index, text in enumerate(texts):
        shingles = _shingles(text)
        if shingles and any(len(shingles & other) / len(shingles | other) >= threshold for other in kept):
            duplicates.add(index)
        else:
            kept.append(shingles)
    return duplicates
