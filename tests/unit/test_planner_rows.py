"""Basic Planner's rows: days in the plans' zone, labels, unreadable tasks, plan versions."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.poller.planner_rows import (
    all_day_span,
    label_keys,
    plan_version,
    planner_day,
    planner_task_link,
    task_row,
)
from services.poller.selection import SkipReason, task_skip_reason
from services.poller.source import TaskRow, UnreadableRow

BERLIN, NEW_YORK, UTC = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("UTC")
PLAN = "xqQg5FS2LkCp935s-FIFm2QAFkHM"


def raw_task(**overrides):
    return {
        "@odata.etag": 'W/"JzEtVGFzayc="',
        "id": "01gzSlKkIUSUl6DF_EilrmQAKDhh",
        "title": "Launch webinar",
        "startDateTime": "2026-12-07T23:00:00Z",
        "dueDateTime": "2026-12-08T23:00:00Z",
        "appliedCategories": {"category1": True, "category2": False},
        "assignments": {"092db857-76fb-50d5-a54d-2f4b01d882ed": {"orderHint": "!"}},
        **overrides,
    }


@pytest.mark.parametrize(
    ("value", "zone", "day"),
    [
        ("2026-12-07T23:00:00Z", BERLIN, date(2026, 12, 8)),  # Berlin's local midnight
        ("2026-12-08T05:00:00Z", NEW_YORK, date(2026, 12, 8)),  # New York's local midnight
        ("2026-12-08T00:00:00Z", NEW_YORK, date(2026, 12, 8)),  # a date written in UTC
        ("2026-12-08T00:00:00Z", BERLIN, date(2026, 12, 8)),
        ("2026-12-08T10:00:00.1234567Z", NEW_YORK, date(2026, 12, 8)),  # a time of that day
        ("2026-12-08T16:00:00+01:00", BERLIN, date(2026, 12, 8)),
        (None, BERLIN, None),
    ],
)
def test_a_planner_date_is_the_day_it_falls_on_in_the_plans_zone(value, zone, day):
    assert planner_day(value, zone) == day


def test_an_all_day_span_runs_from_the_start_day_to_the_day_after_the_due_day():
    assert all_day_span(date(2026, 12, 8), date(2026, 12, 10)) == (
        datetime(2026, 12, 8),
        datetime(2026, 12, 11),
    )
    # No start: the due day alone.
    assert all_day_span(None, date(2026, 12, 10)) == (
        datetime(2026, 12, 10),
        datetime(2026, 12, 11),
    )
    # No due day: no end, whatever the start.
    assert all_day_span(date(2026, 12, 8), None) == (datetime(2026, 12, 8), None)
    assert all_day_span(None, None) == (None, None)


def test_a_labelled_task_is_a_flagged_all_day_row_with_its_assignees_and_link():
    task = task_row(PLAN, raw_task(), frozenset({"category1"}), BERLIN)
    row = task.row
    assert isinstance(row, TaskRow) and row.flagged and row.all_day
    assert (row.start, row.finish) == (datetime(2026, 12, 8), datetime(2026, 12, 10))
    assert row.task_id == "01gzSlKkIUSUl6DF_EilrmQAKDhh" and row.project_id == PLAN
    assert task.assignees == ("092db857-76fb-50d5-a54d-2f4b01d882ed",)
    assert planner_task_link(PLAN, row.task_id) == (
        f"https://planner.cloud.microsoft/webui/plan/{PLAN}/view/board/task/{row.task_id}"
    )
    assert task_skip_reason(row) is None


def test_a_label_taken_off_or_another_label_does_not_select():
    row = task_row(PLAN, raw_task(), frozenset({"category2"}), BERLIN).row
    assert isinstance(row, TaskRow) and not row.flagged
    row = task_row(PLAN, raw_task(appliedCategories={}), frozenset({"category1"}), BERLIN).row
    assert isinstance(row, TaskRow) and not row.flagged


def test_a_task_without_a_due_date_is_skipped_for_that_reason():
    row = task_row(PLAN, raw_task(dueDateTime=None), frozenset({"category1"}), BERLIN).row
    assert isinstance(row, TaskRow)
    assert task_skip_reason(row) is SkipReason.NO_DUE_DATE


def test_a_start_after_the_due_day_finishes_before_it_starts():
    row = task_row(
        PLAN, raw_task(startDateTime="2026-12-12T23:00:00Z"), frozenset({"category1"}), BERLIN
    ).row
    assert isinstance(row, TaskRow)
    assert task_skip_reason(row) is SkipReason.FINISH_BEFORE_START


def test_a_malformed_task_is_unreadable_and_keeps_its_id():
    task = task_row(PLAN, raw_task(dueDateTime="next week"), frozenset(), BERLIN)
    assert isinstance(task.row, UnreadableRow)
    assert task.row.key == "01gzSlKkIUSUl6DF_EilrmQAKDhh" and "dueDateTime" in task.row.problem
    assert isinstance(task_row(PLAN, raw_task(id=None), frozenset(), BERLIN).row, UnreadableRow)


def test_label_names_match_without_regard_to_case_or_spaces():
    details = {
        "categoryDescriptions": {
            "category1": "Design",
            "category4": " create EVENT ",
            "category5": None,
            "category9": "Create event",
        }
    }
    assert label_keys(details, "Create event") == {"category4", "category9"}
    assert label_keys({"categoryDescriptions": None}, "Create event") == frozenset()
    assert label_keys({"categoryDescriptions": {"category2": ""}}, " ") == frozenset()


def test_a_plans_version_moves_with_any_tasks_etag_its_title_or_its_label():
    tasks = [raw_task(), raw_task(id="other", **{"@odata.etag": 'W/"b"'})]
    version = plan_version("Launch", ["category1"], BERLIN, tasks)
    assert version == plan_version("Launch", ["category1"], BERLIN, list(reversed(tasks)))
    edited = [raw_task(**{"@odata.etag": 'W/"c"'}), tasks[1]]
    assert plan_version("Launch", ["category1"], BERLIN, edited) != version
    assert plan_version("Launch!", ["category1"], BERLIN, tasks) != version
    assert plan_version("Launch", ["category2"], BERLIN, tasks) != version
    assert plan_version("Launch", ["category1"], UTC, tasks) != version
    assert plan_version("Launch", ["category1"], BERLIN, tasks[:1]) != version
