"""Pruning a large page without its tree in memory.

The page is cleaned by :mod:`tokenprune.context.stream` into lossless XML, held compressed and read
back incrementally: a first pass counts the words of every element, a second cuts the page into the blocks
:class:`~tokenprune.context.blocks.BlockTree` makes (the counts decide at an element's start whether it
is expanded), freeing each element once its block is made. Blocks are held as a table (texts, word
counts, token costs, where they sit) rather than as elements; the kept blocks' elements are read back
from the XML when the pruned page is written.
"""

from __future__ import annotations

import html as html_escape
import zlib
from array import array
from collections import Counter

from lxml import etree

from tokenprune.context.blocks import (
    _MAY_END_SENTENCE,
    _STANDALONE_TAGS,
    MIN_MAX_WORDS,
    _assemble,
    _text_of,
)
from tokenprune.context.html_pruner import KeptBlock, PageBlocks
from tokenprune.context.render import render
from tokenprune.context.stream import stream_clean_xml
from tokenprune.context.text import count_words, sentence_pieces
from tokenprune.context.tokens import TokenCounter

_FEED = 1 << 16  # bytes of XML parsed at a time
# Block texts counted per tokenizer call, and characters: a tokenizer takes tens of bytes per character
# of the texts it counts at once.
_BATCH = 4096
_BATCH_CHARACTERS = 1 << 20


def _compressed(xml: str) -> bytes:
    """The XML in UTF-8, compressed: it is held while the page is pruned, and read back a few times."""
    compressor = zlib.compressobj(1)
    parts = [
        compressor.compress(xml[offset : offset + _FEED].encode("utf-8"))
        for offset in range(0, len(xml), _FEED)
    ]
    parts.append(compressor.flush())
    return b"".join(parts)


def _chunks(data: bytes):
    decompressor = zlib.decompressobj()
    view = memoryview(data)
    for offset in range(0, len(data), _FEED):
        chunk: bytes | memoryview = view[offset : offset + _FEED]
        # At most _FEED bytes out at a time: a page of one repeated word compresses a thousandfold.
        while chunk:
            yield decompressor.decompress(chunk, _FEED)
            chunk = decompressor.unconsumed_tail
    yield decompressor.flush()


def _events(data: bytes):
    parser = etree.XMLPullParser(events=("start", "end"), huge_tree=True, resolve_entities=False)
    for chunk in _chunks(data):
        parser.feed(chunk)
        yield from parser.read_events()
    parser.close()
    yield from parser.read_events()


def _word_counts(data: bytes) -> array:
    """Words under each element, in document order (the counts of ``blocks._subtree_words``)."""
    words = array("i")
    stack: list[list] = []  # [element index, words so far, last child]
    for event, element in _events(data):
        if event == "start":
            if stack:
                frame = stack[-1]
                if frame[2] is not None:  # its tail is complete: count it and free it
                    frame[1] += count_words(frame[2].tail)
                    element.getparent().remove(frame[2])
                frame[2] = element
            stack.append([len(words), 0, None])
            words.append(0)
        else:
            index, total, last = stack.pop()
            total += count_words(element.text)
            if last is not None:
                total += count_words(last.tail)
                element.remove(last)
            words[index] = total
            if stack:
                stack[-1][1] += total
    return words


def _settled(element: etree._Element) -> etree._Element:
    """A copy of an element (without its tail) of a parse still running: libxml2 writes the HTML of
    those with character references for non-ASCII text, and of finished documents without."""
    return etree.fromstring(etree.tostring(element, encoding="utf-8", with_tail=False), _XML)


_XML = etree.XMLParser(huge_tree=True, resolve_entities=False)


class _Open:
    """An expanded element (a container) the split has entered."""

    __slots__ = ("index", "key", "element", "limit", "run", "run_words", "pieces", "owners", "seen", "last",
                 "text_done")  # fmt: skip

    def __init__(self, index: int, key: int, element: etree._Element, limit: int):
        self.index = index
        self.key = key  # the element's place in document order
        self.element = element
        self.limit = limit
        self.run: list[tuple] = []  # (value, words, ends a sentence) of the open block
        self.run_words = 0
        self.pieces = 0
        self.owners = array("i")  # per content piece: its block, or -1 - the expanded child's container
        self.seen: Counter = Counter()  # child tags so far
        self.last: etree._Element | None = None  # the last child, whose tail may still grow
        self.text_done = False


