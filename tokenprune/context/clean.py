"""Query-free HTML cleaning: parse anything, drop what carries no content, keep structure."""

from __future__ import annotations

import codecs
import re

from lxml import etree

# Elements whose content is never text for a reader.
DROPPED_TAGS = ("script", "style", "noscript", "template", "svg", "iframe", "select", "datalist", "object")
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
_SPACES = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_WRAPPER_TAG_MARKUP = re.compile(
    rb"</?(?:div|span|font|center|section|article|main|b|i|em|strong)\b[^>]*>", re.I
)
_ANY_TAG_MARKUP = re.compile(rb"<[^>]*>")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def decode_html(data: bytes) -> str:
    """Decode page bytes: BOM, then strict UTF-8, then the declared charset, then cp1252 (never fails)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = _META_CHARSET.search(data[:8192])
    if declared:
        try:
            return data.decode(codecs.lookup(declared.group(1).decode("ascii")).name, errors="replace")
        except LookupError:
            pass
    return data.decode("cp1252", errors="replace")


def _as_utf8(html: str | bytes) -> bytes:
    if isinstance(html, bytes):
        html = decode_html(html)
    elif not isinstance(html, str):
        raise TypeError(f"html must be str or bytes, got {type(html).__name__}")
    # lxml refuses control characters in text and libxml2 lone surrogates: neither is content.
    return _CONTROL_CHARACTERS.sub("", html).encode("utf-8", errors="replace")


def _parse_bytes(data: bytes) -> tuple[etree._Element | None, bool]:
    # Plain etree elements: lxml.html's per-element Python class lookup costs a third of the time.
    parser = etree.HTMLParser(encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True)
    root = etree.fromstring(data, parser=parser)  # None for an empty document
    too_deep = any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log)
    return root, too_deep


def parse_html(html: str | bytes) -> etree._Element:
    """Parse any input into an ``<html>`` tree; never raises on malformed markup.

    libxml2 stops at a nesting depth of 2048 and drops everything after it, so over-deep pages are
    re-parsed with layout wrappers flattened, and as plain text if still too deep.
    """
    data = _as_utf8(html)
    root, too_deep = _parse_bytes(data)
    if too_deep:
        root, too_deep = _parse_bytes(_WRAPPER_TAG_MARKUP.sub(b" ", data))
    if too_deep:
        root, _ = _parse_bytes(b"<p>" + _ANY_TAG_MARKUP.sub(b" ", data) + b"</p>")
    if root is None:
        root = etree.fromstring("<html><body></body></html>", etree.HTMLParser())
    return root


def _is_hidden(element: etree._Element) -> bool:
    attrib = element.attrib
    return (
        "hidden" in attrib
        or attrib.get("aria-hidden", "").strip().lower() == "true"
        or (element.tag == "input" and attrib.get("type", "").lower() == "hidden")
        or bool(_HIDDEN_STYLE.search(attrib.get("style", "")))
    )


def _keep_attributes(element: etree._Element) -> None:
    attrib = element.attrib
    kept = {
        name: value
        for name, value in attrib.items()
        if name in KEPT_ATTRIBUTES
        and value.strip()
        and not (name in ("colspan", "rowspan") and value.strip() == "1")
        and not (name == "href" and value.strip().lower().startswith(("javascript:", "#")))
    }
    if len(kept) != len(attrib):
        attrib.clear()
        attrib.update(kept)


def _is_blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _collapse_whitespace(element: etree._Element, preserve: bool) -> None:
    if not preserve and element.text is not None:
        starts_block = len(element) and element[0].tag in BLOCK_TAGS
        element.text = None if starts_block and _is_blank(element.text) else _SPACES.sub(" ", element.text)
    if element.tail is not None:
        if element.tag in BLOCK_TAGS and _is_blank(element.tail):
            element.tail = None
        elif not preserve:
            element.tail = _SPACES.sub(" ", element.tail)


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


def clean_tree(root: etree._Element) -> etree._Element:
    """Clean a parsed page in place and return it (see :func:`clean_html` for the rules)."""
    etree.strip_elements(root, *DROPPED_TAGS, with_tail=False)
    hidden = []
    for element in root.iter(etree.Element):
        if _is_hidden(element):
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
    text = decode_html(html) if isinstance(html, bytes) else html
    if not isinstance(text, str):
        raise TypeError(f"html must be str or bytes, got {type(html).__name__}")
    if not text.strip():
        return None
    return trafilatura.extract(
        text, output_format="html", include_tables=True, include_links=True, include_images=True
    )


def clean(html: str | bytes, main_content: bool = False) -> etree._Element:
    """Parse and clean; with ``main_content`` keep only the main content
    (:mod:`tokenprune.context.main_content`)."""
    if main_content:
        from tokenprune.context.main_content import main_content_root

        return main_content_root(html)
    return clean_tree(parse_html(html))


def clean_html(html: str | bytes, output: str = "html", main_content: bool = False) -> str:
    """Clean a page for an LLM without losing its content.

    Drops scripts, styles, hidden elements, comments and empty elements; keeps only the attributes
    href, alt, title, colspan and rowspan; keeps table structure (empty cells too); unwraps
    single-child layout wrappers; collapses whitespace. ``main_content=True`` also removes
    navigation, footers, sidebars and ads (needs the ``main-content`` extra; falls back to the
    whole page when no main content is found). ``output`` is "html", "markdown" or "text".
    """
    from tokenprune.context.render import render

    return render(clean(html, main_content=main_content), output)
