"""The Redis edge on the real Redis: ledger allocation, watermark and the writer's event map."""

import uuid
from datetime import datetime

import pytest

from common.redis_store import Keys
from services.event_writer.event_map import EventMap
from services.event_writer.planner import RecordedEvent
from services.poller.watermark import WatermarkStore

pytestmark = pytest.mark.integration


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
