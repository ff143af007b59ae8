"""Query-aware pruning of a web page to an exact token budget."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tokenprune.context.blocks import MIN_MAX_WORDS, BlockTree
from tokenprune.context.clean import clean, page_text, streams
from tokenprune.context.packing import check_budget, check_flag, check_fraction, pack
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
    tokens_after: int  # tokens of ``text``, always <= budget
    budget: int
    kept: list[KeptBlock]
    raw: str = field(repr=False)
    counter: TokenCounter = field(repr=False)

    @functools.cached_property
    def tokens_before(self) -> int:
        """Tokens of the raw input, counted on first use: raw pages are large and pruning needs no count."""
        return self.counter(self.raw)


class PageBlocks:
    """What the pruner derives from a page's priced blocks, whether they live in a tree
    (``HtmlDocument``) or in a table (``stream_blocks.StreamDocument``): ``units``, ``unit_cost``,
    ``unit_words``, ``unit_parents`` and ``split_point`` (the element a block's word limit belongs to,
    and that limit) come from the subclass."""

    def finer_limits(self, most: int) -> dict:
        """Word limits that split the blocks costing more than ``most`` tokens: in proportion to how
        far over they are (words do not bound tokens: link-heavy blocks cost far more), at least halved."""
        limits: dict = {}
        for unit in range(self.units):
            cost, words = self.unit_cost(unit), self.unit_words(unit)
            if cost <= most or words <= MIN_MAX_WORDS:
                continue
            element, limit = self.split_point(unit)
            target = max(MIN_MAX_WORDS, min(limit // 2, words * most // cost))
            if target < limits.get(element, limit):
                limits[element] = target
        return limits

    def estimated_tokens(self) -> int:
        """Sum of block and container costs: close to the full page's count, from counts already made."""
        units = range(self.units)
        containers = {key: cost for unit in units for key, cost in self.unit_parents(unit)}
        return sum(self.unit_cost(unit) for unit in units) + sum(containers.values())


class HtmlDocument(PageBlocks):
    """A cleaned page as packable units: its blocks, priced in the output format."""

    def __init__(
        self, tree: BlockTree, output: str, counter: TokenCounter, counts: dict[str, int] | None = None
    ):
        self.tree = tree
        self.output = output
        self.counter = counter
        # Token counts by text, shared with the finer trees of the same page: most of their blocks
        # are unchanged and are counted once.
        self.counts = {} if counts is None else counts
        self._costs: list[int] | None = None
        self._container_costs: list[int] | None = None

    @classmethod
    def from_root(cls, root, output: str, counter: TokenCounter, max_words: int) -> HtmlDocument:
        return cls(BlockTree.split(root, max_words=max_words), output, counter)

    def refined(self, limits: dict) -> HtmlDocument:
        """The same page with lower word limits inside some elements (``BlockTree.split_point``)."""
        tree = BlockTree(self.tree.root, self.tree.max_words, {**self.tree.limits, **limits}, self.tree.words)
        return HtmlDocument(tree, self.output, self.counter, self.counts)

    def count(self, texts: list[str]) -> list[int]:
        missing = list(dict.fromkeys(text for text in texts if text not in self.counts))
        self.counts.update(zip(missing, self.counter.many(missing)))
        return [self.counts[text] for text in texts]

    def unit_texts(self) -> list[str]:
        return [block.text for block in self.tree.blocks]

    def unit_cost(self, unit: int) -> int:
        if self._costs is None:  # all at once: one tokenizer call
            blocks = range(len(self.tree.blocks))
            if self.output == "html":
                self._costs = self.count([self.tree.block_html(b) for b in blocks])
            else:  # +1: the line break that separates a block from its neighbours
                texts = [self._rendered(b) for b in blocks]
                self._costs = [cost + 1 for cost in self.count(texts)]
        return self._costs[unit]

    def _rendered(self, block: int) -> str:
        """The block rendered alone; the block's own text where equal, so that the counts (keyed by
        text) hold no second copy of the page's text."""
        text = render(self.tree.block_fragment(block), self.output)
        return self.tree.blocks[block].text if text == self.tree.blocks[block].text else text

    def unit_parents(self, unit: int) -> list[tuple[object, int]]:
        if self.output != "html":  # containers cost no markup outside HTML
            return []
        if self._container_costs is None:
            markup = [self.tree.container_markup(c) for c in range(len(self.tree.containers))]
            self._container_costs = self.count(markup)
        return [(container, self._container_costs[container]) for container in self.tree.ancestors(unit)]

    def render(self, kept: set[int]) -> str:
        return render(self.tree.assemble(kept), self.output)

    @property
    def units(self) -> int:
        return len(self.tree.blocks)

    def unit_words(self, unit: int) -> int:
        return self.tree.blocks[unit].words

    def split_point(self, unit: int) -> tuple[object, int]:
        return self.tree.split_point(unit)

    def full_text(self) -> str:
        return render(self.tree.root, self.output)

    def kept_blocks(self, kept: list[tuple[int, float | None]]) -> list[KeptBlock]:
        blocks = self.tree.blocks
        return [KeptBlock(blocks[i].path, blocks[i].span, score, blocks[i].text) for i, score in kept]


