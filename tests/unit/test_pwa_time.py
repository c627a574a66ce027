"""PWA wall-clock times across Europe/Berlin's DST changes of 2026 (29 March, 25 October)."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from services.poller.pwa_time import to_pwa_wall_clock, to_utc

BERLIN = ZoneInfo("Europe/Berlin")


def test_winter_and_summer_times_use_their_offsets():
    assert to_utc(datetime(2026, 1, 15, 9), BERLIN) == datetime(2026, 1, 15, 8, tzinfo=UTC)
    assert to_utc(datetime(2026, 7, 15, 9), BERLIN) == datetime(2026, 7, 15, 7, tzinfo=UTC)


def test_a_time_in_the_fall_back_fold_is_its_first_occurrence():
    # 02:30 happens twice on 25 October 2026: first at 00:30 UTC (CEST), then at 01:30 UTC.
    assert to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )


def test_a_time_in_the_spring_forward_gap_moves_forward_by_the_gap():
    # 02:30 never happens on 29 March 2026; it is read as 03:30 CEST = 01:30 UTC.
    moment = to_utc(datetime(2026, 3, 29, 2, 30), BERLIN)
    assert moment == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert moment.astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 30)


def test_a_task_across_the_change_keeps_its_real_length():
    # Saturday 20:00 to Sunday 08:00 across the spring change lasts 11 hours, not 12.
    start = to_utc(datetime(2026, 3, 28, 20), BERLIN)
    finish = to_utc(datetime(2026, 3, 29, 8), BERLIN)
    assert (finish - start).total_seconds() == 11 * 3600


def test_wall_clock_round_trip_and_refusals():
    moment = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert to_pwa_wall_clock(moment, BERLIN) == datetime(2026, 10, 25, 2, 30)
    with pytest.raises(ValueError):
        to_utc(moment, BERLIN)
    with pytest.raises(ValueError):
        to_pwa_wall_clock(datetime(2026, 1, 1), BERLIN)
