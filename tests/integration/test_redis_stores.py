"""The Redis edge on the real Redis: the writer's event map and the key layout (the poller's
state is in test_poller_state.py)."""

import uuid

import pytest

from common.redis_store import Keys
from services.event_writer.event_map import EventMap
from services.event_writer.planner import RecordedEvent

pytestmark = pytest.mark.integration


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
