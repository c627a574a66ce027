"""A small OData ``$filter`` parser, type checker and evaluator.

It covers what the ProjectData feed (OData V3, WCF Data Services) and Graph's event queries
(OData V4) accept in practice:

* comparisons ``eq ne gt ge lt le``, ``and``, ``or``, ``not`` and parentheses, with the OData
  precedence (``not`` binds to the primary after it, so ``not (A eq B)`` needs the parentheses);
* literals ``'text'`` (``''`` escapes a quote), ``guid'…'`` and V4's bare GUIDs, ``datetime'…'``,
  ``datetimeoffset'…'``, bare V4 date-times (``2026-01-01T00:00:00Z``), integers and decimals
  (with the V3 suffixes ``L M D F``), ``true``, ``false`` and ``null``;
* member paths ``a/b``, lambda operators ``coll/any(x: …)`` and ``coll/all(x: …)``;
* the functions ``substringof``, ``startswith``, ``endswith``, ``contains``, ``tolower``,
  ``toupper``.

Arithmetic operators are not supported.  Errors carry WCF's wording and positions, because
that is what a client sees in the real error body.  String comparisons are case-insensitive, as
SQL Server's default collation behind ProjectData and Exchange's store compare them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class FilterError(ValueError):
    """The ``$filter`` text is not valid; the message is the one to show to the client."""


# ---------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class Literal:
    value: Any
    edm_type: str  # "Null" for null
    position: int


@dataclass(frozen=True)
class Member:
    path: tuple[str, ...]
    position: int


@dataclass(frozen=True)
class Not:
    operand: Expr
    position: int


@dataclass(frozen=True)
class Binary:
    operator: str
    left: Expr
    right: Expr
    position: int


@dataclass(frozen=True)
class Call:
    name: str
    arguments: tuple[Expr, ...]
    position: int


@dataclass(frozen=True)
class Lambda:
    quantifier: str  # "any" or "all"
    collection: Member
    variable: str | None
    predicate: Expr | None
    position: int


Expr = Literal | Member | Not | Binary | Call | Lambda

COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})

# ---------------------------------------------------------------------------------------------
# Tokens

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<typed>(?:guid|datetimeoffset|datetime|time)'(?:[^']|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[LlMmDdFf]?)
  | (?P<name>[A-Za-z_$][A-Za-z0-9_]*)
  | (?P<punct>[(),:/])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise FilterError(f"Syntax error at position {position}.")
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup or "", match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _unquote(quoted: str) -> str:
    return quoted[1:-1].replace("''", "'")


def _parse_datetime(text: str, position: int, edm_type: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FilterError(
            f"Unrecognized '{edm_type}' literal '{text}' at position {position}."
        ) from exc


def _typed_literal(token: _Token) -> Literal:
    prefix, _, quoted = token.text.partition("'")
    body = _unquote("'" + quoted)
    prefix = prefix.lower()
    if prefix == "guid":
        try:
            return Literal(str(uuid.UUID(body)), "Edm.Guid", token.position)
        except ValueError as exc:
            raise FilterError(
                f"Unrecognized 'Edm.Guid' literal '{token.text}' at position {token.position}."
            ) from exc
    if prefix == "datetime":
        value = _parse_datetime(body, token.position, "Edm.DateTime")
        if value.tzinfo is not None:
            raise FilterError(
                f"Unrecognized 'Edm.DateTime' literal '{token.text}' at position {token.position}."
            )
        return Literal(value, "Edm.DateTime", token.position)
    if prefix == "datetimeoffset":
        return Literal(
            _parse_datetime(body, token.position, "Edm.DateTimeOffset"),
            "Edm.DateTimeOffset",
            token.position,
        )
    return Literal(body, "Edm.Time", token.position)


def _number_literal(token: _Token) -> Literal:
    text = token.text
    suffix = text[-1].upper() if text[-1].isalpha() and text[-1] not in "eE" else ""
    digits = text[:-1] if suffix else text
    try:
        if suffix == "L":
            return Literal(int(digits), "Edm.Int64", token.position)
        if suffix in ("D", "F") or "e" in digits.lower():
            return Literal(float(digits), "Edm.Double", token.position)
        if suffix == "M" or "." in digits:
            return Literal(Decimal(digits), "Edm.Decimal", token.position)
        value = int(digits)
    except (ValueError, InvalidOperation) as exc:
        raise FilterError(f"Syntax error at position {token.position}.") from exc
    return Literal(value, "Edm.Int32" if -(2**31) <= value < 2**31 else "Edm.Int64", token.position)


# ---------------------------------------------------------------------------------------------
# Parser (recursive descent)


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._index = 0

    def parse(self) -> Expr:
        if self._peek().kind == "end":
            raise FilterError("Expression expected at position 0.")
        expr = self._or()
        token = self._peek()
        if token.kind != "end":
            raise FilterError(f"Syntax error at position {token.position}.")
        return expr

    def _peek(self, offset: int = 0) -> _Token:
        return self._tokens[min(self._index + offset, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self._index += 1
        return token

    def _is_keyword(self, word: str) -> bool:
        token = self._peek()
        return token.kind == "name" and token.text == word

    def _expect(self, text: str) -> _Token:
        token = self._next()
        if token.text != text:
            raise FilterError(f"'{text}' expected at position {token.position}.")
        return token

    def _or(self) -> Expr:
        left = self._and()
        while self._is_keyword("or"):
            position = self._next().position
            left = Binary("or", left, self._and(), position)
        return left

    def _and(self) -> Expr:
        left = self._comparison()
        while self._is_keyword("and"):
            position = self._next().position
            left = Binary("and", left, self._comparison(), position)
        return left

    def _comparison(self) -> Expr:
        left = self._unary()
        token = self._peek()
        if token.kind == "name" and token.text in COMPARISONS:
            self._next()
            return Binary(token.text, left, self._unary(), token.position)
        return left

    def _unary(self) -> Expr:
        if self._is_keyword("not"):
            position = self._next().position
            return Not(self._unary(), position)
        return self._primary()

    def _primary(self) -> Expr:
        token = self._next()
        if token.text == "(":
            expr = self._or()
            self._expect(")")
            return expr
        if token.kind == "string":
            return Literal(_unquote(token.text), "Edm.String", token.position)
        if token.kind == "typed":
            return _typed_literal(token)
        if token.kind == "guid":  # OData V4 (Dataverse): a bare GUID literal
            return Literal(str(uuid.UUID(token.text)), "Edm.Guid", token.position)
        if token.kind == "datetime":
            value = _parse_datetime(token.text, token.position, "Edm.DateTimeOffset")
            return Literal(value, "Edm.DateTimeOffset", token.position)
        if token.kind == "number":
            return _number_literal(token)
        if token.kind == "name":
            return self._name(token)
        raise FilterError(f"Expression expected at position {token.position}.")

    def _name(self, token: _Token) -> Expr:
        constants = {
            "true": (True, "Edm.Boolean"),
            "false": (False, "Edm.Boolean"),
            "null": (None, "Null"),
        }
        if token.text in constants:
            value, edm_type = constants[token.text]
            return Literal(value, edm_type, token.position)
        if self._peek().text == "(":
            return self._call(token)
        path = [token.text]
        while self._peek().text == "/":
            self._next()
            segment = self._next()
            if segment.kind != "name":
                raise FilterError(f"Identifier expected at position {segment.position}.")
            if segment.text in ("any", "all") and self._peek().text == "(":
                return self._lambda(segment, Member(tuple(path), token.position))
            path.append(segment.text)
        return Member(tuple(path), token.position)

    def _call(self, name: _Token) -> Call:
        self._expect("(")
        arguments: list[Expr] = []
        if self._peek().text != ")":
            arguments.append(self._or())
            while self._peek().text == ",":
                self._next()
                arguments.append(self._or())
        self._expect(")")
        return Call(name.text, tuple(arguments), name.position)

    def _lambda(self, quantifier: _Token, collection: Member) -> Lambda:
        self._expect("(")
        if self._peek().text == ")":
            self._next()
            return Lambda(quantifier.text, collection, None, None, quantifier.position)
        variable = self._next()
        if variable.kind != "name":
            raise FilterError(f"Identifier expected at position {variable.position}.")
        self._expect(":")
        predicate = self._or()
        self._expect(")")
        return Lambda(quantifier.text, collection, variable.text, predicate, quantifier.position)


def parse_filter(text: str) -> Expr:
    """Parse a ``$filter`` expression; raises FilterError with WCF-style wording."""
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------
# Type checking against an entity schema


@dataclass(frozen=True)
class Schema:
    """The filterable shape of an entity: Edm type names, complex types and collections."""

    type_name: str
    properties: Mapping[str, str | Schema]
    collections: Mapping[str, Schema] = field(default_factory=dict)

    def member_type(self, path: tuple[str, ...], position: int) -> str | Schema:
        current: str | Schema = self
        for name in path:
            if not isinstance(current, Schema):
                raise FilterError(
                    f"No property '{name}' exists in type '{current}' at position {position}."
                )
            if name in current.collections:
                current = f"Collection({current.collections[name].type_name})"
                continue
            if name not in current.properties:
                raise FilterError(
                    f"No property '{name}' exists in type '{current.type_name}' "
                    f"at position {position}."
                )
            current = current.properties[name]
        return current

    def collection(self, path: tuple[str, ...], position: int) -> Schema:
        *parents, last = path
        owner = self.member_type(tuple(parents), position) if parents else self
        if not isinstance(owner, Schema) or last not in owner.collections:
            raise FilterError(f"'{last}' is not a collection at position {position}.")
        return owner.collections[last]


_KINDS = {
    "Edm.String": "string",
    "Edm.Guid": "guid",
    "Edm.Boolean": "boolean",
    "Edm.DateTime": "datetime",
    "Edm.DateTimeOffset": "datetime",
    "Edm.Time": "time",
    "Edm.Byte": "number",
    "Edm.Int16": "number",
    "Edm.Int32": "number",
    "Edm.Int64": "number",
    "Edm.Decimal": "number",
    "Edm.Double": "number",
    "Edm.Single": "number",
}

_FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "substringof": (("Edm.String", "Edm.String"), "Edm.Boolean"),
    "startswith": (("Edm.String", "Edm.String"), "Edm.Boolean"),
    "endswith": (("Edm.String", "Edm.String"), "Edm.Boolean"),
    "contains": (("Edm.String", "Edm.String"), "Edm.Boolean"),
    "tolower": (("Edm.String",), "Edm.String"),
    "toupper": (("Edm.String",), "Edm.String"),
}


def check(expr: Expr, schema: Schema) -> None:
    """Reject unknown properties and incompatible operand types, as WCF does before querying."""
    if _type_of(expr, schema, {}) not in ("Edm.Boolean", "Null"):
        raise FilterError("Expression of type 'Edm.Boolean' expected at position 0.")


def _type_of(expr: Expr, schema: Schema, scope: dict[str, Schema]) -> str:
    if isinstance(expr, Literal):
        return expr.edm_type
    if isinstance(expr, Member):
        if expr.path[0] in scope:
            if len(expr.path) == 1:
                return scope[expr.path[0]].type_name
            found = scope[expr.path[0]].member_type(expr.path[1:], expr.position)
        else:
            found = schema.member_type(expr.path, expr.position)
        return found.type_name if isinstance(found, Schema) else found
    if isinstance(expr, Not):
        _require_boolean("not", _type_of(expr.operand, schema, scope), "Edm.Boolean", expr.position)
        return "Edm.Boolean"
    if isinstance(expr, Binary):
        left = _type_of(expr.left, schema, scope)
        right = _type_of(expr.right, schema, scope)
        if expr.operator in ("and", "or"):
            _require_boolean(expr.operator, left, right, expr.position)
        elif "Null" not in (left, right) and _KINDS.get(left) != _KINDS.get(right):
            raise FilterError(
                f"Operator '{expr.operator}' incompatible with operand types '{left}' and "
                f"'{right}' at position {expr.position}."
            )
        return "Edm.Boolean"
    if isinstance(expr, Call):
        if expr.name not in _FUNCTIONS:
            raise FilterError(f"Unknown function '{expr.name}' at position {expr.position}.")
        parameters, result = _FUNCTIONS[expr.name]
        actual = [_type_of(argument, schema, scope) for argument in expr.arguments]
        if len(actual) != len(parameters) or any(
            a not in (p, "Null") for a, p in zip(actual, parameters, strict=True)
        ):
            raise FilterError(
                f"No applicable function found for '{expr.name}' at position {expr.position} "
                f"with the specified arguments. The functions considered are: "
                f"{expr.name}({', '.join(parameters)})."
            )
        return result
    element = _lambda_element(expr, schema, scope)
    if expr.predicate is not None and expr.variable is not None:
        inner = _type_of(expr.predicate, schema, {**scope, expr.variable: element})
        _require_boolean(expr.quantifier, inner, "Edm.Boolean", expr.position)
    return "Edm.Boolean"


def _lambda_element(expr: Lambda, schema: Schema, scope: dict[str, Schema]) -> Schema:
    path = expr.collection.path
    if path[0] in scope:
        return scope[path[0]].collection(path[1:], expr.position)
    return schema.collection(path, expr.position)


def _require_boolean(operator: str, left: str, right: str, position: int) -> None:
    if {left, right} - {"Edm.Boolean", "Null"}:
        raise FilterError(
            f"Operator '{operator}' incompatible with operand types '{left}' and '{right}' "
            f"at position {position}."
        )


# ---------------------------------------------------------------------------------------------
# Evaluation

Row = Mapping[str, Any]


def matches(expr: Expr, row: Row) -> bool:
    """Whether ``row`` satisfies the (already checked) filter."""
    return _evaluate(expr, row, {}) is True


def _evaluate(expr: Expr, row: Row, scope: dict[str, Any]) -> Any:
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Member):
        return _resolve(expr.path, row, scope)
    if isinstance(expr, Not):
        operand = _evaluate(expr.operand, row, scope)
        return None if operand is None else not operand
    if isinstance(expr, Binary):
        left = _evaluate(expr.left, row, scope)
        if expr.operator == "and" and left is False:
            return False
        if expr.operator == "or" and left is True:
            return True
        right = _evaluate(expr.right, row, scope)
        if expr.operator in ("and", "or"):
            return bool(right)
        return _compare(expr.operator, left, right)
    if isinstance(expr, Call):
        return _call(expr.name, [_evaluate(argument, row, scope) for argument in expr.arguments])
    items = _resolve(expr.collection.path, row, scope) or []
    if expr.predicate is None or expr.variable is None:
        return bool(items) if expr.quantifier == "any" else True
    outcomes = (
        _evaluate(expr.predicate, row, {**scope, expr.variable: item}) is True for item in items
    )
    return any(outcomes) if expr.quantifier == "any" else all(outcomes)


def _resolve(path: tuple[str, ...], row: Row, scope: dict[str, Any]) -> Any:
    if path[0] in scope:
        value, rest = scope[path[0]], path[1:]
    else:
        value, rest = row, path
    for name in rest:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _normalized(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def sort_key(value: Any) -> Any:
    """The comparison key the evaluator uses, exposed for ``$orderby``."""
    return _normalized(value)


_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def _compare(operator: str, left: Any, right: Any) -> bool:
    left, right = _normalized(left), _normalized(right)
    if operator == "eq":
        return left == right
    if operator == "ne":
        return left != right
    if left is None or right is None:
        return False  # OData: an ordering comparison with null is false.
    try:
        return _ORDERINGS[operator](left, right)
    except TypeError:
        return False


def _call(name: str, arguments: list[Any]) -> Any:
    if any(argument is None for argument in arguments):
        return None
    folded = [_normalized(argument) for argument in arguments]
    if name == "substringof":
        return folded[0] in folded[1]
    if name == "contains":
        return folded[1] in folded[0]
    if name == "startswith":
        return folded[0].startswith(folded[1])
    if name == "endswith":
        return folded[0].endswith(folded[1])
    return arguments[0].lower() if name == "tolower" else arguments[0].upper()
