"""The sync runner over in-memory doubles of its own ports (feed, state store, publisher)."""

import threading
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from common.errors import NotAllConfirmed, PublishNotConfirmed, Stopping
from common.mailboxes import ANY_MAILBOX, MailboxPolicy
from common.messages import SyncRequested
from services.event_writer.ordering import order_key
from services.poller.changes import ProjectState
from services.poller.deletion_guard import DeletionGuard
from services.poller.source import (
    AssignmentRow,
    ProjectRow,
    ResourceRow,
    TaskRow,
    UnpublishedProject,
    UnreadableRow,
)
from services.poller.sources import pwa_project_link
from services.poller.sync import NO_GUARD, PUBLISH_WINDOW, SyncInterrupted, SyncRunner

BERLIN = ZoneInfo("Europe/Berlin")
STEP = timedelta(microseconds=1)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # 13:00 in Berlin


class FakeFeed:
    """A ``PlanSource`` over lists, which records what was asked."""

    api = "fake"
    reread_after = timedelta(0)

    def __init__(self):
        self.projects_list, self.tasks_by_project, self.assignments_by_project = [], {}, {}
        self.resource_rows = {}
        self.asked = []

    def add_project(self, name, modified, kind=0, tasks=(), assignments=()):
        project = ProjectRow(str(uuid.uuid4()), name, kind, modified)
        self.projects_list.append(project)
        self.tasks_by_project[project.project_id] = [make(project.project_id) for make in tasks]
        self.assignments_by_project[project.project_id] = list(assignments)
        return project

    def republish(self, project, modified, kind=None):
        """What publishing in PWA does to the Projects row."""
        index = self.projects_list.index(project)
        changed = ProjectRow(
            project.project_id,
            project.name,
            project.project_type if kind is None else kind,
            modified,
        )
        self.projects_list[index] = changed
        return changed

    def projects(self, *, project_ids=None):
        self.asked.append(("projects", tuple(project_ids or ())))
        rows = list(self.projects_list)
        if project_ids:
            rows = [p for p in rows if p.project_id in project_ids]
        return iter(rows)

    def tasks(self, project_id):
        self.asked.append(("tasks", project_id))
        return iter(self.tasks_by_project[project_id])

    def assignments(self, project_id):
        self.asked.append(("assignments", project_id))
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

    def reads(self):
        return [a for a in self.asked if a[0] == "tasks"]


class MemoryState:
    """PollerState over dicts."""

    def __init__(self, start=datetime(2026, 1, 1)):
        self._start = start
        self.project_states = {}
        self.tasks = {}
        self.revisions = {}
        self.runs = []

    def start(self):
        return self._start

    def projects(self):
        return dict(self.project_states)

    def save_project(self, project_id, state):
        self.project_states[project_id] = state

    def forget_project(self, project_id):
        self.project_states.pop(project_id, None)
        self.tasks.pop(project_id, None)

    def published_tasks(self, project_id):
        return dict(self.tasks.get(project_id, {}))

    def record_published(self, project_id, published):
        for task_id, digest, revision in published:
            self.tasks.setdefault(project_id, {})[task_id] = digest
            self.revisions[task_id] = revision

    def published_revisions(self, project_id):
        return {t: self.revisions.get(t) for t in self.tasks.get(project_id, {})}

    def record_removed(self, project_id, task_ids):
        for task_id in task_ids:
            self.tasks.get(project_id, {}).pop(task_id, None)

    def record_run(self, summary):
        self.runs.append(summary)

    def count_published(self, project_ids):
        return sum(len(self.tasks.get(p, {})) for p in project_ids)

    alarm = None

    def raise_deletion_alarm(self, alarm):
        self.alarm = alarm

    def clear_deletion_alarm(self):
        self.alarm = None


def leaf(name, task_id=None, flagged=True, start=datetime(2026, 12, 1, 9), hours=8):
    task_id = task_id or str(uuid.uuid4())
    return lambda pid: TaskRow(
        pid,
        task_id,
        name,
        start,
        start + timedelta(hours=hours) if start else None,
        False,
        False,
        flagged,
    )


