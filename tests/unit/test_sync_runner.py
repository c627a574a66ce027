import threading
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from common.messages import SyncRequested
from services.poller.projectdata import AssignmentRow, ProjectRow, ResourceRow, TaskRow
from services.poller.sync import SyncInterrupted, SyncRunner

BERLIN = ZoneInfo("Europe/Berlin")


class FakeFeed:
    """Answers like ProjectDataClient over lists, and records what was asked."""

    def __init__(self):
        self.projects_list, self.tasks_by_project, self.assignments_by_project = [], {}, {}
        self.resource_rows = {}
        self.asked = []

    def add_project(self, name, modified, kind=0, tasks=(), assignments=()):
        project = ProjectRow(uuid.uuid4(), name, kind, modified)
        self.projects_list.append(project)
        self.tasks_by_project[project.project_id] = [make(project.project_id) for make in tasks]
        self.assignments_by_project[project.project_id] = list(assignments)
        return project

    def projects(self, *, modified_after=None, project_ids=None):
        self.asked.append(("projects", modified_after, project_ids))
        rows = sorted(self.projects_list, key=lambda p: p.modified)
        if modified_after is not None:
            rows = [p for p in rows if p.modified > modified_after]
        if project_ids:
            rows = [p for p in rows if p.project_id in project_ids]
        return iter(rows)

    def tasks(self, project_id, flag_property):
        self.asked.append(("tasks", project_id))
        return iter(self.tasks_by_project[project_id])

    def assignments(self, project_id):
        return iter(self.assignments_by_project[project_id])

    def resources(self, ids):
        self.asked.append(("resources", frozenset(ids)))
        return iter(self.resource_rows[i] for i in ids if i in self.resource_rows)

    def task_projects(self, task_ids):
        return {
            p
            for p, tasks in self.tasks_by_project.items()
            if any(t.task_id in task_ids for t in tasks)
        }


class MemoryWatermarks:
    def __init__(self, value=None):
        self.value = value
        self.history = []

    def get(self):
        return self.value

    def advance(self, to):
        if self.value is None or to > self.value:
            self.value = to
            self.history.append(to)


def leaf(name, task_id=None, flagged=True):
    task_id = task_id or uuid.uuid4()
    return lambda pid: TaskRow(
        pid,
        task_id,
        name,
        datetime(2026, 12, 1, 9),
        datetime(2026, 12, 1, 17),
        False,
        False,
        flagged,
    )


def runner(feed, watermarks, published, stop=None):
    return SyncRunner(
        scenario="acme",
        feed=feed,
        publish=published.append,
        watermarks=watermarks,
        flag_property="Createevent",
        pwa_zone=BERLIN,
        stop=stop,
    )


def test_publishes_flagged_tasks_of_projects_modified_since_the_watermark():
    feed = FakeFeed()
    alice = uuid.uuid4()
    feed.resource_rows[alice] = ResourceRow(alice, "Alice", "alice@contoso.com")
    task_id = uuid.uuid4()
    feed.add_project("old", datetime(2026, 1, 1), tasks=[leaf("old task")])
    new = feed.add_project(
        "new",
        datetime(2026, 11, 24, 9, 30),
        tasks=[leaf("wanted", task_id), leaf("unflagged", flagged=False)],
        assignments=[AssignmentRow(task_id, alice, "Alice")],
    )
    feed.add_project("master", datetime(2026, 11, 24, 10), kind=6, tasks=[leaf("in master")])
    watermarks = MemoryWatermarks(datetime(2026, 6, 1))
    published = []

    summary = runner(feed, watermarks, published).run(SyncRequested(scenario="acme"))

    [message] = published
    assert message.task_name == "wanted" and message.project_id == new.project_id
    assert [a.email for a in message.assignees] == ["alice@contoso.com"]
    assert message.timezone == "Europe/Berlin"
    assert message.revision.isoformat() == "2026-11-24T08:30:00+00:00"  # 09:30 CET in UTC
    assert summary.tasks_published == 1
    assert summary.tasks_skipped == {"not_flagged": 1}
    assert summary.projects_skipped == {"master_project": 1}
    assert watermarks.value == datetime(2026, 11, 24, 10)
    assert ("tasks", new.project_id) in feed.asked
    assert all(a[0] != "tasks" or a[1] == new.project_id for a in feed.asked)


def test_full_ignores_the_watermark_and_scoped_runs_do_not_move_it():
    feed = FakeFeed()
    target = uuid.uuid4()
    old = feed.add_project("old", datetime(2026, 1, 1), tasks=[leaf("a", target), leaf("b")])
    watermarks = MemoryWatermarks(datetime(2026, 6, 1))
    published = []
    runner(feed, watermarks, published).run(SyncRequested(scenario="acme", full=True))
    assert len(published) == 2

    published.clear()
    watermarks.value = datetime(2020, 1, 1)
    runner(feed, watermarks, published).run(SyncRequested(scenario="acme", task_ids=[target]))
    assert [m.task_id for m in published] == [target]
    assert watermarks.value == datetime(2020, 1, 1)
    assert old.project_id in feed.task_projects([target])


def test_the_watermark_never_splits_projects_with_the_same_timestamp():
    feed = FakeFeed()
    same = datetime(2026, 11, 1, 12)
    feed.add_project("a", same, tasks=[leaf("a")])
    feed.add_project("b", same, tasks=[leaf("b")])
    feed.add_project("c", datetime(2026, 11, 2), tasks=[leaf("c")])
    watermarks = MemoryWatermarks(datetime(2026, 1, 1))
    runner(feed, watermarks, []).run(SyncRequested(scenario="acme"))
    assert watermarks.history == [same, datetime(2026, 11, 2)]  # once, after both "a" and "b"


def test_a_stop_request_interrupts_between_projects_keeping_the_progress():
    feed = FakeFeed()
    feed.add_project("a", datetime(2026, 11, 1), tasks=[leaf("a")])
    feed.add_project("b", datetime(2026, 11, 2), tasks=[leaf("b")])
    stop = threading.Event()
    published = []
    watermarks = MemoryWatermarks(datetime(2026, 1, 1))

    def publish_then_stop(message):
        published.append(message)
        stop.set()

    sync = SyncRunner(
        scenario="acme",
        feed=feed,
        publish=publish_then_stop,
        watermarks=watermarks,
        flag_property="Createevent",
        pwa_zone=BERLIN,
        stop=stop,
    )
    with pytest.raises(SyncInterrupted, match="1 of 2 projects left"):
        sync.run(SyncRequested(scenario="acme"))
    assert watermarks.value == datetime(2026, 11, 1)


def test_resources_are_read_once_per_run_and_only_those_assigned():
    feed = FakeFeed()
    alice = uuid.uuid4()
    feed.resource_rows[alice] = ResourceRow(alice, "Alice", "a@x.com")
    t1, t2 = uuid.uuid4(), uuid.uuid4()
    feed.add_project(
        "a",
        datetime(2026, 11, 1),
        tasks=[leaf("a", t1)],
        assignments=[AssignmentRow(t1, alice, "Alice")],
    )
    feed.add_project(
        "b",
        datetime(2026, 11, 2),
        tasks=[leaf("b", t2)],
        assignments=[AssignmentRow(t2, alice, "Alice")],
    )
    runner(feed, MemoryWatermarks(datetime(2026, 1, 1)), []).run(SyncRequested(scenario="acme"))
    assert [a for a in feed.asked if a[0] == "resources"] == [("resources", frozenset({alice}))]
