"""Loading basic Planner plans: the seed file's ``planner`` section, else ``seed/planner.json``,
and the task spec the control surface shares with it.

Task spec: ``{"title", "start", "due" (``YYYY-MM-DD`` or an ISO instant; absent or null: no
date), "assignees" (user ids or UPNs), "labels" (label names or ``categoryN`` keys),
"percent_complete"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.planner_state import (
    PlannerGroup,
    PlannerPlan,
    PlannerStore,
    PlannerTask,
    _now,
    planner_id,
)
from sandbox.state import StateError, Tenant

DEFAULT_PLANNER_SEED = Path(__file__).with_name("seed") / "planner.json"


def load_planner(tenant: Tenant, seed_path: Path | None) -> PlannerStore:
    data: dict[str, Any] | None = None
    if seed_path is not None:
        data = json.loads(seed_path.read_text(encoding="utf-8")).get("planner")
    if data is None:
        data = json.loads(DEFAULT_PLANNER_SEED.read_text(encoding="utf-8"))
    store = PlannerStore(zone=tenant.time_zone)
    for group_spec in data.get("groups", []):
        group = PlannerGroup(group_spec["id"].lower(), group_spec["display_name"])
        store.groups[group.id] = group
        for plan_spec in group_spec.get("plans", []):
            plan = store.add_plan(
                group.id,
                plan_spec["title"],
                plan_spec.get("categories", {}),
                plan_id=planner_id("plan", group.id, plan_spec["title"]),
            )
            for task_spec in plan_spec.get("tasks", []):
                add_task_from_spec(store, tenant, plan, task_spec, seeded=True)
    return store


def add_task_from_spec(
    store: PlannerStore,
    tenant: Tenant,
    plan: PlannerPlan,
    spec: dict[str, Any],
    *,
    seeded: bool = False,
) -> PlannerTask:
    title = spec.get("title")
    if not isinstance(title, str) or not title.strip():
        raise StateError("a task needs a title")
    task_id = planner_id("task", plan.id, title) if seeded else ""
    task = store.add_task(plan, title, task_id=task_id)
    apply_task_changes(store, tenant, task, {k: v for k, v in spec.items() if k != "title"})
    return task


def apply_task_changes(
    store: PlannerStore, tenant: Tenant, task: PlannerTask, changes: dict[str, Any]
) -> None:
    """What a user editing the task in Planner does; every edit moves the task's ETag."""
    plan = store.plan(task.plan_id)
    known = {"title", "start", "due", "assignees", "labels", "percent_complete"}
    unknown = set(changes) - known
    if unknown:
        raise StateError(f"unknown task fields {sorted(unknown)}")
    if "title" in changes:
        task.title = str(changes["title"])
    if "start" in changes:
        task.start = store.day(changes["start"])
    if "due" in changes:
        task.due = store.day(changes["due"])
    if "percent_complete" in changes:
        task.percent_complete = int(changes["percent_complete"])
    if "assignees" in changes:
        ids = [_user_id(tenant, who) for who in changes["assignees"]]
        task.assignees = {uid: task.assignees.get(uid, _now()) for uid in ids}
    if "labels" in changes:
        wanted = {plan.category_of(label) for label in changes["labels"]}
        for key in set(task.categories) | wanted:
            task.categories[key] = key in wanted
    task.touch()


def _user_id(tenant: Tenant, who: str) -> str:
    user = tenant.user(who)
    # A user id that is no longer in the directory stays assigned, as in Planner.
    return user.id if user is not None else who.lower()
