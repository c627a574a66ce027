"""A writer that stalled past its task lease, on the real Redis: what it may still record.

The stall is forced: the first writer's lease is made to run out while it is "in Graph", a
second writer takes the task and records its own outcome, then the first one finishes. The
first one may only add the events it created to entries nobody holds, and must leave the task
dirty; it never forgets, overwrites, replaces failures or tombstones what the second recorded.
"""

import json
import uuid

import pytest

from common.redis_store import Keys
from services.event_writer.planner import RecordedEvent
from services.event_writer.task_store import AssigneeFailure, Begun, Finish, TaskStore

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(scenario):
    return Keys(scenario)


@pytest.fixture
def store(redis_client, keys, redis_url):
    return TaskStore(redis_client, keys, redis_url)


def failure(resource_id, code):
    return AssigneeFailure(resource_id, "Ghost", "g@x.com", code, "gone", "t")


def stall_past_the_lease(redis_client, keys, task):
    """The lease runs out while its holder is stuck (what a long pause does)."""
    redis_client.delete(keys.writer_lease(task))


@pytest.mark.parametrize("next_holder_finished", [False, True])
def test_a_writer_that_lost_the_lease_only_adds_what_it_created(
    redis_client, keys, store, next_holder_finished
):
    task = str(uuid.uuid4())
    alice, bob, carol, ghost = (str(uuid.uuid4()) for _ in range(4))
    setup = store.begin(task, "2026-01-01|a", "upsert", [])
    store.finish(
        task,
        setup.token,
        Finish(
            record=[
                RecordedEvent(alice, "a@x.com", "AAMk-alice", "f0"),
                RecordedEvent(bob, "b@x.com", "AAMk-bob", "f0"),
            ]
        ),
    )

    stalled = store.begin(task, "2026-01-02|a", "upsert", [])
    assert isinstance(stalled, Begun)
    stall_past_the_lease(redis_client, keys, task)
    current = store.begin(task, "2026-01-03|a", "upsert", [])
    assert isinstance(current, Begun) and current.was_dirty
    newer = [
        RecordedEvent(alice, "a@x.com", "AAMk-alice", "f2"),
        RecordedEvent(bob, "b@x.com", "AAMk-bob2", "f2"),
    ]
    newer_failure = failure(ghost, "ErrorInvalidUser")
    if next_holder_finished:
        assert store.finish(task, current.token, Finish(record=newer, failures=[newer_failure]))

    # The stalled writer now finishes with an older view of the task: it forgot alice,
    # rewrote bob's event, created carol's, has other failures and believes it is certain.
    mine = store.finish(
        task,
        stalled.token,
        Finish(
            forget=[alice],
            record=[
                RecordedEvent(bob, "b@x.com", "AAMk-bob-old", "f1"),
                RecordedEvent(carol, "c@x.com", "AAMk-carol", "f1"),
            ],
            failures=[failure(str(uuid.uuid4()), "MailboxNotEnabledForRESTAPI")],
        ),
    )
    assert mine is False
    task_hash = redis_client.hgetall(keys.writer_task(task))
    assert task_hash["dirty"] == "1"  # the next handling looks events up before creating
    assert task_hash["order"] == "2026-01-03|a"
    recorded = store.recorded(task)
    assert recorded[carol].event_id == "AAMk-carol"  # what it created is never lost
    if next_holder_finished:
        assert recorded[alice] == newer[0] and recorded[bob] == newer[1]
        assert store.failures() == {task: [json.loads(newer_failure.to_json())]}
    else:
        assert recorded[alice].event_id == "AAMk-alice"  # not forgotten
        assert recorded[bob].event_id == "AAMk-bob"  # not overwritten
        assert store.failures() == {}
        # The current holder still holds its lease and finishes normally.
        assert redis_client.get(keys.writer_lease(task)) == current.token
        assert store.finish(task, current.token, Finish(record=newer))
        assert store.recorded(task)[bob] == newer[1]
        # It began before the stalled writer's finish, so it cannot have looked for what
        # that one left in Graph unrecorded (bob's older event): the task stays dirty...
        assert redis_client.hget(keys.writer_task(task), "dirty") == "1"
    # ...until a handling that began after it, and so looked, finishes certain.
    after = store.begin(task, "2026-01-04|a", "upsert", [])
    assert after.was_dirty
    assert store.finish(task, after.token, Finish())
    assert redis_client.hget(keys.writer_task(task), "dirty") == "0"


def test_a_stalled_removal_leaves_the_next_holders_map_and_no_tombstone(redis_client, keys, store):
    task, alice = str(uuid.uuid4()), str(uuid.uuid4())
    removal = store.begin(task, "2026-01-02|a", "remove", [])
    stall_past_the_lease(redis_client, keys, task)
    current = store.begin(task, "2026-01-03|a", "upsert", [])
    event = RecordedEvent(alice, "a@x.com", "AAMk-new", "f")
    assert store.finish(task, current.token, Finish(record=[event]))
    assert store.finish(task, removal.token, Finish(forget=[alice], removal=True)) is False
    assert store.recorded(task) == {alice: event}
    assert redis_client.ttl(keys.writer_task(task)) == -1  # no tombstone expiry
    assert redis_client.hget(keys.writer_task(task), "dirty") == "1"


def test_a_lease_that_ran_out_unclaimed_still_lets_its_writer_record_everything(
    redis_client, keys, store
):
    """Nobody began the task since: the outcome is the newest there is, so it all counts
    (only dirty stays, as the writer cannot know no one is about to begin)."""
    task, alice = str(uuid.uuid4()), str(uuid.uuid4())
    setup = store.begin(task, "2026-01-01|a", "upsert", [])
    store.finish(task, setup.token, Finish(record=[RecordedEvent(alice, "a@x.com", "A1", "f")]))
    stalled = store.begin(task, "2026-01-02|a", "upsert", [])
    stall_past_the_lease(redis_client, keys, task)
    assert store.finish(task, stalled.token, Finish(forget=[alice])) is False
    assert store.recorded(task) == {}
    assert redis_client.hget(keys.writer_task(task), "dirty") == "1"
