"""The control surface under ``/_sandbox/``: no authentication, for tests, the demo and
benchmarks to arrange data, inspect what the product did and turn the sandbox's knobs.

Changes to projects edit the draft store; with ``publish`` (the default) the affected projects
are published right away, which is what makes them visible in ProjectData.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import entra, server_events
from sandbox.calendar import Event
from sandbox.client_assertion import RegisteredCertificate
from sandbox.context import Sandbox
from sandbox.generate import generate
from sandbox.seed import (
    DEFAULT_FLAG_FIELD,
    add_project,
    check_dates,
    parse_local_time,
    set_assignees,
    set_custom_values,
    task_from_spec,
)
from sandbox.state import AppRegistration, MailboxKind, Project, StateError

Handler = Callable[[Request, Sandbox], Awaitable[dict[str, Any]]]


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request, request.app.state.sandbox)
        except StateError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        except (ValueError, KeyError, TypeError) as error:
            # A malformed body surfaces here: bad JSON, a missing key, an unknown argument.
            return JSONResponse({"error": f"bad request: {error!r}"}, status_code=400)
        return JSONResponse(result)

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    body = json.loads(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _publish_flag(request: Request, body: dict[str, Any]) -> bool:
    query = request.query_params.get("publish")
    return body.get("publish", True) if query is None else query.lower() != "false"


def _local(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------------------------
# Sandbox-wide


async def health(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return {
        "status": "ok",
        "origin": sandbox.origin,
        "tenant_id": sandbox.tenant.id,
        "events": len(sandbox.calendar.all_events()),
    }


async def reset(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.reset()
    return {"status": "reset"}


async def tenant(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    t = sandbox.tenant
    return {
        "edition": sandbox.edition.value,
        "tenant_id": t.id,
        "domain": t.domain,
        "pwa_site_url": sandbox.pwa_site_url,
        "time_zone": t.time_zone.key,
        "service": t.service,
        "demo": t.demo,
        "entity_types": t.entity_types,
        "users": [
            {
                "id": u.id,
                "upn": u.upn,
                "display_name": u.display_name,
                "mailbox": u.mailbox.value,
                "pwa_permissions": sorted(u.pwa_permissions),
                "mfa_required": u.mfa_required,
                "locked": u.locked,
                "password_expired": u.password_expired,
            }
            for u in t.users.values()
        ],
        "apps": [
            {
                "client_id": a.client_id,
                "display_name": a.display_name,
                "kind": "public" if a.is_public else "confidential",
            }
            for a in t.apps.values()
        ],
        "resources": [
            {"id": r.id, "name": r.name, "email": r.email, "is_active": r.is_active}
            for r in t.resources.values()
        ],
        "custom_fields": [
            {
                "id": f.id,
                "name": f.name,
                "field_type": f.field_type,
                "internal_name": f.internal_name,
            }
            for f in t.custom_fields.values()
        ],
        "projects": [_project_summary(p) for p in t.projects.values()],
    }


def _project_summary(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.draft.name,
        "type": project.project_type,
        "summary_task_id": project.summary_task_id,
        "published": project.published is not None,
        "modified": _local(project.modified),
        "task_ids": [task.id for task in project.draft.tasks],
    }


async def update_user(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    upn = request.path_params["upn"]
    user = sandbox.tenant.user(upn)
    if user is None:
        raise StateError(f"no user {upn}", 404)
    body = await _body(request)
    for name in ("password", "mfa_required", "locked", "password_expired"):
        if name in body:
            setattr(user, name, body[name])
    if "mailbox" in body:
        user.mailbox = MailboxKind(body["mailbox"])
    if "pwa_permissions" in body:
        user.pwa_permissions = frozenset(body["pwa_permissions"])
    return {
        "upn": user.upn,
        "mailbox": user.mailbox.value,
        "locked": user.locked,
        "password_expired": user.password_expired,
        "mfa_required": user.mfa_required,
        "pwa_permissions": sorted(user.pwa_permissions),
    }


async def revoke_user(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    upn = request.path_params["upn"]
    if sandbox.tenant.user(upn) is None:
        raise StateError(f"no user {upn}", 404)
    return {"upn": upn, "revoked_refresh_tokens": entra.revoke_sign_ins(sandbox, upn)}


def _app(sandbox: Sandbox, request: Request) -> AppRegistration:
    client_id = request.path_params["client_id"]
    app = sandbox.tenant.apps.get(client_id.lower())
    if app is None:
        raise StateError(f"no app {client_id}", 404)
    return app


async def app_certificates(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return {"certificates": [c.summary() for c in _app(sandbox, request).certificates]}


async def add_app_certificate(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """Upload a certificate's public part (PEM) to an app, as under "Certificates & secrets"."""
    app = _app(sandbox, request)
    if app.is_public:
        raise StateError(f"app {app.client_id} is a public client: it has no credentials")
    certificate = RegisteredCertificate.from_pem(str((await _body(request))["pem"]))
    if all(c.thumbprint != certificate.thumbprint for c in app.certificates):
        app.certificates.append(certificate)
    return certificate.summary()


