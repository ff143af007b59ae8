"""Query-free HTML cleaning: parse anything, drop what carries no content, keep structure."""

from __future__ import annotations

import codecs
import functools
import itertools
import re

from lxml import etree

from tokenprune.context.packing import check_flag
from tokenprune.context.text import count_words

# Elements whose content is never text for a reader (but see FALLBACK_TAGS).
DROPPED_TAGS = ("script", "style", "noscript", "template", "svg", "iframe", "select", "datalist", "object")
# Content shown only without scripts (noscript) or by scripts (templates): kept when it says more than
# the rest of the page, i.e. when it is the page's content rather than a fallback for it.
FALLBACK_TAGS = ("noscript", "template", "script")
_TEMPLATE_SCRIPT_TYPE = re.compile(r"^\s*text/(?:html\b|\S*(?:templ|tmpl|handlebars|mustache))", re.I)
KEPT_ATTRIBUTES = frozenset({"href", "alt", "title", "colspan", "rowspan"})
# Elements that mean something even when empty (line breaks, rules, table geometry).
KEPT_WHEN_EMPTY = frozenset({"br", "hr", "td", "th"})
# Layout-only containers: one of these holding a single element and no text is just a wrapper.
# Block wrappers only give way to block children: dropping the line break around inline content
# would glue its words to the text next to it.
BLOCK_WRAPPER_TAGS = frozenset({"div", "center", "section", "article", "main"})
INLINE_WRAPPER_TAGS = frozenset({"span", "font"})
BLOCK_TAGS = frozenset(
    {
        "html", "head", "body", "title", "div", "p", "section", "article", "main", "header", "footer",
        "nav", "aside", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd",
        "table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "blockquote", "pre",
        "figure", "figcaption", "form", "fieldset", "address", "hr", "br", "center", "details",
        "summary", "menu", "legend", "colgroup", "col",
    }
)  # fmt: skip
# Table parts only break lines inside their table; a stray one would glue to the text beside it.
_TABLE_PARTS = frozenset({"tr", "td", "th", "thead", "tbody", "tfoot", "caption", "col", "colgroup"})
_PRESERVE_WHITESPACE = ("pre", "textarea")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
# Only whitespace that changes: replacing every single space would build a piece per word of a giant text.
_SPACES = re.compile(r"\s{2,}|[^\S ]")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_NON_ASCII_BYTE = re.compile(rb"[\x80-\xff]")
_MESS_THRESHOLD = 0.2  # charset-normalizer's default
_DETECTION_SAMPLE = 1 << 16
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_WRAPPER_TAG_MARKUP = re.compile(
    rb"</?(?:div|span|font|center|section|article|main|b|i|em|strong)\b[^>]*>", re.I
)
_ANY_TAG_MARKUP = re.compile(rb"<[^>]*>")
_TAG_CHUNK = 1 << 20
_TEXT_CHUNK = 1 << 20
_NON_SPACE = re.compile(r"\S")
# libxml2 compares each attribute of a start tag with all earlier ones (quadratic in their number), so
# the attributes of a start tag with more than _MAX_ATTRIBUTES are cut to those cleaning reads first.
_MAX_ATTRIBUTES = 1000
_LONG_ATTRIBUTE = 4096
_TAG_SPACE = b" \t\n\r\f/"
_LONG_START_TAG = re.compile(rb"<([A-Za-z][^\s/<>]*)([^<>]{8192,})")
_ATTRIBUTE = re.compile(rb"""([^\s=<>"'/]+)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s<>"']*))?""")
_READ_ATTRIBUTES = KEPT_ATTRIBUTES | {"hidden", "aria-hidden", "style", "type"}
# What lxml refuses in text (C0 controls, lone surrogates, U+FFFE, U+FFFF) and the other noncharacters
# of the BMP: never content. (A class with astral characters makes the scan several times slower.)
_NOT_XML_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]+")
_NOT_NAME_CHARACTER = re.compile(r"[^\w.-]")
# Pages from this size on are cleaned without their whole tree in memory (tokenprune.context.stream):
# the tree takes ~18 bytes per byte of dense markup; below it, one tree is faster.
STREAM_MIN_SIZE = 4_000_000


