"""In-memory doubles of our own ports (never of RabbitMQ or Redis), for unit tests."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

from services.event_writer.graph_protocol import GraphRequest, GraphResult
from services.event_writer.planner import RecordedEvent
from services.event_writer.steps import Ticket
from services.event_writer.task_store import Begun, Busy, Finish, Stale
from services.poller.source import AssignmentRow, ProjectRow, ResourceRow, TaskRow

PUBLISHED = datetime(2026, 11, 20, 10, 0)  # a project's publish, PWA wall clock

_FILTER = re.compile(r"ep/id eq '(?P<id>[^']+)' and ep/value eq '(?P<value>(?:[^']|'')*)'")


def _error(status: int, code: str) -> GraphResult:
    return GraphResult(status, {"error": {"code": code, "message": code}})


class FakeGraph:
    """Answers GraphRequests like Graph's calendar over a dict of mailboxes, at once.

    ``dedupe`` turns transactionId deduplication on (Graph's window is undocumented, so the
    tests that prove exactly-once effect run without it); ``fail_next[mailbox]`` scripts the
    next answer (a GraphResult or an exception) for a mailbox.
    """

    def __init__(self, mailboxes: list[str], *, dedupe: bool = False) -> None:
        self.events: dict[str, dict[str, dict[str, Any]]] = {m.lower(): {} for m in mailboxes}
        self.calls: list[tuple[str, str]] = []
        self.fail_next: dict[str, list[GraphResult | Exception]] = {}
        self.dedupe = dedupe
        self._ids = itertools.count(1)

    def submit(self, request: GraphRequest) -> Ticket:
        future: asyncio.Future[GraphResult] = asyncio.get_running_loop().create_future()
        ticket = Ticket(future, sent=True)
        self.calls.append((request.method, request.mailbox))
        scripted = self.fail_next.get(request.mailbox)
        if scripted:
            answer = scripted.pop(0)
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
            return ticket
        future.set_result(self.answer(request))
        return ticket

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    def answer(self, request: GraphRequest) -> GraphResult:
        box = self.events.get(request.mailbox)
        if box is None:
            return _error(404, "ErrorInvalidUser")
        event_id = unquote(request.path.split("/")[2]) if request.path.count("/") >= 2 else None
        if request.method == "POST":
            body = request.body or {}
            if self.dedupe:
                for existing in box.values():
                    if existing.get("transactionId") == body.get("transactionId"):
                        return GraphResult(201, existing)
            new_id = f"evt-{next(self._ids)}"
            box[new_id] = {**body, "id": new_id}
            return GraphResult(201, box[new_id])
        if request.method == "GET":
            match = _FILTER.search(dict(request.params)["$filter"])
            assert match, request.params
            wanted = (match["id"], match["value"].replace("''", "'"))
            found = [
                {"id": i}
                for i, e in box.items()
                if any(
                    (p["id"], p["value"]) == wanted
                    for p in e.get("singleValueExtendedProperties", [])
                )
            ]
            return GraphResult(200, {"value": found[: int(dict(request.params)["$top"])]})
        if event_id not in box:
            return _error(404, "ErrorItemNotFound")
        if request.method == "PATCH":
            box[event_id].update(request.body or {})
            return GraphResult(200, box[event_id])
        if request.method == "DELETE":
            del box[event_id]
            return GraphResult(204)
        raise AssertionError(request)


class Recorder(list):
    """An async callable that records what it is called with (publish, count)."""

    async def __call__(self, item: Any) -> None:
        self.append(item)


class MemoryTaskStore:
    """TaskStore's contract in memory: lease, order, dirty, map, failures, mailbox states.
    Its calls are coroutines, as the real one's are."""

    def __init__(self) -> None:
        self.maps: dict[str, dict[str, RecordedEvent]] = {}
        self.order: dict[str, str] = {}
        self.dirty: dict[str, bool] = {}
        self.leases: dict[str, str] = {}
        self.failures: dict[str, list] = {}
        self.mailboxes: dict[str, str] = {}
        self.tombstones: set[str] = set()
        self.crash_on_finish = False
        self._tokens = itertools.count(1)

    async def begin(self, task_id: str, order: str, change: str, mailboxes: list[str]):
        if task_id in self.leases:
            return Busy(1.0)
        newest = self.order.get(task_id)
        if newest is not None and order < newest:
            return Stale(newest)
        token = f"t{next(self._tokens)}"
        self.leases[task_id] = token
        was_dirty = self.dirty.get(task_id, False)
        self.order[task_id] = order
        self.dirty[task_id] = True
        self.tombstones.discard(task_id)
        states = {m: self.mailboxes[m] for m in mailboxes if m in self.mailboxes}
        return Begun(token, was_dirty, dict(self.maps.get(task_id, {})), states)

    async def finish(self, task_id: str, token: str, outcome: Finish) -> bool:
        if self.crash_on_finish:
            raise RuntimeError("the writer died before recording")
        entries = self.maps.setdefault(task_id, {})
        for resource_id in outcome.forget:
            entries.pop(resource_id, None)
        for event in outcome.record:
            entries[event.resource_id] = event
        self.failures[task_id] = list(outcome.failures)
        if not outcome.uncertain:
            self.dirty[task_id] = False
        if outcome.removal:
            self.maps.pop(task_id, None)
            self.tombstones.add(task_id)
        self.leases.pop(task_id, None)
        return True

    async def abandon(self, task_id: str, token: str) -> None:
        if self.leases.get(task_id) == token:
            del self.leases[task_id]

    async def mailbox_state(self, mailbox: str):
        return self.mailboxes.get(mailbox)

    async def claim_probe(self, mailbox: str, token: str) -> bool:
        return True

    async def release_probe(self, mailbox: str, token: str) -> None:
        pass

    async def mark_mailbox(self, mailbox: str, state: str) -> None:
        if state == "verify" or mailbox not in self.mailboxes:
            self.mailboxes[mailbox] = state


