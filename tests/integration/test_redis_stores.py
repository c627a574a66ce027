"""The key layout of a scenario (the poller's state is in test_poller_state.py, the writer's in
test_writer_redis.py)."""

import uuid

import pytest

from common.redis_store import Keys

pytestmark = pytest.mark.integration


def test_keys_of_a_scenario_share_one_cluster_slot():
    keys = Keys("acme")
    for key in (keys.watermark, keys.endpoint(uuid.uuid4()), keys.task_events(uuid.uuid4())):
        assert key.startswith("pwasync:{acme}:")


def test_paused_mailboxes_are_reported_with_the_time_left(redis_client, redis_url, graph_keys):
    from services.event_writer.mailbox_limits import paused_mailboxes

    redis_client.set(graph_keys.pause("adele@contoso.com"), "1", px=30_000)  # what a 429 leaves
    paused = paused_mailboxes(redis_client, graph_keys, redis_url)
    assert list(paused) == ["adele@contoso.com"]
    assert 25 < paused["adele@contoso.com"] <= 30