def runner(
    feed,
    state,
    published,
    stop=None,
    guard=NO_GUARD,
    now=NOW,
    mailboxes=ANY_MAILBOX,
    parallel_reads=1,
):
    return SyncRunner(
        scenario="acme",
        feed=feed,
        publish=published.extend,
        state=state,
        pwa_zone=BERLIN,
        task_link=partial(pwa_project_link, "https://contoso.sharepoint.com/sites/pwa"),
        clock=lambda: now,
        should_stop=(stop or threading.Event()).is_set,
        deletion_guard=guard,
        mailboxes=mailboxes,
        parallel_reads=parallel_reads,
    )


def sync(feed, state, published, **request):
    return runner(feed, state, published).run(SyncRequested(scenario="acme", **request))


def test_first_run_publishes_flagged_tasks_of_projects_published_after_the_sync_start():
    feed = FakeFeed()
    alice = str(uuid.uuid4())
    feed.resource_rows[alice] = ResourceRow(alice, "Alice", "alice@contoso.com")
    task_id = str(uuid.uuid4())
    feed.add_project("old", datetime(2025, 12, 1), tasks=[leaf("old task")])
    new = feed.add_project(
        "new",
        datetime(2026, 11, 24, 9, 30),
        tasks=[leaf("wanted", task_id), leaf("unflagged", flagged=False)],
        assignments=[AssignmentRow(task_id, alice, "Alice")],
    )
    feed.add_project("master", datetime(2026, 11, 24, 10), kind=6, tasks=[leaf("in master")])
    state, published = MemoryState(), []

    summary = sync(feed, state, published)

    [message] = published
    assert message.task_name == "wanted" and message.project_id == new.project_id
    assert message.change == "upsert"
    assert [a.email for a in message.assignees] == ["alice@contoso.com"]
    assert message.timezone == "Europe/Berlin"
    assert message.revision.isoformat() == "2026-11-24T08:30:00+00:00"  # 09:30 CET in UTC
    assert message.start_utc.isoformat() == "2026-12-01T08:00:00+00:00"
    assert message.task_url == (
        f"https://contoso.sharepoint.com/sites/pwa/project.aspx?projuid={new.project_id}"
    )
    assert feed.reads() == [("tasks", new.project_id)]  # neither "old" nor the master project
    record = state.runs[-1]
    assert record["status"] == "succeeded"
    assert record["projects"] == {
        "listed": 3,
        "read": 1,
        "unchanged": 0,
        "deleted": 0,
        "skipped": {"before_sync_start": 1, "master_project": 1},
    }
    assert record["tasks"] == {
        "published": 1,
        "unchanged": 0,
        "removed": 0,
        "removals_held": 0,
        "skipped": {"not_flagged": 1},
    }
    assert summary.tasks_published == 1


def test_nothing_changed_reads_only_the_project_list_and_publishes_nothing():
    feed = FakeFeed()
    for number in range(5):
        feed.add_project(f"p{number}", datetime(2026, 11, 1, number), tasks=[leaf("t")])
    state, published = MemoryState(), []
    sync(feed, state, published)
    assert len(published) == 5

    feed.asked.clear()
    published.clear()
    sync(feed, state, published)
    assert published == []
    assert feed.asked == [("projects", ())]
    assert state.runs[-1]["projects"]["unchanged"] == 5


def test_a_changed_project_is_read_again_and_only_changed_tasks_are_published():
    feed = FakeFeed()
    same, moved = str(uuid.uuid4()), str(uuid.uuid4())
    a = feed.add_project("a", datetime(2026, 11, 1), tasks=[leaf("same", same), leaf("m", moved)])
    b = feed.add_project("b", datetime(2026, 11, 2), tasks=[leaf("other")])
    state, published = MemoryState(), []
    sync(feed, state, published)

    feed.tasks_by_project[a.project_id][1] = leaf("m", moved, start=datetime(2026, 12, 2, 9))(
        a.project_id
    )
    feed.republish(a, datetime(2026, 11, 3))
    feed.asked.clear()
    published.clear()
    sync(feed, state, published)
    assert [m.task_id for m in published] == [moved]
    assert feed.reads() == [("tasks", a.project_id)]
    assert ("tasks", b.project_id) not in feed.asked
    assert state.runs[-1]["tasks"]["unchanged"] == 1


