"""``pwasync explain TASK``: one task's whole story, gathered from every place that knows it.

The plan as the source has it now (read live, only the task's project), the poller's own
selection rules applied to it (so "why is it not selected" is the sync's answer, not a second
opinion), the poller's memory and the run that last read it, the writer's event map and
assignee failures, the ledger's endpoint or hold, and the dead letters that mention it.

Gathering is plain functions over the readers passed in (``Readers``), tested without
servers; the story is one JSON-ready dict that ``explain_render`` turns into a screen. Each
place is read on its own: one that cannot be read is named under ``unreadable`` with why, and
the rest is still told.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from common.errors import PwasyncError
from common.mailboxes import MailboxPolicy
from services.event_writer.planner import RecordedEvent
from services.ledger.endpoints import Endpoint, HeldTask
from services.ops.dead_letters import DeadLetter
from services.ops.explain_lookup import Located, Lookup, as_task_id, find_task, is_guid
from services.poller.changes import ProjectState
from services.poller.pwa_time import to_utc
from services.poller.selection import project_skip_reason, task_assignees, task_skip_reason
from services.poller.source import PlanSource, ProjectRow, TaskRow, UnpublishedProject
from services.poller.state import MAX_RUNS_KEPT

#: Why a task is not selected, for each code the sync uses (selection.SkipReason and the sync's
#: own), in words an operator can act on. ``{flag}`` names what selects tasks.
WHY_NOT = {
    "not_flagged": "its {flag} is not set to Yes",
    "summary_task": "it is a summary task; only leaf tasks get events",
    "project_summary_task": "it is the project summary task",
    "no_start": "it has no start date",
    "no_finish": "it has no finish date",
    "no_due_date": "it has no due date (a task of days needs at least its due day)",
    "date_out_of_range": "a date is outside what Project can schedule (1984 to 2149)",
    "finish_before_start": "it finishes before it starts",
    "master_project": "its project is a master project (its subprojects' own tasks get events)",
    "template_project": "its project is a template",
    "administrative_project": "its project is the timesheet administrative project",
    "never_published": "its project was never published; only published plans are read",
    "unreadable_row": "its row in the plan cannot be read: {problem}",
    "not_in_plan": "the plans do not hold it (deleted, or its project was)",
}


class PollerReader(Protocol):
    def start(self) -> datetime | None: ...
    def projects(self) -> dict[str, ProjectState]: ...
    def published_revisions(self, project_id: str) -> dict[str, datetime | None]: ...
    def runs(self, limit: int = 20) -> list[dict[str, Any]]: ...


class TaskStoreReader(Protocol):
    def recorded(self, task_id: str) -> dict[str, RecordedEvent]: ...
    def handling(self, task_id: str) -> dict[str, str]: ...
    def failures_of(self, task_id: str) -> list[dict[str, Any]]: ...


class LedgerReader(Protocol):
    def endpoint_of(self, task_id: str) -> Endpoint | None: ...
    def held_of(self, task_id: str) -> HeldTask | None: ...


@dataclass
class Readers:
    """Where the story is read; ``feed`` None: the plans cannot be read (``feed_error``)."""

    feed: PlanSource | None
    poller: PollerReader
    task_store: TaskStoreReader
    ledger: LedgerReader
    dead_letters: Callable[[], list[DeadLetter]]
    mailboxes: MailboxPolicy
    zone: ZoneInfo  # the plans' wall-clock zone
    flag: str  # what selects a task, e.g. "flag field 'Create event'"
    feed_error: str | None = None
    #: (project id, task id) -> the link the task's events carry (the source's own page).
    task_link: Callable[[str, str], str | None] = lambda _project, _task: None


def look_up(query: str, readers: Readers) -> Lookup:
    """Which task the query means (``explain_lookup``). Without the plans (not configured
    here, or failing) only an id can be explained, from pwasync's own records."""
    if readers.feed is not None:
        try:
            return find_task(readers.feed, query, lambda task_id: _recorded(readers, task_id))
        except PwasyncError as exc:  # told in the story; the records are still worth reading
            readers.feed, readers.feed_error = None, str(exc)
    task_id = as_task_id(query)
    if task_id is None or not (is_guid(query) or _recorded(readers, task_id)):
        raise PwasyncError(
            f"the plans cannot be read ({readers.feed_error}), so no task can be found by "
            "name: give its id to see what pwasync recorded of it"
        )
    return Located(task_id, None, None)


