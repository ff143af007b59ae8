"""Cleaning a large page without ever holding its whole tree.

libxml2's tree of a page of small elements takes ~18 bytes per byte of markup, so ``clean_html`` on a
large page parses it incrementally instead and applies :func:`~tokenprune.context.clean.clean_tree`'s
rules element by element as the parser completes them, with the same result. An element's cleaning
depends on its own content, and its tail on the siblings that follow it up to the next one that is
kept, so each child is final once the next kept sibling is complete. From the second final child of an
element on, final children leave the tree: they are serialised (text escaped as in the full
serialisation) onto a list of strings held for the element, and one placeholder stands in the tree
for all of them. The placeholders are replaced when the whole page is written out.

noscript and template content is revealed when it outweighs the rest of the page: pages that hold
any are read twice, first to count the words. Pages with markup after ``</html>`` (the parser puts it
back into elements already finished) and pages nested past libxml2's depth limit are cleaned as one
tree (``None`` here).
"""

from __future__ import annotations

import re

from lxml import etree

from tokenprune.context.clean import (
    _NOT_XML_TEXT,
    _PRESERVE_WHITESPACE,
    DROPPED_TAGS,
    FALLBACK_TAGS,
    _cut_attributes,
    _drop_tree,
    _is_empty,
    _is_hidden,
    _is_wrapper,
    _keep_attributes,
    _makes_invalid_characters,
    _remove_keeping_tail,
    _template_content,
    _unwrap,
    _visible_words,
    collapse_tail,
    collapse_text,
    make_names_safe,
    page_text,
    xml_text,
)
from tokenprune.context.render import _TextWriter, check_output
from tokenprune.context.text import count_words

_FEED = 1 << 16  # bytes parsed at a time: the tree of a chunk is held until its events are handled
# Pages with noscript, template or script elements need a first pass: their content may be revealed
# when it outweighs the rest of the page (a script is a template by a type the parser may decode).
_MAY_REVEAL = re.compile(r"<(?:noscript|template|script)", re.I)
# Pages that may have a start tag that parse_html cuts (8,192 bytes are at least 2,048 characters)
# are encoded whole and cut first; others are encoded a chunk at a time as they are parsed.
_MAY_CUT = re.compile(r"<[A-Za-z][^\s/<>]*[^<>]{2048,}", re.ASCII)
_ROPE_TAG = "tokenprune-rope"  # a page's own elements of this name lose their id (not a kept attribute)
_ROPE = re.compile(rf'<{_ROPE_TAG} id="(\d+)"(?:></{_ROPE_TAG}>|/>)')
_SMALL = 1 << 16  # characters of ropes written into the element that holds them
_HELD = 64  # final elements an element keeps in the tree before it writes the next ones out
_JOIN = 512  # strings of a rope joined at a time
_XML_CHUNK = 1 << 16  # characters of serialised XML re-parsed at a time when rendering text
_STRIP, _HIDDEN, _EMPTY, _WRAPPER, _KEPT = range(5)


class _Reopened(Exception):
    pass


class _Open:
    """An element the walk has entered and not yet finished cleaning."""

    __slots__ = ("element", "preserve", "inert", "kind", "previous", "last_kept", "group", "finals", "rope",
                 "rope_id", "loose", "leading", "reveal", "held")  # fmt: skip

    def __init__(self, element: etree._Element, preserve: bool, inert: bool, kind: int):
        self.element = element
        self.preserve = preserve
        self.inert = inert  # inside (or itself) an element that is dropped whole
        self.kind = kind  # _STRIP, _HIDDEN (dropped whole) or _KEPT (cleaned; decided at its end)
        self.previous: etree._Element | None = None  # the last child that started
        self.last_kept: tuple | None = None  # the last kept child, whose tail may still grow
        self.group: list[tuple] = []  # (element, kind, preserve) of the children after it
        self.finals = 0  # children whose cleaning is complete
        self.rope: list[str] | None = None  # the serialised final children after the first
        self.rope_id = -1
        self.loose = 0  # strings at the end of the rope not yet joined
        self.leading = True  # a hidden element: only dropped children so far
        self.reveal = False  # noscript or template content that is the page's content
        self.held = 0  # final elements below it still in the tree


