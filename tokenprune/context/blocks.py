"""Block tree: a cleaned page split top-down into blocks of at most ``max_words`` words.

An element with more words than the limit is *expanded*: its content (child elements and text) is
cut into blocks. A small block-level child is a block; consecutive text and small inline children
form one block, closed after a complete sentence where one ends within the limit (sentences longer
than the limit are cut at word boundaries); a child over the limit is expanded in turn. Original tag
names are kept, and every block knows the XPath of the element holding it.
"""

from __future__ import annotations

import copy
import html as html_escape
import re
from collections import Counter
from dataclasses import dataclass

from lxml import etree

from tokenprune.context.clean import BLOCK_TAGS
from tokenprune.context.text import count_words, sentence_pieces

# Elements that stand as blocks of their own; <br> flows with the text around it.
_STANDALONE_TAGS = BLOCK_TAGS - {"br"}
_MAY_END_SENTENCE = re.compile(r"[.!?…\n]")
MIN_MAX_WORDS = 8


@dataclass(frozen=True, slots=True)
class Block:
    """A prunable piece of the page.

    ``path`` is the XPath of the element holding the block. ``span`` is None when the block is
    that whole element, else the ``[start, end)`` range of the element's content pieces (text
    chunks and inline children) that the block covers.
    """

    path: str
    span: tuple[int, int] | None
    text: str
    words: int


@dataclass(slots=True)
class _Piece:
    value: str | etree._Element  # a text chunk or a child element
    owner: int | None  # block index, or -1 - container index for an expanded child


@dataclass(slots=True)
class _Container:
    element: etree._Element
    parent: int | None
    path: str
    pieces: list[_Piece]


def _subtree_words(root: etree._Element, least: int) -> dict[etree._Element, int]:
    """Words under each element of over ``least`` words, in one walk. Only those can be expanded with
    limits of at least ``least``, so only theirs are read more than once (``_element_words`` counts the
    others): a count for every element would take more memory than the page."""
    words: dict[etree._Element, int] = {}
    totals = [0]  # words so far of each open element
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            totals.append(count_words(element.text))
            continue
        total = totals.pop()
        if total > least:
            words[element] = total
        totals[-1] += total + (count_words(element.tail) if element is not root else 0)
    return words


def _element_words(element: etree._Element) -> int:
    """Words under an element that the counts of ``_subtree_words`` leave out (small elements, or
    limits lower than those the counts were made for)."""
    if not len(element):
        return count_words(element.text)
    return sum(count_words(text) for text in element.itertext())


def _child_paths(element: etree._Element, path: str):
    """XPaths of an element's children, as lxml's getpath writes them, in one pass over the children
    (getpath itself rescans the siblings for every call: quadratic on wide pages)."""
    totals = Counter(child.tag for child in element)
    seen: Counter = Counter()
    paths = {}
    for child in element:
        seen[child.tag] += 1
        paths[child] = (
            f"{path}/{child.tag}[{seen[child.tag]}]" if totals[child.tag] > 1 else f"{path}/{child.tag}"
        )
    return paths.__getitem__


def _text_of(value: str | etree._Element) -> str:
    return value if isinstance(value, str) else " ".join(" ".join(value.itertext()).split())


