"""The ProjectServer REST read API: ``{site}/_api/ProjectServer/Projects…`` and
``…/EnterpriseResources…`` (both editions; the only way to read plans in PSSE).

Routes: ``Projects``, ``Projects('{id}')`` (or ``guid'{id}'``), ``Projects('{id}')/Tasks``,
``/Assignments``, ``/ProjectResources``, ``EnterpriseResources``, ``EnterpriseResources('{id}')``.
Every collection takes ``$select``, ``$expand``, ``$filter``, ``$orderby``, ``$top`` and
``$skip``; the server pages ``Projects``, ``Tasks``, ``Assignments`` and
``EnterpriseResources`` at ``pwa_page_sizes["ProjectServer/…"]``, with a next link that keeps
the caller's options and continues with ``$skip`` (absolute, or relative to the request URL
with ``pwa_next_link_style: relative``). Default order: projects and resources by id, tasks in
outline order, assignments in task order.

Permissions: "Use Remote Interfaces" for any call; without "View Project Schedule" the project
list is security-trimmed to nothing and a project's own URLs answer 403; without "View
Enterprise Resource Data" the resource pool answers 403.
"""

from __future__ import annotations

import re

from starlette.responses import Response

from sandbox.odata_filter import FilterError, Schema, check, matches, parse_filter
from sandbox.odata_format import ODataError
from sandbox.odata_query import apply_orderby, parse_count, parse_orderby, with_query
from sandbox.published import TYPES, Node, PublishedStore, properties_of
from sandbox.pwa import REST_READ_SCOPES, PwaCall
from sandbox.rest_query import Writer, parse_selection
from sandbox.sharepoint_rest import INVALID_QUERY, NOT_FOUND, collection, single
from sandbox.state import (
    USE_REMOTE_INTERFACES,
    VIEW_ENTERPRISE_RESOURCES,
    VIEW_PROJECT_SCHEDULE,
)

ENTITY_SETS = ("Projects", "EnterpriseResources")
_PATH = re.compile(
    r"^(?P<set>Projects|EnterpriseResources)"
    r"(?:\((?:guid)?'(?P<id>[0-9A-Fa-f-]{36})'\))?"
    r"(?:/(?P<navigation>[A-Za-z]+))?$"
)
# Project navigation -> (entity type, page size key or None when the server does not page it)
_PROJECT_COLLECTIONS = {
    "Tasks": ("PublishedTask", "ProjectServer/Tasks"),
    "Assignments": ("PublishedAssignment", "ProjectServer/Assignments"),
    "ProjectResources": ("PublishedProjectResource", None),
}


def handles(path: str) -> bool:
    return path.split("/")[0].split("(")[0] in ENTITY_SETS


def _not_found(path: str) -> ODataError:
    return ODataError(404, f"Cannot find resource for the request {path}.", NOT_FOUND)


async def read(call: PwaCall, path: str) -> Response:
    call.require_scope(REST_READ_SCOPES)
    call.require_permission(USE_REMOTE_INTERFACES)
    match = _PATH.match(path)
    if not match:
        raise _not_found(path)
    store = PublishedStore(call.sandbox.tenant, call.sandbox.config.task_row_overrides)
    try:
        if match["set"] == "EnterpriseResources":
            return _resources(call, store, match["id"], match["navigation"], path)
        return _projects(call, store, match["id"], match["navigation"], path)
    except FilterError as error:
        raise ODataError(400, str(error), INVALID_QUERY) from error


def _resources(
    call: PwaCall, store: PublishedStore, resource_id: str | None, navigation: str | None, path: str
) -> Response:
    call.require_permission(VIEW_ENTERPRISE_RESOURCES)
    if navigation:
        raise _not_found(path)
    if resource_id is None:
        nodes = store.enterprise_resources()
        return _collection(call, "EnterpriseResource", nodes, "ProjectServer/EnterpriseResources")
    node = store.enterprise_resource(resource_id)
    if node is None:
        raise _not_found(path)
    return _single(call, node)


def _projects(
    call: PwaCall, store: PublishedStore, project_id: str | None, navigation: str | None, path: str
) -> Response:
    allowed = VIEW_PROJECT_SCHEDULE in call.user.pwa_permissions
    if project_id is None:
        if navigation:
            raise _not_found(path)
        nodes = store.projects() if allowed else []  # security trimming, not an error
        return _collection(call, "PublishedProject", nodes, "ProjectServer/Projects")
    call.require_permission(VIEW_PROJECT_SCHEDULE)
    project = store.project(project_id)
    if project is None:
        raise _not_found(path)
    if navigation is None:
        return _single(call, project)
    refused = call.sandbox.config.pwa_refuse_task_navigation
    if navigation not in _PROJECT_COLLECTIONS or (
        refused and navigation in ("Tasks", "Assignments")
    ):
        raise _not_found(path)
    type_key, page_key = _PROJECT_COLLECTIONS[navigation]
    return _collection(call, type_key, project.navigation[navigation](), page_key)


def _single(call: PwaCall, node: Node) -> Response:
    params = call.request.query_params
    selection = parse_selection(
        call.sandbox.tenant, node.type, params.get("$select"), params.get("$expand")
    )
    return single(call, Writer(call).entity(node, selection))


def _collection(call: PwaCall, type_key: str, nodes: list[Node], page_key: str | None) -> Response:
    """Filter, order, page and write nodes of one entity type."""
    params = call.request.query_params
    tenant, entity_type = call.sandbox.tenant, TYPES[type_key]
    selection = parse_selection(tenant, entity_type, params.get("$select"), params.get("$expand"))
    schema = Schema(entity_type.name, properties_of(tenant, entity_type))
    if "$filter" in params:
        expression = parse_filter(params["$filter"])
        check(expression, schema)
        nodes = [node for node in nodes if matches(expression, node.values)]
    order = parse_orderby(params.get("$orderby"), schema)
    if order:
        by_values = {id(node.values): node for node in nodes}
        nodes = [by_values[id(v)] for v in apply_orderby([n.values for n in nodes], order)]
    top, skip = parse_count("$top", params.get("$top")), parse_count("$skip", params.get("$skip"))
    skip = skip or 0
    page_size = call.sandbox.config.pwa_page_sizes.get(page_key, 100) if page_key else None
    remaining = nodes[skip:]
    limit = min(x for x in (top, page_size, len(remaining)) if x is not None)
    page = remaining[:limit]
    next_link = None
    if len(remaining) > len(page) and (top is None or top > len(page)):
        next_link = _next_link(call, skip + len(page), None if top is None else top - len(page))
    writer = Writer(call)
    entities = [writer.entity(node, selection) for node in page]
    return collection(call, f"{entity_type.name}s", entities, next_link)


def _next_link(call: PwaCall, skip: int, top: int | None) -> str:
    url = call.request.url
    absolute = with_query(
        str(url.replace(query="")),
        list(call.request.query_params.multi_items()),
        {"$skip": str(skip), "$top": None if top is None else str(top)},
    )
    if call.sandbox.config.pwa_next_link_style == "absolute":
        return absolute
    # Relative to the request URL: its last segment and the query ("Projects?…&$skip=100").
    path, _, query = absolute.partition("?")
    return f"{path.rsplit('/', 1)[-1]}?{query}"
