"""Long-context key-value retrieval, single-hop and two-hop, as token sequences.

A context is a run of pairs `k v ;` (keys unique within the context). A single-hop query `? k`
is answered by `v`. A two-hop query names a key whose value is another key: `? k1` is answered
by `k2 v2`, where `k2 v2 ;` is a pair elsewhere in the context, so the second hop needs a pair the
query never mentions. Sample `index` of seed `seed` depends on (seed, index, length) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_KEYS = 1024
NUM_VALUES = 128
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
WORDS = ("?", ";") + tuple(f"k{i}" for i in range(NUM_KEYS)) + tuple(f"v{i}" for i in range(NUM_VALUES))
QUESTION_TYPES = ("hop1", "hop2")
PAIR = 3  # tokens per pair


@dataclass(frozen=True)
class RetrievalSample:
    """context: the words of the pairs; query: the words after them; answer: the words to generate."""

    context: tuple[str, ...]
    query: tuple[str, ...]
    answer: tuple[str, ...]
    kind: str

    @property
    def prompt(self) -> str:
        return " ".join(self.context + self.query)


def _pairs(rng: np.random.Generator, count: int, links: int) -> tuple[list[tuple[str, str]], list[int]]:
    """`count` pairs with unique keys; the first `links` pairs point at keys of other (non-link) pairs.
    Returns the pairs in a random order and the shuffled positions of the link pairs."""
    if count > NUM_KEYS:
        raise ValueError(f"a context holds at most {NUM_KEYS} pairs, asked for {count}")
    if 2 * links > count:
        raise ValueError(f"{links} two-hop links need at least {2 * links} pairs, got {count}")
    keys = rng.permutation(NUM_KEYS)[:count]
    values = [f"v{v}" for v in rng.integers(0, NUM_VALUES, count)]
    targets = rng.permutation(np.arange(links, count))[:links]
    for i, target in enumerate(targets):
        values[i] = f"k{keys[target]}"
    order = rng.permutation(count)
    pairs = [(f"k{keys[i]}", values[i]) for i in order]
    link_positions = [int(np.flatnonzero(order == i)[0]) for i in range(links)]
    return pairs, link_positions


def _answer(pairs: list[tuple[str, str]], key: str) -> tuple[str, ...]:
    lookup = dict(pairs)
    value = lookup[key]
    return (value, lookup[value]) if value.startswith("k") else (value,)


def pair_count(length: int, queries: int = 1) -> int:
    """Pairs that fit a sequence of `length` tokens with BOS and `queries` queries of up to 4 tokens."""
    return (length - 1 - 4 * queries) // PAIR


def sample(seed: int, index: int, length: int = 1024, kind: str | None = None) -> RetrievalSample:
    """One evaluation prompt of about `length` tokens with a single query; kinds alternate by index."""
    rng = np.random.default_rng([seed, index, length])
    kind = QUESTION_TYPES[index % len(QUESTION_TYPES)] if kind is None else kind
    if kind not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {kind!r}; supported: {QUESTION_TYPES}")
    pairs, links = _pairs(rng, pair_count(length), links=1)
    if kind == "hop2":
        key = pairs[links[0]][0]
    else:
        plain = [i for i in range(len(pairs)) if i != links[0] and not pairs[i][1].startswith("k")]
        key = pairs[plain[int(rng.integers(len(plain)))]][0]
    context = tuple(w for k, v in pairs for w in (k, v, ";"))
    return RetrievalSample(context, ("?", key), _answer(pairs, key), kind)


def training_sequence(
    rng: np.random.Generator, length: int, queries: int = 8
) -> tuple[list[str], list[bool]]:
    """Words of one training sequence (context then `queries` queries, half of them two-hop) and, per
    word, whether it is an answer word the loss should predict."""
    hop2 = queries // 2
    pairs, links = _pairs(rng, pair_count(length, queries), links=hop2)
    plain = [i for i in range(len(pairs)) if not pairs[i][1].startswith("k")]
    asked = [pairs[i][0] for i in links] + [
        pairs[i][0] for i in rng.choice(plain, queries - hop2, replace=False)
    ]
    words = [w for k, v in pairs for w in (k, v, ";")]
    targets = [False] * len(words)
    for q in rng.permutation(len(asked)):
        answer = _answer(pairs, asked[q])
        words += ["?", asked[q], *answer]
        targets += [False, False] + [True] * len(answer)
    return words, targets
