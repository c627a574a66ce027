"""Microsoft Graph v1.0's basic Planner reads, and the directory read of an assignee.

- ``GET /planner/plans/{id}``: the plan (``@odata.etag``, ``title``, ``container``, ``owner``);
- ``GET /planner/plans/{id}/details``: ``categoryDescriptions`` (category1..category25);
- ``GET /planner/plans/{id}/tasks``: pages of a fixed size (400; no ``$top``), each with an
  ``@odata.nextLink`` holding an opaque ``$skiptoken`` until the last;
- ``GET /planner/tasks/{id}``: one task;
- ``GET /groups/{id}/planner/plans``: every plan of the group (not paged);
- ``GET /users/{id}``: ``id``, ``displayName``, ``mail``, ``userPrincipalName`` (``$select``).

Planner reads need the app role ``Tasks.Read.All`` (or ``Tasks.ReadWrite.All``), or a delegated
``Tasks.Read``/``Tasks.ReadWrite`` scope; users need ``User.Read.All`` (or ``Directory.Read.All``
/ ``User.ReadWrite.All``); else 403. Unknown ids answer 404. ``throttle_next`` makes the next
Planner requests answer 429 with ``Retry-After``; the Graph fault plan applies too. No
``If-None-Match``/304: nothing public says Planner answers it, so the sandbox never does.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox.context import Sandbox
from sandbox.graph_protocol import GraphError, GraphRequest, GraphResponse
from sandbox.planner_state import CATEGORIES, PlannerPlan, PlannerTask
from sandbox.state import MailboxKind
from sandbox.throttle import format_retry_after
from sandbox.tokens import Principal

PLANNER_ROLES = frozenset({"Tasks.Read.All", "Tasks.ReadWrite.All"})
PLANNER_SCOPES = frozenset({"Tasks.Read", "Tasks.ReadWrite"})
USER_ROLES = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All"})
NOT_FOUND = "The requested item is not found."
NO_RIGHTS = "You do not have the required permissions to access this item."

Handler = Callable[[Sandbox, GraphRequest, re.Match[str]], GraphResponse]


@functools.cache
def _paths() -> list[tuple[str, re.Pattern[str], Handler]]:
    return [
        ("plan", re.compile(r"^/planner/plans/(?P<plan>[^/]+)$"), _plan),
        ("plan_details", re.compile(r"^/planner/plans/(?P<plan>[^/]+)/details$"), _details),
        ("plan_tasks", re.compile(r"^/planner/plans/(?P<plan>[^/]+)/tasks$"), _tasks),
        ("task", re.compile(r"^/planner/tasks/(?P<task>[^/]+)$"), _task),
        ("group_plans", re.compile(r"^/groups/(?P<group>[^/]+)/planner/plans$"), _group_plans),
        ("user", re.compile(r"^/users/(?P<user>[^/]+)$"), _user),
    ]


def serves(path: str) -> bool:
    return any(pattern.match(path) for _, pattern, _ in _paths())


async def handle(sandbox: Sandbox, request: GraphRequest, principal: Principal) -> GraphResponse:
    name, match, handler = next(
        (name, m, h) for name, pattern, h in _paths() if (m := pattern.match(request.path))
    )
    if request.method != "GET":
        raise GraphError(405, "", f"The HTTP method '{request.method}' is not allowed here.")
    _authorize(principal, name)
    store = sandbox.planner
    store.requests[name] += 1
    status = sandbox.config.faults["graph"].draw(sandbox.rng)
    if store.throttle_next > 0 or status == 429:
        store.throttle_next = max(0, store.throttle_next - 1)
        raise GraphError(
            429,
            "TooManyRequests",
            "The request has been throttled.",
            {"Retry-After": format_retry_after(store.retry_after_s)},
        )
    if status == 503:
        raise GraphError(
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
            {"Retry-After": "1"},
        )
    if sandbox.config.graph_latency_ms:
        await asyncio.sleep(sandbox.config.graph_latency_ms / 1000)
    return handler(sandbox, request, match)


def _authorize(principal: Principal, route: str) -> None:
    if route == "user":
        allowed = bool(principal.roles & USER_ROLES) or bool(
            principal.scopes & {"User.Read.All", "User.ReadBasic.All", "Directory.Read.All"}
        )
        if not allowed:
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        return
    allowed = (
        bool(principal.roles & PLANNER_ROLES)
        if principal.is_app_only
        else bool(principal.scopes & PLANNER_SCOPES)
    )
    if not allowed:
        raise GraphError(403, "", NO_RIGHTS)


# --- handlers ----------------------------------------------------------------------------


def _plan_of(sandbox: Sandbox, plan_id: str) -> PlannerPlan:
    plan = sandbox.planner.plans.get(plan_id)
    if plan is None:
        raise GraphError(404, "", NOT_FOUND)
    return plan


def _plan(sandbox: Sandbox, request: GraphRequest, match: re.Match[str]) -> GraphResponse:
    plan = _plan_of(sandbox, match["plan"])
    body = {"@odata.context": f"{request.base_url}/$metadata#planner/plans/$entity"}
    return GraphResponse(200, {**body, **plan_json(request.base_url, plan)})


def _details(sandbox: Sandbox, request: GraphRequest, match: re.Match[str]) -> GraphResponse:
    plan = _plan_of(sandbox, match["plan"])
    return GraphResponse(
        200,
        {
            "@odata.context": (
                f"{request.base_url}/$metadata#planner/plans('{plan.id}')/details/$entity"
            ),
            "@odata.etag": plan.details_etag,
            "id": plan.id,
            "sharedWith": {},
            "categoryDescriptions": {key: plan.category_names.get(key) for key in CATEGORIES},
        },
    )


def _tasks(sandbox: Sandbox, request: GraphRequest, match: re.Match[str]) -> GraphResponse:
    plan = _plan_of(sandbox, match["plan"])
    for key, _ in request.query:
        if key != "$skiptoken":
            raise GraphError(
                400,
                "BadRequest",
                f"The query specified in the URI is not valid. Query option '{key.lstrip('$')}' "
                "is not allowed.",
            )
    offset = _offset(request.query_value("$skiptoken"), plan.id)
    size = sandbox.planner.page_size
    tasks = list(plan.tasks.values())
    page = tasks[offset : offset + size]
    body: dict[str, Any] = {
        "@odata.context": f"{request.base_url}/$metadata#planner/plans('{plan.id}')/tasks",
        "@odata.count": len(page),
        "value": [task_json(task) for task in page],
    }
    if offset + size < len(tasks):
        token = base64.urlsafe_b64encode(f"{plan.id}|{offset + size}".encode()).decode()
        body["@odata.nextLink"] = (
            f"{request.base_url}/planner/plans/{plan.id}/tasks?$skiptoken={token}"
        )
    return GraphResponse(200, body)


def _offset(token: str | None, plan_id: str) -> int:
    if token is None:
        return 0
    try:
        owner, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        if owner == plan_id:
            return int(offset)
    except ValueError:
        pass
    raise GraphError(400, "BadRequest", "The skip token is not valid.")


def _task(sandbox: Sandbox, request: GraphRequest, match: re.Match[str]) -> GraphResponse:
    for plan in sandbox.planner.plans.values():
        task = plan.tasks.get(match["task"])
        if task is not None:
            body = {"@odata.context": f"{request.base_url}/$metadata#planner/tasks/$entity"}
            return GraphResponse(200, {**body, **task_json(task)})
    raise GraphError(404, "", NOT_FOUND)


def _group_plans(sandbox: Sandbox, request: GraphRequest, match: re.Match[str]) -> GraphResponse:
    group = sandbox.planner.groups.get(match["group"].lower())
    if group is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{match['group']}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )
    plans = [sandbox.planner.plans[p] for p in group.plan_ids]
    return GraphResponse(
        200,
        {
            "@odata.context": (
                f"{request.base_url}/$metadata#Collection(microsoft.graph.plannerPlan)"
            ),
            "@odata.count": len(plans),
            "value": [plan_json(request.base_url, plan) for plan in plans],
        },
    )


def _user(sandbox: Sandbox, request: GraphRequest, match: re.Match[str]) -> GraphResponse:
    user = sandbox.tenant.user(match["user"])
    if user is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{match['user']}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )
    full = {
        "id": user.id,
        "displayName": user.display_name,
        # A directory account that never had a mailbox has no mail address.
        "mail": None if user.mailbox is MailboxKind.NO else user.upn,
        "userPrincipalName": user.upn,
    }
    select = request.query_value("$select")
    names = [n.strip() for n in select.split(",")] if select else list(full)
    unknown = [n for n in names if n not in full]
    if unknown:
        raise GraphError(
            400,
            "BadRequest",
            f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'.",
        )
    return GraphResponse(
        200,
        {
            "@odata.context": f"{request.base_url}/$metadata#users({','.join(names)})/$entity",
            **{n: full[n] for n in names},
        },
    )


# --- representations ---------------------------------------------------------------------


def plan_json(base_url: str, plan: PlannerPlan) -> dict[str, Any]:
    return {
        "@odata.etag": plan.etag,
        "createdDateTime": _instant(plan.created, precise=True),
        "owner": plan.group_id,
        "title": plan.title,
        "id": plan.id,
        "createdBy": {"user": {"displayName": None, "id": None}},
        "container": {
            "containerId": plan.group_id,
            "type": "group",
            "url": f"{base_url}/groups/{plan.group_id}",
        },
    }


def task_json(task: PlannerTask) -> dict[str, Any]:
    return {
        "@odata.etag": task.etag,
        "planId": task.plan_id,
        "bucketId": task.bucket_id,
        "title": task.title,
        "orderHint": "8585" + task.id[:6],
        "assigneePriority": "",
        "percentComplete": task.percent_complete,
        "priority": 5,
        "startDateTime": _instant(task.start),
        "createdDateTime": _instant(task.created, precise=True),
        "dueDateTime": _instant(task.due),
        "hasDescription": False,
        "previewType": "automatic",
        "completedDateTime": None,
        "completedBy": None,
        "referenceCount": 0,
        "checklistItemCount": 0,
        "activeChecklistItemCount": 0,
        "conversationThreadId": None,
        "id": task.id,
        "createdBy": {"user": {"displayName": None, "id": None}},
        "appliedCategories": dict(task.categories),
        "assignments": {
            user_id: {
                "@odata.type": "#microsoft.graph.plannerAssignment",
                "assignedDateTime": _instant(at, precise=True),
                "orderHint": "8585 !",
                "assignedBy": {"user": {"displayName": None, "id": None}},
            }
            for user_id, at in task.assignees.items()
        },
    }


def _instant(moment: datetime | None, *, precise: bool = False) -> str | None:
    """Graph's DateTimeOffset in UTC: ``Z``; seven fractional digits where it has them."""
    if moment is None:
        return None
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
