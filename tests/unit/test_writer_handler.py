import uuid
from datetime import UTC, datetime

import pytest

from common.errors import PermanentError, RetryableApiError, RetryableError
from common.messages import Assignee, TaskChanged
from services.event_writer.handler import TaskChangedHandler
from tests.unit.fakes import FakeCalendar, MemoryEventMap

ALICE, BOB, NOBODY = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def task(assignees, **overrides):
    values = dict(
        scenario="acme",
        project_id=uuid.uuid4(),
        task_id=uuid.UUID(int=7),
        task_name="Pack",
        start=datetime(2026, 12, 1, 9),
        finish=datetime(2026, 12, 1, 17),
        timezone="UTC",
        assignees=assignees,
        revision=NOW,
    )
    values.update(overrides)
    return TaskChanged(**values)


ASSIGNEES = [
    Assignee(resource_id=ALICE, name="Alice", email="Alice@Contoso.com"),
    Assignee(resource_id=BOB, name="Bob", email="bob@contoso.com"),
    Assignee(resource_id=NOBODY, name="Crane", email=None),
]


@pytest.fixture
def world():
    calendar = FakeCalendar(["alice@contoso.com", "bob@contoso.com"])
    event_map = MemoryEventMap()
    transfers = []
    handler = TaskChangedHandler(
        calendar=calendar,
        event_map=event_map,
        publish_transfer=transfers.append,
        clock=lambda: NOW,
    )
    return calendar, event_map, transfers, handler


def test_each_assignee_with_a_mailbox_gets_one_event_and_a_transfer_is_published(world):
    calendar, event_map, transfers, handler = world
    handler.handle(task(ASSIGNEES))
    assert {m: len(e) for m, e in calendar.events.items()} == {
        "alice@contoso.com": 1,
        "bob@contoso.com": 1,
    }
    assert len(event_map.load(uuid.UUID(int=7))) == 2
    [transfer] = transfers
    assert transfer.mailboxes == ["alice@contoso.com", "bob@contoso.com"]
    assert transfer.transferred_at == NOW


def test_redelivery_writes_nothing_new(world):
    calendar, _, transfers, handler = world
    handler.handle(task(ASSIGNEES))
    calls_before = len(calendar.calls)
    handler.handle(task(ASSIGNEES))
    assert sum(len(e) for e in calendar.events.values()) == 2
    assert len(calendar.calls) == calls_before  # all kept, no Graph call
    assert len(transfers) == 2  # the ledger makes the second one count for nothing


def test_a_lost_map_entry_is_recovered_through_the_extended_property(world):
    calendar, event_map, _, handler = world
    handler.handle(task(ASSIGNEES))
    event_map.entries.clear()  # bookkeeping lost (crash after the POST, or Redis data loss)
    handler.handle(task(ASSIGNEES, finish=datetime(2026, 12, 2, 17)))
    assert sum(len(e) for e in calendar.events.values()) == 2
    [alice_event] = calendar.events["alice@contoso.com"].values()
    assert alice_event["end"]["dateTime"] == "2026-12-02T17:00:00"


def test_a_changed_task_updates_in_place(world):
    calendar, _, _, handler = world
    handler.handle(task(ASSIGNEES))
    ids_before = {m: set(e) for m, e in calendar.events.items()}
    handler.handle(task(ASSIGNEES, task_name="Pack and label"))
    assert {m: set(e) for m, e in calendar.events.items()} == ids_before
    assert all(
        event["subject"] == "Pack and label"
        for box in calendar.events.values()
        for event in box.values()
    )


def test_removed_assignee_and_removed_task_lose_their_events(world):
    calendar, event_map, transfers, handler = world
    handler.handle(task(ASSIGNEES))
    handler.handle(task(ASSIGNEES[:1]))
    assert len(calendar.events["bob@contoso.com"]) == 0
    assert len(calendar.events["alice@contoso.com"]) == 1
    handler.handle(task([], change="remove", start=None, finish=None))
    assert sum(len(e) for e in calendar.events.values()) == 0
    assert event_map.load(uuid.UUID(int=7)) == {}
    assert len(transfers) == 2  # a removal transfers nothing


def test_an_event_deleted_by_its_owner_is_written_again(world):
    calendar, _, _, handler = world
    handler.handle(task(ASSIGNEES))
    calendar.events["bob@contoso.com"].clear()
    handler.handle(task(ASSIGNEES, task_name="renamed"))
    assert len(calendar.events["bob@contoso.com"]) == 1


def test_an_unknown_mailbox_does_not_block_the_others(world):
    calendar, _, transfers, handler = world
    ghost = Assignee(resource_id=uuid.uuid4(), name="Ghost", email="ghost@contoso.com")
    handler.handle(task([*ASSIGNEES, ghost]))
    assert sum(len(e) for e in calendar.events.values()) == 2
    assert transfers[0].mailboxes == ["alice@contoso.com", "bob@contoso.com"]


def test_when_no_mailbox_can_take_the_event_the_message_is_permanent(world):
    _, _, transfers, handler = world
    ghost = Assignee(resource_id=uuid.uuid4(), name="Ghost", email="ghost@contoso.com")
    with pytest.raises(PermanentError, match="ghost@contoso.com"):
        handler.handle(task([ghost]))
    assert transfers == []


def test_a_retryable_failure_retries_the_message_after_doing_the_rest(world):
    calendar, event_map, transfers, handler = world
    calendar.fail_next["bob@contoso.com"] = RetryableApiError("429", retry_after=3)
    with pytest.raises(RetryableError) as caught:
        handler.handle(task(ASSIGNEES))
    assert caught.value.retry_after == 3
    assert len(calendar.events["alice@contoso.com"]) == 1
    assert transfers == []  # not transferred until every assignee is done
    handler.handle(task(ASSIGNEES))
    assert sum(len(e) for e in calendar.events.values()) == 2
    assert len(transfers) == 1


def test_a_task_without_any_mailbox_publishes_no_transfer(world):
    _, _, transfers, handler = world
    handler.handle(task(ASSIGNEES[2:]))
    assert transfers == []


def test_two_resources_sharing_a_mailbox_get_one_event(world):
    calendar, _, _, handler = world
    twin = Assignee(resource_id=uuid.uuid4(), name="Alice (2)", email="alice@contoso.com")
    handler.handle(task([ASSIGNEES[0], twin]))
    assert len(calendar.events["alice@contoso.com"]) == 1
