"""Segments: a small filter language (text or JSON), parsed safely and compiled to SQL.

What it trusts: nothing. Expressions come from users; they are parsed by a hand-written
recursive-descent parser into a tree of frozen dataclasses, checked (known fields, known
activities, value types, bounded size and depth), and compiled into SQLAlchemy
expressions whose every user value is a bound parameter. No text from a user ever
becomes SQL text, not even an attribute name (those are limited to word characters and
hyphens and also travel as bound parameters).

The language::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | primary
    primary    := "(" expr ")" | call | comparison
    comparison := field op value | field "in" "[" value ("," value)* "]"
                | field "is" ["not"] "null"
    op         := = | == | != | <> | < | <= | > | >= | contains | startswith | endswith
    field      := email | domain | name | status | attr.<key>
    call       := activity.<kind>(<duration>) | member("<list name>") | has(attr.<key>)
    duration   := <n>d | <n>h | <n>w
    value      := "string" | 'string' | number | true | false

Examples: ``attr.plan = "gold" and not activity.opened(30d)``,
``domain in ["docomo.ne.jp", "ezweb.ne.jp"] or attr.年齢 >= 20``,
``member("news") and status = "subscribed"``.

JSON form (the same tree): ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": {...}}``,
``{"field": "attr.plan", "op": "=", "value": "gold"}``,
``{"activity": "opened", "within": "30d"}``, ``{"member": "news"}``,
``{"has": "attr.plan"}``.

Semantics: a comparison with a missing attribute, or an attribute of another JSON type,
is false (so ``not attr.plan = "gold"`` includes those without a plan). Numbers compare
only with numbers, strings with strings. ``status`` is the status on the audience's list.

Activity conditions (``opened``, ``clicked``...) are pluggable: an ``ActivitySource``
compiles one to a SELECT of subscriber ids; ``bounced`` is built in (from the subscriber
history), the campaign engine adds ``opened`` and ``clicked`` from its tracking tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import (
    JSON,
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import aliased

from kakitome.lists.model import STATUSES, SegmentError
from kakitome.store.schema_lists import list_members, subscriber_events, subscribers

__all__ = [
    "BUILTIN_ACTIVITY",
    "Activity",
    "ActivityQuery",
    "ActivitySource",
    "And",
    "Compare",
    "CompileContext",
    "Has",
    "Member",
    "Node",
    "Not",
    "Or",
    "compile_segment",
    "from_json",
    "list_names",
    "parse",
    "parse_any",
    "to_json",
    "to_text",
]

MAX_LENGTH = 4_000
MAX_DEPTH = 32
MAX_NODES = 500
MAX_IN_ITEMS = 1_000
MAX_STRING = 1_000

Scalar: TypeAlias = str | int | float | bool

FIELDS = ("email", "domain", "name", "status")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "contains", "startswith", "endswith", "in", "is")
_ATTR_KEY = re.compile(r"[\w\-]{1,64}")
_DURATION = re.compile(r"(\d{1,5})([hdw])")
_UNIT_SECONDS = {"h": 3600, "d": 86_400, "w": 7 * 86_400}


@dataclass(frozen=True, slots=True)
class Compare:
    """``field op value``; ``op`` ``in`` takes a tuple, ``is`` takes None (null) and
    ``negate`` says ``is not null``."""

    field: str
    op: str
    value: Scalar | tuple[Scalar, ...] | None
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Activity:
    """``activity.<kind>(<within>)``: the subscriber had the activity in the last
    ``seconds``; ``within`` is the duration as written (``30d``)."""

    kind: str
    within: str
    seconds: int


@dataclass(frozen=True, slots=True)
class Member:
    """``member("name")``: subscribed to that list."""

    list_name: str


@dataclass(frozen=True, slots=True)
class Has:
    """``has(attr.key)``: the attribute is present and not JSON null."""

    field: str


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node: TypeAlias = Compare | Activity | Member | Has | Not | And | Or


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """What an activity source is asked: activity since ``since`` (epoch seconds), on
    mail of list ``list_id`` (None: any list)."""

    kind: str
    since: float
    list_id: int | None


ActivitySource: TypeAlias = Callable[[ActivityQuery], Select[Any]]
"""Compiles one activity condition to a SELECT of one column of subscriber ids."""


def _bounced_source(query: ActivityQuery) -> Select[Any]:
    return select(subscriber_events.c.subscriber_id).where(
        subscriber_events.c.kind.in_(("bounce_permanent", "bounce_temporary")),
        subscriber_events.c.at >= query.since,
    )


BUILTIN_ACTIVITY: Mapping[str, ActivitySource] = {"bounced": _bounced_source}
KNOWN_ACTIVITY = ("opened", "clicked", "bounced", "unsubscribed")


# -- lexer ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<duration>\d{1,5}[hdw](?![\w.]))
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<word>[^\W\d][\w\-]*(?:\.[\w\-]+)*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _lex(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SegmentError(f"unexpected character {text[pos]!r}", pos)
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def _unquote(token: _Tok) -> str:
    body = token.text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            i += 1
            nxt = body[i]
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
        else:
            out.append(char)
        i += 1
    value = "".join(out)
    if len(value) > MAX_STRING:
        raise SegmentError(f"a string is longer than {MAX_STRING} characters", token.pos)
    return value


# -- parser -----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.i = 0
        self.nodes = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "word" and token.text.lower() == word:
            self.i += 1
            return True
        return False

    def expect(self, text: str, what: str) -> _Tok:
        token = self.take()
        if token.text != text:
            raise SegmentError(f"expected {what}, found {_show(token)}", token.pos)
        return token

    def count(self, pos: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SegmentError(f"the expression has more than {MAX_NODES} conditions", pos)

    def parse(self) -> Node:
        node = self.or_(0)
        token = self.peek()
        if token.kind != "end":
            raise SegmentError(
                f"unexpected {_show(token)}; expected 'and', 'or' or the end", token.pos
            )
        return node

    def or_(self, depth: int) -> Node:
        items = [self.and_(depth)]
        while self.keyword("or"):
            items.append(self.and_(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self, depth: int) -> Node:
        items = [self.not_(depth)]
        while self.keyword("and"):
            items.append(self.not_(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self, depth: int) -> Node:
        token = self.peek()
        if depth > MAX_DEPTH:
            raise SegmentError(f"the expression is nested deeper than {MAX_DEPTH}", token.pos)
        if self.keyword("not"):
            return Not(self.not_(depth + 1))
        return self.primary(depth)

    def primary(self, depth: int) -> Node:
        token = self.peek()
        self.count(token.pos)
        if token.text == "(":
            self.take()
            node = self.or_(depth + 1)
            self.expect(")", "')'")
            return node
        if token.kind != "word":
            raise SegmentError(f"expected a condition, found {_show(token)}", token.pos)
        self.take()
        name = token.text
        lower = name.lower()
        if lower.startswith("activity."):
            return self.activity(token)
        if lower == "member":
            self.expect("(", "'(' after member")
            arg = self.take()
            if arg.kind != "string":
                raise SegmentError("member(...) takes a list name in quotes", arg.pos)
            self.expect(")", "')'")
            return Member(_unquote(arg))
        if lower == "has":
            self.expect("(", "'(' after has")
            arg = self.take()
            if arg.kind != "word":
                raise SegmentError("has(...) takes an attribute, e.g. has(attr.plan)", arg.pos)
            self.expect(")", "')'")
            return Has(_check_field(arg.text, arg.pos, attr_only=True))
        field = _check_field(name, token.pos)
        return self.comparison(field, token)

    def activity(self, token: _Tok) -> Node:
        kind = token.text.split(".", 1)[1].lower()
        if kind not in KNOWN_ACTIVITY:
            raise SegmentError(
                f"unknown activity {kind!r}; known: {', '.join(KNOWN_ACTIVITY)}", token.pos
            )
        self.expect("(", f"'(' after activity.{kind}")
        arg = self.take()
        if arg.kind != "duration":
            raise SegmentError(
                f"activity.{kind}(...) takes a duration such as 30d, 12h or 2w", arg.pos
            )
        self.expect(")", "')'")
        return _activity(kind, arg.text, arg.pos)

    def comparison(self, field: str, field_tok: _Tok) -> Node:
        token = self.take()
        if token.kind == "op":
            op = {"==": "=", "<>": "!="}.get(token.text, token.text)
            return _check_compare(Compare(field, op, self.value()), field_tok.pos)
        word = token.text.lower() if token.kind == "word" else ""
        if word in ("contains", "startswith", "endswith"):
            return _check_compare(Compare(field, word, self.value()), field_tok.pos)
        if word == "in":
            self.expect("[", "'[' after in")
            values = [self.value()]
            while self.peek().text == ",":
                self.take()
                values.append(self.value())
                if len(values) > MAX_IN_ITEMS:
                    raise SegmentError(f"more than {MAX_IN_ITEMS} values after in", token.pos)
            self.expect("]", "']' or ','")
            return _check_compare(Compare(field, "in", tuple(values)), field_tok.pos)
        if word == "is":
            negate = self.keyword("not")
            if not self.keyword("null"):
                raise SegmentError("expected 'null' after 'is'", self.peek().pos)
            return _check_compare(Compare(field, "is", None, negate), field_tok.pos)
        raise SegmentError(
            f"expected an operator (=, !=, <, <=, >, >=, contains, startswith, endswith, in, "
            f"is) after {field!r}, found {_show(token)}",
            token.pos,
        )

    def value(self) -> Scalar:
        token = self.take()
        if token.kind == "string":
            return _unquote(token)
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        raise SegmentError(
            f'expected a value (a "string", a number, true or false), found {_show(token)}',
            token.pos,
        )


def _show(token: _Tok) -> str:
    return "the end of the expression" if token.kind == "end" else repr(token.text)


def _check_field(name: str, pos: int | None, *, attr_only: bool = False) -> str:
    lower = name.lower()
    if lower.startswith("attr."):
        key = name[5:]
        if not _ATTR_KEY.fullmatch(key):
            raise SegmentError(
                f"attribute name {key!r} may contain only letters, digits, '_' and '-'", pos
            )
        return f"attr.{key}"
    if attr_only or lower not in FIELDS:
        raise SegmentError(f"unknown field {name!r}; use {', '.join(FIELDS)} or attr.<name>", pos)
    return lower


def _activity(kind: str, within: str, pos: int | None) -> Activity:
    match = _DURATION.fullmatch(within.strip().lower())
    if match is None:
        raise SegmentError(f"{within!r} is not a duration such as 30d, 12h or 2w", pos)
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise SegmentError("a duration must be positive", pos)
    return Activity(kind, match.group(0), seconds)


def _check_compare(node: Compare, pos: int | None) -> Compare:
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    if node.op in ("contains", "startswith", "endswith") and not isinstance(node.value, str):
        raise SegmentError(f"{node.op} needs a string value", pos)
    if node.op in ("<", "<=", ">", ">=") and isinstance(node.value, bool):
        raise SegmentError(f"{node.op} does not compare true/false", pos)
    if not node.field.startswith("attr."):
        for value in values:
            if node.op != "is" and not isinstance(value, str):
                raise SegmentError(f"{node.field} compares with strings only", pos)
        if node.field == "status":
            if node.op not in ("=", "!=", "in"):
                raise SegmentError("status takes =, != or in", pos)
            for value in values:
                if value not in STATUSES:
                    raise SegmentError(
                        f"unknown status {value!r}; known: {', '.join(STATUSES)}", pos
                    )
        if node.field == "domain" and node.op not in ("=", "!=", "in", "endswith"):
            raise SegmentError("domain takes =, !=, in or endswith", pos)
    return node


def parse(text: str) -> Node:
    """Parse the text form; SegmentError (with the character position) when invalid."""
    if not isinstance(text, str):
        raise SegmentError("a segment expression must be text or a JSON object")
    if len(text) > MAX_LENGTH:
        raise SegmentError(f"the expression is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise SegmentError("the expression is empty")
    return _Parser(text).parse()


def from_json(data: Any, *, _depth: int = 0) -> Node:
    """Build the tree from the JSON form (already decoded, or a JSON string)."""
    if isinstance(data, str):
        if len(data) > MAX_LENGTH * 4:
            raise SegmentError("the JSON expression is too long")
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SegmentError(f"the JSON expression does not parse: {exc.msg}") from None
    if _depth > MAX_DEPTH:
        raise SegmentError(f"the expression is nested deeper than {MAX_DEPTH}")
    if not isinstance(data, dict) or len(data) == 0:
        raise SegmentError('each JSON condition must be an object such as {"field": ...}')
    keys = set(data)
    if keys in ({"and"}, {"or"}):
        (key,) = keys
        items = data[key]
        if not isinstance(items, list) or not items or len(items) > MAX_NODES:
            raise SegmentError(f"{key!r} takes a non-empty list of conditions")
        nodes = tuple(from_json(item, _depth=_depth + 1) for item in items)
        if len(nodes) == 1:
            return nodes[0]
        return And(nodes) if key == "and" else Or(nodes)
    if keys == {"not"}:
        return Not(from_json(data["not"], _depth=_depth + 1))
    if keys == {"member"}:
        if not isinstance(data["member"], str):
            raise SegmentError("'member' takes a list name")
        return Member(data["member"])
    if keys == {"has"}:
        if not isinstance(data["has"], str):
            raise SegmentError("'has' takes an attribute such as attr.plan")
        return Has(_check_field(data["has"], None, attr_only=True))
    if keys == {"activity", "within"}:
        kind, within = data["activity"], data["within"]
        if not isinstance(kind, str) or kind.lower() not in KNOWN_ACTIVITY:
            raise SegmentError(f"unknown activity {kind!r}; known: {', '.join(KNOWN_ACTIVITY)}")
        if not isinstance(within, str):
            raise SegmentError("'within' takes a duration such as \"30d\"")
        return _activity(kind.lower(), within, None)
    if "field" in keys and "op" in keys and keys <= {"field", "op", "value"}:
        field, op, value = data["field"], data["op"], data.get("value")
        if not isinstance(field, str) or not isinstance(op, str):
            raise SegmentError("'field' and 'op' must be strings")
        op = {"==": "=", "<>": "!="}.get(op, op.lower())
        if op not in OPERATORS and op != "is not":
            raise SegmentError(f"unknown operator {op!r}; known: {', '.join(OPERATORS)}")
        checked = _check_field(field, None)
        if op in ("is", "is not"):
            if value is not None:
                raise SegmentError("'is' compares with null only")
            return _check_compare(Compare(checked, "is", None, op == "is not"), None)
        if op == "in":
            if not isinstance(value, list) or not value or len(value) > MAX_IN_ITEMS:
                raise SegmentError(f"'in' takes a list of 1 to {MAX_IN_ITEMS} values")
            return _check_compare(
                Compare(checked, "in", tuple(_json_scalar(v) for v in value)), None
            )
        return _check_compare(Compare(checked, op, _json_scalar(value)), None)
    raise SegmentError(f"not a condition: keys {sorted(keys)}")


def _json_scalar(value: Any) -> Scalar:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise SegmentError(f"a string is longer than {MAX_STRING} characters")
        return value
    if isinstance(value, bool | int | float) and value == value:  # not NaN
        return value
    raise SegmentError(f"a value must be a string, a number or true/false, not {value!r}")


def parse_any(expression: str | Mapping[str, Any]) -> Node:
    """Text, a JSON string (starting with ``{``), or a decoded JSON object."""
    if isinstance(expression, Mapping):
        return from_json(dict(expression))
    if expression.lstrip().startswith("{"):
        return from_json(expression)
    return parse(expression)


# -- canonical forms --------------------------------------------------------------------


def _lit(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def to_text(node: Node) -> str:
    """The canonical text form (parses back to the same tree)."""
    if isinstance(node, And | Or):
        word = " and " if isinstance(node, And) else " or "
        return word.join(
            f"({to_text(i)})" if isinstance(i, And | Or) else to_text(i) for i in node.items
        )
    if isinstance(node, Not):
        inner = to_text(node.item)
        return f"not ({inner})" if isinstance(node.item, And | Or) else f"not {inner}"
    if isinstance(node, Activity):
        return f"activity.{node.kind}({node.within})"
    if isinstance(node, Member):
        return f"member({_lit(node.list_name)})"
    if isinstance(node, Has):
        return f"has({node.field})"
    if node.op == "is":
        return f"{node.field} is {'not ' if node.negate else ''}null"
    if isinstance(node.value, tuple):
        return f"{node.field} in [{', '.join(_lit(v) for v in node.value)}]"
    assert node.value is not None
    return f"{node.field} {node.op} {_lit(node.value)}"


def to_json(node: Node) -> dict[str, Any]:
    """The JSON form of a tree."""
    if isinstance(node, And):
        return {"and": [to_json(i) for i in node.items]}
    if isinstance(node, Or):
        return {"or": [to_json(i) for i in node.items]}
    if isinstance(node, Not):
        return {"not": to_json(node.item)}
    if isinstance(node, Activity):
        return {"activity": node.kind, "within": node.within}
    if isinstance(node, Member):
        return {"member": node.list_name}
    if isinstance(node, Has):
        return {"has": node.field}
    if node.op == "is":
        return {"field": node.field, "op": "is not" if node.negate else "is", "value": None}
    value: Any = list(node.value) if isinstance(node.value, tuple) else node.value
    return {"field": node.field, "op": node.op, "value": value}


def list_names(node: Node) -> set[str]:
    """The list names ``member(...)`` conditions refer to (to resolve before compiling)."""
    if isinstance(node, Member):
        return {node.list_name}
    if isinstance(node, Not):
        return list_names(node.item)
    if isinstance(node, And | Or):
        return set().union(*(list_names(i) for i in node.items))
    return set()


# -- compiler ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompileContext:
    """What compiling needs: the dialect (``sqlite`` or ``postgresql``), the time,
    the audience's list, list ids by name for ``member``, and the activity sources."""

    dialect: str
    now: float
    list_id: int | None
    list_ids: Mapping[str, int]
    activity: Mapping[str, ActivitySource]


def compile_segment(node: Node, ctx: CompileContext) -> ColumnElement[bool]:
    """A boolean SQL expression over ``subscribers`` (and ``list_members`` for
    ``status``); SegmentError for conditions this context cannot compile (an unknown
    list, an activity without a source, ``status`` without a list)."""
    if isinstance(node, And):
        return and_(*(compile_segment(i, ctx) for i in node.items))
    if isinstance(node, Or):
        return or_(*(compile_segment(i, ctx) for i in node.items))
    if isinstance(node, Not):
        return not_(compile_segment(node.item, ctx))
    if isinstance(node, Activity):
        source = ctx.activity.get(node.kind)
        if source is None:
            raise SegmentError(
                f"activity.{node.kind} is not available here (no tracking data source)"
            )
        query = ActivityQuery(node.kind, ctx.now - node.seconds, None)
        return subscribers.c.id.in_(source(query))
    if isinstance(node, Member):
        list_id = ctx.list_ids.get(node.list_name)
        if list_id is None:
            raise SegmentError(f"member({node.list_name!r}): there is no such list")
        other = aliased(list_members)
        return exists(
            select(literal(1)).where(
                other.c.list_id == list_id,
                other.c.subscriber_id == subscribers.c.id,
                other.c.status == "subscribed",
            )
        )
    if isinstance(node, Has):
        return _definite(_json_present(node.field[5:], ctx.dialect))
    return _definite(_compare(node, ctx))


def _definite(expr: ColumnElement[Any]) -> ColumnElement[bool]:
    """NULL (unknown) becomes false, so ``not`` means what people expect."""
    return case((expr, true()), else_=false())


def _compare(node: Compare, ctx: CompileContext) -> ColumnElement[Any]:
    if node.field == "status":
        if ctx.list_id is None:
            raise SegmentError("status needs a list: give the segment or the audience a list")
        return _apply(list_members.c.status, node)
    if node.field == "email":
        lowered = Compare(node.field, node.op, _lower(node.value), node.negate)
        return _apply(subscribers.c.address_key, lowered)
    if node.field == "name":
        return _apply(subscribers.c.name, node)
    if node.field == "domain":
        return _domain(node)
    return _attribute(node, ctx.dialect)


def _lower(value: Scalar | tuple[Scalar, ...] | None) -> Any:
    if isinstance(value, tuple):
        return tuple(v.lower() if isinstance(v, str) else v for v in value)
    return value.lower() if isinstance(value, str) else value


def _apply(column: ColumnElement[Any], node: Compare) -> ColumnElement[Any]:
    op, value = node.op, node.value
    if op == "is":
        return column.is_not(None) if node.negate else column.is_(None)
    if op == "in":
        assert isinstance(value, tuple)
        return column.in_(list(value))
    if op == "contains":
        return column.contains(value, autoescape=True)
    if op == "startswith":
        return column.startswith(value, autoescape=True)
    if op == "endswith":
        return column.endswith(value, autoescape=True)
    return {
        "=": column.__eq__,
        "!=": column.__ne__,
        "<": column.__lt__,
        "<=": column.__le__,
        ">": column.__gt__,
        ">=": column.__ge__,
    }[op](value)


def _domain(node: Compare) -> ColumnElement[Any]:
    key = subscribers.c.address_key
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    domains = [str(v).lower().lstrip("@") for v in values]
    if node.op == "endswith":
        return key.endswith(domains[0], autoescape=True)
    matched = or_(*(key.endswith("@" + d, autoescape=True) for d in domains))
    return not_(matched) if node.op == "!=" else matched


def _json_text(key: str, dialect: str) -> ColumnElement[Any]:
    column = subscribers.c.attributes
    if dialect == "postgresql":
        return column.op("->>", return_type=String)(literal(key, String))
    return func.json_extract(column, literal(_path(key), String))


def _json_type(key: str, dialect: str) -> ColumnElement[Any]:
    """The JSON type name of an attribute, normalised: string, number, boolean, null, or
    SQL NULL when missing."""
    column = subscribers.c.attributes
    if dialect == "postgresql":
        value = column.op("->", return_type=JSON)(literal(key, String))
        return func.json_typeof(value)
    raw = func.json_type(column, literal(_path(key), String))
    return case(
        (raw == "text", "string"),
        (raw.in_(("integer", "real")), "number"),
        (raw.in_(("true", "false")), "boolean"),
        else_=raw,
    )


def _json_present(key: str, dialect: str) -> ColumnElement[Any]:
    kind = _json_type(key, dialect)
    return and_(kind.is_not(None), kind != "null")


def _path(key: str) -> str:
    # The key matched _ATTR_KEY (word characters and '-'), so it cannot close the quotes.
    return f'$."{key}"'


def _attribute(node: Compare, dialect: str) -> ColumnElement[Any]:
    key = node.field[5:]
    if node.op == "is":
        present = _json_present(key, dialect)
        return present if node.negate else not_(present)
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    kind = _json_type(key, dialect)
    text = _json_text(key, dialect)
    if node.op == "in":
        strings = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        bools = [v for v in values if isinstance(v, bool)]
        parts: list[ColumnElement[bool]] = []
        if strings:
            parts.append(and_(kind == "string", text.in_(strings)))
        if numbers:
            parts.append(and_(kind == "number", _as_number(key, kind, dialect).in_(numbers)))
        if bools:
            parts.append(
                and_(
                    kind == "boolean",
                    _as_bool_text(text, dialect).in_(["true" if b else "false" for b in bools]),
                )
            )
        return or_(*parts)
    value = values[0]
    if isinstance(value, bool):
        matched = and_(
            kind == "boolean", _as_bool_text(text, dialect) == ("true" if value else "false")
        )
        return not_(matched) if node.op == "!=" else matched
    if isinstance(value, str):
        compared = _apply(text, Compare(node.field, node.op, value))
        if node.op == "!=":
            return or_(kind != "string", kind.is_(None), compared)
        return and_(kind == "string", compared)
    number = _as_number(key, kind, dialect)
    compared = _apply(number, Compare(node.field, node.op, value))
    if node.op == "!=":
        return or_(kind != "number", kind.is_(None), compared)
    return and_(kind == "number", compared)


def _as_number(key: str, kind: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        # Cast only numbers: a CAST of other text would raise for the whole query.
        return case((kind == "number", cast(_json_text(key, dialect), Float)), else_=None)
    return case((kind == "number", _json_text(key, dialect)), else_=None)


def _as_bool_text(text: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return text
    # json_extract gives 1/0 for JSON true/false on SQLite.
    return case((text == 1, "true"), else_="false")
