"""The Dataverse part of the control surface (``/_sandbox/dataverse/…``): arrange rows as a
plan's users and the scheduling service would write them, switch change tracking per table,
expire delta tokens, lower service protection's limit, inject failures, read the counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from sandbox.context import Sandbox
from sandbox.control import _body, _route
from sandbox.dataverse_seed import add_project, add_task, assign, set_label
from sandbox.dataverse_store import ServiceProtection
from sandbox.state import StateError


async def rows(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    store = sandbox.dataverse
    entity_set = store.spec(request.path_params["entity_set"]).entity_set
    return {"value": [_plain(r.data) for r in store.rows[entity_set].values()]}


async def create_row(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return _plain(sandbox.dataverse.create(request.path_params["entity_set"], await _body(request)))


async def update_row(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    p = request.path_params
    return _plain(sandbox.dataverse.update(p["entity_set"], p["row_id"], await _body(request)))


async def delete_row(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.dataverse.delete(request.path_params["entity_set"], request.path_params["row_id"])
    return {"deleted": request.path_params["row_id"]}


async def label_tasks(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """``{"task_ids": […], "label": "Create event", "on": true}``"""
    body = await _body(request)
    changed = 0
    for task_id in body["task_ids"]:
        try:
            changed += set_label(
                sandbox.dataverse, task_id, body.get("label", "Create event"), body.get("on", True)
            )
        except KeyError as exc:
            raise StateError(str(exc.args[0]), 404) from None
    return {"changed": changed}


async def new_project(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return _plain(add_project(sandbox.dataverse, await _body(request)))


async def new_task(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return _plain(
        add_task(sandbox.dataverse, request.path_params["project_id"], await _body(request))
    )


async def new_assignment(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    task = sandbox.dataverse.get("msdyn_projecttasks", body["task_id"])
    if task is None:
        raise StateError("no such task", 404)
    assign(
        sandbox.dataverse,
        task["_msdyn_project_value"],
        task["msdyn_projecttaskid"],
        body["resource"],
    )
    return {"assigned": body["resource"]}


async def generate(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """``{"name": "…", "tasks": 700, "assignee": "Adele Vance", "labelled": true}``: a plan of
    many one-hour tasks, one a day, each assigned (and labelled) alike."""
    body = await _body(request)
    start = datetime(2027, 2, 1, 9, tzinfo=UTC)
    tasks = [
        {
            "name": f"Generated task {i:04d}",
            "start": (start + timedelta(days=i)).isoformat(),
            "finish": (start + timedelta(days=i, hours=1)).isoformat(),
            "assignees": [body.get("assignee", "Adele Vance")],
            "labels": ["Create event"] if body.get("labelled", True) else [],
        }
        for i in range(int(body["tasks"]))
    ]
    project = add_project(sandbox.dataverse, {"name": body["name"], "tasks": tasks})
    return {"project_id": project["msdyn_projectid"], "tasks": len(tasks)}


async def change_tracking(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """``{"table": "msdyn_projecttask", "enabled": false}``"""
    body = await _body(request)
    spec = sandbox.dataverse.spec_by_logical(body["table"])
    sandbox.dataverse.change_tracking[spec.logical_name] = bool(body["enabled"])
    return dict(sandbox.dataverse.change_tracking)


async def expire_delta_tokens(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.dataverse.oldest_token_version = sandbox.dataverse.version + 1
    return {"expired_before": sandbox.dataverse.oldest_token_version}


async def protection(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """``{"limit": 20, "window_s": 2}``: service protection's window, lowered for tests."""
    body = await _body(request)
    sandbox.dataverse.protection = ServiceProtection(int(body["limit"]), float(body["window_s"]))
    return body


async def rights(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """``{"client_id": …, "read": {"msdyn_projecttask": "user"}}`` changes the role's read
    depths; ``{"client_id": …, "remove": true}`` removes the application user."""
    body = await _body(request)
    users = sandbox.dataverse.application_users
    client_id = str(body["client_id"]).lower()
    if client_id not in users:
        raise StateError("no such application user", 404)
    if body.get("remove"):
        del users[client_id]
        return {"removed": client_id}
    users[client_id].read.update(body.get("read", {}))
    return {"read": users[client_id].read}


async def faults(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """``{"entity_set": "msdyn_projecttasks", "statuses": [503]}``: the next requests fail."""
    body = await _body(request)
    sandbox.dataverse.faults[body["entity_set"]] = [int(s) for s in body["statuses"]]
    return body


async def stats(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    store = sandbox.dataverse
    return {
        "requests": sum(store.requests.values()),
        "by_path": dict(sorted(store.requests.items())),
        "by_status": {str(s): c for s, c in sorted(store.statuses.items())},
    }


async def reset_stats(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.dataverse.requests.clear()
    sandbox.dataverse.statuses.clear()
    return {"status": "reset"}


async def environment(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    store = sandbox.dataverse
    return {
        "url": sandbox.dataverse_url,
        "demo": store.demo,
        "change_tracking": dict(store.change_tracking),
        "application_users": [
            {"client_id": u.client_id, "systemuser_id": u.systemuser_id, "read": u.read}
            for u in store.application_users.values()
        ],
    }


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


routes = [
    _route("/dataverse", environment, "GET"),
    _route("/dataverse/rows/{entity_set}", rows, "GET"),
    _route("/dataverse/rows/{entity_set}", create_row, "POST"),
    _route("/dataverse/rows/{entity_set}/{row_id}", update_row, "PATCH"),
    _route("/dataverse/rows/{entity_set}/{row_id}", delete_row, "DELETE"),
    _route("/dataverse/labels", label_tasks, "POST"),
    _route("/dataverse/projects", new_project, "POST"),
    _route("/dataverse/projects/{project_id}/tasks", new_task, "POST"),
    _route("/dataverse/assignments", new_assignment, "POST"),
    _route("/dataverse/generate", generate, "POST"),
    _route("/dataverse/change-tracking", change_tracking, "POST"),
    _route("/dataverse/delta-tokens/expire", expire_delta_tokens, "POST"),
    _route("/dataverse/protection", protection, "POST"),
    _route("/dataverse/faults", faults, "POST"),
    _route("/dataverse/rights", rights, "POST"),
    _route("/dataverse/stats", stats, "GET"),
    _route("/dataverse/stats/reset", reset_stats, "POST"),
]
