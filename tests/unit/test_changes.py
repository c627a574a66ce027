import uuid
from datetime import UTC, datetime, timedelta

from common.messages import Assignee, TaskChanged
from services.poller.changes import (
    ProjectState,
    diff_tasks,
    fingerprint,
    plan_projects,
    removal_revision,
)
from services.poller.source import ProjectRow

START = datetime(2026, 6, 1)


def project(modified, kind=0, pid=None):
    return ProjectRow(pid or str(uuid.uuid4()), "p", kind, modified)


def state(modified, kind=0, read_at=None):
    return ProjectState(modified, kind, read_at or modified + timedelta(hours=1))


def test_plan_reads_new_changed_and_retyped_projects_and_finds_deleted_ones():
    new = project(datetime(2026, 7, 1))
    old = project(datetime(2026, 5, 1))
    same = project(datetime(2026, 7, 2))
    moved = project(datetime(2026, 7, 5))
    retyped = project(datetime(2026, 7, 3), kind=6)
    gone = str(uuid.uuid4())
    known = {
        same.project_id: state(datetime(2026, 7, 2)),
        moved.project_id: state(datetime(2026, 7, 4)),
        retyped.project_id: state(datetime(2026, 7, 3), kind=0),
        gone: state(datetime(2026, 7, 1)),
    }
    plan = plan_projects(
        [new, old, same, moved, retyped],
        known,
        sync_start=START,
        reread_after=timedelta(minutes=5),
        now=datetime(2026, 8, 1),
    )
    assert [p.project_id for p in plan.to_read] == [
        new.project_id,
        retyped.project_id,
        moved.project_id,
    ]  # oldest publish first
    assert plan.deleted == [gone]
    assert plan.unchanged == 1 and plan.before_sync_start == 1


def test_plan_full_reads_everything_listed():
    listed = [project(datetime(2020, 1, 1)), project(datetime(2026, 7, 1))]
    known = {listed[1].project_id: state(datetime(2026, 7, 1))}
    plan = plan_projects(
        listed, known, sync_start=START, reread_after=timedelta(0), now=START, full=True
    )
    assert len(plan.to_read) == 2


def test_plan_reads_a_project_read_inside_the_lag_once_more_when_the_lag_has_passed():
    row = project(datetime(2026, 7, 1, 12, 0))
    early = {row.project_id: ProjectState(row.modified, 0, datetime(2026, 7, 1, 12, 2))}
    settled = {row.project_id: ProjectState(row.modified, 0, datetime(2026, 7, 1, 12, 6))}
    lag = timedelta(minutes=5)

    def plan(known, now):
        return plan_projects([row], known, sync_start=START, reread_after=lag, now=now)

    assert plan(early, datetime(2026, 7, 1, 12, 3)).unchanged == 1  # not yet: no request
    assert plan(early, datetime(2026, 7, 1, 12, 5)).to_read == [row]
    assert plan(settled, datetime(2026, 7, 1, 13, 0)).unchanged == 1  # once only


def message(**changes):
    base = {
        "scenario": "s",
        "project_id": str(uuid.UUID(int=1)),
        "task_id": str(uuid.UUID(int=2)),
        "task_name": "t",
        "start": datetime(2026, 12, 1, 9),
        "finish": datetime(2026, 12, 1, 17),
        "assignees": [Assignee(resource_id=str(uuid.UUID(int=3)), name="A", email="a@x.com")],
        "revision": datetime(2026, 11, 1, tzinfo=UTC),
    }
    return TaskChanged(**{**base, **changes})


def test_fingerprint_ignores_revision_and_read_time_but_not_content():
    base = message()
    assert fingerprint(base) == fingerprint(
        message(revision=datetime(2026, 11, 2, tzinfo=UTC), read_at=datetime.now(UTC))
    )
    assert fingerprint(base) != fingerprint(message(task_name="renamed"))
    assert fingerprint(base) != fingerprint(message(finish=datetime(2026, 12, 1, 18)))
    assert fingerprint(base) != fingerprint(message(assignees=[]))


def test_diff_publishes_changed_keeps_unchanged_and_removes_the_rest_in_scope():
    kept = message(task_id=str(uuid.UUID(int=10)))
    changed = message(task_id=str(uuid.UUID(int=11)), task_name="new name")
    published = {
        kept.task_id: fingerprint(kept),
        changed.task_id: fingerprint(message(task_id=str(uuid.UUID(int=11)))),
        str(uuid.UUID(int=12)): "old",
        str(uuid.UUID(int=13)): "old",
    }
    diff = diff_tasks([kept, changed], published)
    assert [m.task_id for m, _ in diff.upserts] == [changed.task_id]
    assert diff.unchanged == 1
    assert diff.removals == [str(uuid.UUID(int=12)), str(uuid.UUID(int=13))]
    scoped = diff_tasks([kept], published, scope={kept.task_id, str(uuid.UUID(int=13))})
    assert scoped.removals == [str(uuid.UUID(int=13))]


def test_removal_revision_orders_after_the_last_upsert_in_the_pwas_clock():
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    step = timedelta(microseconds=1)
    before, after = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    ahead = now + timedelta(hours=1)  # the PWA's clock is ahead of ours

    def revision(last_upsert, published, previous=before):
        return removal_revision(
            last_upsert=last_upsert, published=published, previous=previous, now=now
        )

    assert revision(before, after) == after  # came with a publish: that publish's time
    assert revision(before, before) == before + step  # same publish (type change, re-read)
    assert revision(before, None) == before + step  # the project is gone
    assert revision(ahead, None) == ahead + step  # never before the upsert, whatever our clock
    assert revision(ahead, ahead) == ahead + step
    # Recorded before revisions were kept: the project's last publish or our clock.
    assert revision(None, None) == now + step
    assert revision(None, None, previous=ahead) == ahead + step
    assert revision(None, after, previous=None) == now + step
