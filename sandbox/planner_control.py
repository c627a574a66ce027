"""The control surface of the basic Planner plans (``/_sandbox/planner/…``): what users do in
Planner (add, edit, label, delete tasks and plans), Planner's knobs, and what was asked of it.

- ``GET /planner``: groups, plans (id, title, group, labels, task ids by title), the
  ``requests`` Graph answered by route, the knobs;
- ``POST /planner/config``: ``{"page_size", "throttle_next", "retry_after_s"}``;
- ``POST /planner/requests/reset``: forget the request counts;
- ``POST /planner/groups/{id}/plans``: ``{"title", "categories": {"category1": "…"}, "tasks"}``;
- ``PATCH /planner/plans/{id}``: ``{"title", "categories"}`` (a renamed label moves the
  details' ETag); ``DELETE /planner/plans/{id}``: the plan and its tasks;
- ``POST /planner/plans/{id}/tasks``: one task spec (``sandbox/planner_seed.py``), or
  ``{"generate": N, "label_every": K, …}`` for bulk tasks;
- ``PATCH /planner/tasks/{id}``: task spec fields (``"due": null`` clears the due date);
  ``DELETE /planner/tasks/{id}``;
- ``PATCH /apps/{client_id}``: ``{"application_permissions": {"graph": […]}}``, what an
  admin grants or revokes.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from sandbox.context import Sandbox
from sandbox.control import _body, _endpoint
from sandbox.planner_seed import add_task_from_spec, apply_task_changes
from sandbox.planner_state import PlannerPlan
from sandbox.state import StateError


async def overview(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    store = sandbox.planner
    return {
        "groups": [
            {"id": g.id, "display_name": g.display_name, "plan_ids": list(g.plan_ids)}
            for g in store.groups.values()
        ],
        "plans": [plan_summary(plan) for plan in store.plans.values()],
        "requests": dict(store.requests),
        "page_size": store.page_size,
        "throttle_next": store.throttle_next,
        "retry_after_s": store.retry_after_s,
    }


def plan_summary(plan: PlannerPlan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "title": plan.title,
        "group_id": plan.group_id,
        "categories": dict(plan.category_names),
        "tasks": {task.title: task.id for task in plan.tasks.values()},
        "labelled": {
            name: [t.id for t in plan.tasks.values() if t.categories.get(key)]
            for key, name in plan.category_names.items()
            if name
        },
        "task_count": len(plan.tasks),
    }


async def set_config(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body, store = await _body(request), sandbox.planner
    for name in body:
        if name not in ("page_size", "throttle_next", "retry_after_s"):
            raise StateError(f"{name} is not a Planner setting")
    store.page_size = int(body.get("page_size", store.page_size))
    store.throttle_next = int(body.get("throttle_next", store.throttle_next))
    store.retry_after_s = float(body.get("retry_after_s", store.retry_after_s))
    if store.page_size < 1 or store.throttle_next < 0 or store.retry_after_s < 0:
        raise StateError("page_size >= 1, throttle_next >= 0, retry_after_s >= 0")
    return await overview(request, sandbox)


async def reset_requests(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.planner.requests.clear()
    return {"requests": {}}


async def create_plan(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    store = sandbox.planner
    plan = store.add_plan(
        request.path_params["group_id"].lower(), str(body["title"]), body.get("categories", {})
    )
    for spec in body.get("tasks", []):
        add_task_from_spec(store, sandbox.tenant, plan, spec)
    return plan_summary(plan)


async def update_plan(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    plan = sandbox.planner.plan(request.path_params["plan_id"])
    if "title" in body:
        plan.title = str(body["title"])
        plan.touch()
    if "categories" in body:
        plan.category_names.update(body["categories"])
        plan.touch_details()
    return plan_summary(plan)


async def delete_plan(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.planner.delete_plan(request.path_params["plan_id"])
    return {"deleted": request.path_params["plan_id"]}


async def add_tasks(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    store = sandbox.planner
    plan = store.plan(request.path_params["plan_id"])
    if "generate" not in body:
        task = add_task_from_spec(store, sandbox.tenant, plan, body)
        return {"id": task.id, "etag": task.etag}
    ids = [
        add_task_from_spec(store, sandbox.tenant, plan, spec).id
        for spec in generated_specs(plan, body)
    ]
    return {"ids": ids}


def generated_specs(plan: PlannerPlan, body: dict[str, Any]) -> list[dict[str, Any]]:
    """``generate`` tasks over consecutive days from ``first_day``; every ``label_every``-th
    one carries ``label`` and is assigned to ``assignees`` (the others to nobody)."""
    count, every = int(body["generate"]), int(body.get("label_every", 1))
    first = date.fromisoformat(body.get("first_day", "2027-01-04"))
    label, assignees = body.get("label", "Create event"), body.get("assignees", [])
    specs = []
    for n in range(count):
        day = (first + timedelta(days=n % 300)).isoformat()
        labelled = every > 0 and n % every == 0
        specs.append(
            {
                "title": f"{body.get('prefix', 'Generated task')} {n + 1}",
                "start": day,
                "due": day,
                "labels": [label] if labelled else [],
                "assignees": assignees if labelled else [],
            }
        )
    return specs


async def update_task(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    task = sandbox.planner.task(request.path_params["task_id"])
    apply_task_changes(sandbox.planner, sandbox.tenant, task, await _body(request))
    return {"id": task.id, "etag": task.etag}


async def delete_task(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.planner.delete_task(request.path_params["task_id"])
    return {"deleted": request.path_params["task_id"]}


async def update_app(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    app = sandbox.tenant.apps.get(request.path_params["client_id"].lower())
    if app is None:
        raise StateError("no such app", 404)
    app.application = {k: list(v) for k, v in body["application_permissions"].items()}
    return {"client_id": app.client_id, "application_permissions": app.application}


def _route(path: str, handler: Any, method: str) -> Route:
    return Route(f"/_sandbox{path}", _endpoint(handler), methods=[method])


routes = [
    _route("/planner", overview, "GET"),
    _route("/planner/config", set_config, "POST"),
    _route("/planner/requests/reset", reset_requests, "POST"),
    _route("/planner/groups/{group_id}/plans", create_plan, "POST"),
    _route("/planner/plans/{plan_id}", update_plan, "PATCH"),
    _route("/planner/plans/{plan_id}", delete_plan, "DELETE"),
    _route("/planner/plans/{plan_id}/tasks", add_tasks, "POST"),
    _route("/planner/tasks/{task_id}", update_task, "PATCH"),
    _route("/planner/tasks/{task_id}", delete_task, "DELETE"),
    _route("/apps/{client_id}", update_app, "PATCH"),
]