async def remove_app_certificate(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    app, thumbprint = _app(sandbox, request), request.path_params["thumbprint"].upper()
    kept = [c for c in app.certificates if c.thumbprint != thumbprint]
    if len(kept) == len(app.certificates):
        raise StateError(f"app {app.client_id} has no certificate {thumbprint}", 404)
    app.certificates = kept
    return {"removed": thumbprint}


async def device_codes(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    now = time.time()
    return {
        "pending": [
            {
                "user_code": c.user_code,
                "client_id": c.client_id,
                "scope": c.scope,
                "expires_in": max(0, int(c.expires_at - now)),
                "approved_by": c.approved_upn,
            }
            for c in sandbox.device_codes.values()
            if c.expires_at > now
        ]
    }


async def approve_device_code(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    try:
        code = entra.approve_device_code(
            sandbox, str(body["user_code"]), str(body["upn"]), bool(body.get("decline", False))
        )
    except KeyError as error:
        raise StateError(str(error.args[0]), 404) from error
    return {
        "user_code": code.user_code,
        "approved_by": code.approved_upn,
        "declined": code.declined,
    }


async def get_config(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return sandbox.config.to_json()


async def set_config(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.config.update(await _body(request))
    return sandbox.config.to_json()


async def stats(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return sandbox.stats.to_json()


async def reset_stats(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    sandbox.stats.reset()
    return sandbox.stats.to_json()


# ---------------------------------------------------------------------------------------------
# Projects and tasks


def _publish(sandbox: Sandbox, projects: list[Project]) -> list[str]:
    now = sandbox.tenant.now()
    for project in projects:
        project.publish(now)
    server_events.announce_published(sandbox, projects)
    return [project.id for project in projects]


async def flag_tasks(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    field = body.get("field", DEFAULT_FLAG_FIELD)
    if sandbox.tenant.field_by_name(field) is None:
        raise StateError(
            f"custom field {field!r} does not exist yet; create it first "
            "(pwasync fields create, or POST …/_api/ProjectServer/CustomFields/Add)",
            409,
        )
    touched: dict[str, Project] = {}
    for task_id in body["task_ids"]:
        project, task = sandbox.tenant.draft_task(task_id)
        set_custom_values(sandbox.tenant, task, {field: body.get("value", True)})
        touched[project.id] = project
    published = _publish(sandbox, list(touched.values())) if _publish_flag(request, body) else []
    return {"task_ids": [t.lower() for t in body["task_ids"]], "published_project_ids": published}


async def publish_project(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    project = sandbox.tenant.publish(request.path_params["project_id"])
    server_events.announce_published(sandbox, [project])
    return {"project_id": project.id, "modified": _local(project.modified)}


async def create_project(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    body = await _body(request)
    project = add_project(
        sandbox.tenant,
        body,
        publish=_publish_flag(request, body),
        flag_field=body.get("flag_field", DEFAULT_FLAG_FIELD),
    )
    if project.published is not None:
        server_events.announce_published(sandbox, [project])
    return {
        **_project_summary(project),
        "project_id": project.id,
        "assignment_ids": [a.id for t in project.draft.tasks for a in t.assignments],
    }


async def add_task(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    project = sandbox.tenant.project(request.path_params["project_id"])
    body = await _body(request)
    plan = project.draft
    task = task_from_spec(
        sandbox.tenant, plan, body, sandbox.tenant.now(), body.get("flag_field", DEFAULT_FLAG_FIELD)
    )
    position = plan.subtree_end(task.parent_id) if task.parent_id else len(plan.tasks)
    plan.tasks.insert(position, task)
    if _publish_flag(request, body):
        _publish(sandbox, [project])
    return {
        "task_id": task.id,
        "project_id": project.id,
        "assignment_ids": [a.id for a in task.assignments],
    }


async def update_task(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    tenant = sandbox.tenant
    project, task = tenant.draft_task(request.path_params["task_id"])
    body = await _body(request)
    for name in ("name", "milestone", "percent_complete"):
        if name in body:
            setattr(task, name, body[name])
    if "start" in body:
        task.start = parse_local_time(tenant, body["start"])
    if "finish" in body:
        task.finish = parse_local_time(tenant, body["finish"])
    check_dates(task)
    if "flag" in body:
        set_custom_values(tenant, task, {body.get("field", DEFAULT_FLAG_FIELD): body["flag"]})
    if "custom" in body:
        set_custom_values(tenant, task, body["custom"])
    if "assignees" in body:
        set_assignees(tenant, task, body["assignees"], tenant.now())
    published = _publish(sandbox, [project]) if _publish_flag(request, body) else []
    return {"task_id": task.id, "project_id": project.id, "published": bool(published)}


async def delete_task(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    project, task = sandbox.tenant.draft_task(request.path_params["task_id"])
    removed = project.draft.remove(task.id)
    published = _publish(sandbox, [project]) if _publish_flag(request, {}) else []
    return {"removed_task_ids": removed, "project_id": project.id, "published": bool(published)}


async def update_project(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """Change a project's name or type (e.g. 6 to make it a master project), as PWA's project
    settings do; published unless ``publish`` is false."""
    project = sandbox.tenant.project(request.path_params["project_id"])
    body = await _body(request)
    if "type" in body:
        project.project_type = int(body["type"])
    if "name" in body:
        project.draft.name = str(body["name"])
    published = _publish(sandbox, [project]) if _publish_flag(request, body) else []
    return {**_project_summary(project), "published_now": bool(published)}


async def delete_project(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    # Deleting a project in PWA removes it from the draft and the published store at once.
    project = sandbox.tenant.project(request.path_params["project_id"])
    del sandbox.tenant.projects[project.id]
    return {"project_id": project.id, "deleted": True}


async def generate_data(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    return generate(sandbox.tenant, **await _body(request))


# ---------------------------------------------------------------------------------------------
# Mailboxes


def event_json(event: Event) -> dict[str, Any]:
    props = event.properties
    return {
        "mailbox": event.mailbox_upn,
        "id": event.id,
        "immutable_id": event.immutable_id,
        "calendar": event.calendar,
        "subject": props.get("subject", ""),
        "start": event.start.astimezone(UTC).isoformat(),
        "end": event.end.astimezone(UTC).isoformat(),
        "start_time_zone": event.start_zone,
        "end_time_zone": event.end_zone,
        "is_all_day": props.get("isAllDay", False),
        "show_as": props.get("showAs", "busy"),
        "categories": props.get("categories", []),
        "transaction_id": event.transaction_id,
        "body": (props.get("body") or {}).get("content", ""),
        "extended_properties": dict(event.extended),
        "change_key": event.change_key,
        "created": event.created.isoformat(),
        "modified": event.modified.isoformat(),
    }


async def all_events(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    events = sandbox.calendar.all_events()
    mailbox = request.query_params.get("mailbox")
    if mailbox:
        events = [e for e in events if e.mailbox_upn.casefold() == mailbox.casefold()]
    return {"events": [event_json(e) for e in events]}


def _mailbox_id(sandbox: Sandbox, upn: str) -> str:
    user = sandbox.tenant.user(upn)
    if user is None:
        raise StateError(f"no user {upn}", 404)
    return user.id


async def mailbox_events(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    mailbox_id = _mailbox_id(sandbox, request.path_params["upn"])
    return {"events": [event_json(e) for e in sandbox.calendar.events(mailbox_id)]}


async def delete_mailbox_event(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """What a user deleting the event in Outlook does, for drift tests."""
    mailbox_id = _mailbox_id(sandbox, request.path_params["upn"])
    event = sandbox.calendar.remove(mailbox_id, request.path_params["event_id"])
    if event is None:
        raise StateError("no such event in that mailbox", 404)
    return {"deleted": event.id}


async def move_mailbox_event(request: Request, sandbox: Sandbox) -> dict[str, Any]:
    """What Outlook does to an item its owner moves: ``{"calendar": "<name>"}`` drags it to
    another calendar (a new regular id, the immutable id stays); ``{"reimport": true}``
    archives or exports and imports it again (both ids change, same calendar)."""
    body = await _body(request)
    calendar, reimport = body.get("calendar"), body.get("reimport", False)
    if calendar is not None and (not isinstance(calendar, str) or not calendar.strip()):
        raise StateError("calendar must be a calendar name")
    if not isinstance(reimport, bool) or (calendar is None and not reimport):
        raise StateError('say where it goes: {"calendar": "<name>"} or {"reimport": true}')
    mailbox_id = _mailbox_id(sandbox, request.path_params["upn"])
    event = sandbox.calendar.move(
        mailbox_id, request.path_params["event_id"], calendar=calendar, reimport=reimport
    )
    if event is None:
        raise StateError("no such event in that mailbox", 404)
    return event_json(event)


def _route(path: str, handler: Handler, method: str) -> Route:
    return Route(f"/_sandbox{path}", _endpoint(handler), methods=[method])


routes = [
    _route("/health", health, "GET"),
    _route("/reset", reset, "POST"),
    _route("/tenant", tenant, "GET"),
    _route("/users/{upn}", update_user, "PATCH"),
    _route("/users/{upn}/revoke", revoke_user, "POST"),
    _route("/apps/{client_id}/certificates", app_certificates, "GET"),
    _route("/apps/{client_id}/certificates", add_app_certificate, "POST"),
    _route("/apps/{client_id}/certificates/{thumbprint}", remove_app_certificate, "DELETE"),
    _route("/devicecodes", device_codes, "GET"),
    _route("/devicecodes/approve", approve_device_code, "POST"),
    _route("/config", get_config, "GET"),
    _route("/config", set_config, "POST"),
    _route("/stats", stats, "GET"),
    _route("/stats/reset", reset_stats, "POST"),
    _route("/tasks/flag", flag_tasks, "POST"),
    _route("/tasks/{task_id}", update_task, "PATCH"),
    _route("/tasks/{task_id}", delete_task, "DELETE"),
    _route("/projects", create_project, "POST"),
    _route("/projects/{project_id}/publish", publish_project, "POST"),
    _route("/projects/{project_id}/tasks", add_task, "POST"),
    _route("/projects/{project_id}", update_project, "PATCH"),
    _route("/projects/{project_id}", delete_project, "DELETE"),
    _route("/generate", generate_data, "POST"),
    _route("/events", all_events, "GET"),
    _route("/mailboxes/{upn}/events", mailbox_events, "GET"),
    _route("/mailboxes/{upn}/events/{event_id}", delete_mailbox_event, "DELETE"),
    _route("/mailboxes/{upn}/events/{event_id}/move", move_mailbox_event, "POST"),
]
