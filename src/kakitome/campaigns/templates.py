"""Campaign templates: Jinja2 in a sandbox, strict about names, with Japanese helpers.

What it trusts: the template text comes from the people who run a list (trusted to write
mail, not to run code); the values it is filled with come from subscribers (not trusted at
all: a name may hold ``<script>``, CR/LF or ``{{ }}``). What it enforces:

- the ``ImmutableSandboxedEnvironment``: no attribute whose name starts with ``_``
  (``{{ ''.__class__.__mro__ }}`` is refused *when the template is checked*, before
  anything is sent), no mutation of lists or dicts, ``range`` capped by Jinja;
- unknown names are errors (``StrictUndefined``), found before sending by a static check
  against the names a campaign offers; ``{{ x | default("…") }}`` and ``{% if x is
  defined %}`` keep working, so a template can be lenient on purpose;
- HTML bodies are autoescaped (subscriber values cannot inject markup); subjects and
  text bodies are not escaped, and a rendered subject loses CR, LF and other controls;
- Markdown bodies are rendered by Jinja first (values escaped), then by markdown-it
  (CommonMark; the author's own HTML passes through).

Every refusal is a ``TemplateError`` (an ``InputError``) naming the part (subject, html,
text, footer) and the line.

Helpers offered to every template:

- ``honorific(name, suffix="様", fallback="お客様")`` and the filter
  ``{{ name | honorific }}``: ``山田太郎`` → ``山田太郎様``; an empty or missing name →
  ``お客様``; a name that already ends in an honorific (様, 殿, さん, 御中) is left as is,
  so ``山田様`` never becomes ``山田様様``. For companies:
  ``{{ company | honorific("御中", fallback="ご担当者様") }}``.
- ``{{ value | default("お客") }}``: as Jinja's, except that an empty name is missing
  too (None, "" and blanks take the default): subscriber data has empty fields far more
  often than absent ones, and nobody wants "様" alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markdown_it import MarkdownIt
from markupsafe import Markup

from kakitome.errors import InputError

__all__ = [
    "BODY_FORMATS",
    "CONTEXT_NAMES",
    "BodyFormat",
    "CompiledTemplate",
    "RenderedParts",
    "TemplateError",
    "TemplateSource",
    "compile_template",
    "honorific",
    "names_used",
]

BodyFormat = Literal["html", "markdown", "text"]
BODY_FORMATS: tuple[BodyFormat, ...] = ("html", "markdown", "text")

# Names a campaign template may use (the context built by kakitome.campaigns.compose).
CONTEXT_NAMES = frozenset(
    {
        "subscriber",  # .id .email .name .attributes
        "email",
        "name",
        "attributes",
        "list",  # .id .name .sender_name
        "campaign",  # .id .name
        "unsubscribe_url",
        "today",  # date in the list's time zone, ISO format (YYYY-MM-DD)
        "honorific",
    }
)

# Honorifics a name may already carry; we do not add a second one.
_HONORIFICS = ("様", "さま", "殿", "さん", "御中", "先生", "各位")

# Largest rendered part we accept (a runaway loop is an error, not a 25 MB mail).
MAX_RENDERED_CHARS = 2_000_000

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")


class TemplateError(InputError):
    """A template that cannot be used; the message names the part and the line."""

    def __init__(self, part: str, message: str, line: int | None = None) -> None:
        where = f"{part} template" + (f", line {line}" if line else "")
        super().__init__(f"{where}: {message}")
        self.part = part
        self.line = line


def honorific(name: object, suffix: str = "様", fallback: str = "お客様") -> str:
    """``name`` + ``suffix``; ``fallback`` when the name is empty, missing or None; the
    name unchanged when it already ends in an honorific."""
    if name is None or isinstance(name, jinja2.Undefined):
        return fallback
    text = str(name).strip()
    if not text:
        return fallback
    if text.endswith(_HONORIFICS):
        return text
    return text + suffix


def default(value: object, default_value: object = "", boolean: bool = False) -> object:
    """Jinja's ``default``, which also treats None and blank text as missing."""
    if isinstance(value, jinja2.Undefined) or value is None:
        return default_value
    if isinstance(value, str) and not value.strip():
        return default_value
    if boolean and not value:
        return default_value
    return value


@dataclass(frozen=True, slots=True)
class TemplateSource:
    """What people write: a subject, a body in one of three formats, an optional text part.

    ``text`` None means "generate the text part from the HTML" (for html and markdown).
    """

    subject: str
    body: str
    body_format: BodyFormat = "html"
    text: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedParts:
    subject: str
    html: str | None  # None for text-only campaigns
    text: str | None  # None: to be generated from html


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.globals["honorific"] = honorific
    env.filters["default"] = default
    env.filters["d"] = default
    env.filters["honorific"] = honorific
    return env


