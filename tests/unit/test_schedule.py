from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from common.schedule import parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def test_on_demand_has_no_next_run():
    assert parse_schedule("on_demand").next_run(datetime.now(UTC), BERLIN) is None


def test_daily_runs_later_today_or_tomorrow():
    schedule = parse_schedule("daily 06:30")
    before = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # 05:00 in Berlin (CEST)
    assert schedule.next_run(before, BERLIN) == datetime(2026, 6, 1, 6, 30, tzinfo=BERLIN)
    after = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)  # 07:00 in Berlin
    assert schedule.next_run(after, BERLIN) == datetime(2026, 6, 2, 6, 30, tzinfo=BERLIN)


def test_daily_across_the_spring_dst_change_keeps_wall_clock():
    schedule = parse_schedule("daily 06:30")
    # 2026-03-29 is the spring-forward day in Europe; 06:30 local is 04:30 UTC that day.
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    due = schedule.next_run(now, BERLIN)
    assert due.astimezone(UTC) == datetime(2026, 3, 29, 4, 30, tzinfo=UTC)


def test_weekly_picks_the_named_day():
    schedule = parse_schedule("weekly fri 17:00")
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday
    assert schedule.next_run(now, ZoneInfo("UTC")) == datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    on_the_day_after = datetime(2026, 11, 27, 17, 1, tzinfo=UTC)
    assert schedule.next_run(on_the_day_after, ZoneInfo("UTC")) == datetime(
        2026, 12, 4, 17, 0, tzinfo=UTC
    )


def test_every_n_minutes():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_schedule("every 15 minutes").next_run(now, BERLIN) == datetime(
        2026, 11, 24, 12, 15, tzinfo=UTC
    )


@pytest.mark.parametrize("text", ["Daily 6:05", "  weekly   MON 06:05 ", "every 1 minute"])
def test_parsing_is_forgiving_about_case_and_spaces(text):
    assert parse_schedule(text).kind in ("daily", "weekly", "every")


@pytest.mark.parametrize(
    "text", ["", "daily", "daily 6", "every 0 minutes", "weekly 10:00", "cron"]
)
def test_invalid_schedules_are_refused(text):
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_describe_round_trips():
    for text in ("on_demand", "daily 06:05", "weekly mon 18:30", "every 10 minutes"):
        assert parse_schedule(text).describe() == text


def test_a_daily_time_in_the_spring_forward_gap_moves_forward_by_the_gap():
    # 02:30 does not exist in Berlin on 29 March 2026; it runs at 03:30 CEST (01:30 UTC).
    due = parse_schedule("daily 02:30").next_run(datetime(2026, 3, 28, 12, 0, tzinfo=UTC), BERLIN)
    assert due.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_a_daily_time_in_the_fall_back_fold_runs_once_at_its_first_occurrence():
    schedule = parse_schedule("daily 02:30")
    due = schedule.next_run(datetime(2026, 10, 24, 12, 0, tzinfo=UTC), BERLIN)
    assert due.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # CEST occurrence
    # Right after it ran, the next run is the next day's, not the second 02:30 an hour later.
    for ran in (datetime(2026, 10, 25, 0, 31), datetime(2026, 10, 25, 1, 15)):  # 02:15 CET
        after = schedule.next_run(ran.replace(tzinfo=UTC), BERLIN)
        assert after.astimezone(UTC) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