class BlockTree:
    """Blocks of one cleaned page, and re-assembly of any subset of them with their ancestors."""

    def __init__(
        self,
        root: etree._Element,
        max_words: int = 256,
        limits: dict[etree._Element, int] | None = None,
        words: dict[etree._Element, int] | None = None,
    ):
        """``limits`` lowers ``max_words`` inside given elements (see :meth:`split_point`); ``words``
        reuses the subtree word counts of an earlier tree of the same root."""
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        self.root = root
        self.max_words = max_words
        self.limits = limits or {}
        self.words = (
            words
            if words is not None
            else _subtree_words(root, min(max_words, MIN_MAX_WORDS, *self.limits.values()))
        )
        self.containers: list[_Container] = []
        self.blocks: list[Block] = []
        self._block_pieces: list[tuple[etree._Element | str, ...]] = []
        self._block_container: list[int] = []
        self._container_limit: list[int] = []
        self._build()

    @classmethod
    def split(cls, root: etree._Element, max_words: int = 256, min_blocks: int = 2) -> BlockTree:
        """Build the tree, halving ``max_words`` while the page collapses into fewer than ``min_blocks``
        blocks (a page of one big block cannot be pruned)."""
        tree = cls(root, max_words)
        size = max_words
        while len(tree.blocks) < min_blocks and size > MIN_MAX_WORDS:
            size = max(size // 2, MIN_MAX_WORDS)
            smaller = cls(root, size, words=tree.words)
            if len(smaller.blocks) >= min_blocks:
                return smaller
        return tree

    def _build(self) -> None:
        root_limit = self.limits.get(self.root, self.max_words)
        stack: list[tuple[etree._Element, int | None, str, int]] = [
            (self.root, None, f"/{self.root.tag}", root_limit)
        ]
        while stack:  # depth-first, document order, no recursion (pages can be 2,048 deep)
            element, parent, path, limit = stack.pop()
            self.containers.append(_Container(element, parent, path, []))
            self._container_limit.append(limit)
            index = len(self.containers) - 1
            for child, child_path, child_limit in reversed(self._expand(index, limit)):
                stack.append((child, index, child_path, child_limit))
        # Point each expanded child's piece at its container.
        container_of = {id(c.element): i for i, c in enumerate(self.containers)}
        for container in self.containers:
            for piece in container.pieces:
                if piece.owner is None:
                    piece.owner = -1 - container_of[id(piece.value)]
        self._number_in_document_order()

    def _expand(self, index: int, limit: int) -> list[tuple[etree._Element, str, int]]:
        """Cut one container's content into blocks of at most ``limit`` words; return the children
        that need expanding, with their own limits."""
        words = self.words
        container = self.containers[index]
        element = container.element
        path = container.path
        child_path = _child_paths(element, path)
        expanded: list[tuple[etree._Element, str, int]] = []
        # Consecutive text and inline children become one block: (value, words, ends a sentence).
        run: list[tuple[str | etree._Element, int, bool]] = []
        run_words = 0
        for value in self._content(element):
            if isinstance(value, str):
                size = count_words(value)
                if size > limit or _MAY_END_SENTENCE.search(value):
                    pieces = [(text, count_words(text), ends) for text, ends in sentence_pieces(value, limit)]
                    del value  # a giant text is held as its pieces only, not twice while blocks are made
                else:
                    pieces = [(value, size, False)]
            else:
                size = words.get(value)
                if size is None:
                    size = _element_words(value)
                if size > self.limits.get(value, limit) or element is self.root or value.tag == "body":
                    pieces = []
                    self._close_run(index, path, run)
                    run, run_words = [], 0
                    expanded.append((value, child_path(value), self.limits.get(value, limit)))
                    container.pieces.append(_Piece(value, None))  # owner set once the child is built
                elif value.tag in _STANDALONE_TAGS:
                    pieces = []
                    self._close_run(index, path, run)
                    run, run_words = [], 0
                    piece = _Piece(value, None)
                    self._add_block(index, child_path(value), None, [piece], size)
                    container.pieces.append(piece)
                else:
                    pieces = [(value, size, value.tag == "br")]
            for piece in pieces:
                if run and run_words + piece[1] > limit:
                    # Close the block after its last complete sentence, so that no sentence is cut
                    # in two unless it alone overflows the limit.
                    cut = next((i + 1 for i in reversed(range(len(run))) if run[i][2]), len(run))
                    self._close_run(index, path, run[:cut])
                    run = run[cut:]
                    run_words = sum(size for _, size, _ in run)
                    if run and run_words + piece[1] > limit:
                        self._close_run(index, path, run)
                        run, run_words = [], 0
                run.append(piece)
                run_words += piece[1]
        self._close_run(index, path, run)
        return expanded

    def _close_run(self, index: int, path: str, run: list[tuple[str | etree._Element, int, bool]]) -> None:
        values: list[str | etree._Element] = []
        for value, _, _ in run:  # neighbouring sentences of one text node are one piece again
            if isinstance(value, str) and values and isinstance(values[-1], str):
                values[-1] += value
            else:
                values.append(value)
        if any(not isinstance(value, str) or value.strip() for value in values):
            pieces = self.containers[index].pieces
            run_pieces = [_Piece(value, None) for value in values]
            words = sum(size for _, size, _ in run)
            self._add_block(index, path, (len(pieces), len(pieces) + len(run_pieces)), run_pieces, words)
            pieces.extend(run_pieces)

    def _number_in_document_order(self) -> None:
        """Blocks were numbered container by container; renumber them in reading order."""
        order: list[int] = []
        stack = [(0, 0)]  # (container, next piece)
        while stack:
            container, position = stack.pop()
            pieces = self.containers[container].pieces
            while position < len(pieces):
                owner = pieces[position].owner
                position += 1
                if owner < 0:
                    stack.append((container, position))
                    stack.append((-1 - owner, 0))
                    break
                if not order or order[-1] != owner:
                    order.append(owner)
        new_index = {old: new for new, old in enumerate(order)}
        for container in self.containers:
            for piece in container.pieces:
                if piece.owner >= 0:
                    piece.owner = new_index[piece.owner]
        self.blocks = [self.blocks[old] for old in order]
        self._block_pieces = [self._block_pieces[old] for old in order]
        self._block_container = [self._block_container[old] for old in order]

    @staticmethod
    def _content(element: etree._Element):
        if element.text:
            yield element.text
        for child in element:
            yield child
            if child.tail:
                yield child.tail

    def _add_block(self, container: int, path: str, span, pieces: list[_Piece], words: int) -> None:
        for piece in pieces:
            piece.owner = len(self.blocks)
        text = " ".join(_text_of(p.value) for p in pieces).strip()
        self.blocks.append(Block(path, span, " ".join(text.split()), words))
        self._block_pieces.append(tuple(p.value for p in pieces))
        self._block_container.append(container)

    def split_point(self, block: int) -> tuple[etree._Element, int]:
        """The element whose limit decides the block's extent, and that limit: a ``limits`` entry
        below it for that element splits the block (and its siblings in the same run) finer."""
        container = self._block_container[block]
        if self.blocks[block].span is None:  # a whole element, kept whole while within its limit
            element = self._block_pieces[block][0]
            return element, self.limits.get(element, self._container_limit[container])
        return self.containers[container].element, self._container_limit[container]

    def ancestors(self, block: int) -> list[int]:
        """Indices of the containers a block needs, innermost first."""
        chain = []
        container: int | None = self._block_container[block]
        while container is not None:
            chain.append(container)
            container = self.containers[container].parent
        return chain

    def container_markup(self, container: int) -> str:
        """The container's own tags (what it costs in HTML output beyond its blocks)."""
        element = self.containers[container].element
        shell = etree.Element(element.tag, dict(element.attrib))
        return etree.tostring(shell, method="html", encoding="unicode")

    def block_html(self, block: int) -> str:
        return "".join(
            html_escape.escape(value, quote=False)
            if isinstance(value, str)
            else etree.tostring(_detached(value), method="html", encoding="unicode")
            for value in self._block_pieces[block]
        )

    def block_fragment(self, block: int) -> etree._Element:
        """The block inside a copy of its holding element (for Markdown/text rendering)."""
        element = self.containers[self._block_container[block]].element
        return _assemble(element, [(value, block) for value in self._block_pieces[block]])

    def assemble(self, kept: set[int]) -> etree._Element | None:
        """A new tree holding the kept blocks with their ancestors, in document order; None if empty."""
        built: list[etree._Element | None] = [None] * len(self.containers)
        for index in reversed(range(len(self.containers))):  # children are built before their parent
            parts = []
            for piece in self.containers[index].pieces:
                if piece.owner < 0:
                    child = built[-1 - piece.owner]
                    if child is not None:
                        parts.append((child, piece.owner))
                elif piece.owner in kept:
                    parts.append((piece.value, piece.owner))
            if parts:
                built[index] = _assemble(self.containers[index].element, parts, copy_elements=True)
        return built[0]


def _detached(element: etree._Element) -> etree._Element:
    copied = copy.deepcopy(element)
    copied.tail = None
    return copied


def _assemble(template: etree._Element, parts, copy_elements: bool = True) -> etree._Element:
    """An element with ``template``'s tag and attributes holding ``parts`` ((value, owner) pairs);
    a space separates inline content that came from different blocks."""
    out = etree.Element(template.tag, dict(template.attrib))
    last: etree._Element | None = None
    previous_owner = None
    previous_inline = False
    for value, owner in parts:
        inline = isinstance(value, str) or value.tag not in _STANDALONE_TAGS
        if previous_owner is not None and owner != previous_owner and (inline or previous_inline):
            _append_text(out, last, " ")
        if isinstance(value, str):
            _append_text(out, last, value)
        else:
            child = _detached(value) if copy_elements and owner >= 0 else value
            out.append(child)
            last = child
        previous_owner, previous_inline = owner, inline
    return out


def _append_text(out: etree._Element, last: etree._Element | None, text: str) -> None:
    if last is None:
        out.text = (out.text or "") + text
    else:
        last.tail = (last.tail or "") + text
