"""Context pruning for RAG: clean web pages and prune pages or passages to an exact token budget.

>>> from tokenprune.context import clean_html, HtmlPruner, PassagePruner
"""

from tokenprune.context.blocks import Block, BlockTree
from tokenprune.context.clean import clean_html, decode_html, parse_html
from tokenprune.context.html_pruner import HtmlPruner, KeptBlock, PruneResult
from tokenprune.context.passages import KeptSentence, PassagePruner, PassageResult
from tokenprune.context.scorers import (
    BM25Scorer,
    CrossEncoderScorer,
    EmbeddingScorer,
    HybridScorer,
    Scorer,
    resolve_scorer,
)
from tokenprune.context.text import split_sentences
from tokenprune.context.tokens import TokenCounter, token_counter

__all__ = [
    "BM25Scorer",
    "Block",
    "BlockTree",
    "CrossEncoderScorer",
    "EmbeddingScorer",
    "HtmlPruner",
    "HybridScorer",
    "KeptBlock",
    "KeptSentence",
    "PassagePruner",
    "PassageResult",
    "PruneResult",
    "Scorer",
    "TokenCounter",
    "clean_html",
    "decode_html",
    "parse_html",
    "resolve_scorer",
    "split_sentences",
    "token_counter",
]
