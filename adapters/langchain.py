"""LangChain integration: a document compressor and an HTML transformer for RAG chains.

    from tokenprune.adapters.langchain import TokenPruneCompressor, HtmlCleaner

``TokenPruneCompressor`` is a ``BaseDocumentCompressor``: drop it into ``ContextualCompressionRetriever``
or ``DocumentCompressorPipeline``, or use ``as_runnable()`` in an LCEL chain. Needs langchain-core only.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer, Document
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from tokenprune.context.clean import BLOCK_TAGS, clean_html
from tokenprune.context.html_pruner import HtmlPruner, check_query, relevance_or_order
from tokenprune.context.packing import pack
from tokenprune.context.passages import PassageDocument
from tokenprune.context.scorers import resolve_scorer
from tokenprune.context.text import near_duplicates
from tokenprune.context.tokens import token_counter

_HTML_START = re.compile(
    r"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)
_HTML_TYPES = ("content_type", "mime_type", "mimetype")
_MIME_TYPES = {"html": "text/html", "markdown": "text/markdown", "text": "text/plain"}
# Elements whose end tag may be left out: the start of these closes them (as an HTML parser does).
_IMPLIED_ENDS = {"td": ("td", "th"), "th": ("td", "th"), "tr": ("td", "th", "tr"), "li": ("li",), "p": ("p",)}
_DETECTION_CHARACTERS = 65536
_INLINE_TAGS = frozenset(
    {"a", "span", "b", "i", "em", "strong", "code", "small", "sup", "sub", "img", "font"}
)


class _Structure(HTMLParser):
    """How much of a text's words sit inside elements that are actually closed (``<p>..</p>``,
    ``<td>..<td>``): markup, as opposed to prose that mentions tags ("use <div> and <span>")."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, int]] = []  # (tag, index of its first text chunk)
        self.chunks: list[int] = []  # non-space characters of each text chunk
        self.closed: list[tuple[int, int]] = []  # text chunk ranges of closed elements

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _IMPLIED_ENDS and self.open and self.open[-1][0] in _IMPLIED_ENDS[tag]:
            self.handle_endtag(self.open[-1][0])
        if tag in BLOCK_TAGS or tag in _INLINE_TAGS:
            self.open.append((tag, len(self.chunks)))

    def handle_endtag(self, tag: str) -> None:
        for depth in reversed(range(len(self.open))):
            if self.open[depth][0] == tag:
                self.closed.append((self.open[depth][1], len(self.chunks)))
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.chunks.append(len("".join(data.split())))

    def structured_share(self) -> float:
        """Share of the text inside closed elements (1.0 for markup without text); 0 with none closed."""
        if not self.closed:
            return 0.0
        inside = bytearray(len(self.chunks))
        for start, end in self.closed:
            inside[start:end] = b"\x01" * (end - start)
        total = sum(self.chunks)
        return sum(size for size, flag in zip(self.chunks, inside) if flag) / total if total else 1.0


def looks_like_html(text: str) -> bool:
    """Whether text is an HTML page or fragment: it opens like a page, or parsing its start finds most
    of its text inside closed elements."""
    head = text[:_DETECTION_CHARACTERS]
    if _HTML_START.match(head):
        return True
    parser = _Structure()
    # html.parser asserts on malformed marked sections ("<![if ..."); they are not structure anyway.
    parser.feed(head.replace("<![", "< !["))
    return parser.structured_share() >= 0.5


def is_html(document: Document) -> bool:
    """Declared HTML (a content/mime type in metadata containing "html"), else detected from the content."""
    for key in _HTML_TYPES:
        declared = document.metadata.get(key)
        if isinstance(declared, str) and declared:
            return "html" in declared.lower()
    return looks_like_html(document.page_content)


def copy_metadata(metadata: dict) -> dict:
    """A deep copy of each value; values that cannot be deep-copied (locks, open files, connections)
    are shared, never failing the call and never touching the input."""
    copied = {}
    for key, value in metadata.items():
        try:
            copied[key] = copy.deepcopy(value)
        except Exception:  # noqa: BLE001 - any __deepcopy__/__reduce_ex__ may raise anything
            copied[key] = value
    return copied


