"""The Redis edge on the real Redis: ledger allocation, watermark and the writer's event map."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common.redis_store import Keys
from services.event_writer.event_map import EventMap
from services.event_writer.planner import RecordedEvent
from services.ledger.endpoints import WINDOW, EndpointLedger
from services.poller.watermark import WatermarkStore

pytestmark = pytest.mark.integration


def test_one_endpoint_per_task_per_window(redis_client, redis_url, scenario):
    now = datetime.now(UTC)
    ledger = EndpointLedger(redis_client, Keys(scenario), redis_url, clock=lambda: now)
    task, project = uuid.uuid4(), uuid.uuid4()
    assert ledger.allocate(task, project, now) is True
    assert ledger.allocate(task, project, now + timedelta(minutes=5)) is False
    assert ledger.allocate(uuid.uuid4(), project, now) is True
    endpoints = ledger.in_use()
    assert len(endpoints) == 2
    first = next(e for e in endpoints if e.task_id == task)
    assert first.allocated_at == now and first.expires_at == now + WINDOW
    ttl_ms = redis_client.pttl(Keys(scenario).endpoint(task))
    assert WINDOW.total_seconds() * 1000 - 60_000 < ttl_ms <= WINDOW.total_seconds() * 1000


def test_the_window_runs_from_the_transfer_not_from_processing(redis_client, redis_url, scenario):
    now = datetime.now(UTC)
    ledger = EndpointLedger(redis_client, Keys(scenario), redis_url, clock=lambda: now)
    task = uuid.uuid4()
    late = now - timedelta(days=29, hours=23)  # transferred long ago, processed now
    assert ledger.allocate(task, uuid.uuid4(), late)
    assert redis_client.pttl(Keys(scenario).endpoint(task)) <= 3_600_000
    too_late = now - timedelta(days=31)
    assert ledger.allocate(uuid.uuid4(), uuid.uuid4(), too_late) is False


def test_an_expired_endpoint_is_allocated_again(redis_client, redis_url, scenario):
    now = datetime.now(UTC)
    ledger = EndpointLedger(redis_client, Keys(scenario), redis_url, clock=lambda: now)
    task = uuid.uuid4()
    assert ledger.allocate(task, uuid.uuid4(), now)
    redis_client.delete(Keys(scenario).endpoint(task))  # what expiry does after 30 days
    assert ledger.allocate(task, uuid.uuid4(), now)


def test_watermark_initializes_once_and_only_moves_forward(redis_client, redis_url, scenario):
    store = WatermarkStore(redis_client, Keys(scenario), redis_url)
    assert store.get() is None
    assert store.initialize(datetime(2026, 1, 1)) == datetime(2026, 1, 1)
    assert store.initialize(datetime(2025, 1, 1)) == datetime(2026, 1, 1)
    store.advance(datetime(2026, 2, 1, 12, 30, 15, 500000))
    store.advance(datetime(2026, 1, 15))
    assert store.get() == datetime(2026, 2, 1, 12, 30, 15, 500000)


def test_event_map_round_trip(redis_client, redis_url, scenario):
    event_map = EventMap(redis_client, Keys(scenario), redis_url)
    task, alice, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    event_map.record(task, RecordedEvent(alice, "a@x.com", "AAMk1", "f1"))
    event_map.record(task, RecordedEvent(bob, "b@x.com", "AAMk2", "f2"))
    assert event_map.load(task) == {
        alice: RecordedEvent(alice, "a@x.com", "AAMk1", "f1"),
        bob: RecordedEvent(bob, "b@x.com", "AAMk2", "f2"),
    }
    event_map.forget(task, alice)
    assert list(event_map.load(task)) == [bob]
    assert event_map.load(uuid.uuid4()) == {}


def test_keys_of_a_scenario_share_one_cluster_slot():
    keys = Keys("acme")
    for key in (keys.watermark, keys.endpoint(uuid.uuid4()), keys.task_events(uuid.uuid4())):
        assert key.startswith("pwasync:{acme}:")