def streams(html: object, main_content: bool) -> bool:
    """Whether ``html`` is cleaned (and pruned) while it is parsed: a large page, unless trafilatura
    parses the whole page itself for its main content."""
    return not main_content and isinstance(html, (str, bytes)) and len(html) >= STREAM_MIN_SIZE


def _declared_encoding(data: bytes) -> str | None:
    """The codec of a ``<meta charset>`` near the top, read as browsers do: a declaration found in
    ASCII markup cannot be UTF-16/32 (a lie), and latin-1 and ascii mean windows-1252."""
    declared = _META_CHARSET.search(data[:8192])
    if not declared:
        return None
    try:
        name = codecs.lookup(declared.group(1).decode("ascii")).name
    except LookupError:
        return None
    if name.startswith(("utf-16", "utf-32")):
        return None
    return "cp1252" if name in ("latin-1", "ascii") else name


def _plausible(text: str, data: bytes) -> bool:
    """Decoded text that keeps the bytes' ASCII markup and whose non-ASCII characters do not read as
    mojibake (charset-normalizer's mess measure, on the context of up to 200 of them)."""
    if text.count("<") != data.count(b"<"):
        return False
    samples = [
        text[max(0, m.start() - 20) : m.end() + 20] for m in itertools.islice(_NON_ASCII.finditer(text), 200)
    ]
    if not samples:
        return True
    from charset_normalizer.md import mess_ratio

    return mess_ratio(" ".join(samples), _MESS_THRESHOLD) < _MESS_THRESHOLD


def _detected_encoding(data: bytes) -> str | None:
    """charset-normalizer's guess from a sample that starts just before the first non-ASCII byte."""
    from charset_normalizer import from_bytes

    first = _NON_ASCII_BYTE.search(data)
    start = max(0, first.start() - 1024) if first else 0
    best = from_bytes(data[start : start + _DETECTION_SAMPLE]).best()
    return None if best is None or best.encoding == "ascii" else best.encoding


