"""Collection queries of the emulated Dataverse Web API: ``$select``, ``$filter``, ``$top``,
server paging (``Prefer: odata.maxpagesize``, ``@odata.nextLink`` with a paging cookie in
``$skiptoken``) and change tracking (``Prefer: odata.track-changes``, ``@odata.deltaLink``
with ``$deltatoken``, ``$deletedEntity`` rows).

As the real service does, change tracking refuses ``$filter``, ``$orderby``, ``$expand`` and
``$top``, refuses tables whose change tracking is off, and answers an expired delta token with
an error (the client then reads the table in full again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode

from sandbox.dataverse_store import DataverseStore, Row
from sandbox.dataverse_tables import TableSpec
from sandbox.odata_filter import FilterError, Schema, check, matches, parse_filter

DEFAULT_PAGE_SIZE = 5000
MAX_PAGE_SIZE = 5000
_COOKIE = re.compile(r'<cookie pagenumber="(\d+)" lastid="([0-9a-f-]*)" version="(\d+)" />')
_DELTA = re.compile(r"^(\d+)!")


class QueryError(Exception):
    """A refused query: ``code`` is Dataverse's hexadecimal error code."""

    def __init__(self, message: str, status: int = 400, code: str = "0x80060888") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Page:
    body: dict[str, Any]
    page_size: int | None  # the applied odata.maxpagesize, for Preference-Applied


def prefer_values(header: str) -> dict[str, str]:
    values = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            values[name.strip().lower()] = value.strip().strip('"')
    return values


def query(
    store: DataverseStore,
    spec: TableSpec,
    params: dict[str, str],
    prefer: dict[str, str],
    service_root: str,
) -> Page:
    columns = spec.all_columns()
    select = _select(params.get("$select"), columns, spec)
    page_size = _page_size(prefer)
    tracking = "odata.track-changes" in prefer or "$deltatoken" in params
    if tracking:
        refused = [o for o in ("$filter", "$orderby", "$expand", "$top") if o in params]
        if refused:
            raise QueryError(
                f"The query option(s) {', '.join(refused)} cannot be used with change tracking "
                "(Prefer: odata.track-changes)."
            )
        if not store.change_tracking[spec.logical_name]:
            raise QueryError(
                f"Entity '{spec.logical_name}' is not enabled for change tracking.",
                400,
                "0x80044353",
            )
    unemulated = [o for o in ("$orderby", "$expand", "$count", "$apply", "$skip") if o in params]
    if unemulated:  # said, not silently ignored (the real service has all but $skip)
        raise QueryError(
            f"the sandbox does not emulate {', '.join(unemulated)} on Dataverse collections",
            400,
            "0x80060888",
        )
    cookie = _cookie(params.get("$skiptoken"))
    since = _delta_version(store, params.get("$deltatoken"))
    as_of = cookie[2] if cookie else store.version
    if since is not None:
        changed, deleted = store.changed_since(spec.entity_set, since)
        rows: list[Row | str] = sorted([*changed, *deleted], key=lambda r: _row_key(r, spec))
    else:
        rows = sorted(store.rows[spec.entity_set].values(), key=lambda r: r.data[spec.key])
        rows = _filtered(rows, params.get("$filter"), spec, columns)
    if "$top" in params:
        rows = rows[: _top(params["$top"])]
    if cookie:
        rows = [r for r in rows if _row_key(r, spec) > cookie[1]]
    page, rest = rows[:page_size], rows[page_size:]
    context = f"{service_root}/$metadata#{spec.entity_set}({','.join(select)})"
    body: dict[str, Any] = {
        "@odata.context": context + ("/$delta" if since is not None else ""),
        "value": [_render(r, spec, select, service_root) for r in page],
    }
    if rest:
        number = (cookie[0] if cookie else 1) + 1
        last = _row_key(page[-1], spec)
        token = f'<cookie pagenumber="{number}" lastid="{last}" version="{as_of}" />'
        next_params = {k: v for k, v in params.items() if k != "$skiptoken"}
        next_params["$skiptoken"] = token
        body["@odata.nextLink"] = f"{service_root}/{spec.entity_set}?{_encode(next_params)}"
    elif tracking:
        issued = datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S")
        delta_params = {"$select": params["$select"]} if "$select" in params else {}
        delta_params["$deltatoken"] = f"{as_of}!{issued}"
        body["@odata.deltaLink"] = f"{service_root}/{spec.entity_set}?{_encode(delta_params)}"
    return Page(body, page_size if "odata.maxpagesize" in prefer else None)


def _encode(params: dict[str, str]) -> str:
    return urlencode(params, quote_via=quote, safe="$,'")


def _select(text: str | None, columns: dict[str, str], spec: TableSpec) -> list[str]:
    if not text:
        return list(columns)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in columns:
            raise QueryError(
                f"Could not find a property named '{name}' on type "
                f"'Microsoft.Dynamics.CRM.{spec.logical_name}'.",
                400,
                "0x80060888",
            )
    return names if spec.key in names else [*names, spec.key]


def _page_size(prefer: dict[str, str]) -> int:
    raw = prefer.get("odata.maxpagesize")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or int(raw) < 1:
        raise QueryError(f"Invalid odata.maxpagesize preference value: {raw}")
    return min(int(raw), MAX_PAGE_SIZE)


def _top(raw: str) -> int:
    if not raw.isdigit():
        raise QueryError(f"Invalid value for $top: {raw}")
    return int(raw)


def _cookie(raw: str | None) -> tuple[int, str, int] | None:
    if raw is None:
        return None
    match = _COOKIE.fullmatch(unquote(raw))
    if not match:
        raise QueryError("The paging cookie in $skiptoken is not valid.", 400, "0x80040203")
    return int(match.group(1)), match.group(2), int(match.group(3))


def _delta_version(store: DataverseStore, raw: str | None) -> int | None:
    if raw is None:
        return None
    match = _DELTA.match(unquote(raw))
    if not match:
        raise QueryError("The delta token is not valid.", 400, "0x80044352")
    version = int(match.group(1))
    if version < store.oldest_token_version:
        raise QueryError(
            "The delta token has expired (change tracking keeps changes for 7 days by "
            "default); read the table again without a token.",
            400,
            "0x80044352",
        )
    return version


def _filtered(rows: list[Row], text: str | None, spec: TableSpec, columns: dict[str, str]):
    if not text:
        return rows
    try:
        expr = parse_filter(text)
        check(expr, Schema(f"Microsoft.Dynamics.CRM.{spec.logical_name}", columns))
    except FilterError as exc:
        raise QueryError(str(exc)) from None
    return [r for r in rows if matches(expr, r.data)]


def _row_key(row: Row | str, spec: TableSpec) -> str:
    return row if isinstance(row, str) else row.data[spec.key]


def _render(row: Row | str, spec: TableSpec, select: list[str], root: str) -> dict[str, Any]:
    if isinstance(row, str):
        return {
            "@odata.context": f"{root}/$metadata#{spec.entity_set}/$deletedEntity",
            "id": row,
            "reason": "deleted",
        }
    out: dict[str, Any] = {"@odata.etag": f'W/"{row.version}"'}
    for name in select:
        out[name] = _json(row.data.get(name))
    return out


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value
