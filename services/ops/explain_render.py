"""``pwasync explain``'s screen: the story ``explain.gather`` told, as text (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.ops.explain_lookup import Ambiguous, Candidate, NotFound

_WIDTH = 12


def render_story(story: dict[str, Any]) -> str:
    lines = [f"{story['name'] or '(name unknown)'}  (task {story['task_id']})"]
    plan, selection = story["plan"], story["selection"]
    lines += _plan_lines(plan, story)
    if selection is not None:
        verdict = "yes" if selection["selected"] else "NO"
        lines.append(_row("selected", f"{verdict}: {selection['detail']}"))
    lines += _poller_lines(story["poller"])
    lines += _event_lines(story)
    lines.append(_row("endpoint", _endpoint_text(story["endpoint"])))
    lines += _dead_letter_lines(story["dead_letters"])
    for place, problem in sorted(story["unreadable"].items()):
        lines.append(_row("NOT READ", f"{place.replace('_', ' ')}: {problem}"))
    return "\n".join(lines)


def render_lookup(lookup: Ambiguous | NotFound) -> str:
    if isinstance(lookup, Ambiguous):
        return "\n".join(
            [
                f"{len(lookup.candidates)} tasks are named {lookup.query!r}; "
                "explain one of them by its id:",
                *_candidate_lines(lookup.candidates),
            ]
        )
    if not lookup.searched_names:
        return f"no task with id {lookup.query} in the plans or in pwasync's records"
    if not lookup.similar:
        return f"no task named {lookup.query!r} in the plans"
    return "\n".join(
        [
            f"no task named {lookup.query!r} in the plans; tasks whose name contains it:",
            *_candidate_lines(lookup.similar),
        ]
    )


def lookup_json(lookup: Ambiguous | NotFound) -> dict[str, Any]:
    found = lookup.candidates if isinstance(lookup, Ambiguous) else lookup.similar
    return {
        "query": lookup.query,
        "found": "several" if isinstance(lookup, Ambiguous) else "none",
        "candidates": [c.__dict__ for c in found],
    }


# --- sections ----------------------------------------------------------------------------------


def _plan_lines(plan: dict[str, Any] | None, story: dict[str, Any]) -> list[str]:
    if plan is None:
        if "plan" in story["unreadable"]:
            return []
        return [_row("plan now", "not in the plans (deleted, or its project was)")]
    project = plan["project"] or {}
    lines = [
        _row(
            "project",
            f"{project.get('name', '?')} ({project.get('id', '?')})"
            + (
                f", published {_when(project['published'])} ({plan['timezone']})"
                if project.get("published")
                else ""
            ),
        )
    ]
    if "problem" in plan:
        return [*lines, _row("plan now", f"the task's row cannot be read: {plan['problem']}")]
    kind = (
        "project summary task"
        if plan["project_summary_task"]
        else ("summary task" if plan["summary_task"] else "leaf task")
    )
    dates = f"{_when(plan['start'])} to {_when(plan['finish'])} ({plan['timezone']})"
    flag = "Yes" if plan["flagged"] else "no"
    lines.append(_row("plan now", f"flag {flag}; {dates}; {kind}"))
    assignees = [
        f"{a['name']} <{a['email'] or 'no e-mail'}>" + (" REFUSED" if a["refused"] else "")
        for a in plan["assignees"]
    ]
    lines.append(_row("assignees", "; ".join(assignees) if assignees else "none"))
    return lines


def _poller_lines(poller: dict[str, Any] | None) -> list[str]:
    if poller is None:
        return []
    if poller["project_read_at"]:
        read = f"project last read {_at(poller['project_read_at'])}"
    elif poller["before_sync_start"]:
        read = (
            "project never read: last published before the sync start (PWASYNC_SYNC_START); "
            "`pwasync sync-now --full` or a new publish reads it"
        )
    else:
        read = "project not read yet"
    told = (
        f"the writers were told it has events (publish {_at(poller['published_revision'])})"
        if poller["has_events"]
        else "the writers were not told it has events"
    )
    lines = [_row("poller", f"{read}; {told}")]
    run = poller["last_run"]
    if run is None:
        lines.append(_row("last run", "none of the kept runs read it"))
    else:
        errors = f"; error: {'; '.join(run['errors'])}" if run.get("errors") else ""
        lines.append(
            _row(
                "last run",
                f"{_at(run['started_at'])} {run['trigger']}, {run['status']} (run {run['run_id']}, "
                f"correlation id {run['correlation_id']}){errors}",
            )
        )
    return lines


def _event_lines(story: dict[str, Any]) -> list[str]:
    events = story["events"]
    if events is None:
        return []
    snapshot = story["written_from"]
    if snapshot is None:
        head = "the writer has handled no snapshot of it"
    elif snapshot["change"] == "remove":
        head = f"removed: its events were deleted (snapshot read {_at(snapshot['read_at'])})"
    else:
        head = (
            f"written from the snapshot of the publish {_at(snapshot['published'])}, "
            f"read {_at(snapshot['read_at'])}"
        )
    if snapshot and snapshot["unfinished"]:
        head += "; its last handling is running or did not finish (the next one checks Graph)"
    lines = [_row("events", head)]
    selected = (story["selection"] or {}).get("selected")
    held = story["endpoint"]["held_since"]
    for event in events:
        who = f"{event['mailbox'] or '(no e-mail)'}  {event['assignee'] or event['resource_id']}"
        state = event["state"]
        if state == "event":
            text = f"event    {who}  event id {event['event_id']}"
            if event["assigned"] is False:
                text += "  (no longer assigned: deleted at the next sync)"
        elif state == "failed":
            text = f"FAILED   {who}  {event['code']}: {event['reason']} (at {_at(event['at'])})"
        elif state == "refused":
            text = f"refused  {who}  {event['reason']}"
        elif state == "no_email":
            text = f"no mail  {who}  {event['reason']}"
        elif held:
            text = f"waiting  {who}  held back by the endpoint limit"
        elif selected:
            text = f"pending  {who}  no event yet: the writers have not handled it"
        else:
            text = f"none     {who}  no event: the task is not selected"
        lines.append(f"  {text}")
    if not events:
        lines.append("  (no assignees, and no events recorded)")
    return lines


def _endpoint_text(endpoint: dict[str, Any]) -> str:
    parts = []
    if endpoint["allocated_at"]:
        allocated, expires = _at(endpoint["allocated_at"]), _at(endpoint["expires_at"])
        parts.append(f"allocated {allocated}, expires {expires}")
    if endpoint["held_since"]:
        parts.append(
            f"HELD since {_at(endpoint['held_since'])}: PWASYNC_ENDPOINT_LIMIT is reached; it goes "
            "through as endpoints free up"
        )
    return "; ".join(parts) or "none"


def _dead_letter_lines(letters: list[dict[str, Any]] | None) -> list[str]:
    if letters is None:
        return []
    if not letters:
        return [_row("dead letters", "none")]
    lines = [_row("dead letters", f"{len(letters)} (see `pwasync dlq show ID`)")]
    lines += [f"  {d['id']}  {_at(d['dead_at'])}  {d['queue']}  {d['reason']}" for d in letters]
    return lines


def _candidate_lines(candidates: list[Candidate]) -> list[str]:
    return [f"  {c.task_id}  {c.name}  (project {c.project_name})" for c in candidates]


def _row(label: str, text: str) -> str:
    return f"{label + ':':{_WIDTH + 2}}{text}"


def _at(value: str | None) -> str:
    """An instant to the second, in UTC (the JSON keeps it whole)."""
    try:
        moment = datetime.fromisoformat(value) if value else None
    except ValueError:
        return value or ""
    if moment is None or moment.tzinfo is None:
        return value or ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(value: str | None) -> str:
    return value.replace("T", " ")[:16] if value else "(none)"
