"""Change detection against the sandbox's Project Online, counted with its statistics: the
product's plan source and the real Redis state; the publisher is a list (the broker is not what
is measured here). Both editions: test_reading_psse.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def poll(make_poll, sandbox, control):
    return make_poll(sandbox, control)


def test_nothing_changed_costs_one_request_and_one_changed_project_is_read_alone(poll, control):
    generated = control.generate(
        projects=100, tasks_per_project=5, flagged=True, ensure_field=True, mailboxes=5
    )
    first, published, _ = poll()
    assert first.projects_read >= 100 and len(published) == 500

    summary, published, stats = poll()
    assert published == []
    assert stats["requests"] == 1 and stats["by_path"] == {"ProjectData/Projects": 1}
    assert summary.pwa_requests == 1 and summary.projects_unchanged == 103  # the seed has 3

    changed = generated["project_ids"][42]
    task = next(t for t in control.tenant()["projects"] if t["id"] == changed)["task_ids"][0]
    control.update_task(task, name="Renamed in PWA")
    summary, published, stats = poll()
    assert [(m.task_id, m.task_name) for m in published] == [(task, "Renamed in PWA")]
    assert summary.projects_read == 1 and summary.tasks_unchanged == 4
    # The project list, and the changed project's tasks, assignments and assigned resources.
    assert stats["by_path"] == {
        "ProjectData/Projects": 1,
        "ProjectData/Projects()/Tasks": 1,
        "ProjectData/Projects()/Assignments": 1,
        "ProjectData/Resources": 1,
    }


def test_the_project_list_is_paged_and_full_rereads_without_republishing(poll, control):
    control.config(pwa_page_sizes={"Projects": 10})
    control.generate(projects=15, tasks_per_project=1, flagged=True, ensure_field=True)
    poll()
    summary, published, stats = poll()
    assert stats["by_path"] == {"ProjectData/Projects": 2} and published == []
    summary, published, stats = poll(full=True)
    assert summary.projects_read == 17 and published == []  # 18 listed, one master project


def test_dates_across_a_dst_change_are_sent_as_the_documented_instants(poll, control):
    control.generate(projects=1, tasks_per_project=1, flagged=True, ensure_field=True)
    project = control.create_project(
        "DST",
        [
            {
                "name": "fold",
                "start": "2026-10-25T02:30:00",
                "finish": "2026-10-25T02:45:00",
                "flag": True,
            },
            {
                "name": "gap",
                "start": "2026-03-29T02:30:00",
                "finish": "2026-03-29T04:00:00",
                "flag": True,
            },
        ],
    )
    _, published, _ = poll()
    by_name = {m.task_name: m for m in published if str(m.project_id) == project["project_id"]}
    fold, gap = by_name["fold"], by_name["gap"]
    assert fold.start == datetime(2026, 10, 25, 2, 30) and fold.timezone == "Europe/Berlin"
    assert fold.start_utc == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # first occurrence
    assert gap.start_utc == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    assert gap.finish_utc == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
