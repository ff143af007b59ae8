"""Query-aware pruning of a web page to an exact token budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tokenprune.context.blocks import MIN_MAX_WORDS, BlockTree
from tokenprune.context.clean import clean, decode_html
from tokenprune.context.packing import check_budget, pack
from tokenprune.context.render import check_output, render
from tokenprune.context.scorers import Scorer, resolve_scorer
from tokenprune.context.tokens import TokenCounter, token_counter


@dataclass(frozen=True)
class KeptBlock:
    path: str  # XPath of the element holding the block
    span: tuple[int, int] | None  # content pieces of that element, None for the whole element
    score: float | None  # relevance in [0, 1]; None when the whole page fit without scoring
    text: str


@dataclass(frozen=True)
class PruneResult:
    text: str
    tokens_before: int  # tokens of the raw input
    tokens_after: int  # tokens of ``text``, always <= budget
    budget: int
    kept: list[KeptBlock]


class HtmlDocument:
    """A cleaned page as packable units: its blocks, priced in the output format."""

    def __init__(self, tree: BlockTree, output: str, counter: TokenCounter):
        self.tree = tree
        self.output = output
        self.counter = counter
        self._costs: list[int] | None = None
        self._container_costs: list[int] | None = None

    @classmethod
    def from_root(cls, root, output: str, counter: TokenCounter, max_words: int) -> HtmlDocument:
        return cls(BlockTree.split(root, max_words=max_words), output, counter)

    def unit_texts(self) -> list[str]:
        return [block.text for block in self.tree.blocks]

    def unit_cost(self, unit: int) -> int:
        if self._costs is None:  # all at once: one tokenizer call
            blocks = range(len(self.tree.blocks))
            if self.output == "html":
                self._costs = self.counter.many([self.tree.block_html(b) for b in blocks])
            else:  # +1: the line break that separates a block from its neighbours
                texts = [render(self.tree.block_fragment(b), self.output) for b in blocks]
                self._costs = [cost + 1 for cost in self.counter.many(texts)]
        return self._costs[unit]

    def unit_parents(self, unit: int) -> list[tuple[object, int]]:
        if self.output != "html":  # containers cost no markup outside HTML
            return []
        if self._container_costs is None:
            markup = [self.tree.container_markup(c) for c in range(len(self.tree.containers))]
            self._container_costs = self.counter.many(markup)
        return [(container, self._container_costs[container]) for container in self.tree.ancestors(unit)]

    def render(self, kept: set[int]) -> str:
        return render(self.tree.assemble(kept), self.output)

    def kept_blocks(self, kept: list[tuple[int, float | None]]) -> list[KeptBlock]:
        blocks = self.tree.blocks
        return [KeptBlock(blocks[i].path, blocks[i].span, score, blocks[i].text) for i, score in kept]


def default_max_words(budget: int, max_words: int) -> int:
    """Blocks of about an eighth of the budget, so several compete for it, never above ``max_words``."""
    return max(MIN_MAX_WORDS, min(max_words, budget // 8))


def check_query(query: object) -> str | None:
    if query is not None and not isinstance(query, str):
        raise TypeError(f"query must be a str or None, got {type(query).__name__}")
    return query if query and query.strip() else None


def relevance_or_order(scorer: Scorer, query: str | None, texts: list[str]) -> np.ndarray:
    """Scorer relevance; without a query every unit is equally relevant, so order decides."""
    if query is None:
        return np.ones(len(texts))
    return np.asarray(scorer.relevance(query, texts), dtype=float).reshape(len(texts))


@dataclass
class HtmlPruner:
    """Clean a page, split it into blocks, keep the blocks most relevant to the query within ``budget``
    tokens (counted with ``tokenizer``), and re-serialise them with their ancestors.

    ``scorer``: "bm25", "embedding", "hybrid", a cross-encoder, or a Scorer. ``threshold``: blocks
    less relevant than this are never kept (0 fills the budget). Without a query the page is kept
    from the top.
    """

    budget: int
    tokenizer: Any = None
    scorer: Any = "bm25"
    output: str = "html"
    main_content: bool = False
    max_words: int = 256
    threshold: float = 0.0
    counter: TokenCounter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.budget = check_budget(self.budget)
        check_output(self.output)
        if isinstance(self.max_words, bool) or not isinstance(self.max_words, int) or self.max_words < 1:
            raise ValueError(f"max_words must be a positive int, got {self.max_words!r}")
        self.counter = token_counter(self.tokenizer)
        self.scorer = resolve_scorer(self.scorer)

    def document(self, html: str | bytes) -> tuple[HtmlDocument, str, int]:
        """The page as packable blocks, its full cleaned rendering, and the token count of the raw input."""
        if isinstance(html, bytes):
            html = decode_html(html)
        elif not isinstance(html, str):
            raise TypeError(f"html must be str or bytes, got {type(html).__name__}")
        root = clean(html, main_content=self.main_content)
        document = HtmlDocument.from_root(
            root, self.output, self.counter, default_max_words(self.budget, self.max_words)
        )
        return document, render(root, self.output), self.counter(html)

    def prune(self, html: str | bytes, query: str | None = None) -> PruneResult:
        query = check_query(query)
        document, full_text, tokens_before = self.document(html)
        full_tokens = self.counter(full_text)
        if full_tokens <= self.budget:
            everything = [(block, None) for block in range(len(document.tree.blocks))]
            return PruneResult(
                full_text, tokens_before, full_tokens, self.budget, document.kept_blocks(everything)
            )
        relevance = relevance_or_order(self.scorer, query, document.unit_texts())
        packed = pack([document], [relevance], self.budget, self.counter, self.threshold)
        return PruneResult(
            packed.texts[0],
            tokens_before,
            packed.tokens[0],
            self.budget,
            document.kept_blocks(packed.kept[0]),
        )
