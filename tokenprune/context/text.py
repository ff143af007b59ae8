"""Plain-text helpers: sentence splitting, size-bounded chunks, near-duplicate detection."""

from __future__ import annotations

import re

# A sentence ends at . ! ? or … (with closing quotes/brackets) followed by space and a capital,
# digit or opening quote, or at a line break; common abbreviations do not end sentences.
_BOUNDARY = re.compile(r"""(?:(?<=[.!?…])|(?<=[.!?…]["'”’)\]]))\s+(?=["'“‘(\[]?[A-Z0-9À-Ý])|\n\s*""")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|vs|etc|e\.g|i\.e|Inc|Ltd|Co|Corp|No|Fig|Vol|Jan|Feb|Mar|Apr"
    r"|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|U\.S|U\.K)|\b[A-Z])\.$"
)
_WORD = re.compile(r"\w+")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (stripped, non-empty), joined back over abbreviations."""
    sentences: list[str] = []
    start = 0
    for boundary in _BOUNDARY.finditer(text):
        piece = text[start : boundary.start()]
        if "\n" not in boundary.group() and _ABBREVIATION.search(piece):
            continue  # "Dr. Smith": keep reading
        if piece.strip():
            sentences.append(piece.strip())
        start = boundary.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def chunk_words(text: str, max_words: int) -> list[str]:
    """Group whole sentences into chunks of at most ``max_words`` words; over-long sentences are cut
    at word boundaries. Chunks keep their original spacing so they join back with single spaces."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in split_sentences(text):
        words = sentence.split()
        if len(words) > max_words:
            if current:
                chunks.append(" ".join(current))
                current, size = [], 0
            chunks.extend(" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words))
            continue
        if size + len(words) > max_words and current:
            chunks.append(" ".join(current))
            current, size = [], 0
        current.append(sentence)
        size += len(words)
    if current:
        chunks.append(" ".join(current))
    return chunks


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
