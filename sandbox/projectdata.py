"""The ProjectData reporting feed: ``{site}/_api/ProjectData/…`` (OData V3, read-only).

Entity sets, single entities by key and collection navigation paths such as
``Projects(guid'…')/Tasks``; ``$filter``, ``$select``, ``$orderby``, ``$top``, ``$skip`` and
``$format``.  The server pages at the real page sizes: when rows remain it adds a next link
that keeps the caller's options and continues with ``$skip``; a ``$top`` above the page size
still gets one page plus a next link.  Without ``$orderby`` rows come in key order, which is
how WCF keeps server-driven pages stable.  ``$expand`` and ``$links`` are refused, as the real
feed does not implement them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.edmx import metadata_document
from sandbox.odata_filter import (
    Binary,
    Expr,
    FilterError,
    Literal,
    Member,
    check,
    matches,
    parse_filter,
)
from sandbox.odata_format import (
    ACCESS_DENIED,
    ACCESS_DENIED_CODE,
    Format,
    ODataError,
    encode_value,
    render,
)
from sandbox.odata_query import apply_orderby, parse_count, parse_orderby, parse_select, with_query
from sandbox.pwa import READ_SCOPES, PwaCall, pwa_endpoint
from sandbox.reporting import ENTITY_SETS, NAMESPACE, EntitySet, rows
from sandbox.state import REPORTING

SUPPORTED_OPTIONS = frozenset({"$filter", "$select", "$orderby", "$top", "$skip", "$format"})
NOT_IMPLEMENTED_OPTIONS = frozenset({"$expand", "$links"})
_SEGMENT = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<key>[^)]*)\))?$")
_KEY_PART = re.compile(r"^(?:(?P<name>[A-Za-z]+)=)?guid'(?P<guid>[0-9A-Fa-f-]{36})'$")


def _path_key(request: Request) -> str:
    segments = [
        segment.split("(")[0] + ("()" if "(" in segment else "")
        for segment in request.path_params.get("path", "").split("/")
        if segment
    ]
    return "/".join(["ProjectData", *segments])


def _require_reporting(call: PwaCall) -> None:
    call.require_scope(READ_SCOPES)
    if REPORTING not in call.user.pwa_permissions:
        raise ODataError(403, ACCESS_DENIED, ACCESS_DENIED_CODE)


async def _metadata(call: PwaCall) -> Response:
    _require_reporting(call)
    return Response(metadata_document(call.sandbox.tenant), media_type="application/xml")


async def _feed(call: PwaCall) -> Response:
    _require_reporting(call)
    segments = [s for s in call.request.path_params.get("path", "").split("/") if s]
    if not segments:
        return _service_document(call)
    _check_options(call.request)
    try:
        return _query(call, segments)
    except FilterError as error:
        raise ODataError(400, str(error)) from error


def _check_options(request: Request) -> None:
    for name in request.query_params:
        if name in NOT_IMPLEMENTED_OPTIONS:
            raise ODataError(
                400,
                f"The query option '{name}' is not implemented by the "
                "ProjectData service. Use navigation paths instead.",
            )
        if name.startswith("$") and name not in SUPPORTED_OPTIONS:
            raise ODataError(
                400,
                f"The query parameter '{name}' begins with a system-reserved "
                "'$' character but is not recognized.",
            )


def _query(call: PwaCall, segments: list[str]) -> Response:
    tenant = call.sandbox.tenant
    if "$links" in segments:
        raise ODataError(
            400,
            "The $links segment is not implemented by the ProjectData "
            "service. Use navigation paths instead.",
        )
    entity_set, key = _parse_segment(segments[0])
    if key is None:
        if len(segments) != 1:
            raise ODataError(400, "Bad Request - Error in query syntax.")
        return _collection(call, entity_set, lambda project: rows(tenant, entity_set, project))
    matching = [
        row
        for row in rows(tenant, entity_set, key.get("ProjectId"))
        if _has_key(entity_set, row, key)
    ]
    if not matching:
        raise ODataError(404, f"Resource not found for the segment '{entity_set.name}'.")
    if len(segments) == 1:
        return _single(call, entity_set, matching[0])
    if len(segments) != 2:
        raise ODataError(400, "Bad Request - Error in query syntax.")
    parent, join_keys = matching[0], _join_keys(entity_set, segments[1])
    target = ENTITY_SETS[segments[1]]
    return _collection(
        call,
        target,
        lambda _: [
            row
            for row in rows(tenant, target, parent.get("ProjectId"))
            if all(row[k] == parent[k] for k in join_keys)
        ],
    )


def _parse_segment(segment: str) -> tuple[EntitySet, dict[str, str] | None]:
    match = _SEGMENT.match(segment)
    if not match or match["name"] not in ENTITY_SETS:
        name = match["name"] if match else segment
        raise ODataError(404, f"Resource not found for the segment '{name}'.")
    entity_set = ENTITY_SETS[match["name"]]
    if match["key"] is None:
        return entity_set, None
    key: dict[str, str] = {}
    for part in match["key"].split(","):
        part_match = _KEY_PART.match(part.strip())
        if not part_match:
            raise ODataError(400, "Bad Request - Error in query syntax.")
        key[part_match["name"] or entity_set.keys[0]] = part_match["guid"].lower()
    if set(key) != set(entity_set.keys):
        raise ODataError(
            400, f"Bad Request - the key of '{entity_set.name}' is ({', '.join(entity_set.keys)})."
        )
    return entity_set, key


def _has_key(entity_set: EntitySet, row: dict[str, Any], key: dict[str, str]) -> bool:
    return all(row[name] == key[name] for name in entity_set.keys)


def _join_keys(entity_set: EntitySet, name: str) -> tuple[str, ...]:
    if name not in entity_set.navigation:
        raise ODataError(404, f"Resource not found for the segment '{name}'.")
    return entity_set.navigation[name]


def _project_scope(expression: Expr | None) -> str | None:
    """The project a filter is limited to by ``ProjectId eq guid'…'`` at the top of an ``and``
    chain: then only that project's rows need building (the common key-filtered query)."""
    if not isinstance(expression, Binary):
        return None
    if expression.operator == "and":
        return _project_scope(expression.left) or _project_scope(expression.right)
    if (
        expression.operator == "eq"
        and isinstance(expression.left, Member)
        and expression.left.path == ("ProjectId",)
        and isinstance(expression.right, Literal)
        and expression.right.edm_type == "Edm.Guid"
    ):
        return expression.right.value
    return None