def test_full_reads_everything_but_publishes_only_what_differs():
    feed = FakeFeed()
    feed.add_project("old", datetime(2025, 1, 1), tasks=[leaf("a"), leaf("b")])
    feed.add_project("new", datetime(2026, 11, 1), tasks=[leaf("c")])
    state, published = MemoryState(), []
    sync(feed, state, published, full=True)
    assert len(published) == 3  # "old" too: full ignores the sync start

    published.clear()
    sync(feed, state, published, full=True)
    assert published == []
    assert len(feed.reads()) == 4


@pytest.mark.parametrize("how", ["flag cleared", "deleted", "lost its dates", "became a summary"])
def test_a_task_that_leaves_the_selection_gets_a_removal_newer_than_its_upsert(how):
    feed = FakeFeed()
    task_id = str(uuid.uuid4())
    project = feed.add_project("p", datetime(2026, 11, 1, 10), tasks=[leaf("t", task_id)])
    state, published = MemoryState(), []
    sync(feed, state, published)
    [upsert] = published

    pid = project.project_id
    if how == "flag cleared":
        feed.tasks_by_project[pid] = [leaf("t", task_id, flagged=False)(pid)]
    elif how == "deleted":
        feed.tasks_by_project[pid] = []
    elif how == "lost its dates":
        feed.tasks_by_project[pid] = [leaf("t", task_id, start=None)(pid)]
    else:
        row = feed.tasks_by_project[pid][0]
        feed.tasks_by_project[pid] = [row.__class__(**{**row.__dict__, "is_summary": True})]
    feed.republish(project, datetime(2026, 11, 2, 10))
    published.clear()
    sync(feed, state, published)

    [removal] = published
    assert removal.change == "remove" and removal.task_id == task_id
    assert removal.revision > upsert.revision
    assert removal.revision.isoformat() == "2026-11-02T09:00:00+00:00"
    assert state.tasks[pid] == {}
    assert state.runs[-1]["tasks"]["removed"] == 1

    published.clear()
    sync(feed, state, published)
    assert published == []  # a removal is published once


def test_a_project_that_becomes_a_master_project_removes_its_tasks_after_their_upserts():
    feed = FakeFeed()
    project = feed.add_project("p", datetime(2026, 11, 1), tasks=[leaf("a"), leaf("b")])
    state, published = MemoryState(), []
    sync(feed, state, published)
    upserts = {m.task_id: m.revision for m in published}
    feed.republish(project, datetime(2026, 11, 1), kind=6)  # type changed, same modified date
    published.clear()
    sync(feed, state, published)
    assert {m.change for m in published} == {"remove"} and len(published) == 2
    assert all(m.revision == upserts[m.task_id] + STEP for m in published)
    assert state.runs[-1]["projects"]["skipped"] == {"master_project": 1}


def test_a_deleted_project_removes_every_task_it_had_published():
    feed = FakeFeed()
    gone = feed.add_project("gone", datetime(2026, 11, 1), tasks=[leaf("a"), leaf("b")])
    feed.add_project("stays", datetime(2026, 11, 2), tasks=[leaf("c")])
    state, published = MemoryState(), []
    sync(feed, state, published)
    upserts = {m.task_id: m.revision for m in published}
    feed.projects_list.remove(gone)
    published.clear()
    sync(feed, state, published)
    assert [m.change for m in published] == ["remove", "remove"]
    assert all(m.project_id == gone.project_id for m in published)
    assert all(m.revision == upserts[m.task_id] + STEP for m in published)
    assert gone.project_id not in state.project_states
    assert state.runs[-1]["projects"]["deleted"] == 1


#: The PWA's wall clock runs two hours ahead of ours (a skewed clock, or a PWA east of UTC with
#: PWASYNC_PWA_TIMEZONE left at UTC): its publishes carry times after our NOW.
AHEAD = (NOW + timedelta(hours=2)).astimezone(BERLIN).replace(tzinfo=None)


