"""Serialise a cleaned tree as HTML, Markdown or plain text (iteratively: pages can be very deep)."""

from __future__ import annotations

import re

from lxml import etree

from tokenprune.context.clean import BLOCK_TAGS

OUTPUTS = ("html", "markdown", "text")
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_CELLS = ("td", "th")
_LINES = ("li", "tr", "br", "dt", "dd")  # one line each, not a paragraph
_EMPHASIS = {"strong": "**", "b": "**", "em": "*", "i": "*"}
_BLANK_LINES = re.compile(r"[ \t]*\n[ \t\n]*\n")
_INLINE_SPACES = re.compile(r"\s+")
_JOIN = 512


def check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    return output


class _TextWriter:
    """Walks start/end events and writes Markdown (or plain text), buffering nested constructs
    (table cells, quotes, code) that need their content before they can be written."""

    def __init__(self, markdown: bool):
        self.markdown = markdown
        self.buffers: list[list[str]] = [[]]
        self.loose = [0]  # strings at the end of each buffer not yet joined
        self.lists: list[list] = []  # [ordered, next number]
        self.tables: list[list[list[str]]] = []
        self.pre_depth = 0

    def write(self, text: str) -> None:
        buffer = self.buffers[-1]
        buffer.append(text)
        self.loose[-1] += 1
        if self.loose[-1] == _JOIN:  # a large page writes millions of short strings: join them as it goes
            buffer[-_JOIN:] = ["".join(buffer[-_JOIN:])]
            self.loose[-1] = 0

    def text(self, text: str | None) -> None:
        if text:
            self.write(text if self.pre_depth else _INLINE_SPACES.sub(" ", text))

    def push(self) -> None:
        self.buffers.append([])
        self.loose.append(0)

    def pop(self) -> str:
        self.loose.pop()
        return "".join(self.buffers.pop())

    def start(self, element: etree._Element) -> None:
        tag = element.tag
        if tag in BLOCK_TAGS and tag not in _CELLS:
            self.write("\n" if tag in _LINES else "\n\n")
        if tag in _HEADINGS and self.markdown:
            self.write("#" * _HEADINGS[tag] + " ")
        elif tag in ("ul", "ol", "menu"):
            self.lists.append([tag == "ol", 1])
        elif tag == "li":
            indent = "  " * max(len(self.lists) - 1, 0)
            if self.lists and self.lists[-1][0]:
                self.write(f"{indent}{self.lists[-1][1]}. ")
                self.lists[-1][1] += 1
            else:
                self.write(f"{indent}- ")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in _CELLS or tag in ("blockquote", "pre") or (tag == "a" and self.markdown):
            self.push()
            self.pre_depth += tag == "pre"
        elif tag == "img":
            self.write(element.get("alt") or element.get("title") or "")
        elif tag == "hr" and self.markdown:
            self.write("---")
        elif self.markdown and tag in _EMPHASIS:
            self.write(_EMPHASIS[tag])
        elif self.markdown and tag == "code" and not self.pre_depth:
            self.write("`")
        self.text(element.text)

    def end(self, element: etree._Element) -> None:
        tag = element.tag
        if tag in ("ul", "ol", "menu") and self.lists:
            self.lists.pop()
        elif tag == "table" and self.tables:
            self.write(self._table(self.tables.pop()))
        elif tag in _CELLS:
            cell = " ".join(self.pop().split()).replace("|", "\\|" if self.markdown else "|")
            if self.tables and self.tables[-1]:
                span = int(element.get("colspan", "1")) if element.get("colspan", "1").isdigit() else 1
                self.tables[-1][-1].extend([cell] + [""] * (min(span, 100) - 1))
            else:
                self.write(cell + " ")
        elif tag == "blockquote":
            quoted = _BLANK_LINES.sub("\n", self.pop()).strip()
            prefix = "> " if self.markdown else ""
            self.write("\n".join(prefix + line for line in quoted.splitlines()))
        elif tag == "pre":
            self.pre_depth -= 1
            code = self.pop().strip("\n")
            self.write(f"```\n{code}\n```" if self.markdown else code)
        elif tag == "a" and self.markdown:
            label = self.pop()
            href = element.get("href")
            self.write(f"[{label.strip()}]({href})" if href and label.strip() else label)
        elif self.markdown and tag in _EMPHASIS:
            self.write(_EMPHASIS[tag])
        elif self.markdown and tag == "code" and not self.pre_depth:
            self.write("`")
        if tag in BLOCK_TAGS and tag not in _CELLS and tag not in _LINES:
            self.write("\n\n")
        self.text(element.tail)

    def _table(self, rows: list[list[str]]) -> str:
        rows = [row for row in rows if row]
        if not rows:
            return ""
        width = max(len(row) for row in rows)
        rows = [row + [""] * (width - len(row)) for row in rows]
        if not self.markdown:
            return "\n".join(" | ".join(cell for cell in row) for row in rows)
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * width)
        return "\n\n" + "\n".join(lines) + "\n\n"

    def result(self) -> str:
        while len(self.buffers) > 1:  # unbalanced events cannot happen, but never lose text
            self.write(self.pop())
        return _BLANK_LINES.sub("\n\n", "".join(self.buffers[0])).strip()


def render(root: etree._Element | None, output: str = "html") -> str:
    """Serialise ``root`` in the requested output format; ``None`` renders as an empty string."""
    check_output(output)
    if root is None or (len(root) == 0 and not (root.text or "").strip()):
        return ""
    if output == "html":
        return etree.tostring(root, method="html", encoding="unicode")
    writer = _TextWriter(markdown=output == "markdown")
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if isinstance(element.tag, str):
            (writer.start if event == "start" else writer.end)(element)
    return writer.result()