def gather(located: Located, readers: Readers) -> dict[str, Any]:
    """The whole story of one task, one JSON-ready dict (README "pwasync explain")."""
    task_id = located.task_id
    unreadable: dict[str, str] = {}

    def section(name: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except PwasyncError as exc:
            unreadable.setdefault(name, str(exc))
            return None

    plan = selection = None
    if readers.feed is None:
        unreadable["plan"] = readers.feed_error or "the plans cannot be read"
    else:
        plan = section("plan", lambda: _plan(located, readers))
        if "plan" not in unreadable:
            selection = _selection(located, plan, readers.flag)
    endpoint = section("endpoint", lambda: readers.ledger.endpoint_of(task_id))
    held = section("endpoint", lambda: readers.ledger.held_of(task_id))
    project_id = _project_id(located, endpoint, held)
    handling = section("events", lambda: readers.task_store.handling(task_id)) or {}
    poller = section(
        "poller", lambda: _poller(readers.poller, located, project_id, handling, readers.zone)
    )
    plans_read = readers.feed is not None and "plan" not in unreadable
    events = section(
        "events", lambda: _events(readers.task_store, task_id, plan, plans_read=plans_read)
    )
    letters = section(
        "dead_letters",
        lambda: [d.summary() for d in readers.dead_letters() if about(d, task_id)],
    )
    return {
        "task_id": str(task_id),
        "name": _name(located, held),
        "project_id": str(project_id) if project_id is not None else None,
        "plan": plan,
        "selection": selection,
        "poller": poller,
        "events": events,
        "written_from": _snapshot(handling),
        "endpoint": _endpoint(endpoint, held),
        "dead_letters": letters,
        "unreadable": unreadable,
    }


# --- the plan and the selection ----------------------------------------------------------------


def _plan(located: Located, readers: Readers) -> dict[str, Any] | None:
    project, row = located.project, located.row
    if row is None:
        return None
    plan: dict[str, Any] = {"project": _project(project), "timezone": readers.zone.key}
    if not isinstance(row, TaskRow):
        plan["problem"] = row.problem
        return plan
    assert readers.feed is not None
    assignments = [a for a in readers.feed.assignments(row.project_id) if a.task_id == row.task_id]
    resources = {a.resource_id: a.resource for a in assignments if a.resource}
    missing = {a.resource_id for a in assignments} - resources.keys()
    if missing:
        resources.update((r.resource_id, r) for r in readers.feed.resources(missing))
    plan.update(
        {
            "start": _iso(row.start),
            "finish": _iso(row.finish),
            "flagged": row.flagged,
            "summary_task": row.is_summary,
            "project_summary_task": row.is_project_summary,
            "assignees": [
                {
                    "resource_id": str(a.resource_id),
                    "name": a.name,
                    "email": a.email,
                    "refused": a.refused.reason if a.refused else None,
                }
                for a in task_assignees(assignments, resources, readers.mailboxes)
            ],
        }
    )
    plan["link"] = readers.task_link(row.project_id, row.task_id)
    return plan


def _project(project: Any) -> dict[str, Any] | None:
    if isinstance(project, ProjectRow):
        return {
            "id": str(project.project_id),
            "name": project.name,
            "type": project.project_type,
            "published": project.modified.isoformat(),
        }
    if isinstance(project, UnpublishedProject):
        return {"id": str(project.key), "name": project.name, "type": None, "published": None}
    return None


def _selection(located: Located, plan: dict[str, Any] | None, flag: str) -> dict[str, Any]:
    """The sync's own verdict: its project and task rules, in its order."""
    row, project = located.row, located.project
    code, problem = None, ""
    if row is None:
        code = "not_in_plan"
    elif isinstance(project, UnpublishedProject):
        code = "never_published"
    elif not isinstance(row, TaskRow):
        code, problem = "unreadable_row", row.problem
    else:
        reason = project_skip_reason(project) if isinstance(project, ProjectRow) else None
        reason = reason or task_skip_reason(row)
        code = str(reason) if reason is not None else None
    if code is not None:
        text = WHY_NOT.get(code, code).format(flag=flag, problem=problem)
        return {"selected": False, "why_not": code, "detail": text}
    assignees = (plan or {}).get("assignees", [])
    reachable = [a for a in assignees if a["email"] and not a["refused"]]
    detail = (
        "every assignee with an accepted e-mail address gets an event"
        if reachable
        else "but no assignee can get an event: "
        + ("it has no assignees" if not assignees else "none has an accepted e-mail address")
    )
    return {"selected": True, "why_not": None, "detail": detail}


# --- the poller's memory and the last run ------------------------------------------------------


def _poller(
    poller: PollerReader,
    located: Located,
    project_id: str | None,
    handling: dict[str, str],
    zone: ZoneInfo,
) -> dict[str, Any]:
    task_id = located.task_id
    state = poller.projects().get(project_id) if project_id is not None else None
    published = poller.published_revisions(project_id) if project_id is not None else {}
    read_at = to_utc(state.read_at, zone) if state else None
    start = poller.start()
    project = located.project
    modified = project.modified if isinstance(project, ProjectRow) else None
    moments = [m for m in (read_at, _snapshot_read_at(handling)) if m is not None]
    run = last_run(poller.runs(MAX_RUNS_KEPT), task_id, project_id, moments)
    return {
        "project_read_at": _iso(read_at),
        # Never read because the project was last published before PWASYNC_SYNC_START (old
        # data is left alone; `sync-now --full` or a new publish reads it).
        "before_sync_start": bool(state is None and start and modified and modified <= start),
        "has_events": task_id in published,
        "published_revision": _iso(published.get(task_id)),
        "last_run": _run_fields(run) if run else None,
    }


def last_run(
    runs: list[dict[str, Any]], task_id: str, project_id: str | None, moments: list[datetime]
) -> dict[str, Any] | None:
    """The newest run (runs newest first) that read the task: one scoped to it or its project,
    or an unscoped one running when the poller read its project or sent its last snapshot."""
    for run in runs:
        task_ids, project_ids = run.get("task_ids") or [], run.get("project_ids") or []
        if str(task_id) in task_ids or (project_id is not None and str(project_id) in project_ids):
            return run
        if task_ids or project_ids:
            continue
        started, finished = _parse(run.get("started_at")), _parse(run.get("finished_at"))
        if started is None:
            continue
        if any(started <= m and (finished is None or m <= finished) for m in moments):
            return run
    return None


def _run_fields(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "started_at", "finished_at", "trigger", "status", "correlation_id", "errors")
    return {key: run.get(key) for key in keys}


# --- the writer, the ledger, the dead letters --------------------------------------------------


def _events(
    store: TaskStoreReader, task_id: str, plan: dict[str, Any] | None, *, plans_read: bool
) -> list[dict[str, Any]]:
    """One line per assignee the plan lists or the writer knows: its event, its failure, or
    why it has neither."""
    recorded = {str(r): e for r, e in store.recorded(task_id).items()}
    failures = {str(f.get("resource_id")): f for f in store.failures_of(task_id)}
    assigned = {a["resource_id"]: a for a in (plan or {}).get("assignees", [])}
    lines = []
    for resource_id in [*assigned, *sorted((recorded.keys() | failures.keys()) - assigned.keys())]:
        assignee, event = assigned.get(resource_id), recorded.get(resource_id)
        failure = failures.get(resource_id) or {}
        mailbox = event.mailbox if event else (assignee or {}).get("email")
        line: dict[str, Any] = {
            "resource_id": resource_id,
            "assignee": assignee["name"] if assignee else failure.get("assignee"),
            "mailbox": mailbox or failure.get("mailbox"),
            "assigned": assignee is not None if plans_read else None,
        }
        if event is not None:
            line.update(state="event", event_id=event.event_id)
        elif failure:
            line.update(state="failed", code=failure.get("code"), reason=failure.get("reason"))
            line["at"] = failure.get("at")
        elif assignee and assignee["refused"]:
            line.update(state="refused", reason=assignee["refused"])
        elif assignee and not assignee["email"]:
            line.update(state="no_email", reason="the resource has no e-mail address in the plan")
        else:
            line.update(state="none")
        lines.append(line)
    return lines


def _snapshot(handling: dict[str, str]) -> dict[str, Any] | None:
    """The newest snapshot the writer accepted (its events were written from it)."""
    if "order" not in handling:
        return None
    revision, _, read_at = handling["order"].partition("|")
    return {
        "change": handling.get("change"),
        "published": revision or None,
        "read_at": read_at or None,
        "unfinished": handling.get("dirty") == "1",
    }


def _snapshot_read_at(handling: dict[str, str]) -> datetime | None:
    snapshot = _snapshot(handling)
    return _parse(snapshot["read_at"]) if snapshot else None


def _endpoint(endpoint: Endpoint | None, held: HeldTask | None) -> dict[str, Any]:
    return {
        "allocated_at": _iso(endpoint.allocated_at) if endpoint else None,
        "expires_at": _iso(endpoint.expires_at) if endpoint else None,
        "held_since": _iso(held.since) if held else None,
    }


def about(letter: DeadLetter, task_id: str) -> bool:
    """Whether a dead letter is about the task: its body names it as the task (task.changed,
    transfer.succeeded) or among the tasks of a sync request; a body that is not JSON, when
    the id appears in it."""
    wanted = str(task_id)
    try:
        body = json.loads(letter.body)
    except ValueError:
        return wanted.lower() in letter.body.decode("utf-8", "replace").lower()
    if not isinstance(body, dict):
        return False
    return str(body.get("task_id", "")).lower() == wanted.lower() or wanted.lower() in [
        str(t).lower() for t in body.get("task_ids") or [] if isinstance(t, str)
    ]


# --- small helpers -----------------------------------------------------------------------------


def _recorded(readers: Readers, task_id: str) -> bool:
    """Whether pwasync's own records know the task (they outlive its plan)."""
    try:
        return bool(
            readers.task_store.recorded(task_id)
            or readers.task_store.handling(task_id)
            or readers.task_store.failures_of(task_id)
            or readers.ledger.endpoint_of(task_id)
            or readers.ledger.held_of(task_id)
        )
    except PwasyncError:
        return True  # cannot tell: explain it, and the story says what could not be read


def _project_id(located: Located, endpoint: Endpoint | None, held: HeldTask | None) -> str | None:
    if isinstance(located.row, TaskRow):
        return located.row.project_id
    if isinstance(located.project, ProjectRow):
        return located.project.project_id
    if isinstance(located.project, UnpublishedProject):
        return located.project.key
    if endpoint is not None:
        return endpoint.project_id
    return held.project_id if held is not None else None


def _name(located: Located, held: HeldTask | None) -> str:
    if located.row is not None and located.row.name:
        return located.row.name
    return held.task_name if held is not None else ""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _parse(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