def default_max_words(budget: int, max_words: int) -> int:
    """Blocks of about a twelfth of the budget in words, so several compete for it, never above ``max_words``."""
    return max(MIN_MAX_WORDS, min(max_words, budget // 12))


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

    ``scorer``: "bm25", "embedding", "hybrid", a cross-encoder, or a Scorer. ``threshold`` (0 to 1):
    blocks less relevant than this are never kept (0 fills the budget). Without a query the page is
    kept from the top. ``keep_hidden`` keeps elements hidden with ``hidden``, ``aria-hidden`` or CSS.
    """

    budget: int
    tokenizer: Any = None
    scorer: Any = "bm25"
    output: str = "html"
    main_content: bool = False
    max_words: int = 256
    threshold: float = 0.0
    keep_hidden: bool = False
    counter: TokenCounter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.budget = check_budget(self.budget)
        check_output(self.output)
        if isinstance(self.max_words, bool) or not isinstance(self.max_words, int):
            raise TypeError(f"max_words must be a positive int, got {type(self.max_words).__name__}")
        if self.max_words < 1:
            raise ValueError(f"max_words must be a positive int, got {self.max_words!r}")
        self.threshold = check_fraction("threshold", self.threshold)
        self.main_content = check_flag("main_content", self.main_content)
        self.keep_hidden = check_flag("keep_hidden", self.keep_hidden)
        self.counter = token_counter(self.tokenizer)
        self.scorer = resolve_scorer(self.scorer)

    def document(self, html: str | bytes) -> tuple[HtmlDocument, str]:
        """The page as packable blocks, and the raw input as text."""
        html = page_text(html)
        root = clean(html, main_content=self.main_content, keep_hidden=self.keep_hidden)
        max_words = default_max_words(self.budget, self.max_words)
        return self._refine(HtmlDocument.from_root(root, self.output, self.counter, max_words)), html

    def _refine(self, document):
        # Split finer where a block would take over half the budget, so the best blocks can still fit.
        while limits := document.finer_limits(self.budget // 2):
            document = document.refined(limits)
        return document

    def _streamed_document(self, html: str):
        """``document`` of a large page, without its tree in memory (a table of blocks); None where the
        page must be cleaned as one tree."""
        from tokenprune.context.stream_blocks import StreamDocument

        max_words = default_max_words(self.budget, self.max_words)
        document = StreamDocument.build(html, self.output, self.counter, max_words, self.keep_hidden)
        return None if document is None else self._refine(document)

    def prune(self, html: str | bytes, query: str | None = None) -> PruneResult:
        query = check_query(query)
        document = None
        if streams(html, self.main_content):
            html = page_text(html)
            document = self._streamed_document(html)
        if document is None:
            document, html = self.document(html)
        # Count the whole cleaned page only when the block counts say it may fit.
        if document.estimated_tokens() <= 2 * self.budget:
            full_text = document.full_text()
            full_tokens = self.counter(full_text)
            if full_tokens <= self.budget:
                kept = document.kept_blocks([(block, None) for block in range(document.units)])
                return PruneResult(full_text, full_tokens, self.budget, kept, html, self.counter)
        relevance = relevance_or_order(self.scorer, query, document.unit_texts())
        packed = pack([document], [relevance], self.budget, self.counter, self.threshold)
        kept = document.kept_blocks(packed.kept[0])
        return PruneResult(packed.texts[0], packed.tokens[0], self.budget, kept, html, self.counter)