def decode_html(data: bytes) -> str:
    """Decode page bytes (never fails): a BOM; else strict UTF-8; else the declared charset, then
    windows-1252, each only if it decodes the bytes into plausible text; else the encoding
    charset-normalizer detects (a declared charset can lie)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = _declared_encoding(data)
    for encoding in dict.fromkeys((declared, "cp1252")):
        if encoding is None:
            continue
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _plausible(text, data):
            return text
    return data.decode(_detected_encoding(data) or declared or "cp1252", errors="replace")


def page_text(html: str | bytes) -> str:
    """A page as text: bytes decoded (``decode_html``), anything but str or bytes refused."""
    if isinstance(html, bytes):
        return decode_html(html)
    if not isinstance(html, str):
        raise TypeError(f"html must be str or bytes, got {type(html).__name__}")
    return html


def _as_utf8(html: str | bytes) -> bytes:
    return _NOT_XML_TEXT.sub("", page_text(html)).encode("utf-8")


def _cut_tag(data: bytes, tag: re.Match) -> bytes | None:
    """A long start tag cut to the attributes cleaning reads, or None to leave it as it is: cut when it
    has more than ``_MAX_ATTRIBUTES`` attributes, or an attribute cleaning drops whose value is
    longer than ``_LONG_ATTRIBUTE`` (libxml2 holds several copies of a value while parsing it) where
    the tag reads unambiguously (every value closed, ``>`` right after)."""
    many = data.count(b"=", *tag.span(2)) > _MAX_ATTRIBUTES
    kept: dict[bytes, bytes] = {}
    long_dropped, clear, covered = False, True, tag.start(2)
    for attribute in _ATTRIBUTE.finditer(data, *tag.span(2)):
        name = attribute.group(1).lower()
        if name.decode("ascii", "replace") in _READ_ATTRIBUTES:
            kept.setdefault(name, attribute.group())  # the first of duplicates wins, as in libxml2
        elif not many:
            long_dropped = long_dropped or attribute.end() - attribute.start() > _LONG_ATTRIBUTE
        if not many:
            clear = clear and not data[covered : attribute.start()].strip(_TAG_SPACE)
        covered = attribute.end()
    if not many and not (
        long_dropped
        and clear
        and not data[covered : tag.end()].strip(_TAG_SPACE)
        and data[tag.end() : tag.end() + 1] == b">"
    ):
        return None
    return b"<" + tag.group(1) + b" " + b" ".join(kept.values())


def _cut_attributes(data: bytes) -> bytes:
    """``data`` with its long start tags cut (``_cut_tag``). Matches are read in place: no copy of a
    long tag, or of the page when no tag is cut."""
    view = memoryview(data)
    pieces: list = []
    start = 0
    for tag in _LONG_START_TAG.finditer(data):
        cut = _cut_tag(data, tag)
        if cut is not None:
            pieces += [view[start : tag.start()], cut]
            start = tag.end()
    if not pieces:
        return data
    return b"".join([*pieces, view[start:]])


def _parse_bytes(data: bytes) -> tuple[etree._Element | None, bool]:
    # Plain etree elements: lxml.html's per-element Python class lookup costs a third of the time.
    parser = etree.HTMLParser(encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True)
    root = etree.fromstring(data, parser=parser)  # None for an empty document
    too_deep = any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log)
    return root, too_deep


# Names known to be valid for elements and attributes (others are checked once each, with a cache).
_VALID_NAMES = frozenset(BLOCK_TAGS | KEPT_ATTRIBUTES | set(DROPPED_TAGS)) | {
    "a", "b", "i", "em", "strong", "span", "img", "code", "small", "sup", "sub", "u", "s", "font", "input",
    "label", "button", "time", "meta", "link", "abbr", "cite", "q", "mark", "picture", "source",
    "class", "id", "style", "src", "width", "height", "type", "name", "content", "rel", "lang", "hidden",
    "aria-hidden", "role", "value", "target", "srcset", "loading", "dir", "property", "charset",
}  # fmt: skip
_NUMERIC_REFERENCE = re.compile(rb"&#([xX][0-9a-fA-F]{1,8}|[0-9]{1,10})")
_NUMERIC_REFERENCE_TEXT = re.compile(_NUMERIC_REFERENCE.pattern.decode())


@functools.lru_cache(maxsize=4096)
def _element_name(name: str) -> str:
    """``name`` if lxml can create elements of it, else a name it can: libxml2's HTML parser accepts
    names lxml refuses, such as namespaced ones (``<o:p>`` becomes ``<o-p>``) or ``<a<div>``."""
    safe = _NOT_NAME_CHARACTER.sub("-", name)
    for candidate in (name, safe, "x-" + safe):
        try:
            etree.Element(candidate)
            return candidate
        except ValueError:
            continue
    return "span"


@functools.lru_cache(maxsize=4096)
def _is_attribute_name(name: str) -> bool:
    try:
        etree.Element("p").set(name, "")
        return True
    except ValueError:
        return False


def _makes_invalid_characters(data: bytes | str) -> bool:
    """Whether a numeric character reference in the page stands for a character lxml refuses (the
    input itself has none left): only then can the parsed text hold one."""
    text = isinstance(data, str)
    for reference in (_NUMERIC_REFERENCE_TEXT if text else _NUMERIC_REFERENCE).findall(data):
        try:
            code = int(reference[1:], 16) if reference[:1] in ("xX" if text else b"xX") else int(reference)
        except ValueError:
            continue
        if code < 0x110000 and _NOT_XML_TEXT.match(chr(code)):
            return True
    return False


def _make_xml_safe(root: etree._Element, strings: bool) -> None:
    """Make every name (and with ``strings`` every text, tail and attribute value) of a parsed tree
    one that lxml accepts when elements are re-created or edited: the parser keeps names that lxml
    refuses, and character references such as ``&#1;`` put characters into the tree that it refuses."""
    for element in root.iter(etree.Element):
        make_names_safe(element, strings)
        if strings:
            element.text = xml_text(element.text)
            element.tail = xml_text(element.tail)


