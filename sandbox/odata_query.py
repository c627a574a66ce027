"""Parsing and applying the OData query options other than ``$filter``.

Shared by the ProjectData feed and Graph's event lists; the paging rules differ between the
two services and stay with their endpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from sandbox.odata_filter import FilterError, Schema, sort_key

OrderBy = list[tuple[tuple[str, ...], bool]]  # (property path, descending)


def parse_select(text: str | None, known: Iterable[str], type_name: str) -> list[str] | None:
    """The selected property names in request order, or None for all properties."""
    if text is None or text.strip() in ("", "*"):
        return None
    known = set(known)
    selected: list[str] = []
    for position, name in _items(text):
        if name == "*":
            return None
        if name not in known:
            raise FilterError(
                f"No property '{name}' exists in type '{type_name}' at position {position}."
            )
        if name not in selected:
            selected.append(name)
    return selected


def parse_orderby(text: str | None, schema: Schema) -> OrderBy:
    if not text:
        return []
    order: OrderBy = []
    for position, item in _items(text):
        path_text, _, direction = item.partition(" ")
        direction = direction.strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise FilterError(f"Syntax error at position {position + len(path_text) + 1}.")
        path = tuple(path_text.split("/"))
        schema.member_type(path, position)  # raises for unknown properties
        order.append((path, direction == "desc"))
    return order


def _items(text: str) -> Iterable[tuple[int, str]]:
    position = 0
    for raw in text.split(","):
        stripped = raw.strip()
        yield position + (len(raw) - len(raw.lstrip())), stripped
        position += len(raw) + 1


def apply_orderby(rows: list[Mapping[str, Any]], order: OrderBy) -> list[Mapping[str, Any]]:
    """Sort as SQL Server does: nulls first when ascending, last when descending."""
    for path, descending in reversed(order):  # stable sorts, least significant key first
        rows = sorted(rows, key=lambda row, path=path: _key(_value(row, path)), reverse=descending)
    return rows


def _value(row: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = row
    for name in path:
        value = value.get(name) if isinstance(value, Mapping) else None
    return value


def _key(value: Any) -> tuple[bool, Any]:
    return (value is not None, sort_key(value) if value is not None else 0)


def parse_count(name: str, text: str | None) -> int | None:
    """``$top``/``$skip``: a non-negative integer or absent."""
    if text is None:
        return None
    if not text.isdigit():
        raise FilterError(
            f"Invalid value '{text}' for {name} query option found. The {name} "
            "query option requires a non-negative integer value."
        )
    return int(text)


def with_query(
    url_without_query: str, params: list[tuple[str, str]], replacements: dict[str, str | None]
) -> str:
    """The URL with the caller's query options, some of them replaced (None removes one)."""
    kept = [(k, v) for k, v in params if k not in replacements]
    kept += [(k, v) for k, v in replacements.items() if v is not None]
    query = urlencode(kept, quote_via=quote, safe="$'(),:")
    return f"{url_without_query}?{query}"