_HTML_ENV = _environment(autoescape=True)
_PLAIN_ENV = _environment(autoescape=False)
_MARKDOWN = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False})


@dataclass(frozen=True, slots=True)
class _Part:
    name: str
    template: jinja2.Template


class CompiledTemplate:
    """A checked template set; ``render(context)`` fills it for one subscriber."""

    def __init__(
        self, source: TemplateSource, subject: _Part, body: _Part, text: _Part | None
    ) -> None:
        self.source = source
        self._subject = subject
        self._body = body
        self._text = text

    @property
    def body_format(self) -> BodyFormat:
        return self.source.body_format

    def render(self, context: Mapping[str, Any]) -> RenderedParts:
        """Fill every part; raises TemplateError (unknown name, sandbox refusal, too long)."""
        subject = _CONTROL.sub(" ", _render(self._subject, context)).strip()
        body = _render(self._body, context)
        text = _render(self._text, context) if self._text is not None else None
        if self.body_format == "text":
            return RenderedParts(subject=subject, html=None, text=body)
        if self.body_format == "markdown":
            body = _MARKDOWN.render(body)
        return RenderedParts(subject=subject, html=body, text=text)


def compile_template(
    source: TemplateSource, *, names: Iterable[str] = CONTEXT_NAMES
) -> CompiledTemplate:
    """Parse and check every part: syntax, names outside ``names``, and attribute access
    the sandbox would refuse. Raises TemplateError before anything is rendered."""
    if source.body_format not in BODY_FORMATS:
        raise TemplateError("body", f"unknown format {source.body_format!r} (html, markdown, text)")
    allowed = frozenset(names)
    body_env = _HTML_ENV if source.body_format in ("html", "markdown") else _PLAIN_ENV
    subject = _compile("subject", source.subject, _PLAIN_ENV, allowed)
    body = _compile(source.body_format, source.body, body_env, allowed)
    text = None
    if source.text is not None and source.body_format != "text":
        text = _compile("text", source.text, _PLAIN_ENV, allowed)
    return CompiledTemplate(source, subject, body, text)


def _compile(
    part: str, text: str, env: ImmutableSandboxedEnvironment, allowed: frozenset[str]
) -> _Part:
    try:
        tree = env.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(part, f"syntax error: {exc.message}", exc.lineno) from exc
    unknown = sorted(meta.find_undeclared_variables(tree) - allowed)
    if unknown:
        line = _first_line_of(tree, unknown[0])
        raise TemplateError(
            part,
            f"unknown name {unknown[0]!r}"
            + (f" (and {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else "")
            + f"; a template may use {', '.join(sorted(allowed))}",
            line,
        )
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            attr: object = node.attr
        elif isinstance(node, nodes.Getitem):
            attr = _const(node.arg)
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            attr = _const(node.args[0])
        else:
            attr = None
        if isinstance(attr, str) and attr.startswith("_"):
            raise TemplateError(
                part, f"access to {attr!r} is not allowed (the template sandbox)", node.lineno
            )
    try:
        template = env.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:  # pragma: no cover (parse found it first)
        raise TemplateError(part, f"syntax error: {exc.message}", exc.lineno) from exc
    return _Part(part, template)


def _const(node: nodes.Node) -> object:
    return node.value if isinstance(node, nodes.Const) else None


def _first_line_of(tree: nodes.Template, name: str) -> int | None:
    for node in tree.find_all(nodes.Name):
        if node.name == name:
            return int(node.lineno)
    return None


def _render(part: _Part, context: Mapping[str, Any]) -> str:
    try:
        out = part.template.render(context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(part.name, f'{exc.message} (use | default("…") to allow it)') from exc
    except SecurityError as exc:
        raise TemplateError(part.name, f"refused by the template sandbox: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(part.name, str(exc)) from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateError(part.name, f"{type(exc).__name__}: {exc}") from exc
    if len(out) > MAX_RENDERED_CHARS:
        raise TemplateError(part.name, f"renders to more than {MAX_RENDERED_CHARS:,} characters")
    return out


def names_used(source: TemplateSource, *, parts: tuple[str, ...] = ("body", "text")) -> set[str]:
    """The top-level names the given parts (``subject``, ``body``, ``text``) use."""
    used: set[str] = set()
    for part in parts:
        text = getattr(source, part)
        if text is not None:
            try:
                used |= meta.find_undeclared_variables(_PLAIN_ENV.parse(text))
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(part, f"syntax error: {exc.message}", exc.lineno) from exc
    return used


def escape_html(text: str) -> str:
    """HTML-escape text (for values put into HTML outside a template)."""
    return str(Markup.escape(text))
