"""What an Outlook event looks like for a task: the one mapping module (pure functions).

Default mapping rules (README "What an event looks like"); ``EventRules`` carries the settings
that change them:

- subject: the task name;
- start/end: the task's start and finish as wall-clock times **in the PWA's time zone**, named
  by its Windows time zone name (``Europe/Berlin`` -> ``W. Europe Standard Time``, from the
  CLDR table that ``tzlocal`` ships), which every Graph method accepts, while IANA names are
  only an optional subset. A zone with no Windows name is sent as the same instants in UTC.
  Outlook shows each reader the event in their own zone either way; the named zone keeps the
  PWA's zone visible in the event and makes all-day events fall on the PWA's dates;
- all-day events (``PWASYNC_EVENT_ALL_DAY``): off by default; ``true`` makes every event an
  all-day event over the task's dates, ``multi_day`` only those of tasks that span days; a
  task whose dates are days (``TaskChanged.all_day``: basic Planner) is always one, and its
  body names its days;
- showAs (``PWASYNC_EVENT_SHOW_AS``): ``auto`` by default: a task that starts and finishes on
  the same day is ``busy`` (it is a planned slot of work, like an appointment), a task that
  spans days, a milestone and an all-day event are ``free`` (a week-long task must not make
  its assignee unavailable for every meeting of that week); or one fixed value for all;
- body: HTML, every value escaped (task and project names are user input), naming the project,
  the task, its dates and zone, and a link back to the task in PWA when the message has one;
- reminder (``PWASYNC_EVENT_REMINDER_MINUTES``, 15 by default, ``off`` for none) and a
  category (``PWASYNC_EVENT_CATEGORY``, ``Project task`` by default, empty for none);
- identity: a deterministic ``transactionId`` per (scenario, task, assignee, snapshot), so a
  retried POST does not create a second event while a later life of the event (after a
  removal, or an assignee leaving and coming back) is not answered with a deleted one; and two
  extended properties: the task key (to find the event of a task again) and the scenario (to
  learn whether a mailbox holds any of our events).

The fingerprint covers every field the sync owns, so a changed rule updates events in place.
"""

from __future__ import annotations

import hashlib
import html
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
from tzlocal.windows_tz import tz_win

from common.errors import BadMessage
from common.mailboxes import ANY_MAILBOX, MailboxPolicy
from common.messages import TaskChanged
from services.event_writer.ordering import order_key

#: Our own property set GUID (MAPI named properties need one); never change it, or events
#: written before the change can no longer be found.
PROPERTY_SET = "{3c1d6f0e-5b2a-4f4e-9a61-7c0f8e2d9b41}"
TASK_KEY_PROPERTY = f"String {PROPERTY_SET} Name pwasyncTaskKey"
SCENARIO_PROPERTY = f"String {PROPERTY_SET} Name pwasyncScenario"
_TRANSACTION_NAMESPACE = UUID("6f1c2a9e-8d3b-4e57-b0a4-2c9e5f7d1a38")

GRAPH_DATETIME = "%Y-%m-%dT%H:%M:%S"
SHOW_AS_VALUES = ("auto", "free", "tentative", "busy", "oof", "workingElsewhere")
ShowAs = Literal["auto", "free", "tentative", "busy", "oof", "workingElsewhere"]
AllDay = Literal["false", "true", "multi_day"]


@dataclass(frozen=True)
class EventRules:
    """The settings the mapping follows (``PWASYNC_EVENT_*``)."""

    show_as: ShowAs = "auto"
    all_day: AllDay = "false"
    reminder_minutes: int | None = 15  # None: no reminder
    category: str = "Project task"
    # Which addresses may receive events at all (PWASYNC_MAILBOX_DOMAINS, common/mailboxes).
    mailboxes: MailboxPolicy = ANY_MAILBOX


def task_key(scenario: str, task_id: str) -> str:
    return f"{scenario}/{task_id}"