@pytest.mark.parametrize("how", ["project deleted", "became a master project"])
def test_with_the_pwa_clock_ahead_a_removal_still_orders_after_the_upsert(how):
    feed = FakeFeed()
    project = feed.add_project("p", AHEAD, tasks=[leaf("t")])
    state, published = MemoryState(), []
    sync(feed, state, published)
    [upsert] = published
    assert upsert.revision > NOW
    if how == "project deleted":
        feed.projects_list.remove(project)
    else:
        feed.republish(project, AHEAD, kind=6)
    published.clear()
    sync(feed, state, published)
    [removal] = published
    assert removal.change == "remove"
    assert order_key(removal) > order_key(upsert)  # the writer applies it


def test_with_the_pwa_clock_behind_a_task_flagged_again_orders_after_its_removal():
    """Retyped at 10:00 PWA time, detected at our NOW (12:00 UTC = 13:00 Berlin), flagged again
    and published at 12:30 Berlin: the PWA clock is behind ours, and the new publish must still
    win over the removal (a removal at our clock would bury it)."""
    feed = FakeFeed()
    task_id = str(uuid.uuid4())
    project = feed.add_project("p", datetime(2026, 11, 24, 10), tasks=[leaf("t", task_id)])
    state, published = MemoryState(), []
    sync(feed, state, published)
    retyped = feed.republish(project, datetime(2026, 11, 24, 10), kind=6)
    published.clear()
    sync(feed, state, published)
    [removal] = published
    feed.republish(retyped, datetime(2026, 11, 24, 12, 30), kind=0)
    published.clear()
    sync(feed, state, published)
    [upsert] = published
    assert upsert.change == "upsert" and upsert.task_id == task_id
    assert order_key(upsert) > order_key(removal)


def test_a_removal_of_a_task_recorded_without_its_revision_takes_the_later_of_clocks():
    """Fingerprints recorded before revisions were kept: the project's last publish or our
    clock, whichever is later, and one step."""
    feed = FakeFeed()
    project = feed.add_project("p", AHEAD, tasks=[leaf("t")])
    state, published = MemoryState(), []
    sync(feed, state, published)
    [upsert] = published
    state.revisions.clear()
    feed.projects_list.remove(project)
    published.clear()
    sync(feed, state, published)
    [removal] = published
    assert removal.revision == upsert.revision + STEP


def test_a_project_read_within_the_reporting_lag_is_read_once_more_once_it_has_passed():
    feed = FakeFeed()
    feed.reread_after = timedelta(minutes=5)
    # Published at 12:58 Berlin; the poller reads at 13:00 Berlin (NOW), within 5 minutes.
    feed.add_project("fresh", datetime(2026, 11, 24, 12, 58), tasks=[leaf("t")])
    state, published = MemoryState(), []
    request = SyncRequested(scenario="acme")
    runner(feed, state, published).run(request)
    runner(feed, state, published, now=NOW + timedelta(minutes=1)).run(request)
    assert len(feed.reads()) == 1  # polls before 13:03 cost nothing for it
    runner(feed, state, published, now=NOW + timedelta(minutes=4)).run(request)
    runner(feed, state, published, now=NOW + timedelta(minutes=9)).run(request)
    assert len(feed.reads()) == 2  # once, after the lag: not once per poll
    assert len(published) == 1  # the second read found nothing new to publish


def test_a_draft_never_published_is_neither_read_nor_taken_for_deleted():
    feed = FakeFeed()
    project = feed.add_project("p", datetime(2026, 11, 24, 9), tasks=[leaf("a")])
    state, published = MemoryState(), []
    sync(feed, state, published)
    feed.projects_list = [UnpublishedProject(project.project_id, "p"), *feed.projects_list[1:]]
    published.clear()
    sync(feed, state, published)
    assert published == [] and project.project_id in state.project_states
    assert state.runs[-1]["projects"]["skipped"] == {"never_published": 1}


def test_an_assignee_answered_with_its_assignment_needs_no_resource_lookup():
    feed = FakeFeed()
    task_id, resource_id = str(uuid.uuid4()), str(uuid.uuid4())
    resource = ResourceRow(resource_id, "Adele", "adele@contoso.com")
    feed.add_project(
        "p",
        datetime(2026, 11, 24, 9),
        tasks=[leaf("a", task_id)],
        assignments=[AssignmentRow(task_id, resource_id, "Adele", resource)],
    )
    published = []
    sync(feed, MemoryState(), published)
    assert [a.email for a in published[0].assignees] == ["adele@contoso.com"]
    assert not [a for a in feed.asked if a[0] == "resources"]


