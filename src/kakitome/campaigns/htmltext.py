"""The text part of a campaign, made from its HTML when the author gave none.

A small converter on the standard library's HTML parser: block elements become paragraphs
and line breaks, links keep their address (``text <https://…>``, the delimiters of
RFC 3986 appendix C; just the address when the text is the address), list items get a
bullet, headings stand on their own line,
``<script>``, ``<style>``, ``<head>`` and images without alt text disappear. Entities are
decoded. It never fails: broken HTML gives reasonable text.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "main", "aside", "nav",
        "table", "tr", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
        "dl", "dt", "dd", "form", "hr", "center", "address", "figure", "figcaption",
    }
)  # fmt: skip
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


class _Converter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._pre = 0
        self._links: list[tuple[str | None, int]] = []

    def _newlines(self, count: int) -> None:
        text = "".join(self.out)
        have = len(text) - len(text.rstrip("\n"))
        if text.strip():
            self.out.append("\n" * max(0, count - have))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
            return
        if self._skip:
            return
        values = dict(attrs)
        if tag == "br":
            self.out.append("\n")
        elif tag == "hr":
            self._newlines(2)
            self.out.append("-" * 20)
            self._newlines(2)
        elif tag == "li":
            self._newlines(1)
            self.out.append("・")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "img":
            alt = (values.get("alt") or "").strip()
            if alt:
                self.out.append(alt)
        elif tag == "a":
            self._links.append((values.get("href"), len(self.out)))
        elif tag in _BLOCK:
            self._newlines(2 if tag not in ("tr", "dt", "dd") else 1)
            if tag == "pre":
                self._pre += 1
            if tag in _HEADINGS:
                self.out.append("■ ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.out[start:]).strip()
            if href and re.match(r"(?i)(https?|mailto):", href):
                shown = href[7:] if href.lower().startswith("mailto:") else href
                if label in (href, shown):
                    return
                self.out.append(f" <{shown}>" if label else shown)
        elif tag in _BLOCK:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            self._newlines(2 if tag not in ("tr", "dt", "dd") else 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            data = re.sub(r"[ \t\r\n\f]+", " ", data)
            if "".join(self.out[-1:]).endswith(("\n", " ")) or not self.out:
                data = data.lstrip(" ")
        self.out.append(data)


def html_to_text(html: str) -> str:
    """Readable plain text for an HTML body (ends with one newline)."""
    parser = _Converter()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text + "\n" if text else ""
