"""``pwasync check``'s lines for basic Planner (``PWASYNC_SOURCE=planner``).

One line each: the Graph token and its application permissions (``Tasks.Read.All`` for the
plans, ``User.Read.All`` for the assignees' addresses), each configured group and plan
reachable, the label of ``PWASYNC_CREATE_EVENT_LABEL`` among each plan's labels, an assignee's
address readable, and the zone the plans' days are read in. Every failing line says what to do.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import httpx

from common.errors import PermanentApiError, PwasyncError
from common.identity import GraphAppTokens
from common.settings import Settings
from services.poller.planner_graph import USER_FIELDS, PlanGone, PlannerGraph, PlanRef
from services.poller.planner_reader import open_planner
from services.poller.planner_rows import label_keys
from services.poller.pwa_check import CheckLine

PLAN_ROLES = ("Tasks.Read.All", "Tasks.ReadWrite.All")
USER_ROLES = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All")
GRANT_TASKS = "grant the app the application permission Tasks.Read.All (with admin consent)"
GRANT_USERS = "grant the app the application permission User.Read.All (with admin consent)"


def planner_lines(settings: Settings, http: httpx.Client, mailbox: str | None) -> list[CheckLine]:
    try:
        reader = open_planner(settings, http)
        roles = token_roles(GraphAppTokens(settings, http).token())
    except PwasyncError as exc:
        return [CheckLine("Planner: Graph token (app-only)", False, str(exc))]
    lines = [_roles_line(roles)]
    graph = reader.graph
    refs: dict[str, PlanRef] = {}
    for group_id in settings.planner_group_ids:
        line, plans = _group_line(graph, group_id)
        lines.append(line)
        refs.update((ref.plan_id, ref) for ref in plans)
    for plan_id in settings.planner_plan_ids:
        if plan_id in refs:
            continue
        try:
            refs[plan_id] = graph.plan(plan_id)
        except (PlanGone, PwasyncError) as exc:
            lines.append(CheckLine(f"Planner plan {plan_id}", False, _why(exc)))
    lines += [_label_line(graph, ref, settings.create_event_label) for ref in refs.values()]
    lines.append(_user_line(graph, mailbox))
    lines.append(
        CheckLine(
            "plans' time zone",
            True,
            f"task dates are read as days in {settings.pwa_zone.key} (PWASYNC_PWA_TIMEZONE)",
        )
    )
    return lines


def token_roles(token: str) -> frozenset[str] | None:
    """The ``roles`` claim of an access token (None: not a readable JWT). Read, not verified:
    Graph verifies it; this only tells the operator what was granted."""
    try:
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    except (IndexError, ValueError):
        return None
    return frozenset(claims.get("roles") or [])


def _roles_line(roles: frozenset[str] | None) -> CheckLine:
    name = "Planner: Graph token (Tasks.Read.All)"
    if roles is None:
        return CheckLine(name, True, "obtained; its permissions are not readable", warn=True)
    if not roles & set(PLAN_ROLES):
        return CheckLine(name, False, f"obtained, but without Tasks.Read.All: {GRANT_TASKS}")
    return CheckLine(name, True, "obtained, with " + ", ".join(sorted(roles)))


def _group_line(graph: PlannerGraph, group_id: str) -> tuple[CheckLine, list[PlanRef]]:
    name = f"Planner group {group_id}"
    try:
        plans = graph.group_plans(group_id)
    except PwasyncError as exc:
        return CheckLine(name, False, _why(exc)), []
    if plans is None:
        return CheckLine(name, False, "not found: check PWASYNC_PLANNER_GROUPS"), []
    titles = ", ".join(repr(p.title) for p in plans) or "none yet"
    return CheckLine(name, True, f"{len(plans)} plan(s): {titles}"), plans


def _label_line(graph: PlannerGraph, ref: PlanRef, label: str) -> CheckLine:
    name = f"Planner plan {ref.title!r} ({ref.plan_id})"
    try:
        details = graph.details(ref.plan_id)
    except (PlanGone, PwasyncError) as exc:
        return CheckLine(name, False, _why(exc))
    keys = label_keys(details, label)
    if keys:
        return CheckLine(name, True, f"label {label!r} is {', '.join(sorted(keys))}")
    named = [n for n in (details.get("categoryDescriptions") or {}).values() if n]
    return CheckLine(
        name,
        False,
        f"has no label named {label!r} (its labels: {', '.join(map(repr, named)) or 'none'}): "
        "rename one of its labels so in Planner, or set PWASYNC_CREATE_EVENT_LABEL",
    )


def _user_line(graph: PlannerGraph, mailbox: str | None) -> CheckLine:
    name = "Planner: assignees' addresses (User.Read.All)"
    if not mailbox:
        return CheckLine(name, False, "not checked: pass --mailbox or set PWASYNC_CHECK_MAILBOX")
    try:
        body = graph.get(f"/users/{quote(mailbox, safe='@')}?$select={USER_FIELDS}")
    except PermanentApiError as exc:
        if exc.status == 403:
            return CheckLine(name, False, f"access denied: {GRANT_USERS}")
        return CheckLine(name, False, str(exc))
    except PwasyncError as exc:
        return CheckLine(name, False, str(exc))
    return CheckLine(name, True, f"read {body.get('mail') or body.get('userPrincipalName')}")


def _why(exc: Exception) -> str:
    if isinstance(exc, PlanGone):
        return "not found: deleted, or check PWASYNC_PLANNER_PLANS"
    if isinstance(exc, PermanentApiError) and exc.status in (401, 403):
        return f"access denied: {GRANT_TASKS} ({exc})"
    return str(exc)


def planner_fields(settings: Settings, http: httpx.Client, action: str) -> tuple[list[str], bool]:
    """``pwasync fields verify|create`` on basic Planner: what selects tasks is a label in each
    plan, which a plan's members name in Planner; pwasync reads plans and never writes them, so
    ``create`` verifies and says where the label is missing."""
    reader = open_planner(settings, http)
    lines = []
    if action == "create":
        lines.append(
            "basic Planner: labels are named in Planner by a plan's members (pwasync only reads "
            "plans); checking each plan's labels instead"
        )
    checked = [
        _label_line(reader.graph, ref, settings.create_event_label) for ref in reader.plan_refs()
    ]
    if not checked:
        return [
            *lines,
            "no plan found: check PWASYNC_PLANNER_PLANS / PWASYNC_PLANNER_GROUPS",
        ], False
    lines += [f"{line.name}: {line.detail}" for line in checked]
    return lines, all(line.ok for line in checked)
