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


# `every N minutes`: slots are wall-clock times in the schedule's zone at local midnight + k*N
# (N <= 1440; the last slot of a day is followed by the next midnight) or Monday's local
# midnight + k*N (N > 1440), so every replica computes the same instant whatever its `now`.


def test_every_n_minutes_gives_every_replica_the_same_aligned_instant():
    schedule = parse_schedule("every 15 minutes")
    replica_a = datetime(2026, 11, 24, 10, 3, 7, 123000, tzinfo=BERLIN)
    replica_b = datetime(2026, 11, 24, 10, 4, 59, 900000, tzinfo=BERLIN)
    due_a, due_b = schedule.next_run(replica_a, BERLIN), schedule.next_run(replica_b, BERLIN)
    assert due_a == due_b == datetime(2026, 11, 24, 10, 15, tzinfo=BERLIN)
    assert due_a.microsecond == 0
    # Strictly after now: on a slot, the next one.
    assert schedule.next_run(due_a, BERLIN) == datetime(2026, 11, 24, 10, 30, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("text", "local_now", "local_due"),
    [
        # 7 does not divide 60: slots 00:00, 00:07, ..., 10:09 (87 * 7 = 609 minutes), ...
        ("every 7 minutes", datetime(2026, 11, 24, 10, 3), datetime(2026, 11, 24, 10, 9)),
        # ... 23:55, then the next local midnight (a shorter last interval), not 00:02.
        ("every 7 minutes", datetime(2026, 11, 24, 23, 56), datetime(2026, 11, 25, 0, 0)),
        ("every 90 minutes", datetime(2026, 11, 24, 10, 3), datetime(2026, 11, 24, 10, 30)),
        ("every 100 minutes", datetime(2026, 11, 24, 23, 25), datetime(2026, 11, 25, 0, 0)),
        ("every 1440 minutes", datetime(2026, 11, 24, 0, 0), datetime(2026, 11, 25, 0, 0)),
        # Over a day: counted from Monday's local midnight (24 Nov 2026 is a Tuesday):
        # Mon 00:00, Wed 00:00, Fri 00:00, Sun 00:00, then the next Monday.
        ("every 2880 minutes", datetime(2026, 11, 24, 10, 0), datetime(2026, 11, 25, 0, 0)),
        ("every 2880 minutes", datetime(2026, 11, 29, 1, 0), datetime(2026, 11, 30, 0, 0)),
        ("every 10080 minutes", datetime(2026, 11, 24, 10, 0), datetime(2026, 11, 30, 0, 0)),
    ],
)
def test_every_n_minutes_is_aligned_to_local_midnight(text, local_now, local_due):
    due = parse_schedule(text).next_run(local_now.replace(tzinfo=BERLIN), BERLIN)
    assert due == local_due.replace(tzinfo=BERLIN)


def test_every_n_minutes_skips_slots_in_the_spring_forward_gap():
    # 29 March 2026, Berlin: 02:00 CET -> 03:00 CEST; 02:00-02:59 do not exist and do not run.
    hourly, quarterly = parse_schedule("every 60 minutes"), parse_schedule("every 15 minutes")
    at_0130 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET
    assert hourly.next_run(at_0130, BERLIN).astimezone(UTC) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )
    at_0150 = datetime(2026, 3, 29, 0, 50, tzinfo=UTC)  # 01:50 CET
    due = quarterly.next_run(at_0150, BERLIN)
    assert due.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert due.utcoffset().total_seconds() == 7200


def test_every_n_minutes_runs_both_occurrences_in_the_fall_back_fold():
    # 25 October 2026, Berlin: 03:00 CEST -> 02:00 CET; 02:00-02:59 occur twice and a slot there
    # runs each time, so an interval dividing an hour keeps its real spacing across the change.
    schedule = parse_schedule("every 30 minutes")
    now = datetime(2026, 10, 25, 0, 10, tzinfo=UTC)  # 02:10 CEST
    runs = []
    for _ in range(4):
        now = schedule.next_run(now, BERLIN)
        runs.append(now.astimezone(UTC))
    assert runs == [
        datetime(2026, 10, 25, h, m, tzinfo=UTC) for h, m in ((0, 30), (1, 0), (1, 30), (2, 0))
    ]