def test_task_scoped_runs_touch_only_those_tasks_and_leave_the_project_state_alone():
    feed = FakeFeed()
    target, other = str(uuid.uuid4()), str(uuid.uuid4())
    project = feed.add_project("p", datetime(2026, 11, 1), tasks=[leaf("a", target)])
    state, published = MemoryState(), []
    sync(feed, state, published, task_ids=[target])
    assert [m.task_id for m in published] == [target]
    assert project.project_id not in state.project_states

    feed.tasks_by_project[project.project_id].append(leaf("b", other)(project.project_id))
    feed.tasks_by_project[project.project_id][0] = leaf("a", target, flagged=False)(
        project.project_id
    )
    published.clear()
    sync(feed, state, published, task_ids=[other])
    assert [(m.task_id, m.change) for m in published] == [(other, "upsert")]  # no removal of a


def test_a_stop_request_interrupts_between_projects_keeping_the_progress():
    feed = FakeFeed()
    first = feed.add_project("a", datetime(2026, 11, 1), tasks=[leaf("a")])
    feed.add_project("b", datetime(2026, 11, 2), tasks=[leaf("b")])
    stop = threading.Event()
    published = []
    state = MemoryState()

    def publish_then_stop(messages):
        published.extend(messages)
        stop.set()

    sync_runner = runner(feed, state, [], stop=stop)
    sync_runner._publish = publish_then_stop
    with pytest.raises(SyncInterrupted, match="1 of 2 projects left"):
        sync_runner.run(SyncRequested(scenario="acme"))
    assert list(state.project_states) == [first.project_id]
    assert state.runs[-1]["status"] == "interrupted"


def test_reading_projects_in_parallel_publishes_and_records_as_reading_them_in_turn():
    def build():
        feed = FakeFeed()
        for number in range(9):
            feed.add_project(
                f"p{number}",
                datetime(2026, 11, 1, number),
                kind=6 if number == 4 else 0,  # a master project: skipped, not read
                tasks=[leaf(f"t{number}-{n}", f"{number}-{n}") for n in range(3)],
            )
        return feed

    outcomes = []
    for parallel_reads in (1, 4):
        feed, state, published = build(), MemoryState(), []
        runner(feed, state, published, parallel_reads=parallel_reads).run(
            SyncRequested(scenario="acme")
        )
        name = {p.project_id: p.name for p in feed.projects_list}
        outcomes.append(
            (
                [(m.task_id, m.revision) for m in published],
                [(name[pid], saved) for pid, saved in state.project_states.items()],
                sorted(name[pid] for _, pid in feed.reads()),
                state.runs[-1]["projects"],
            )
        )
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]) == 8 * 3


class ConfirmsAllBut:
    """A publisher whose broker confirms every message but those of the ``refused`` tasks."""

    def __init__(self, refused=()):
        self.refused = set(refused)
        self.batches, self.confirmed = [], []

    def __call__(self, messages):
        self.batches.append(len(messages))
        lost = {n for n, m in enumerate(messages) if m.task_id in self.refused}
        self.confirmed.extend(m for n, m in enumerate(messages) if n not in lost)
        if lost:
            raise NotAllConfirmed(
                "not all confirmed",
                confirmed=frozenset(range(len(messages))) - lost,
                cause=PublishNotConfirmed("the connection broke"),
            )


def test_upserts_go_out_in_windows_and_a_failure_keeps_the_confirmed_ones():
    feed = FakeFeed()
    ids = [str(uuid.uuid4()) for _ in range(PUBLISH_WINDOW + 10)]
    project = feed.add_project("big", datetime(2026, 11, 1), tasks=[leaf(i, i) for i in ids])
    state = MemoryState()
    lost = ids[PUBLISH_WINDOW + 3]
    publisher = ConfirmsAllBut({lost})
    sync_runner = runner(feed, state, [])
    sync_runner._publish = publisher

    with pytest.raises(PublishNotConfirmed, match="connection broke"):
        sync_runner.run(SyncRequested(scenario="acme"))

    assert publisher.batches == [PUBLISH_WINDOW, 10]
    assert set(state.tasks[project.project_id]) == set(ids) - {lost}
    assert project.project_id not in state.project_states  # read again next run
    assert state.runs[-1]["status"] == "failed"
    assert state.runs[-1]["tasks"]["published"] == len(ids) - 1

    published = []
    sync(feed, state, published)
    assert [m.task_id for m in published] == [lost]
    assert project.project_id in state.project_states