class _Streamer:
    def __init__(self, keep_hidden: bool, strings: bool, method: str, reveal: list[bool] | None = None):
        self.keep_hidden = keep_hidden
        self.reveal = reveal  # per noscript, template and script of the page: whether it is revealed
        self.fallbacks = 0
        self.synthetic = False  # walking revealed template content, which the parser never saw
        self.strings = strings  # the page has character references lxml refuses in text
        self.method = method
        self.ropes: list[list[str]] = []
        self.flat: list[bool] = []  # whether a rope's strings hold no placeholders
        self.stack: list[_Open] = []
        self.root: etree._Element | None = None

    def run(self, page: str | bytes) -> bool:
        """Clean the page; False where it must be cleaned as one tree (nested too deep, or empty)."""
        return _parse(page, self._start, self._end) and self.root is not None and not self.stack

    # The parser may still be appending to the tail of the element that ended last and to the open
    # elements' last children: only text and elements before those are edited.

    def _start(self, element: etree._Element) -> None:
        parent = self.stack[-1] if self.stack else None
        if (parent is None and self.root is not None) or (
            parent is not None and element.getparent() is not parent.element
        ):
            raise _Reopened  # markup after </html> goes back into finished elements
        make_names_safe(element, self.strings)
        if parent is None:
            self.root = element
            # the root is never dropped (and keeps its attributes when hidden)
            self.stack.append(_Open(element, element.tag in _PRESERVE_WHITESPACE, False, _KEPT))
            return
        self._next_child(parent, element)
        tag = element.tag
        reveal = False
        if tag in FALLBACK_TAGS and self.reveal is not None and not self.synthetic:
            reveal = self.reveal[self.fallbacks] and not parent.inert
            self.fallbacks += 1
        if reveal and tag == "script":
            kind = _KEPT  # replaced by its content, which has no attributes
        elif tag in DROPPED_TAGS and not reveal:
            kind = _STRIP
        elif not self.keep_hidden and _is_hidden(element):
            kind = _HIDDEN
        else:
            kind = _KEPT
        inert = parent.inert or kind != _KEPT
        self.stack.append(_Open(element, tag in _PRESERVE_WHITESPACE or parent.preserve, inert, kind))
        self.stack[-1].reveal = reveal

    def _next_child(self, parent: _Open, element: etree._Element) -> None:
        """A child starts: the text before it is complete."""
        previous = parent.previous
        if previous is None:
            if self.strings:
                parent.element.text = xml_text(parent.element.text)
        else:
            if self.strings:
                previous.tail = xml_text(previous.tail)
            if parent.inert:
                self._forget(parent, previous)
        parent.previous = element

    def _forget(self, parent: _Open, child: etree._Element) -> None:
        """Remove a child of an element dropped whole. Only a hidden element's text after its leading
        dropped children (stripped before hidden elements go) matters: it decides whether a space
        takes the element's place."""
        if parent.kind == _HIDDEN and parent.leading:
            if child.tag in DROPPED_TAGS:
                parent.element.text = (parent.element.text or "") + (child.tail or "")
            else:
                parent.leading = False
        parent.element.remove(child)

    def _end(self, element: etree._Element) -> None:
        current = self.stack[-1]
        if element is not current.element:
            raise _Reopened
        last = current.previous
        if last is None:
            if self.strings:
                element.text = xml_text(element.text)
        else:
            if self.strings:
                last.tail = xml_text(last.tail)
            if current.inert:
                self._forget(current, last)
        if current.reveal:
            self._reveal(element)
        self.stack.pop()
        parent = self.stack[-1] if self.stack else None
        if current.inert:
            if not parent.inert:  # dropped whole, as its parent's cleaning decides
                parent.group.append((element, current.kind, current.preserve, 0))
            return
        if parent is not None or self.keep_hidden or not _is_hidden(element):
            _keep_attributes(element)
        self._settle(current, None)
        if parent is None:  # the root: never dropped or unwrapped
            collapse_text(element, current.preserve)
            collapse_tail(element, current.preserve)
            return
        collapse_text(element, current.preserve)
        kind = _EMPTY if _is_empty(element) else _WRAPPER if _is_wrapper(element) else _KEPT
        record = (element, kind, current.preserve, current.held)
        if kind == _KEPT:
            self._settle(parent, record)
        else:
            parent.group.append(record)

    def _reveal(self, element: etree._Element) -> None:
        """Noscript and template content becomes a div; a template script becomes a div of its parsed
        content, whose elements are then cleaned as if parsed here."""
        if element.tag != "script":
            element.tag = "div"
            return
        content = _template_content(element)
        element.tag = "div"
        element.attrib.clear()
        element.text = content.text
        children = list(content)
        element.extend(children)
        events = [event for child in children for event in etree.iterwalk(child, events=("start", "end"))]
        self.synthetic = True
        for event, child in events:
            (self._start if event == "start" else self._end)(child)
        self.synthetic = False

    def _settle(self, parent: _Open, kept: tuple | None) -> None:
        """Clean the children between the last kept child and ``kept`` (None: the parent's end) in
        clean_tree's order: strip, drop hidden, then in reverse document order drop empty elements and
        unwrap wrappers; the last kept child's tail is then complete."""
        group, parent.group = parent.group, []
        for element, kind, _, _ in group:
            if kind == _STRIP:
                _remove_keeping_tail(element)
        for element, kind, _, _ in group:
            if kind == _HIDDEN:
                _drop_tree(element)
        finals = []
        for element, kind, preserve, held in reversed(group):
            if kind in (_EMPTY, _WRAPPER):
                collapse_text(element, preserve)
                collapse_tail(element, preserve)
                if _is_empty(element):
                    _drop_tree(element)
                elif _is_wrapper(element):
                    finals.append((element[0], held - 1))
                    _unwrap(element)
        if parent.last_kept is not None:
            element, _, preserve, held = parent.last_kept
            collapse_tail(element, preserve)
            finals.append((element, held))
        for element, held in reversed(finals):
            self._final(parent, element, held)
        parent.last_kept = kept

    def _final(self, parent: _Open, child: etree._Element, held: int) -> None:
        """A child's cleaning is complete: it stays in the tree while its parent holds few elements
        (the first always stays: its parent's cleaning reads it), else it is written out."""
        parent.finals += 1
        if parent.rope is None and (parent.finals == 1 or parent.held + held < _HELD):
            parent.held += held + 1
            return
        text = self._serialise(child)
        if parent.rope is None:
            parent.rope = [text]
            parent.rope_id = len(self.ropes)
            self.ropes.append(parent.rope)
            self.flat.append(True)
            placeholder = etree.Element(_ROPE_TAG, id=str(parent.rope_id))
            parent.element.replace(child, placeholder)
        else:
            rope = parent.rope
            rope.append(text)
            parent.loose += 1
            if parent.loose == _JOIN:  # each string joined once: fewer objects, no quadratic copying
                rope[-_JOIN:] = ["".join(rope[-_JOIN:])]
                parent.loose = 0
            parent.element.remove(child)
        if _ROPE.search(text):
            self.flat[parent.rope_id] = False

    def _serialise(self, element: etree._Element) -> str:
        """The element with its tail, written out; the ropes in it are written in too where they are
        small (a rope per small element would take more memory than the text)."""
        text = etree.tostring(element, method=self.method, encoding="unicode", with_tail=True)
        markers = list(_ROPE.finditer(text))
        if not markers:
            return text
        ropes = [int(marker.group(1)) for marker in markers]
        if not all(self.flat[i] for i in ropes) or sum(len(p) for i in ropes for p in self.ropes[i]) > _SMALL:
            return text
        pieces = self._expand(text)
        for i in ropes:
            self.ropes[i] = None  # type: ignore[call-overload]
        return "".join(pieces)

    def html(self) -> str:
        return self.serialised("html")

    def xml(self) -> str:
        return self.serialised("xml")

    def serialised(self, method: str) -> str:
        """The cleaned page written out, its ropes (serialised by ``self.method``) written in."""
        text = etree.tostring(self.root, method=method, encoding="unicode")
        self.root = None  # the tree goes before the page is written out
        pieces = self._expand(text)
        del text
        return "".join(pieces)

    def _expand(self, text: str) -> list[str]:
        """The pieces of ``text`` with its ropes written in (without recursion: ropes nest as deep as
        the page)."""
        pieces: list[str] = []
        stack = [iter((text,))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
            elif isinstance(item, int):
                stack.append(iter(self.ropes[item]))
            else:
                items: list[str | int] = []
                start = 0
                for marker in _ROPE.finditer(item):
                    items += [item[start : marker.start()], int(marker.group(1))]
                    start = marker.end()
                if items:
                    items.append(item[start:])
                    stack.append(iter(items))
                else:
                    pieces.append(item)
        return pieces

    def text(self, markdown: bool) -> str:
        """The cleaned page rendered by ``render``'s writer, the ropes' elements parsed back a chunk at
        a time (their XML serialisation is lossless)."""
        writer = _TextWriter(markdown=markdown)
        stack: list = [(False, etree.iterwalk(self.root, events=("start", "end")))]
        while stack:  # without recursion: ropes nest as deep as the page
            rope, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
            elif rope:
                stack.append((False, etree.iterwalk(item, events=("start", "end"))))
            else:
                event, element = item
                if not isinstance(element.tag, str):
                    continue
                if element.tag == _ROPE_TAG and element.get("id") is not None and not len(element):
                    if event == "start":
                        items.skip_subtree()
                        stack.append((True, self._rope_elements(self.ropes[int(element.get("id"))])))
                    continue
                (writer.start if event == "start" else writer.end)(element)
        return writer.result()

    @staticmethod
    def _rope_elements(rope: list[str]):
        parser = etree.XMLParser(huge_tree=True, resolve_entities=False)
        chunk: list[str] = []
        size = 0
        for index, text in enumerate(rope):
            chunk.append(text)
            size += len(text)
            if size >= _XML_CHUNK or index == len(rope) - 1:
                yield from etree.fromstring("<r>" + "".join(chunk) + "</r>", parser)
                chunk, size = [], 0


def _chunks(page: str | bytes):
    """The page in UTF-8, a chunk at a time."""
    if isinstance(page, bytes):
        view = memoryview(page)
        for offset in range(0, len(page), _FEED):
            yield bytes(view[offset : offset + _FEED])
    else:
        for offset in range(0, len(page), _FEED):
            yield page[offset : offset + _FEED].encode("utf-8")


def _parse(page: str | bytes, start, end) -> bool:
    """Parse incrementally, handing each element to ``start`` and ``end`` as the parser completes it;
    False where the page cannot be cleaned this way."""
    parser = etree.HTMLPullParser(
        events=("start", "end"), encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True
    )
    try:
        for chunk in _chunks(page):
            parser.feed(chunk)
            for event, element in parser.read_events():
                (start if event == "start" else end)(element)
        parser.close()
        for event, element in parser.read_events():
            (start if event == "start" else end)(element)
    except (_Reopened, etree.XMLSyntaxError):  # the latter: no element at all
        return False
    return not any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log)


