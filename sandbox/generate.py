"""Bulk test data: mailbox users with resources, and published projects of leaf tasks.

Used by ``POST /_sandbox/generate`` for tests and benchmarks (one project of 700 flagged tasks,
100 projects × 100 tasks, 200 mailboxes…).  Generated ids are random; the names carry a run
number so that repeated calls never collide.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sandbox.seed import DEFAULT_FLAG_FIELD, add_custom_field, add_project, resource_from_spec
from sandbox.state import MailboxKind, StateError, Tenant, User, deterministic_id

GENERATED_PASSWORD = "Sandbox-Generated-2026!"


def generate(
    tenant: Tenant,
    *,
    projects: int = 1,
    tasks_per_project: int = 10,
    flagged: bool = False,
    assignees_per_task: int = 1,
    mailboxes: int = 5,
    project_type: int = 0,
    publish: bool = True,
    flag_field: str = DEFAULT_FLAG_FIELD,
    ensure_field: bool = False,
    first_day: str = "2026-12-01",
) -> dict[str, Any]:
    if assignees_per_task > mailboxes:
        raise StateError("assignees_per_task cannot exceed mailboxes")
    if flagged and tenant.field_by_name(flag_field) is None:
        if not ensure_field:
            raise StateError(
                f"custom field {flag_field!r} does not exist yet; create it first "
                "or pass ensure_field: true",
                409,
            )
        add_custom_field(tenant, {"name": flag_field})
    tenant.generated_runs += 1
    run = tenant.generated_runs
    resource_ids, upns = _mailbox_users(tenant, mailboxes, run)
    start = datetime.fromisoformat(first_day).replace(hour=9)
    project_ids, task_ids = [], []
    for number in range(1, projects + 1):
        tasks = []
        for index in range(tasks_per_project):
            day = start + timedelta(days=index % 60)
            assignees = [
                resource_ids[(index + offset) % mailboxes] for offset in range(assignees_per_task)
            ]
            task: dict[str, Any] = {
                "name": f"Task {index + 1:04d}",
                "start": day.isoformat(),
                "finish": (day + timedelta(hours=1)).isoformat(),
                "assignees": assignees,
            }
            if flagged:
                task["flag"] = True
            tasks.append(task)
        project = add_project(
            tenant,
            {"name": f"Generated {run}.{number:03d}", "type": project_type, "tasks": tasks},
            publish=publish,
            flag_field=flag_field,
        )
        project_ids.append(project.id)
        task_ids.extend(task.id for task in project.draft.tasks)
    return {
        "project_ids": project_ids,
        "task_ids": task_ids,
        "resource_ids": resource_ids,
        "mailboxes": upns,
    }


def _mailbox_users(tenant: Tenant, count: int, run: int) -> tuple[list[str], list[str]]:
    resource_ids, upns = [], []
    for number in range(1, count + 1):
        upn = f"gen{run}-user{number:04d}@{tenant.domain}"
        user_id = deterministic_id(tenant.id, upn)
        tenant.add_user(
            User(
                id=user_id,
                upn=upn,
                display_name=f"Generated User {run}.{number}",
                password=GENERATED_PASSWORD,
                mailbox=MailboxKind.YES,
            )
        )
        resource = resource_from_spec(
            tenant,
            {
                "id": deterministic_id(user_id, "resource"),
                "name": f"Generated User {run}.{number}",
                "email": upn,
            },
        )
        tenant.resources[resource.id] = resource
        resource_ids.append(resource.id)
        upns.append(upn)
    return resource_ids, upns
