"""Greedy budget packing shared by the HTML and passage pruners (and several documents at once).

Units (blocks or sentences) are taken by relevance while their estimated cost fits; the result is
then rendered and counted with the real tokenizer, dropping the least relevant units until the
exact count fits. ``tokens_after <= budget`` therefore holds for any tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tokenprune.context.tokens import TokenCounter


class PackableDocument(Protocol):
    """What the packer needs from a document: unit texts, cost estimates, and a renderer."""

    def unit_texts(self) -> list[str]: ...

    def unit_cost(self, unit: int) -> int: ...

    def unit_parents(self, unit: int) -> list[tuple[object, int]]:
        """(key, cost) of what must surround the unit (ancestors, titles), paid once per key."""
        ...

    def render(self, kept: set[int]) -> str: ...


@dataclass(frozen=True)
class Packed:
    texts: list[str]  # one per document, "" where nothing was kept
    kept: list[list[tuple[int, float]]]  # per document: (unit, relevance) in unit order
    tokens: list[int]


def check_budget(budget: object) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int (tokens), got {type(budget).__name__}")
    if budget <= 0:
        raise ValueError(f"budget must be > 0 tokens, got {budget}")
    return int(budget)


def check_fraction(name: str, value: object) -> float:
    """A number in [0, 1] (relevance thresholds and similarities)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def pack(
    documents: list[PackableDocument],
    relevance: list[np.ndarray],
    budget: int,
    counter: TokenCounter,
    threshold: float = 0.0,
) -> Packed:
    """Keep the most relevant units (relevance >= threshold) of all documents within ``budget`` tokens,
    counted as the sum over documents of the tokens of each rendered document."""
    candidates = [
        (-float(score), doc, unit)
        for doc, scores in enumerate(relevance)
        for unit, score in enumerate(scores)
        if score >= threshold
    ]
    candidates.sort()  # most relevant first; ties in document order
    kept: list[dict[int, float]] = [{} for _ in documents]
    opened: set[tuple[int, object]] = set()
    spent = 0
    for negative_score, doc, unit in candidates:
        parents = [(key, cost) for key, cost in documents[doc].unit_parents(unit) if (doc, key) not in opened]
        cost = documents[doc].unit_cost(unit) + sum(cost for _, cost in parents)
        if spent + cost <= budget:
            kept[doc][unit] = -negative_score
            opened.update((doc, key) for key, _ in parents)
            spent += cost

    texts = [documents[doc].render(set(kept[doc])) if kept[doc] else "" for doc in range(len(documents))]
    tokens = [counter(text) for text in texts]
    while sum(tokens) > budget:
        over = sum(tokens) - budget
        # Drop the least relevant units until their estimated cost covers the overshoot.
        by_relevance = sorted(
            ((score, -doc, -unit) for doc in range(len(documents)) for unit, score in kept[doc].items())
        )
        if not by_relevance:
            raise ValueError(f"the tokenizer counts {sum(tokens)} tokens for empty documents")
        touched = set()
        freed = 0
        for _, negative_doc, negative_unit in by_relevance:
            doc, unit = -negative_doc, -negative_unit
            del kept[doc][unit]
            touched.add(doc)
            freed += documents[doc].unit_cost(unit)
            if freed >= over:
                break
        for doc in touched:
            texts[doc] = documents[doc].render(set(kept[doc])) if kept[doc] else ""
            tokens[doc] = counter(texts[doc])
    return Packed(texts, [sorted(doc_kept.items()) for doc_kept in kept], tokens)