class _Survey:
    """A first pass for ``_reveal_fallback_content``: the words of each noscript, template and
    template script, and the words the page shows (counted as ``_visible_words`` counts them)."""

    def __init__(self, keep_hidden: bool, strings: bool):
        self.keep_hidden = keep_hidden
        self.strings = strings
        self.stack: list[list] = []  # [element, shows, keep, candidate index, previous child]
        self.shown = 0
        self.candidates: list[int] = []
        self.root: etree._Element | None = None

    def _start(self, element: etree._Element) -> None:
        parent = self.stack[-1] if self.stack else None
        if (parent is None and self.root is not None) or (
            parent is not None and element.getparent() is not parent[0]
        ):
            raise _Reopened
        make_names_safe(element, self.strings)
        if parent is None:
            self.root = element
        else:
            self._done_with(parent, parent[4])
            parent[4] = element
        tag = element.tag
        shown = (parent is None or parent[1]) and not (
            tag in DROPPED_TAGS or (not self.keep_hidden and _is_hidden(element))
        )
        index = None
        if tag in FALLBACK_TAGS:
            index = len(self.candidates)
            self.candidates.append(0)
        keep = (parent is not None and parent[2]) or tag in ("noscript", "template")
        self.stack.append([element, shown, keep, index, None])

    def _done_with(self, parent: list, child: etree._Element | None) -> None:
        """The text before a child, or a child's tail, is complete: count it, and free the child."""
        if child is None:
            if self.strings:
                parent[0].text = xml_text(parent[0].text)
            return
        if self.strings:
            child.tail = xml_text(child.tail)
        if parent[1]:
            self.shown += count_words(child.tail)
        if not parent[2]:  # kept whole inside noscript and template, whose text is counted at their end
            parent[0].remove(child)

    def _end(self, element: etree._Element) -> None:
        frame = self.stack.pop()
        if element is not frame[0]:
            raise _Reopened
        if frame[4] is None:
            self._done_with(frame, None)
        if frame[1]:
            self.shown += count_words(element.text)
        if frame[4] is not None:
            self._done_with(frame, frame[4])
        if frame[3] is not None:
            if element.tag == "script":
                content = _template_content(element)
                words = _visible_words(content, self.keep_hidden) if content is not None else 0
            else:
                words = count_words(" ".join(element.itertext()))
            self.candidates[frame[3]] = words

    def reveals(self, page: str | bytes) -> list[bool] | None:
        """Per noscript, template and script, whether cleaning reveals it; None where the page cannot
        be surveyed this way."""
        if not _parse(page, self._start, self._end) or self.root is None:
            return None
        return [words > self.shown for words in self.candidates]