def xml_text(text: str | None) -> str | None:
    return _NOT_XML_TEXT.sub("", text) if text and _NOT_XML_TEXT.search(text) else text


def make_names_safe(element: etree._Element, strings: bool) -> None:
    """The element's name and attributes made acceptable to lxml (see ``_make_xml_safe``)."""
    valid = _VALID_NAMES
    tag = element.tag
    if tag not in valid and (name := _element_name(tag)) != tag:
        element.tag = name
    names = element.keys()  # values only when they may need fixing: they can be megabytes long
    if names and any(
        (name not in valid and not _is_attribute_name(name))
        or (strings and _NOT_XML_TEXT.search(element.get(name)))
        for name in names
    ):
        items = element.items()
        element.attrib.clear()
        element.attrib.update(
            {name: _NOT_XML_TEXT.sub("", value) for name, value in items if _is_attribute_name(name)}
        )


def _without_tags(tags: re.Pattern, data: bytes) -> bytes:
    """``data`` with each tag ``tags`` matches replaced by a space, a megabyte at a time: one call
    over a page nested millions deep would hold a piece per tag (many times the page's size)."""
    pieces, start = [], 0
    while start < len(data):
        end = data.find(b">", start + _TAG_CHUNK)
        end = len(data) if end < 0 else end + 1  # tags end at the first ">", so none is cut
        pieces.append(tags.sub(b" ", data[start:end]))
        start = end
    return b"".join(pieces)


def parse_html(html: str | bytes) -> etree._Element:
    """Parse any input into an ``<html>`` tree whose names and strings lxml accepts; never raises on
    malformed markup.

    libxml2 stops at a nesting depth of 2048 and drops everything after it, so over-deep pages are
    re-parsed with layout wrappers flattened, and as plain text if still too deep.
    """
    data = _cut_attributes(_as_utf8(html))
    root, too_deep = _parse_bytes(data)
    if too_deep:
        root, too_deep = _parse_bytes(_without_tags(_WRAPPER_TAG_MARKUP, data))
    if too_deep:
        root, _ = _parse_bytes(b"<p>" + _without_tags(_ANY_TAG_MARKUP, data) + b"</p>")
    if root is None:
        root = etree.fromstring("<html><body></body></html>", etree.HTMLParser())
    _make_xml_safe(root, strings=_makes_invalid_characters(data))
    return root


def _is_hidden(element: etree._Element) -> bool:
    attrib = element.attrib
    return (
        "hidden" in attrib
        or attrib.get("aria-hidden", "").strip().lower() == "true"
        or (element.tag == "input" and attrib.get("type", "").lower() == "hidden")
        or bool(_HIDDEN_STYLE.search(attrib.get("style", "")))
    )


def _visible_words(root: etree._Element, keep_hidden: bool, enough: float = float("inf")) -> int:
    """Words a reader sees (not in dropped or hidden elements), counted until ``enough`` is reached."""
    words = 0
    walker = etree.iterwalk(root, events=("start",))
    for _, element in walker:
        if element is not root:
            words += count_words(element.tail)
        if element.tag in DROPPED_TAGS or (not keep_hidden and _is_hidden(element)):
            walker.skip_subtree()
        else:
            words += count_words(element.text)
        if words >= enough:
            break
    return words


def _template_content(script: etree._Element) -> etree._Element | None:
    """A template script's markup, parsed into a ``<div>``."""
    if not _TEMPLATE_SCRIPT_TYPE.match(script.get("type", "")) or _is_blank(script.text):
        return None
    body = parse_html(script.text).find("body")
    if body is None:
        return None
    body.tag = "div"
    body.attrib.clear()
    return body