def _collection(
    call: PwaCall, entity_set: EntitySet, source: Callable[[str | None], list[dict[str, Any]]]
) -> Response:
    """Filter, order, page and render rows; ``source`` yields them, for one project if given."""
    params = call.request.query_params
    tenant = call.sandbox.tenant
    schema = entity_set.schema(tenant)
    expression = parse_filter(params["$filter"]) if "$filter" in params else None
    candidates = source(_project_scope(expression))
    if expression is not None:
        check(expression, schema)
        candidates = [row for row in candidates if matches(expression, row)]
    order = parse_orderby(params.get("$orderby"), schema) or [
        ((key,), False) for key in entity_set.keys
    ]
    candidates = apply_orderby(candidates, order)
    selected = _selection(entity_set, tenant, params.get("$select"))
    top, skip = parse_count("$top", params.get("$top")), parse_count("$skip", params.get("$skip"))
    skip = skip or 0
    page_size = call.sandbox.config.pwa_page_sizes.get(entity_set.name, 300)
    remaining = candidates[skip:]
    page = remaining[: page_size if top is None else min(top, page_size)]
    next_link = None
    if len(remaining) > len(page) and (top is None or top > len(page)):
        next_link = with_query(
            str(call.request.url.replace(query="")),
            list(params.multi_items()),
            {"$skip": str(skip + len(page)), "$top": None if top is None else str(top - len(page))},
        )
    entities = [_entity(call, entity_set, row, selected) for row in page]
    if call.fmt is Format.VERBOSE:
        body: dict[str, Any] = {"results": entities}
        if next_link:
            body["__next"] = next_link
        return render({"d": body}, call.fmt)
    light: dict[str, Any] = {}
    if call.fmt is Format.MINIMAL:
        fragment = entity_set.name + (f"&$select={','.join(selected)}" if selected else "")
        light["odata.metadata"] = f"{_service_root(call)}/$metadata#{fragment}"
    light["value"] = entities
    if next_link:
        light["odata.nextLink"] = next_link
    return render(light, call.fmt)