def _streamed(html: str | bytes, keep_hidden: bool, method: str) -> _Streamer | None:
    """The page cleaned by a streamer whose ropes hold ``method`` serialisations; None for a page that
    must be cleaned as one tree."""
    html = page_text(html)
    # As parse_html reads it (the same string where nothing is removed; the input is not copied).
    page: str | bytes = _NOT_XML_TEXT.sub("", html)
    if _MAY_CUT.search(page):
        page = _cut_attributes(page.encode("utf-8"))
    strings = _makes_invalid_characters(page)
    reveal = None
    if _MAY_REVEAL.search(page if isinstance(page, str) else page.decode("ascii", "replace")):
        reveal = _Survey(keep_hidden, strings).reveals(page)
        if reveal is None:
            return None
    streamer = _Streamer(keep_hidden, strings, method, reveal)
    return streamer if streamer.run(page) else None


def stream_clean_html(html: str | bytes, output: str = "html", keep_hidden: bool = False) -> str | None:
    """``clean_html(html, output, keep_hidden=keep_hidden)`` without the page's whole tree in memory;
    None for a page that must be cleaned as one tree."""
    check_output(output)
    streamer = _streamed(html, keep_hidden, "html" if output == "html" else "xml")
    if streamer is None:
        return None
    if len(streamer.root) == 0 and not (streamer.root.text or "").strip():
        return ""
    return streamer.html() if output == "html" else streamer.text(markdown=output == "markdown")


def stream_clean_xml(html: str | bytes, keep_hidden: bool = False) -> str | None:
    """The tree ``clean(html, keep_hidden=keep_hidden)`` returns, serialised as (lossless) XML, without
    the page's whole tree in memory; None for a page that must be cleaned as one tree."""
    streamer = _streamed(html, keep_hidden, "xml")
    return None if streamer is None else streamer.xml()
