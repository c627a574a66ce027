"""The poller's scrape-time metrics: read from the shared state, so every replica agrees."""

import math
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from common import metrics
from common.errors import ServiceUnavailable
from common.messages import SyncRequested
from common.schedule import parse_schedule
from services.poller.observed import observe_poller_state, schedule_interval_seconds
from services.poller.run_summary import RunSummary
from services.poller.sync import _observe


def _sample(name: str) -> float:
    """What a scrape of /metrics would show now."""
    return REGISTRY.get_sample_value(name)


class FakeState:
    def __init__(self, runs=(), alarm=None, fails=False):
        self._runs, self._alarm, self._fails = list(runs), alarm, fails

    def runs(self, limit=20):
        if self._fails:
            raise ServiceUnavailable("redis down")
        return self._runs[:limit]

    def deletion_alarm(self):
        if self._fails:
            raise ServiceUnavailable("redis down")
        return self._alarm


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [("on_demand", 0), ("every 15 minutes", 900), ("daily 06:30", 86_400),
     ("weekly mon 06:30", 604_800)],
)  # fmt: skip
def test_the_schedule_interval(schedule, seconds):
    assert schedule_interval_seconds(parse_schedule(schedule)) == seconds


def _run(status, finished):
    return {"status": status, "finished_at": finished.isoformat()}


def test_last_successful_sync_is_the_newest_succeeded_run_in_the_history():
    newest_ok = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    state = FakeState(
        runs=[
            _run("failed", datetime(2026, 12, 1, 11, 0, tzinfo=UTC)),
            _run("succeeded", newest_ok),
            _run("succeeded", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ],
        alarm={"removing": 40},
    )
    observe_poller_state(state, parse_schedule("every 15 minutes"), started=1.0)
    assert _sample("pwasync_last_successful_sync_timestamp_seconds") == newest_ok.timestamp()
    assert _sample("pwasync_deletion_guard_alarm") == 1
    assert _sample("pwasync_sync_schedule_interval_seconds") == 900


def test_without_a_successful_run_the_poller_start_counts():
    # A scheduler that never runs still trips the alert, once the process is old enough.
    observe_poller_state(FakeState(runs=[_run("failed", datetime.now(UTC))]), parse_schedule(
        "on_demand"), started=1234.0)  # fmt: skip
    assert _sample("pwasync_last_successful_sync_timestamp_seconds") == 1234.0
    assert _sample("pwasync_deletion_guard_alarm") == 0


def test_an_unreachable_redis_gives_no_value_rather_than_a_failed_scrape():
    observe_poller_state(FakeState(fails=True), parse_schedule("on_demand"), started=1.0)
    assert math.isnan(_sample("pwasync_last_successful_sync_timestamp_seconds"))
    assert math.isnan(_sample("pwasync_deletion_guard_alarm"))


def test_every_sync_run_is_counted_by_status():
    before = metrics.SYNC_RUNS.labels("failed")._value.get()
    summary = RunSummary.begin("s", SyncRequested(scenario="s"), started_at=datetime.now(UTC))
    summary.finish("failed", datetime.now(UTC), "boom")
    _observe(summary, summary.to_json())
    assert metrics.SYNC_RUNS.labels("failed")._value.get() == before + 1
