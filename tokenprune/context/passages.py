"""Sentence-level pruning of retrieved passages (Provence semantics) under one token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenprune.context.html_pruner import check_query, relevance_or_order
from tokenprune.context.packing import check_budget, check_flag, check_fraction, pack
from tokenprune.context.scorers import resolve_scorer
from tokenprune.context.text import join_sentences, near_duplicates, sentence_spans
from tokenprune.context.tokens import TokenCounter, token_counter

PASSAGE_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class KeptSentence:
    passage: int
    sentence: int
    score: float
    text: str


@dataclass(frozen=True)
class PassageResult:
    text: str  # the kept passages, separated by blank lines
    passages: list[str]  # one per input passage, "" when nothing of it was kept
    tokens_before: int  # tokens of all passages joined, unpruned
    tokens_after: int  # tokens of ``text``, always <= budget
    budget: int
    kept: list[KeptSentence]
    duplicates: list[int]  # passages dropped as near-duplicates of an earlier one


def as_title_and_text(passage: object) -> tuple[str | None, str]:
    if isinstance(passage, str):
        return None, passage
    if (
        isinstance(passage, tuple)
        and len(passage) == 2
        and isinstance(passage[0], (str, type(None)))
        and isinstance(passage[1], str)
    ):
        return passage
    raise TypeError(f"each passage must be a str or a (title, text) tuple of str, got {passage!r:.80}")


def _format(title: str | None, body: str) -> str:
    return f"{title}\n{body}" if title else body


class PassageDocument:
    """Passages as packable sentences; a passage's title is kept whenever one of its sentences is."""

    def __init__(
        self,
        passages: list[tuple[str | None, str]],
        counter: TokenCounter,
        keep_titles: bool = True,
        skipped: frozenset[int] = frozenset(),
    ):
        self.passages = passages
        self.counter = counter
        self.keep_titles = keep_titles
        self.spans = [sentence_spans(text) for _, text in passages]
        self.sentences = [
            [text[start:end] for start, end in spans] for (_, text), spans in zip(passages, self.spans)
        ]
        self.units = [
            (passage, index)
            for passage, sentences in enumerate(self.sentences)
            if passage not in skipped
            for index in range(len(sentences))
        ]
        self._costs: list[int] | None = None

    def unit_texts(self) -> list[str]:
        return [self.sentences[p][s] for p, s in self.units]

    def unit_cost(self, unit: int) -> int:
        if self._costs is None:  # +1: the space or line break joining a sentence to its neighbours
            self._costs = [cost + 1 for cost in self.counter.many(self.unit_texts())]
        return self._costs[unit]

    def unit_parents(self, unit: int) -> list[tuple[object, int]]:
        passage = self.units[unit][0]
        title = self.passages[passage][0] if self.keep_titles else None
        separator = self.counter(PASSAGE_SEPARATOR) + (self.counter(title + "\n") if title else 0)
        return [(passage, separator)]

    def passage_texts(self, kept: set[int]) -> list[str]:
        chosen: list[list[int]] = [[] for _ in self.passages]
        for unit in sorted(kept):
            passage, sentence = self.units[unit]
            chosen[passage].append(sentence)
        return [
            _format(title if self.keep_titles else None, join_sentences(text, self.spans[p], sentences))
            if sentences
            else ""
            for p, ((title, text), sentences) in enumerate(zip(self.passages, chosen))
        ]

    def render(self, kept: set[int]) -> str:
        return PASSAGE_SEPARATOR.join(text for text in self.passage_texts(kept) if text)


@dataclass
class PassagePruner:
    """Keep the sentences of ``passages`` whose relevance to the query is at least ``threshold``,
    most relevant first while they fit ``budget`` tokens, in their original order.

    Near-duplicate passages (word-trigram Jaccard >= ``duplicate_threshold``) are dropped;
    ``keep_titles`` keeps a passage's title whenever any of its sentences is kept.
    """

    budget: int
    threshold: float = 0.1
    tokenizer: Any = None
    scorer: Any = "bm25"
    keep_titles: bool = True
    duplicate_threshold: float = 0.8
    counter: TokenCounter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.budget = check_budget(self.budget)
        self.threshold = check_fraction("threshold", self.threshold)
        self.duplicate_threshold = check_fraction("duplicate_threshold", self.duplicate_threshold)
        self.keep_titles = check_flag("keep_titles", self.keep_titles)
        self.counter = token_counter(self.tokenizer)
        self.scorer = resolve_scorer(self.scorer)

    def prune(self, query: str | None, passages: Sequence[str | tuple[str | None, str]]) -> PassageResult:
        query = check_query(query)
        if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
            raise TypeError(
                f"passages must be a list of str or (title, text) tuples, got {type(passages).__name__}"
            )
        parsed = [as_title_and_text(passage) for passage in passages]
        duplicates = near_duplicates(
            [_format(title, text) for title, text in parsed], self.duplicate_threshold
        )
        document = PassageDocument(parsed, self.counter, self.keep_titles, frozenset(duplicates))
        relevance = relevance_or_order(self.scorer, query, document.unit_texts())
        packed = pack([document], [relevance], self.budget, self.counter, self.threshold)
        kept_units = {unit for unit, _ in packed.kept[0]}
        texts = document.unit_texts()
        kept = [KeptSentence(*document.units[unit], score, texts[unit]) for unit, score in packed.kept[0]]
        tokens_before = self.counter(PASSAGE_SEPARATOR.join(_format(t, text) for t, text in parsed))
        return PassageResult(
            text=packed.texts[0],
            passages=document.passage_texts(kept_units),
            tokens_before=tokens_before,
            tokens_after=packed.tokens[0],
            budget=self.budget,
            kept=kept,
            duplicates=sorted(duplicates),
        )
