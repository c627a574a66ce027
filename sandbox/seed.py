"""Loading a seed file into a Tenant, and building projects from the JSON project spec.

The project spec is shared by seed files and the control surface (``POST /_sandbox/projects``),
so a project created at run time looks exactly like a seeded one.  The format is documented in
sandbox/README.md.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.client_assertion import RegisteredCertificate
from sandbox.state import (
    FLAG_FIELD_TYPE,
    AppRegistration,
    Assignment,
    CustomField,
    MailboxKind,
    Plan,
    Project,
    Resource,
    StateError,
    Task,
    Tenant,
    User,
    deterministic_id,
)

DEFAULT_SEED = Path(__file__).with_name("seed") / "default.json"

# Project Online's reporting page sizes; a seed's "pwa.page_sizes" may override them
# (on-premises Project Server defaults to 100 for each).
ONLINE_PAGE_SIZES = {"Projects": 300, "Tasks": 300, "Assignments": 1000, "Resources": 1000}
# The ProjectServer REST API's page sizes (ProjectsPageSize and EnterpriseResourcesPageSize of
# Project Server 2019 and later; tasks and assignments unconfirmed), by the same setting.
PROJECT_SERVER_PAGE_SIZES = {
    "ProjectServer/Projects": 100,
    "ProjectServer/Tasks": 300,
    "ProjectServer/Assignments": 300,
    "ProjectServer/EnterpriseResources": 100,
}

DEFAULT_FLAG_FIELD = "Create event"


def load_seed(path: Path | None = None) -> Tenant:
    data = json.loads((path or DEFAULT_SEED).read_text(encoding="utf-8"))
    tenant_data, pwa = data["tenant"], data["pwa"]
    tenant = Tenant(
        id=tenant_data["id"].lower(),
        domain=tenant_data["domain"],
        display_name=tenant_data.get("display_name", tenant_data["domain"]),
        time_zone=ZoneInfo(pwa["time_zone"]),
        site_path="/" + pwa.get("site_path", "/sites/pwa").strip("/"),
        page_sizes={**ONLINE_PAGE_SIZES, **PROJECT_SERVER_PAGE_SIZES, **pwa.get("page_sizes", {})},
        entity_types={name: guid.lower() for name, guid in pwa["entity_types"].items()},
        service=data["service"],
        demo=data.get("demo", {}),
    )
    for user in data.get("users", []):
        tenant.add_user(_user(user))
    for app in data.get("apps", []):
        registration = _app(app)
        tenant.apps[registration.client_id] = registration
    for resource in data.get("resources", []):
        tenant.resources[resource["id"].lower()] = resource_from_spec(tenant, resource)
    for spec in data.get("custom_fields", []):
        add_custom_field(tenant, spec)
    for spec in data.get("projects", []):
        add_project(tenant, spec, publish=spec.get("published", True), defer_missing_fields=True)
    return tenant


def _user(spec: dict[str, Any]) -> User:
    return User(
        id=spec["id"].lower(),
        upn=spec["upn"],
        display_name=spec["display_name"],
        password=spec["password"],
        mailbox=MailboxKind(spec.get("mailbox", "yes")),
        pwa_permissions=frozenset(spec.get("pwa_permissions", [])),
        mfa_required=spec.get("mfa_required", False),
        locked=spec.get("locked", False),
        password_expired=spec.get("password_expired", False),
    )


def _app(spec: dict[str, Any]) -> AppRegistration:
    return AppRegistration(
        client_id=spec["client_id"].lower(),
        display_name=spec["display_name"],
        is_public=spec["kind"] == "public",
        secret=spec.get("secret"),
        delegated=spec.get("delegated_permissions", {}),
        application=spec.get("application_permissions", {}),
        # PEM certificates (public part only), as uploaded under "Certificates & secrets".
        certificates=[RegisteredCertificate.from_pem(pem) for pem in spec.get("certificates", [])],
    )


def resource_from_spec(tenant: Tenant, spec: dict[str, Any]) -> Resource:
    now = tenant.now()
    return Resource(
        id=spec.get("id", str(uuid.uuid4())).lower(),
        name=spec["name"],
        email=spec.get("email"),
        is_active=spec.get("is_active", True),
        created=parse_local_time(tenant, spec.get("created")) or now,
        modified=parse_local_time(tenant, spec.get("modified")) or now,
    )


def add_custom_field(tenant: Tenant, spec: dict[str, Any]) -> CustomField:
    """Add an enterprise custom field (a task FLAG field unless the spec says otherwise)."""
    field_id = spec.get("id", str(uuid.uuid4())).lower()
    custom_field = CustomField(
        id=field_id,
        name=spec["name"],
        field_type=spec.get("field_type", FLAG_FIELD_TYPE),
        entity_type_id=tenant.entity_types[spec.get("entity", "TaskEntity")],
        internal_name=internal_name(field_id),
        description=spec.get("description", ""),
        is_required=spec.get("is_required", False),
    )
    tenant.add_custom_field(custom_field)
    return custom_field


def internal_name(field_id: str) -> str:
    return "Custom_" + uuid.UUID(field_id).hex


def parse_local_time(tenant: Tenant, text: str | None) -> datetime | None:
    """An ISO time as PWA wall-clock time; an explicit offset is converted to the PWA zone."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise StateError(f"not an ISO 8601 date-time: {text!r}") from exc
    if value.tzinfo is not None:
        value = value.astimezone(tenant.time_zone).replace(tzinfo=None)
    return value