class BlockTable:
    """The blocks ``BlockTree(root, max_words, limits)`` makes of a cleaned page held as XML, with
    their costs in ``output`` (``HtmlDocument.unit_cost``); ``collect`` keeps the content pieces of
    those blocks instead of pricing them."""

    def __init__(self, xml: bytes, words: array, max_words: int, limits: dict[int, int], output: str,
                 counter: TokenCounter | None, collect: set[int] | None = None):  # fmt: skip
        self.xml = xml
        self.words_of = words
        self.max_words = max_words
        self.limits = limits
        self.output = output
        self.counter = counter
        self.collect = collect
        self.collected: dict[int, tuple] = {}
        self.size = 0  # blocks
        self.tags: list[str] = []
        self._tag_ids: dict[str, int] = {}
        # blocks
        self.texts: list[str] = []
        self.words = array("i")
        self.holder = array("i")  # container
        self.child_tag = array("i")  # a whole element: its tag and its number among same-tag siblings
        self.child_number = array("i")
        self.span_start = array("i")  # -1: the whole element
        self.span_end = array("i")
        self.split_key = array("i")  # split_point: the element (document order) and its limit
        self.split_limit = array("i")
        self.costs = array("i")
        self._pending: list[str] = []
        self._pending_characters = 0
        # containers
        self.parent = array("i")
        self.tag = array("i")
        self.number = array("i")
        self.attrib: list[dict | None] = []
        self.owners: list[array] = []
        self.child_totals: list[Counter | None] = []
        self._split()
        self._count()

    def _tag_id(self, tag: str) -> int:
        index = self._tag_ids.get(tag)
        if index is None:
            index = self._tag_ids[tag] = len(self.tags)
            self.tags.append(tag)
        return index

    def _split(self) -> None:
        stack: list[_Open] = []
        element_index = -1
        inside = 0  # depth inside a child that is one piece of its container
        piece: tuple = ()
        for event, element in _events(self.xml):
            if self.collect is not None and len(self.collected) == len(self.collect):
                return  # every block asked for is read back
            if event == "start":
                element_index += 1
                if inside:
                    inside += 1
                    continue
                if not stack:
                    stack.append(
                        self._open(element, element_index, -1, 0, self.limits.get(0, self.max_words))
                    )
                    continue
                current = stack[-1]
                self._text_before_child(current)
                current.last = element
                tag = element.tag
                current.seen[tag] += 1
                limit = self.limits.get(element_index, current.limit)
                if current.index == 0 or tag == "body" or self.words_of[element_index] > limit:
                    self._close_run(current, current.run)
                    current.run, current.run_words = [], 0
                    container = self._open(element, element_index, current.index, current.seen[tag], limit)
                    current.owners.append(-1 - container.index)
                    current.pieces += 1
                    stack.append(container)
                else:
                    inside = 1
                    piece = (element_index, current.seen[tag], limit)
                continue
            if inside:
                inside -= 1
                if not inside:
                    self._piece(stack[-1], element, *piece)
                continue
            current = stack.pop()
            self._text_before_child(current)
            self._close_run(current, current.run)
            self.owners[current.index] = current.owners
            self.child_totals[current.index] = current.seen or None

    def _open(self, element: etree._Element, index: int, parent: int, number: int, limit: int) -> _Open:
        self.parent.append(parent)
        self.tag.append(self._tag_id(element.tag))
        self.number.append(number)
        self.attrib.append(dict(element.attrib) or None)
        self.owners.append(array("i"))
        self.child_totals.append(None)
        return _Open(len(self.parent) - 1, index, element, limit)

    def _text_before_child(self, current: _Open) -> None:
        """A child starts or the container ends: the text before it is complete."""
        if current.last is None:
            if current.text_done:
                return
            current.text_done = True
            held = [current.element.text]
            current.element.text = None
        else:
            last, current.last = current.last, None
            current.element.remove(last)
            held = [last.tail]
            last.tail = None
        self._text(current, held)

    def _text(self, current: _Open, held: list[str | None]) -> None:
        """Cut a text into pieces; it comes in a list that gives it up, so that a giant text is held as
        its pieces only, not twice while blocks are made."""
        value = held.pop()
        if not value:
            return
        limit = current.limit
        size = count_words(value)
        if size > limit or _MAY_END_SENTENCE.search(value):
            pieces = [(text, count_words(text), ends) for text, ends in sentence_pieces(value, limit)]
            del value
        else:
            pieces = [(value, size, False)]
        for item in pieces:
            self._add(current, item)

    def _piece(self, current: _Open, element: etree._Element, index: int, number: int, limit: int) -> None:
        """A child that is not expanded is complete."""
        size = self.words_of[index]
        if element.tag in _STANDALONE_TAGS:
            self._close_run(current, current.run)
            current.run, current.run_words = [], 0
            block = self._add_block(current, (element,), size, None, (element.tag, number), index, limit)
            current.owners.append(block)
            current.pieces += 1
        else:
            self._add(current, (element, size, element.tag == "br"))

    def _add(self, current: _Open, item: tuple) -> None:
        run = current.run
        limit = current.limit
        if run and current.run_words + item[1] > limit:
            # as BlockTree: close the block after its last complete sentence
            cut = next((i + 1 for i in reversed(range(len(run))) if run[i][2]), len(run))
            self._close_run(current, run[:cut])
            run = current.run = run[cut:]
            current.run_words = sum(size for _, size, _ in run)
            if run and current.run_words + item[1] > limit:
                self._close_run(current, run)
                run = current.run = []
                current.run_words = 0
        run.append(item)
        current.run_words += item[1]

    def _close_run(self, current: _Open, run: list[tuple]) -> None:
        values: list = []
        for value, _, _ in run:
            if isinstance(value, str) and values and isinstance(values[-1], str):
                values[-1] += value
            else:
                values.append(value)
        if any(not isinstance(value, str) or value.strip() for value in values):
            words = sum(size for _, size, _ in run)
            span = (current.pieces, current.pieces + len(values))
            block = self._add_block(current, values, words, span, None, current.key, current.limit)
            current.owners.extend([block] * len(values))
            current.pieces += len(values)

    def _add_block(self, current: _Open, values, words: int, span, child, key: int, limit: int) -> int:
        block = self.size
        self.size += 1
        if self.collect is not None:  # reading pieces back: the table was made before
            if block in self.collect:
                self.collected[block] = tuple(
                    value if isinstance(value, str) else _settled(value) for value in values
                )
            return block
        text = " ".join(_text_of(value) for value in values).strip()
        text = " ".join(text.split())
        self.texts.append(text)
        self.words.append(words)
        self.holder.append(current.index)
        self.child_tag.append(self._tag_id(child[0]) if child is not None else -1)
        self.child_number.append(child[1] if child is not None else -1)
        self.span_start.append(span[0] if span else -1)
        self.span_end.append(span[1] if span else -1)
        self.split_key.append(key)
        self.split_limit.append(limit)
        if self.output == "html":
            self._pending.append(
                "".join(
                    html_escape.escape(value, quote=False)
                    if isinstance(value, str)
                    else etree.tostring(_settled(value), method="html", encoding="unicode")
                    for value in values
                )
            )
        else:
            rendered = render(_assemble(current.element, [(value, block) for value in values]), self.output)
            self._pending.append(text if rendered == text else rendered)
        self._pending_characters += len(self._pending[-1])
        if len(self._pending) >= _BATCH or self._pending_characters >= _BATCH_CHARACTERS:
            self._count()
        return block

    def _count(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._pending_characters = 0
        unique = list(dict.fromkeys(pending))
        counts = dict(zip(unique, self.counter.many(unique)))
        extra = 0 if self.output == "html" else 1  # the line break between blocks
        self.costs.extend(counts[text] + extra for text in pending)

    # --- what HtmlDocument needs from its BlockTree ---

    def container_markup(self, container: int) -> str:
        shell = etree.Element(self.tags[self.tag[container]], self.attrib[container] or {})
        return etree.tostring(shell, method="html", encoding="unicode")

    def ancestors(self, block: int) -> list[int]:
        chain = []
        container = self.holder[block]
        while container >= 0:
            chain.append(container)
            container = self.parent[container]
        return chain

    def _container_path(self, container: int) -> str:
        names = []
        while container >= 0:
            parent = self.parent[container]
            tag = self.tags[self.tag[container]]
            names.append(self._step(parent, tag, self.number[container]) if parent >= 0 else tag)
            container = parent
        return "/" + "/".join(reversed(names))

    def _step(self, container: int, tag: str, number: int) -> str:
        totals = self.child_totals[container]
        return f"{tag}[{number}]" if totals is not None and totals[tag] > 1 else tag

    def path(self, block: int) -> str:
        path = self._container_path(self.holder[block])
        if self.child_tag[block] < 0:
            return path
        return f"{path}/{self._step(self.holder[block], self.tags[self.child_tag[block]], self.child_number[block])}"

    def span(self, block: int) -> tuple[int, int] | None:
        return None if self.span_start[block] < 0 else (self.span_start[block], self.span_end[block])

    def assemble(self, kept: set[int], pieces: dict[int, tuple]) -> etree._Element | None:
        """``BlockTree.assemble`` from the kept blocks' content pieces."""
        built: list[etree._Element | None] = [None] * len(self.parent)
        for index in reversed(range(len(self.parent))):
            parts = []
            position = 0
            previous = None
            for owner in self.owners[index]:
                if owner < 0:
                    child = built[-1 - owner]
                    if child is not None:
                        parts.append((child, owner))
                elif owner in kept:
                    position = position + 1 if owner == previous else 0
                    parts.append((pieces[owner][position], owner))
                previous = owner
            if parts:
                template = etree.Element(self.tags[self.tag[index]], self.attrib[index] or {})
                built[index] = _assemble(template, parts, copy_elements=True)
        return built[0]


class StreamDocument(PageBlocks):
    """``HtmlDocument`` of a large page, its blocks in a :class:`BlockTable`; elements are named by
    their place in document order (``finer_limits``, ``refined``)."""

    def __init__(self, xml: bytes, words: array, table: BlockTable, counter: TokenCounter):
        self.xml = xml
        self.words = words
        self.table = table
        self.output = table.output
        self.counter = counter
        self._container_costs: list[int] | None = None
        self._pieces: dict[int, tuple] = {}

    @classmethod
    def build(cls, html: str, output: str, counter: TokenCounter, max_words: int, keep_hidden: bool):
        """The page's document, split as ``BlockTree.split`` splits; None where the page must be
        cleaned as one tree."""
        xml = stream_clean_xml(html, keep_hidden)
        if xml is None:
            return None
        xml = _compressed(xml)
        words = _word_counts(xml)
        table = BlockTable(xml, words, max_words, {}, output, counter)
        size = max_words
        while table.size < 2 and size > MIN_MAX_WORDS:  # BlockTree.split's min_blocks=2
            size = max(size // 2, MIN_MAX_WORDS)
            smaller = BlockTable(xml, words, size, {}, output, counter)
            if smaller.size >= 2:
                return cls(xml, words, smaller, counter)
        return cls(xml, words, table, counter)

    @property
    def units(self) -> int:
        return self.table.size

    def refined(self, limits: dict) -> StreamDocument:
        """The same page with lower word limits inside some elements (``finer_limits``)."""
        table = self.table
        limits = {**table.limits, **limits}
        finer = BlockTable(self.xml, self.words, table.max_words, limits, self.output, self.counter)
        return StreamDocument(self.xml, self.words, finer, self.counter)

    def unit_texts(self) -> list[str]:
        return self.table.texts

    def unit_cost(self, unit: int) -> int:
        return self.table.costs[unit]

    def unit_parents(self, unit: int) -> list[tuple[object, int]]:
        if self.output != "html":
            return []
        if self._container_costs is None:
            markup = [self.table.container_markup(c) for c in range(len(self.table.parent))]
            unique = list(dict.fromkeys(markup))
            counts = dict(zip(unique, self.counter.many(unique)))
            self._container_costs = [counts[text] for text in markup]
        return [(container, self._container_costs[container]) for container in self.table.ancestors(unit)]

    def render(self, kept: set[int]) -> str:
        missing = kept - self._pieces.keys()
        if missing:  # read back from the XML: every block the packer may keep is among the first asked
            table = self.table
            again = BlockTable(
                self.xml, self.words, table.max_words, table.limits, self.output, None, missing
            )
            self._pieces.update(again.collected)
        return render(self.table.assemble(kept, self._pieces), self.output)

    def unit_words(self, unit: int) -> int:
        return self.table.words[unit]

    def split_point(self, unit: int) -> tuple[int, int]:
        return self.table.split_key[unit], self.table.split_limit[unit]

    def full_text(self) -> str:
        return render(etree.fromstring(zlib.decompress(self.xml), _XML), self.output)

    def kept_blocks(self, kept: list[tuple[int, float | None]]) -> list[KeptBlock]:
        table = self.table
        return [KeptBlock(table.path(i), table.span(i), score, table.texts[i]) for i, score in kept]