def _reveal_fallback_content(root: etree._Element, keep_hidden: bool) -> None:
    """Turn noscript and template content into ordinary content where it holds more words than
    everything else the page shows (an article inside <noscript>, a post in a template script)."""
    candidates = []
    for element in root.iter(*FALLBACK_TAGS):
        content = _template_content(element) if element.tag == "script" else element
        if content is not None:
            words = (
                _visible_words(content, keep_hidden)
                if content is not element
                else count_words(" ".join(element.itertext()))
            )
            if words:
                candidates.append((element, content, words))
    if not candidates:
        return
    shown = _visible_words(root, keep_hidden, enough=max(words for _, _, words in candidates) + 1)
    for element, content, words in candidates:
        if words <= shown or element.getparent() is None:
            continue
        if content is element:
            element.tag = "div"
        else:
            content.tail = element.tail
            element.getparent().replace(element, content)


def _keep_attributes(element: etree._Element) -> None:
    attrib = element.attrib
    kept = {
        name: value
        for name in attrib  # no value read of what is dropped (it can be megabytes long)
        if name in KEPT_ATTRIBUTES
        and (value := attrib[name]).strip()
        and not (name in ("colspan", "rowspan") and value.strip() == "1")
        and not (name == "href" and value.strip().lower().startswith(("javascript:", "#")))
    }
    if len(kept) != len(attrib):
        attrib.clear()
        attrib.update(kept)


def _is_blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _collapse(text: str) -> str:
    """Whitespace runs as one space, a megabyte at a time (cut before a non-space character): one
    call over a giant text node of many lines would hold a piece per line."""
    if len(text) <= _TEXT_CHUNK:
        return _SPACES.sub(" ", text)
    if not _SPACES.search(text):
        return text
    pieces, start = [], 0
    while start < len(text):
        cut = _NON_SPACE.search(text, start + _TEXT_CHUNK)
        end = cut.start() if cut else len(text)
        pieces.append(_SPACES.sub(" ", text[start:end]))
        start = end
    return "".join(pieces)


def _collapse_whitespace(element: etree._Element, preserve: bool) -> None:
    collapse_text(element, preserve)
    collapse_tail(element, preserve)


def collapse_text(element: etree._Element, preserve: bool) -> None:
    text = element.text
    if not preserve and text is not None:
        starts_block = len(element) and element[0].tag in BLOCK_TAGS
        collapsed = None if starts_block and _is_blank(text) else _collapse(text)
        if collapsed is not text:  # an unchanged giant text is not copied back into the tree
            element.text = collapsed


def collapse_tail(element: etree._Element, preserve: bool) -> None:
    tail = element.tail
    if tail is not None:
        if element.tag in BLOCK_TAGS and _is_blank(tail):
            element.tail = None
        elif not preserve and (collapsed := _collapse(tail)) is not tail:
            element.tail = collapsed


def _is_empty(element: etree._Element) -> bool:
    if len(element) or not _is_blank(element.text):
        return False
    if element.tag == "img":
        return not (element.get("alt", "").strip() or element.get("title", "").strip())
    return element.tag not in KEPT_WHEN_EMPTY


def _is_wrapper(element: etree._Element) -> bool:
    return (
        len(element) == 1
        and (
            element.tag in INLINE_WRAPPER_TAGS
            or (
                element.tag in BLOCK_WRAPPER_TAGS
                and element[0].tag in BLOCK_TAGS
                and element[0].tag not in _TABLE_PARTS
            )
        )
        and not element.attrib
        and _is_blank(element.text)
        and _is_blank(element[0].tail)
    )


def _drop_tree(element: etree._Element) -> None:
    """Remove an element and its content, keeping the text that follows it. A block, or an element
    holding only whitespace (e.g. what dropped blocks inside it left), still separates the words
    around it, so a space takes its place."""
    if element.tag in BLOCK_TAGS or (element.text or "").isspace():
        element.tail = " " + (element.tail or "")
    _remove_keeping_tail(element)


def _remove_keeping_tail(element: etree._Element) -> None:
    """Remove an element and its content, keeping its tail (``etree.strip_elements``)."""
    if element.tail:
        previous = element.getprevious()
        if previous is None:
            parent = element.getparent()
            parent.text = (parent.text or "") + element.tail
        else:
            previous.tail = (previous.tail or "") + element.tail
    element.getparent().remove(element)