class TokenPruneCompressor(BaseDocumentCompressor):
    """Prune retrieved documents to a token budget for the query.

    HTML documents (declared in metadata ``content_type``/``mime_type``, or detected) are cleaned and
    pruned block by block; other documents sentence by sentence. One ``budget`` covers all documents
    together (``budget_per_document=True``: each document on its own), counted with ``tokenizer``.
    Units less relevant than ``threshold`` are dropped, and so are documents with nothing left
    (including empty ones) and near-duplicates of an earlier document (HTML by its cleaned text). Input
    order is kept; metadata is copied (deeply where it can be, see :func:`copy_metadata`) and gets
    ``relevance_score`` (the best kept unit's relevance, 0..1) and ``tokenprune`` (``tokens_before``,
    ``tokens_after``, ``format``, and the kept block paths or sentence indices).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    budget: int = Field(gt=0, description="maximum tokens of all returned documents together")
    tokenizer: Any = Field(default=None, description="HF/tokenizers tokenizer, local path, or str -> int")
    scorer: Any = Field(
        default="bm25", description='"bm25", "embedding", "hybrid", a cross-encoder or Scorer'
    )
    threshold: float = Field(default=0.1, ge=0.0, le=1.0)
    budget_per_document: bool = False
    html_output: Literal["html", "markdown", "text"] = "markdown"
    main_content: bool = False
    keep_titles: bool = True
    duplicate_threshold: float = Field(default=0.8, gt=0.0, le=1.0)

    _counter: Any = PrivateAttr()
    _scorer: Any = PrivateAttr()

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_is_an_int(cls, budget: Any) -> Any:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise ValueError(f"budget must be an int number of tokens, got {budget!r}")
        return budget

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_is_usable(cls, tokenizer: Any) -> Any:
        try:
            token_counter(tokenizer)
        except TypeError as error:
            raise ValueError(str(error)) from error
        return tokenizer

    @field_validator("scorer")
    @classmethod
    def _scorer_is_usable(cls, scorer: Any) -> Any:
        try:
            resolve_scorer(scorer)
        except TypeError as error:
            raise ValueError(str(error)) from error
        return scorer

    def model_post_init(self, context: Any) -> None:
        self._counter = token_counter(self.tokenizer)
        self._scorer = resolve_scorer(self.scorer)

    def _html_pruner(self) -> HtmlPruner:
        return HtmlPruner(
            budget=self.budget,
            tokenizer=self._counter,
            scorer=self._scorer,
            output=self.html_output,
            main_content=self.main_content,
        )

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        query = check_query(query)
        documents = [document for document in documents if document.page_content.strip()]
        if not documents:
            return []
        packables, formats, tokens_before = [], [], []
        html_pruner = self._html_pruner()
        for document in documents:
            if is_html(document):
                packable, _ = html_pruner.document(document.page_content)
                formats.append("html")
            else:
                title = document.metadata.get("title") if self.keep_titles else None
                title = title if isinstance(title, str) and title.strip() else None
                packable = PassageDocument([(title, document.page_content)], self._counter, self.keep_titles)
                formats.append("text")
            packables.append(packable)
            tokens_before.append(self._counter(document.page_content))
        texts = [packable.unit_texts() for packable in packables]
        duplicates = near_duplicates(
            [d.page_content if f == "text" else " ".join(t) for d, f, t in zip(documents, formats, texts)],
            self.duplicate_threshold,
        )
        flat = [text for doc_texts in texts for text in doc_texts]
        scores = relevance_or_order(self._scorer, query, flat)  # one call: BM25 statistics over all documents
        relevance, start = [], 0
        for index, doc_texts in enumerate(texts):
            doc_scores = scores[start : start + len(doc_texts)]
            relevance.append(np.full(len(doc_texts), -1.0) if index in duplicates else doc_scores)
            start += len(doc_texts)
        if self.budget_per_document:
            results = [
                pack([p], [r], self.budget, self._counter, self.threshold)
                for p, r in zip(packables, relevance)
            ]
            packed = [(result.texts[0], result.kept[0], result.tokens[0]) for result in results]
        else:
            result = pack(packables, relevance, self.budget, self._counter, self.threshold)
            packed = list(zip(result.texts, result.kept, result.tokens))
        compressed = []
        for document, packable, fmt, before, (text, kept, tokens) in zip(
            documents, packables, formats, tokens_before, packed
        ):
            if not text:
                continue
            metadata = copy_metadata(document.metadata)
            metadata["relevance_score"] = max(score for _, score in kept)
            metadata["tokenprune"] = {
                "format": fmt,
                "tokens_before": before,
                "tokens_after": tokens,
                "kept": [block.path for block in packable.kept_blocks(kept)]
                if fmt == "html"
                else [packable.units[unit][1] for unit, _ in kept],
            }
            compressed.append(Document(page_content=text, metadata=metadata, id=document.id))
        return compressed

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        # Pruning is CPU work with no I/O to await: run it in a worker thread, off the event loop.
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)

    def as_runnable(self) -> Runnable[dict, list[Document]]:
        """An LCEL step taking ``{"documents": [...], "query": str}``, e.g.
        ``{"documents": retriever, "query": RunnablePassthrough()} | compressor.as_runnable() | ...``."""

        def compress(inputs: dict) -> list[Document]:
            return list(self.compress_documents(inputs["documents"], inputs["query"]))

        async def acompress(inputs: dict) -> list[Document]:
            return list(await self.acompress_documents(inputs["documents"], inputs["query"]))

        return RunnableLambda(compress, afunc=acompress, name="TokenPruneCompressor")


@dataclass
class HtmlCleaner(BaseDocumentTransformer):
    """Query-free cleaning of HTML documents (see ``tokenprune.context.clean_html``).

    Every document is cleaned; one that cleans to nothing keeps its metadata with empty content, so the
    number and order of documents never change. Metadata is copied (``copy_metadata``); a declared
    content or mime type is updated to the output's, so a later compressor treats Markdown/text output
    as text.
    """

    output: Literal["html", "markdown", "text"] = "markdown"
    main_content: bool = False

    def __post_init__(self) -> None:
        clean_html("", output=self.output)  # reject an unknown output now, not on the first document

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        return [
            Document(
                page_content=clean_html(
                    document.page_content, output=self.output, main_content=self.main_content
                ),
                metadata=self._metadata(document.metadata),
                id=document.id,
            )
            for document in documents
        ]

    def _metadata(self, metadata: dict) -> dict:
        metadata = copy_metadata(metadata)
        for key in _HTML_TYPES:
            if key in metadata:
                metadata[key] = _MIME_TYPES[self.output]
        return metadata

    async def atransform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        return await asyncio.to_thread(self.transform_documents, documents, **kwargs)
