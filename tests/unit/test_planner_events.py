"""All-day tasks (basic Planner) as Outlook events and fingerprints; Project's stay as they were."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from common.messages import Assignee, TaskChanged
from services.event_writer import event_mapping
from services.event_writer.event_mapping import EventRules
from services.poller import changes

PLAN, TASK = "xqQg5FS2LkCp935s-FIFm2QAFkHM", "01gzSlKkIUSUl6DF_EilrmQAKDhh"
PLANNER_URL = f"https://planner.cloud.microsoft/webui/plan/{PLAN}/view/board/task/{TASK}"


def planner_task(**overrides) -> TaskChanged:
    values = dict(
        scenario="acme",
        project_id=PLAN,
        project_name="Product launch",
        task_id=TASK,
        task_name="Press kit",
        start=datetime(2026, 12, 9),
        finish=datetime(2026, 12, 12),  # the day after the due day (Dec 11)
        start_utc=datetime(2026, 12, 8, 23, tzinfo=UTC),
        finish_utc=datetime(2026, 12, 11, 23, tzinfo=UTC),
        timezone="Europe/Berlin",
        all_day=True,
        task_url=PLANNER_URL,
        revision=datetime(2026, 12, 1, tzinfo=UTC),
        read_at=datetime(2026, 12, 1, 0, 5, tzinfo=UTC),
    )
    values.update(overrides)
    return TaskChanged(**values)


def project_task(**overrides) -> TaskChanged:
    values = dict(
        scenario="acme",
        project_id=uuid.UUID("11111111-1111-4111-8111-111111111111"),
        project_name="Office <Move>",
        task_id=uuid.UUID("00000000-0000-4000-8000-0000000000aa"),
        task_name="Pack & label",
        start=datetime(2026, 3, 28, 9),
        finish=datetime(2026, 3, 30, 17),
        timezone="Europe/Berlin",
        revision=datetime(2026, 3, 1, tzinfo=UTC),
        read_at=datetime(2026, 3, 1, 0, 5, tzinfo=UTC),
        assignees=[
            Assignee(
                resource_id=uuid.UUID("22222222-2222-4222-8222-222222222222"),
                name="Adele",
                email="adele@x.com",
            )
        ],
        task_url="https://contoso.sharepoint.com/sites/pwa/project.aspx?projuid="
        "11111111-1111-4111-8111-111111111111",
    )
    values.update(overrides)
    return TaskChanged(**values)


def test_an_all_day_task_is_an_all_day_event_over_its_days_whatever_the_rules():
    content = event_mapping.event_content(planner_task(), EventRules(all_day="false"))
    assert content["isAllDay"] is True
    assert content["start"] == {
        "dateTime": "2026-12-09T00:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert content["end"] == {
        "dateTime": "2026-12-12T00:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert content["showAs"] == "free"


def test_a_one_day_task_ends_at_the_next_midnight_and_utc_plans_name_utc():
    one_day = planner_task(
        start=datetime(2026, 12, 8),
        finish=datetime(2026, 12, 9),
        start_utc=datetime(2026, 12, 8, tzinfo=UTC),
        finish_utc=datetime(2026, 12, 9, tzinfo=UTC),
        timezone="UTC",
    )
    content = event_mapping.event_content(one_day)
    assert content["start"] == {"dateTime": "2026-12-08T00:00:00", "timeZone": "UTC"}
    assert content["end"] == {"dateTime": "2026-12-09T00:00:00", "timeZone": "UTC"}


def test_an_all_day_body_names_the_days_and_links_to_planner():
    body = event_mapping.event_content(planner_task())["body"]["content"]
    assert "<td><b>Plan</b></td><td>Product launch</td>" in body
    assert "<td><b>Start</b></td><td>Wed 09 Dec 2026</td>" in body
    assert "<td><b>Due</b></td><td>Fri 11 Dec 2026</td>" in body
    assert "Open the task in Planner" in body and "Microsoft Planner" in body
    assert "00:00" not in body and "Project Web App" not in body


def test_project_events_and_fingerprints_are_what_they_were_before_all_day_tasks():
    # Digests of the content of this message before the all-day notion came: a Project task's
    # event must not change (no PATCH of every event after an upgrade), nor its fingerprint
    # (no republish of every task).
    task = project_task()
    assert task.all_day is False
    assert event_mapping.fingerprint(event_mapping.event_content(task)) == (
        "9b3945660f7d779a90e32249c13f8c8eb28a289612432f6057daa68d0a2e01c0"
    )
    assert (
        event_mapping.fingerprint(event_mapping.event_content(task, EventRules(all_day="true")))
        == "7ccc2d593e9b9e67f0dd648979d95a4d1d5560eb4bd6f7202e235869b566fe97"
    )
    assert changes.fingerprint(task) == "3868c21eec5f4ff7ffb1c7b01491dc83"


def test_an_all_day_tasks_fingerprint_covers_that_it_is_all_day():
    task = planner_task()
    timed = planner_task(all_day=False)
    assert changes.fingerprint(task) != changes.fingerprint(timed)
    moved = planner_task(finish=task.finish + timedelta(days=1))
    assert changes.fingerprint(moved) != changes.fingerprint(task)