def _selection(entity_set: EntitySet, tenant: Any, select: str | None) -> list[str] | None:
    known = [*entity_set.all_properties(tenant), *entity_set.navigation]
    return parse_select(select, known, f"{NAMESPACE}.{entity_set.type_name}")


def _single(call: PwaCall, entity_set: EntitySet, row: dict[str, Any]) -> Response:
    try:
        selected = _selection(
            entity_set, call.sandbox.tenant, call.request.query_params.get("$select")
        )
    except FilterError as error:
        raise ODataError(400, str(error)) from error
    entity = _entity(call, entity_set, row, selected)
    if call.fmt is Format.VERBOSE:
        return render({"d": entity}, call.fmt)
    if call.fmt is Format.MINIMAL:
        metadata = f"{_service_root(call)}/$metadata#{entity_set.name}/@Element"
        entity = {"odata.metadata": metadata, **entity}
    return render(entity, call.fmt)


def _entity(
    call: PwaCall, entity_set: EntitySet, row: dict[str, Any], selected: list[str] | None
) -> dict[str, Any]:
    properties = entity_set.all_properties(call.sandbox.tenant)
    names = selected or [*properties, *entity_set.navigation]
    entity: dict[str, Any] = {}
    uri = f"{_service_root(call)}/{entity_set.key_segment(row)}"
    if call.fmt is Format.VERBOSE:
        entity["__metadata"] = {
            "id": uri,
            "uri": uri,
            "type": f"{NAMESPACE}.{entity_set.type_name}",
        }
    overrides = _row_overrides(call, entity_set, row)
    for name in names:
        if name in overrides:
            entity[name] = overrides[name]  # bad data, exactly as configured
        elif name in properties:
            entity[name] = encode_value(row.get(name), properties[name], call.fmt)
        elif call.fmt is Format.VERBOSE:  # navigation links exist only in verbose payloads
            entity[name] = {"__deferred": {"uri": f"{uri}/{name}"}}
    return entity


def _row_overrides(call: PwaCall, entity_set: EntitySet, row: dict[str, Any]) -> dict[str, Any]:
    """The raw values ``task_row_overrides`` puts into this row (Tasks rows only)."""
    if entity_set.name != "Tasks":
        return {}
    return call.sandbox.config.task_row_overrides.get(str(row.get("TaskId", "")).lower(), {})


def _service_root(call: PwaCall) -> str:
    url = call.request.url
    return f"{url.scheme}://{url.netloc}{call.sandbox.tenant.site_path}/_api/ProjectData"


def _service_document(call: PwaCall) -> Response:
    names = list(ENTITY_SETS)
    if call.fmt is Format.VERBOSE:
        return render({"d": {"EntitySets": names}}, call.fmt)
    return render(
        {
            "odata.metadata": f"{_service_root(call)}/$metadata",
            "value": [{"name": n, "url": n} for n in names],
        },
        call.fmt,
    )


async def _removed(call: PwaCall) -> Response:
    # What SharePoint answers for an _api segment it does not know.
    raise ODataError(
        404,
        'The expression "ProjectData" is not valid.',
        "-1, Microsoft.SharePoint.Client.InvalidClientQueryException",
    )


def removed_routes(site_path: str) -> list[Route]:
    """Project Server Subscription Edition: every ProjectData URL answers 404, whatever the
    Accept header (the error in JSON light unless verbose is asked for)."""
    gone = pwa_endpoint(_removed, _path_key, json_only=False)
    metadata = pwa_endpoint(_removed, lambda _: "ProjectData/$metadata", json_only=False)
    return _feed_routes(site_path, gone, metadata)


def routes(site_path: str) -> list[Route]:
    feed = pwa_endpoint(_feed, _path_key)
    metadata = pwa_endpoint(_metadata, lambda _: "ProjectData/$metadata", json_only=False)
    return _feed_routes(site_path, feed, metadata)


def _feed_routes(site_path: str, feed: Callable, metadata: Callable) -> list[Route]:
    root = f"{site_path}/_api/ProjectData"
    return [
        Route(f"{root}/$metadata", metadata, methods=["GET"]),
        Route(root, feed, methods=["GET"]),
        Route(f"{root}/{{path:path}}", feed, methods=["GET"]),
    ]