class ListFeed:
    """A ``PlanSource`` over lists, recording which projects' tasks were read."""

    api = "fake"
    reread_after = timedelta(0)
    requests_made = 0

    def __init__(self):
        self.project_rows, self.task_rows, self.assignment_rows = [], {}, {}
        self.resource_rows = {}
        self.tasks_read = []
        self.failing = None

    def project(self, name, kind=0):
        row = ProjectRow(str(uuid.uuid4()), name, kind, PUBLISHED)
        self.project_rows.append(row)
        self.task_rows[row.project_id], self.assignment_rows[row.project_id] = [], []
        return row

    def task(self, project, name, *, flagged=True, summary=False, start=True, people=()):
        row = TaskRow(
            project.project_id,
            str(uuid.uuid4()),
            name,
            datetime(2026, 12, 2, 8) if start else None,
            datetime(2026, 12, 3, 17) if start else None,
            summary,
            False,
            flagged,
        )
        self.task_rows[project.project_id].append(row)
        for person in people:
            self.assignment_rows[project.project_id].append(
                AssignmentRow(row.task_id, person.resource_id, person.name)
            )
        return row

    def person(self, name, email):
        row = ResourceRow(str(uuid.uuid4()), name, email)
        self.resource_rows[row.resource_id] = row
        return row

    def _check(self):
        if self.failing:
            raise self.failing

    def projects(self, *, project_ids=None):
        self._check()
        return iter(p for p in self.project_rows if not project_ids or p.project_id in project_ids)

    def tasks(self, project_id):
        self._check()
        self.tasks_read.append(project_id)
        return iter(self.task_rows[project_id])

    def assignments(self, project_id):
        return iter(self.assignment_rows[project_id])

    def resources(self, ids):
        return iter(self.resource_rows[i] for i in ids if i in self.resource_rows)

    def task_projects(self, task_ids):
        self._check()
        return {p for p, rows in self.task_rows.items() if any(r.task_id in task_ids for r in rows)}