def test_removals_not_confirmed_stay_recorded_and_are_published_again():
    feed = FakeFeed()
    gone = feed.add_project("gone", datetime(2026, 11, 1), tasks=[leaf("a"), leaf("b")])
    state = MemoryState()
    sync(feed, state, [])
    first, second = sorted(state.tasks[gone.project_id])
    feed.projects_list.remove(gone)
    sync_runner = runner(feed, state, [])
    sync_runner._publish = ConfirmsAllBut({second})

    with pytest.raises(PublishNotConfirmed):
        sync_runner.run(SyncRequested(scenario="acme"))
    assert list(state.tasks[gone.project_id]) == [second]
    assert gone.project_id in state.project_states
    assert state.runs[-1]["tasks"]["removed"] == 1

    published = []
    sync(feed, state, published)
    assert [(m.change, m.task_id) for m in published] == [("remove", second)]
    assert gone.project_id not in state.project_states


def test_a_failed_run_is_recorded_with_its_error():
    feed = FakeFeed()
    project = feed.add_project("a", datetime(2026, 11, 1), tasks=[leaf("a")])
    del feed.tasks_by_project[project.project_id]
    state = MemoryState()
    with pytest.raises(KeyError):
        sync(feed, state, [])
    assert state.runs[-1]["status"] == "failed" and state.runs[-1]["errors"]


def test_resources_are_read_once_per_run_and_only_those_assigned():
    feed = FakeFeed()
    alice = str(uuid.uuid4())
    feed.resource_rows[alice] = ResourceRow(alice, "Alice", "a@x.com")
    t1, t2 = str(uuid.uuid4()), str(uuid.uuid4())
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
    sync(feed, MemoryState(), [])
    assert [a for a in feed.asked if a[0] == "resources"] == [("resources", frozenset({alice}))]


def test_project_states_use_the_pwa_wall_clock():
    feed = FakeFeed()
    project = feed.add_project("a", datetime(2026, 11, 1), tasks=[leaf("a")])
    state = MemoryState()
    sync(feed, state, [])
    assert state.project_states[project.project_id] == ProjectState(
        datetime(2026, 11, 1), 0, datetime(2026, 11, 24, 13, 0)
    )


def test_the_deletion_guard_holds_mass_removals_until_confirmed():
    feed = FakeFeed()
    project = feed.add_project(
        "big", datetime(2026, 11, 1), tasks=[leaf(f"t{n}") for n in range(20)]
    )
    state = MemoryState()
    published = []
    guard = DeletionGuard(percent=30, min_tasks=5)
    runner(feed, state, published, guard=guard).run(SyncRequested(scenario="acme"))
    assert len(published) == 20

    # The flag field was renamed by mistake: every task reads as unflagged.
    feed.tasks_by_project[project.project_id] = [
        leaf(t.name, t.task_id, flagged=False)(project.project_id)
        for t in feed.tasks_by_project[project.project_id]
    ]
    feed.republish(project, datetime(2026, 11, 2))
    published.clear()
    summary = runner(feed, state, published, guard=guard).run(SyncRequested(scenario="acme"))
    assert published == []
    assert summary.removals_held == 20 and summary.tasks_removed == 0
    assert state.alarm["removing"] == 20 and state.alarm["synced"] == 20
    again = runner(feed, state, published, guard=guard).run(SyncRequested(scenario="acme"))
    assert again.removals_held == 20  # held removals are found again by every run

    confirmed = runner(feed, state, published, guard=guard).run(
        SyncRequested(scenario="acme", allow_deletions=True)
    )
    assert confirmed.tasks_removed == 20
    assert {m.change for m in published} == {"remove"}
    assert state.alarm is None
    assert state.published_tasks(project.project_id) == {}