def _unwrap(wrapper: etree._Element) -> None:
    """Replace a wrapper by its only child (replace() is O(1); index-based unwrapping is not)."""
    child = wrapper[0]
    if wrapper.text:  # whitespace only, but it may be all that separates two words
        previous, parent = wrapper.getprevious(), wrapper.getparent()
        if previous is None:
            parent.text = (parent.text or "") + wrapper.text
        else:
            previous.tail = (previous.tail or "") + wrapper.text
    child.tail = (child.tail or "") + (wrapper.tail or "") or None
    wrapper.getparent().replace(wrapper, child)


def clean_tree(root: etree._Element, keep_hidden: bool = False) -> etree._Element:
    """Clean a parsed page in place and return it (see :func:`clean_html` for the rules)."""
    _reveal_fallback_content(root, keep_hidden)
    etree.strip_elements(root, *DROPPED_TAGS, with_tail=False)
    hidden = []
    for element in root.iter(etree.Element):
        if not keep_hidden and _is_hidden(element):
            hidden.append(element)
        else:
            _keep_attributes(element)
    for element in hidden:
        if element.getparent() is not None:
            _drop_tree(element)
    # A set of the elements themselves: lxml proxies (and so their ids) only live while referenced.
    preserved = {inner for outer in root.iter(*_PRESERVE_WHITESPACE) for inner in outer.iter(etree.Element)}
    # Reverse document order visits children before their parent, so emptiness and wrappers
    # propagate upwards in a single pass (no repeat-until-stable scans).
    for element in reversed(list(root.iter(etree.Element))):
        _collapse_whitespace(element, preserve=element in preserved)
        if element is root:
            continue
        if _is_empty(element):
            _drop_tree(element)
        elif _is_wrapper(element):
            _unwrap(element)
    return root


def main_content_html(html: str | bytes) -> str | None:
    """The main content (article body) as HTML, via trafilatura; ``None`` when it finds none."""
    try:
        import trafilatura
    except ImportError as error:
        raise ImportError(
            "main_content=True needs trafilatura: pip install 'tokenprune[main-content]'"
        ) from error
    text = page_text(html)
    if not text.strip():
        return None
    return trafilatura.extract(
        text, output_format="html", include_tables=True, include_links=True, include_images=True
    )


def clean(html: str | bytes, main_content: bool = False, keep_hidden: bool = False) -> etree._Element:
    """Parse and clean; with ``main_content`` keep only the main content
    (:mod:`tokenprune.context.main_content`)."""
    if main_content:
        from tokenprune.context.main_content import main_content_root

        return main_content_root(html, keep_hidden)
    return clean_tree(parse_html(html), keep_hidden)


def clean_html(
    html: str | bytes, output: str = "html", main_content: bool = False, keep_hidden: bool = False
) -> str:
    """Clean a page for an LLM without losing its content.

    Drops scripts, styles, hidden elements (unless ``keep_hidden``), comments and empty elements,
    and noscript and template content unless it holds more words than the rest of the page (then it
    is the page's content and is kept); keeps only the attributes
    href, alt, title, colspan and rowspan; keeps table structure (empty cells too); unwraps
    single-child layout wrappers; collapses whitespace. ``main_content=True`` also removes
    navigation, footers, sidebars and ads (needs the ``main-content`` extra; falls back to the
    whole page when no main content is found). ``output`` is "html", "markdown" or "text".
    """
    from tokenprune.context.render import check_output, render

    main_content = check_flag("main_content", main_content)
    keep_hidden = check_flag("keep_hidden", keep_hidden)
    if streams(html, main_content):
        from tokenprune.context.stream import stream_clean_html

        cleaned = stream_clean_html(html, check_output(output), keep_hidden)
        if cleaned is not None:
            return cleaned
    return render(clean(html, main_content=main_content, keep_hidden=keep_hidden), output)