# ---------------------------------------------------------------------------------------------
# Project spec


def add_project(
    tenant: Tenant,
    spec: dict[str, Any],
    *,
    publish: bool,
    flag_field: str = DEFAULT_FLAG_FIELD,
    defer_missing_fields: bool = False,
) -> Project:
    """Build a project from its spec, add it to the tenant and optionally publish it.

    ``defer_missing_fields`` (seeds): values of custom fields that do not exist yet wait on the
    task until the field is created, instead of failing."""
    project_id = spec.get("id", str(uuid.uuid4())).lower()
    if project_id in tenant.projects:
        raise StateError(f"a project with id {project_id} already exists", 409)
    owner = tenant.user(spec["owner"]) if spec.get("owner") else None
    if spec.get("owner") and owner is None:
        raise StateError(f"owner {spec['owner']} is not a user of the tenant")
    created = parse_local_time(tenant, spec.get("created")) or tenant.now()
    plan = Plan(name=spec["name"])
    for task_spec in spec.get("tasks", []):
        plan.tasks.append(
            task_from_spec(tenant, plan, task_spec, created, flag_field, defer_missing_fields)
        )
    project = Project(
        id=project_id,
        project_type=spec.get("type", 0),
        owner_id=owner.id if owner else None,
        created=created,
        summary_task_id=spec.get("summary_task_id", deterministic_id(project_id, "summary")),
        draft=plan,
    )
    tenant.projects[project_id] = project
    if publish:
        project.publish(parse_local_time(tenant, spec.get("modified")) or tenant.now())
    return project


def task_from_spec(
    tenant: Tenant,
    plan: Plan,
    spec: dict[str, Any],
    created: datetime,
    flag_field: str,
    defer_missing_fields: bool = False,
) -> Task:
    """A task of ``plan`` (not yet added); ``parent`` is an earlier task's list index or id."""
    task_id = spec.get("id", str(uuid.uuid4())).lower()
    if plan.task(task_id):
        raise StateError(f"duplicate task id {task_id}")
    task = Task(
        id=task_id,
        name=spec["name"],
        parent_id=_parent_id(plan, spec.get("parent")),
        start=parse_local_time(tenant, spec.get("start")),
        finish=parse_local_time(tenant, spec.get("finish")),
        created=created,
        modified=created,
        milestone=spec.get("milestone", False),
        percent_complete=spec.get("percent_complete", 0),
    )
    check_dates(task)
    values = {**spec.get("custom", {}), **({flag_field: spec["flag"]} if "flag" in spec else {})}
    if defer_missing_fields:
        for name in [n for n in values if tenant.field_by_name(n) is None]:
            task.pending_custom[name.casefold()] = values.pop(name)
    set_custom_values(tenant, task, values)
    set_assignees(tenant, task, spec.get("assignees", []), created)
    return task


def _parent_id(plan: Plan, parent: int | str | None) -> str | None:
    if parent is None:
        return None
    if isinstance(parent, int):
        if not 0 <= parent < len(plan.tasks):
            raise StateError(f"parent index {parent} does not name an earlier task")
        return plan.tasks[parent].id
    if plan.task(parent.lower()) is None:
        raise StateError(f"parent {parent} does not name an earlier task")
    return parent.lower()


def check_dates(task: Task) -> None:
    if (task.start is None) != (task.finish is None):
        raise StateError(f"task {task.name!r} needs both start and finish, or neither")
    if task.start and task.finish and task.finish < task.start:
        raise StateError(f"task {task.name!r} finishes before it starts")


def set_custom_values(tenant: Tenant, task: Task, values: dict[str, Any]) -> None:
    for name, value in values.items():
        custom_field = tenant.field_by_name(name)
        if custom_field is None:
            raise StateError(
                f"custom field {name!r} does not exist yet; create it first "
                "(POST {site}/_api/ProjectServer/CustomFields/Add or `pwasync fields create`)",
                409,
            )
        if custom_field.field_type == FLAG_FIELD_TYPE and not isinstance(value, bool | None):
            raise StateError(f"custom field {name!r} is a flag: its value must be true or false")
        if value is None:
            task.custom.pop(custom_field.id, None)  # an unset field has no value at all
        else:
            task.custom[custom_field.id] = value


def set_assignees(tenant: Tenant, task: Task, resource_ids: list[str], now: datetime) -> None:
    """Replace the task's assignments, keeping the ids of resources that stay assigned."""
    existing = {a.resource_id: a for a in task.assignments}
    assignments = []
    for resource_id in (r.lower() for r in resource_ids):
        if resource_id not in tenant.resources:
            raise StateError(f"no resource with id {resource_id}")
        assignments.append(
            existing.get(resource_id)
            or Assignment(
                id=deterministic_id(task.id, resource_id),
                resource_id=resource_id,
                created=now,
                modified=now,
            )
        )
    task.assignments = assignments