def transaction_id(
    scenario: str, task_id: str, resource_id: str, life: str, *, replaces: str | None = None
) -> str:
    """Deterministic per (scenario, task, assignee) and ``life``: the ordering key of the
    snapshot that creates the event. Graph deduplicates by transactionId even after the event
    was deleted (for an undocumented time), so each create that starts a new life of the
    event needs its own id, while a retry of the same snapshot keeps it. An event written again
    after its owner deleted it gets another one (derived from the deleted event's id), as the
    same snapshot may be applied again."""
    name = f"{scenario}/{task_id}/{resource_id}/{life}" + (f"/{replaces}" if replaces else "")
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, name))


def graph_zone_name(iana_zone: str) -> str | None:
    """The Windows time zone name Graph accepts for an IANA zone; None when there is none."""
    if iana_zone in ("UTC", "Etc/UTC", "Etc/GMT", "GMT"):
        return "UTC"
    return tz_win.get(iana_zone)


@dataclass(frozen=True)
class TaskTimes:
    """The task's start and finish as wall-clock times of its zone (normalised: a time in a
    DST gap moves forward, as the UTC instant says) and as UTC instants."""

    start: datetime
    finish: datetime
    start_utc: datetime
    finish_utc: datetime
    zone: str

    @property
    def spans_days(self) -> bool:
        return self.start.date() != self.finish.date()


def task_times(task: TaskChanged) -> TaskTimes:
    if task.start is None or task.finish is None:
        raise BadMessage("a task without start and finish has no event")
    zone = ZoneInfo(task.timezone)
    start_utc = task.start_utc or task.start.replace(tzinfo=zone).astimezone(UTC)
    finish_utc = task.finish_utc or task.finish.replace(tzinfo=zone).astimezone(UTC)
    if finish_utc < start_utc:
        raise BadMessage("the task finishes before it starts")
    return TaskTimes(
        start=start_utc.astimezone(zone).replace(tzinfo=None),
        finish=finish_utc.astimezone(zone).replace(tzinfo=None),
        start_utc=start_utc,
        finish_utc=finish_utc,
        zone=task.timezone,
    )


def is_all_day(times: TaskTimes, rules: EventRules) -> bool:
    return rules.all_day == "true" or (rules.all_day == "multi_day" and times.spans_days)


def show_as(times: TaskTimes, rules: EventRules, all_day: bool) -> str:
    if rules.show_as != "auto":
        return rules.show_as
    if all_day or times.spans_days or times.start_utc == times.finish_utc:
        return "free"
    return "busy"


def _start_end(times: TaskTimes, all_day: bool) -> tuple[dict[str, str], dict[str, str]]:
    zone = graph_zone_name(times.zone)
    if all_day:
        first = times.start.date()
        last = times.finish.date()
        # A finish at midnight ends the day before; an all-day event ends at the next midnight.
        if not (times.finish.time() == time(0) and last > first):
            last += timedelta(days=1)
        name = zone or "UTC"
        return (
            {"dateTime": f"{first.isoformat()}T00:00:00", "timeZone": name},
            {"dateTime": f"{last.isoformat()}T00:00:00", "timeZone": name},
        )
    if zone is None:
        return (
            {"dateTime": times.start_utc.strftime(GRAPH_DATETIME), "timeZone": "UTC"},
            {"dateTime": times.finish_utc.strftime(GRAPH_DATETIME), "timeZone": "UTC"},
        )
    return (
        {"dateTime": times.start.strftime(GRAPH_DATETIME), "timeZone": zone},
        {"dateTime": times.finish.strftime(GRAPH_DATETIME), "timeZone": zone},
    )


def _when(moment: datetime) -> str:
    return f"{moment:%a %d %b %Y %H:%M}"