def test_the_deletion_guard_lets_ordinary_removals_through():
    guard = DeletionGuard(percent=30, min_tasks=5)
    assert not guard.trips(removing=5, synced=5)  # at or under the minimum
    assert not guard.trips(removing=30, synced=100)  # at the share
    assert guard.trips(removing=31, synced=100)
    assert not DeletionGuard(percent=100, min_tasks=0).trips(removing=1000, synced=1000)


def test_an_unreadable_task_row_is_logged_and_left_as_it_was_and_the_run_goes_on():
    # The fault suite found it: one malformed row failed every run of the scenario.
    feed, state, published = FakeFeed(), MemoryState(), []
    broken_id, fine_id = str(uuid.uuid4()), str(uuid.uuid4())
    project = feed.add_project(
        "p", datetime(2026, 11, 24, 9), tasks=[leaf("broken", broken_id), leaf("fine", fine_id)]
    )
    sync(feed, state, published)
    assert {m.task_id for m in published} == {broken_id, fine_id}
    feed.republish(project, datetime(2026, 11, 24, 10))
    feed.tasks_by_project[project.project_id][0] = UnreadableRow(
        broken_id, "broken", "TaskStartDate is not readable: '31.12.2026'"
    )
    published.clear()

    sync(feed, state, published)

    assert published == []  # no removal: what it is now cannot be told
    assert set(state.tasks[project.project_id]) == {broken_id, fine_id}
    record = state.runs[-1]
    assert record["status"] == "succeeded"
    assert record["tasks"]["skipped"] == {"unreadable_row": 1}


def test_an_unreadable_project_row_is_not_taken_for_a_deleted_project():
    feed, state, published = FakeFeed(), MemoryState(), []
    project = feed.add_project("p", datetime(2026, 11, 24, 9), tasks=[leaf("a")])
    sync(feed, state, published)
    index = feed.projects_list.index(project)
    feed.projects_list[index] = UnreadableRow(project.project_id, "p", "ProjectModifiedDate …")
    published.clear()

    sync(feed, state, published)

    assert published == []
    assert project.project_id in state.project_states
    assert state.runs[-1]["projects"]["skipped"] == {"unreadable_row": 1}


def test_a_run_cut_short_by_a_stop_request_is_recorded_as_interrupted():
    class StoppingFeed(FakeFeed):
        def tasks(self, project_id):
            raise Stopping("stopping while waiting to retry a request (429)")

    feed, state = StoppingFeed(), MemoryState()
    feed.add_project("p", datetime(2026, 11, 24, 9), tasks=[leaf("a")])
    with pytest.raises(Stopping):
        sync(feed, state, [])
    assert state.runs[-1]["status"] == "interrupted"


def test_an_assignee_outside_the_allowed_domains_gets_no_event_and_the_run_says_why():
    feed, state, published = FakeFeed(), MemoryState(), []
    alice, mallory = str(uuid.uuid4()), str(uuid.uuid4())
    feed.resource_rows[alice] = ResourceRow(alice, "Alice", "alice@contoso.com")
    feed.resource_rows[mallory] = ResourceRow(mallory, "Mallory", "mallory@outside.example")
    task_id = str(uuid.uuid4())
    feed.add_project(
        "p",
        datetime(2026, 11, 24, 9),
        tasks=[leaf("a", task_id)],
        assignments=[AssignmentRow(task_id, r, "x") for r in (alice, mallory)],
    )
    sync(feed, state, published)  # no allow-list yet: both get an event
    assert sorted(a.email for a in published[-1].assignees) == [
        "alice@contoso.com",
        "mallory@outside.example",
    ]
    assert state.runs[-1]["assignees"] == {"refused": {}}

    contoso = MailboxPolicy(frozenset({"contoso.com"}))
    published.clear()
    runner(feed, state, published, mailboxes=contoso).run(SyncRequested(scenario="acme", full=True))

    # The allow-list changed the task's content: --full sends it again, without Mallory, whose
    # event the writer then removes; the run summary counts the refusal by its reason.
    [message] = published
    assert [a.email for a in message.assignees] == ["alice@contoso.com"]
    assert state.runs[-1]["assignees"] == {"refused": {"mailbox_domain_not_allowed": 1}}