def _safe_link(url: str | None) -> str | None:
    """Only http(s) links go into the body (never ``javascript:`` or the like)."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


_MARKUP = re.compile("[&<>\"']")


def _escape(text: str, quote: bool = True) -> str:
    """``html.escape``, without its five replacements for the usual text that has nothing to
    escape (a body escapes about seven values per event)."""
    return html.escape(text, quote) if _MARKUP.search(text) else text


def _day(moment: datetime) -> str:
    return f"{moment:%a %d %b %Y}"


#: Where a task link leads, for the body's words: Planner's hosts, else Project Web App.
_PLANNER_HOSTS = ("planner.cloud.microsoft", "tasks.office.com")


def _apps(link: str | None) -> tuple[str, str]:
    """(the app a link opens, the product the plan lives in)."""
    if link and any(f"//{host}/" in link for host in _PLANNER_HOSTS):
        return "Planner", "Microsoft Planner"
    return "Project Web App", "Microsoft Project"


def _date_rows(task: TaskChanged, times: TaskTimes) -> list[tuple[str, str]]:
    e = _escape
    if task.all_day:  # days: the finish is the midnight after the due day
        last = times.finish - timedelta(days=1) if times.finish > times.start else times.start
        return [("Start", e(_day(times.start))), ("Due", e(_day(last)))]
    return [
        ("Start", f"{e(_when(times.start))} ({e(times.zone)})"),
        ("Finish", f"{e(_when(times.finish))} ({e(times.zone)})"),
    ]


def body_html(task: TaskChanged, times: TaskTimes) -> str:
    e = _escape
    link = _safe_link(task.task_url)
    app, product = _apps(link)
    container = "Plan" if app == "Planner" else "Project"
    rows = [
        (container, e(task.project_name or f"(unnamed {container.lower()})")),
        ("Task", e(task.task_name or "(unnamed task)")),
        *_date_rows(task, times),
    ]
    parts = ["<html><body>", "<table>"]
    parts += [f"<tr><td><b>{label}</b></td><td>{value}</td></tr>" for label, value in rows]
    parts.append("</table>")
    if link:
        parts.append(f'<p><a href="{e(link, quote=True)}">Open the task in {app}</a></p>')
    parts.append(
        f"<p><i>This event is kept in sync with {product} by pwasync; changes made here "
        "are overwritten when the task changes.</i></p>"
    )
    parts.append("</body></html>")
    return "".join(parts)


def event_content(task: TaskChanged, rules: EventRules | None = None) -> dict[str, Any]:
    """Every field the sync owns: written on create, and patched when any of them changes."""
    rules = rules or EventRules()
    times = task_times(task)
    all_day = task.all_day or is_all_day(times, rules)
    start, end = _start_end(times, all_day)
    content: dict[str, Any] = {
        "subject": task.task_name,
        "body": {"contentType": "HTML", "content": body_html(task, times)},
        "start": start,
        "end": end,
        "isAllDay": all_day,
        "showAs": show_as(times, rules, all_day),
        "isReminderOn": rules.reminder_minutes is not None,
        "categories": [rules.category] if rules.category else [],
    }
    if rules.reminder_minutes is not None:
        content["reminderMinutesBeforeStart"] = rules.reminder_minutes
    return content


def identity_fields(
    task: TaskChanged, resource_id: str, *, replaces: str | None, life: str | None = None
):
    """The fields set only at creation (``life``: ``order_key(task)``, computed already)."""
    scenario, task_id = task.scenario, task.task_id
    return {
        "transactionId": transaction_id(
            scenario, task_id, resource_id, life or order_key(task), replaces=replaces
        ),
        "singleValueExtendedProperties": [
            {"id": TASK_KEY_PROPERTY, "value": task_key(scenario, task_id)},
            {"id": SCENARIO_PROPERTY, "value": scenario},
        ],
    }


def new_event(
    task: TaskChanged,
    resource_id: str,
    rules: EventRules | None = None,
    *,
    replaces: str | None = None,
    content: dict[str, Any] | None = None,
    life: str | None = None,
) -> dict[str, Any]:
    """The full body of a POST: the content (``content``: ``event_content(task, rules)``
    computed already) plus the identity fields."""
    return {
        **(event_content(task, rules) if content is None else content),
        **identity_fields(task, resource_id, replaces=replaces, life=life),
    }


def fingerprint(content: dict[str, Any]) -> str:
    """A stable digest of the owned fields, to PATCH only when something changed. The bytes
    are those of ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``,
    which wrote the digests already stored (tests/unit/test_event_mapping.py), in a fifth of
    the time."""
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
