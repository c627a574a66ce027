import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common import metrics
from common.errors import Contended, PermanentError, RetryableApiError, RetryableError
from common.mailboxes import MailboxPolicy
from common.messages import Assignee, TaskChanged
from services.event_writer.event_mapping import EventRules
from services.event_writer.graph_protocol import GraphResult
from services.event_writer.handler import TaskChangedHandler
from tests.unit.fakes import FakeGraph, MemoryTaskStore, Recorder

ALICE, BOB, NOBODY = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TASK = str(uuid.UUID(int=7))
A_BOX, B_BOX = "alice@contoso.com", "bob@contoso.com"


def task(assignees, **overrides):
    values = dict(
        scenario="acme",
        project_id=str(uuid.UUID(int=1)),
        task_id=TASK,
        task_name="Pack",
        start=datetime(2026, 12, 1, 9),
        finish=datetime(2026, 12, 1, 17),
        timezone="UTC",
        assignees=assignees,
        revision=NOW,
        read_at=NOW,
    )
    values.update(overrides)
    return TaskChanged(**values)


ASSIGNEES = [
    Assignee(resource_id=ALICE, name="Alice", email="Alice@Contoso.com"),
    Assignee(resource_id=BOB, name="Bob", email="bob@contoso.com"),
    Assignee(resource_id=NOBODY, name="Crane", email=None),
]


class World:
    def __init__(self, *, dedupe=False):
        self.graph = FakeGraph([A_BOX, B_BOX], dedupe=dedupe)
        self.store = MemoryTaskStore()
        self.transfers = Recorder()
        self.handler = TaskChangedHandler(
            store=self.store,
            submit=self.graph.submit,
            publish_transfer=self.transfers,
            clock=lambda: NOW,
            lease_wait_seconds=0.05,
        )

    def handle(self, message):
        asyncio.run(self.handler.handle(message))

    def events(self, mailbox=None):
        boxes = [mailbox] if mailbox else list(self.graph.events)
        return [e for box in boxes for e in self.graph.events[box].values()]


@pytest.fixture
def world():
    return World()


def test_each_assignee_with_a_mailbox_gets_one_event_and_a_transfer_is_published(world):
    world.handle(task(ASSIGNEES))
    assert len(world.events(A_BOX)) == 1 and len(world.events(B_BOX)) == 1
    assert set(world.store.maps[TASK]) == {ALICE, BOB}
    [transfer] = world.transfers
    assert transfer.mailboxes == [A_BOX, B_BOX]
    assert transfer.transferred_at == NOW


def test_a_create_asks_graph_nothing_else_once_the_mailbox_is_known(world):
    world.handle(task(ASSIGNEES))
    # The first event in each mailbox: one probe (does it hold events of ours?) and one POST.
    assert world.graph.count("GET") == 2 and world.graph.count("POST") == 2
    world.graph.calls.clear()
    world.handle(task(ASSIGNEES[:1], task_id=str(uuid.uuid4())))
    assert world.graph.calls == [("POST", A_BOX)]  # no lookup before the create
    assert world.store.mailboxes == {A_BOX: "clean", B_BOX: "clean"}


def test_redelivery_writes_nothing_new(world):
    world.handle(task(ASSIGNEES))
    world.graph.calls.clear()
    world.handle(task(ASSIGNEES))
    assert len(world.events()) == 2
    assert world.graph.calls == []  # all kept, no Graph call
    assert len(world.transfers) == 2  # the ledger makes the second one count for nothing


def test_a_changed_task_is_patched_in_place_only_when_a_mapped_field_changed(world):
    world.handle(task(ASSIGNEES))
    ids_before = {m: set(e) for m, e in world.graph.events.items()}
    world.graph.calls.clear()
    later = NOW + timedelta(hours=1)
    world.handle(task(ASSIGNEES, task_name="Pack and label", revision=later))
    assert {m: set(e) for m, e in world.graph.events.items()} == ids_before
    assert sorted(world.graph.calls) == [("PATCH", A_BOX), ("PATCH", B_BOX)]
    assert {e["subject"] for e in world.events()} == {"Pack and label"}
    world.graph.calls.clear()
    world.handle(task(ASSIGNEES, task_name="Pack and label", revision=later, read_at=later))
    assert world.graph.calls == []  # a newer snapshot with the same mapped fields


def test_each_removal_path_deletes_the_event(world):
    world.handle(task(ASSIGNEES))
    # An assignee removed from the task.
    world.handle(task(ASSIGNEES[:1], revision=NOW + timedelta(hours=1)))
    assert world.events(B_BOX) == [] and len(world.events(A_BOX)) == 1
    # The assignee's mailbox changed: the old one loses the event, the new one gets it.
    moved = Assignee(resource_id=ALICE, name="Alice", email="bob@contoso.com")
    world.handle(task([moved], revision=NOW + timedelta(hours=2)))
    assert world.events(A_BOX) == [] and len(world.events(B_BOX)) == 1
    assert world.store.maps[TASK][ALICE].mailbox == B_BOX
    # The task left the selection (flag cleared, deleted, no longer eligible).
    world.handle(task([], change="remove", start=None, revision=NOW + timedelta(hours=3)))
    assert world.events() == []
    assert TASK not in world.store.maps and TASK in world.store.tombstones
    assert len(world.transfers) == 3  # a removal transfers nothing


def test_a_stale_snapshot_never_undoes_a_newer_one(world):
    newer = NOW + timedelta(hours=1)
    world.handle(task(ASSIGNEES, task_name="new name", revision=newer))
    world.graph.calls.clear()
    world.handle(task(ASSIGNEES, task_name="old name"))  # a late retry of an older message
    assert world.graph.calls == []
    assert {e["subject"] for e in world.events()} == {"new name"}
    # A removal's tombstone keeps a late upsert from bringing the events back.
    world.handle(task([], change="remove", revision=newer + timedelta(hours=1)))
    world.handle(task(ASSIGNEES, revision=newer))
    assert world.events() == []


def test_a_snapshot_of_the_same_publish_read_later_is_applied(world):
    world.handle(task(ASSIGNEES))
    moved = Assignee(resource_id=BOB, name="Bob", email="alice@contoso.com")
    world.handle(task([ASSIGNEES[0], moved], read_at=NOW + timedelta(minutes=5)))
    assert world.events(B_BOX) == []


def test_a_crash_between_graph_and_the_bookkeeping_creates_no_duplicate(world):
    world.store.crash_on_finish = True
    with pytest.raises(RuntimeError):
        world.handle(task(ASSIGNEES))
    world.store.leases.clear()  # the dead writer's lease ran out
    world.store.crash_on_finish = False
    world.graph.calls.clear()
    world.handle(task(ASSIGNEES))  # Graph's transactionId dedupe is off in this fake
    assert len(world.events(A_BOX)) == 1 and len(world.events(B_BOX)) == 1
    assert sorted(world.graph.calls) == [("GET", A_BOX), ("GET", B_BOX)] + [
        ("PATCH", A_BOX),
        ("PATCH", B_BOX),
    ]
    assert set(world.store.maps[TASK]) == {ALICE, BOB}
    assert world.store.dirty[TASK] is False


def test_a_post_that_timed_out_is_looked_up_on_the_retry(world):
    world.handle(task(ASSIGNEES[:1], task_id=str(uuid.uuid4())))  # the mailbox is known
    world.graph.fail_next[A_BOX] = [RetryableApiError("Graph timed out")]
    with pytest.raises(RetryableError):
        world.handle(task(ASSIGNEES[:1]))
    assert world.store.dirty[TASK] is True
    world.graph.calls.clear()
    world.handle(task(ASSIGNEES[:1]))
    assert world.graph.calls == [("GET", A_BOX), ("POST", A_BOX)]
    assert world.store.dirty[TASK] is False


def test_a_lost_map_is_recovered_through_the_extended_property(world):
    world.handle(task(ASSIGNEES))
    world.store.__init__()  # Redis lost its data
    world.graph.calls.clear()
    world.handle(task(ASSIGNEES, finish=datetime(2026, 12, 2, 17)))
    assert len(world.events(A_BOX)) == 1 and len(world.events(B_BOX)) == 1
    [alice_event] = world.events(A_BOX)
    assert alice_event["end"]["dateTime"] == "2026-12-02T17:00:00"
    assert world.store.mailboxes == {A_BOX: "verify", B_BOX: "verify"}
    # Per mailbox: the probe, the lookup by task key, the PATCH of the adopted event; no POST.
    assert (world.graph.count("GET"), world.graph.count("PATCH"), world.graph.count("POST")) == (
        4,
        2,
        0,
    )


def test_an_event_deleted_by_its_owner_is_written_again_under_a_new_transaction_id():
    world = World(dedupe=True)
    world.handle(task(ASSIGNEES))
    [before] = world.events(B_BOX)
    world.graph.events[B_BOX].clear()
    world.handle(task(ASSIGNEES, task_name="renamed", revision=NOW + timedelta(hours=1)))
    [after] = world.events(B_BOX)
    assert after["transactionId"] != before["transactionId"]
    assert world.store.maps[TASK][BOB].event_id == after["id"]


def test_an_unknown_mailbox_is_recorded_for_its_assignee_and_does_not_block_the_others(world):
    ghost = Assignee(resource_id=str(uuid.uuid4()), name="Ghost", email="ghost@contoso.com")
    world.handle(task([*ASSIGNEES, ghost]))  # acked: no exception
    assert len(world.events()) == 2
    assert world.transfers[0].mailboxes == [A_BOX, B_BOX]
    failures = {f.assignee: f for f in world.store.failures[TASK]}
    assert failures["Ghost"].code == "ErrorInvalidUser"
    assert failures["Ghost"].mailbox == "ghost@contoso.com"
    assert failures["Crane"].code == "NoEmailAddress"


def test_a_task_whose_only_assignee_fails_permanently_is_acked_with_the_failure(world):
    ghost = Assignee(resource_id=str(uuid.uuid4()), name="Ghost", email="ghost@contoso.com")
    world.handle(task([ghost]))
    assert world.transfers == []
    [failure] = world.store.failures[TASK]
    assert failure.code == "ErrorInvalidUser"
    # Once the assignee is gone from the task, so is the failure record.
    world.handle(task(ASSIGNEES[:1], revision=NOW + timedelta(hours=1)))
    assert world.store.failures[TASK] == []


def test_a_retryable_failure_retries_the_message_after_doing_the_rest(world):
    world.graph.fail_next[B_BOX] = [
        GraphResult(503, {"error": {"code": "ServiceUnavailable"}}, {"retry-after": "3"})
    ]
    with pytest.raises(RetryableError) as caught:
        world.handle(task(ASSIGNEES))
    assert caught.value.retry_after == 3
    assert len(world.events(A_BOX)) == 1
    assert world.transfers == []  # not transferred until every assignee is done
    world.handle(task(ASSIGNEES))
    assert len(world.events()) == 2
    assert len(world.transfers) == 1


def test_a_request_graph_refuses_for_everyone_dead_letters_the_message(world):
    world.graph.fail_next[A_BOX] = [
        GraphResult(400, {"error": {"code": "ErrorInvalidRequest", "message": "bad body"}})
    ]
    with pytest.raises(PermanentError, match="bad body"):
        world.handle(task(ASSIGNEES[:1]))
    assert world.store.leases == {}


def test_two_resources_sharing_a_mailbox_get_one_event(world):
    twin = Assignee(resource_id=str(uuid.uuid4()), name="Alice (2)", email="alice@contoso.com")
    world.handle(task([ASSIGNEES[0], twin]))
    assert len(world.events(A_BOX)) == 1


def test_a_task_busy_in_another_writer_is_retried_after_its_lease_without_an_attempt(world):
    world.store.leases[TASK] = "someone else"
    contended = metrics.TASK_LEASE_CONTENDED._value.get()
    with pytest.raises(Contended, match="another writer") as raised:
        world.handle(task(ASSIGNEES))
    assert raised.value.retry_after == 1.0  # what is left of the holder's lease
    assert world.graph.calls == []
    assert metrics.TASK_LEASE_CONTENDED._value.get() == contended + 1


class FakeGate:
    """The endpoint gate over a fixed number of slots (the Lua rule is tested on Redis)."""

    def __init__(self, slots):
        self.slots = slots
        self.holders, self.held, self.given_back, self.forgotten = set(), [], [], []

    async def admit(self, message):
        from services.ledger.endpoints import Claim

        if message.task_id in self.holders:
            return Claim.HOLDS
        if len(self.holders) < self.slots:
            self.holders.add(message.task_id)
            return Claim.CLAIMED
        self.held.append(message.task_id)
        return Claim.HELD

    async def give_back(self, task_id):
        self.holders.discard(task_id)
        self.given_back.append(task_id)

    async def forget(self, task_id):
        self.forgotten.append(task_id)


def gated_world(slots):
    world = World()
    world.gate = FakeGate(slots)
    world.counts = Recorder()
    world.handler = TaskChangedHandler(
        store=world.store,
        submit=world.graph.submit,
        publish_transfer=world.transfers,
        clock=lambda: NOW,
        lease_wait_seconds=0.05,
        gate=world.gate,
        count_outcome=world.counts,
    )
    return world


def test_a_task_without_an_endpoint_is_held_back_when_the_limit_is_reached():
    world = gated_world(slots=1)
    first, second = str(uuid.UUID(int=11)), str(uuid.UUID(int=12))
    world.handle(task(ASSIGNEES, task_id=first))
    world.handle(task(ASSIGNEES, task_id=second))
    assert world.gate.held == [second]
    assert len(world.events()) == 2  # only the first task's two events
    assert [t.task_id for t in world.transfers] == [first]
    # The holder keeps syncing at the limit.
    world.handle(task(ASSIGNEES, task_id=first, task_name="renamed", revision=NOW + timedelta(1)))
    assert {e["subject"] for e in world.events()} == {"renamed"}


def test_a_claimed_task_that_wrote_nothing_gives_its_slot_back():
    world = gated_world(slots=1)
    ghost = Assignee(resource_id=str(uuid.uuid4()), name="Ghost", email="ghost@contoso.com")
    world.handle(task([ghost]))
    assert world.gate.given_back == [TASK]
    assert world.transfers == []


def test_a_removed_task_leaves_the_held_list():
    world = gated_world(slots=0)
    world.handle(task(ASSIGNEES))
    world.handle(task([], change="remove", start=None, finish=None, revision=NOW + timedelta(1)))
    assert world.gate.forgotten == [TASK]


def test_each_handling_reports_what_it_did_for_its_run():
    world = gated_world(slots=10)
    world.handle(task(ASSIGNEES))
    world.handle(task(ASSIGNEES[:1], task_name="x", revision=NOW + timedelta(hours=1)))
    ghost = Assignee(resource_id=str(uuid.uuid4()), name="Ghost", email="ghost@contoso.com")
    world.handle(task([ghost], task_id=str(uuid.uuid4())))
    assert world.counts == [
        {"created": 2},
        {"updated": 1, "deleted": 1},
        {"failed": 1},
    ]


def test_a_dirty_task_stays_dirty_until_a_handling_resolves_the_doubt(world):
    # The fault suite found it: an event written and not recorded (dirty), then a retry whose
    # lookup failed cleared the dirt, and the retry after that created a second event.
    world.handle(task(ASSIGNEES[:1], task_id=str(uuid.uuid4())))  # the mailbox is known
    world.store.crash_on_finish = True
    with pytest.raises(RuntimeError):
        world.handle(task(ASSIGNEES[:1]))  # the event is in Graph, the map does not know it
    world.store.leases.clear()
    world.store.crash_on_finish = False
    world.graph.fail_next[A_BOX] = [RetryableApiError("Graph unreachable (reset)")]
    with pytest.raises(RetryableError):
        world.handle(task(ASSIGNEES[:1]))  # the lookup itself fails
    assert world.store.dirty[TASK] is True
    world.handle(task(ASSIGNEES[:1]))
    assert len(world.events(A_BOX)) == 2  # the first task's event and this one: no duplicate
    assert world.store.dirty[TASK] is False


def test_a_message_naming_a_mailbox_outside_the_allowed_domains_writes_nothing_there():
    # The poller leaves such assignees out; a message from elsewhere (a dead letter replayed
    # after the allow-list was set, one published by hand) is refused here too.
    outside = "mallory@outside.example"
    world = World()
    world.graph = FakeGraph([A_BOX, B_BOX, outside])
    world.handler = TaskChangedHandler(
        store=world.store,
        submit=world.graph.submit,
        publish_transfer=world.transfers,
        rules=EventRules(mailboxes=MailboxPolicy(frozenset({"contoso.com"}))),
        clock=lambda: NOW,
        lease_wait_seconds=0.05,
    )
    mallory = Assignee(resource_id=str(uuid.uuid4()), name="Mallory", email=outside)
    typo = Assignee(resource_id=str(uuid.uuid4()), name="Typo", email="typo@contoso,com")
    world.handle(task([*ASSIGNEES, mallory, typo]))
    assert world.events(outside) == [] and len(world.events()) == 2
    failures = {f.assignee: f for f in world.store.failures[TASK]}
    assert failures["Mallory"].code == "MailboxDomainNotAllowed"
    assert failures["Mallory"].mailbox == outside
    assert failures["Typo"].code == "InvalidEmailAddress"


def test_a_request_the_stopping_writer_never_sent_ends_the_handling_as_stopping(world):
    """SIGTERM: the assignees whose requests went out are recorded; the message ends with
    ``Stopping`` (the consumer leaves it for redelivery) and nothing is left uncertain."""
    from common.errors import Stopping

    world.store.mailboxes = {A_BOX: "clean", B_BOX: "clean"}
    world.graph.fail_next[A_BOX] = [Stopping("the writer is stopping; not sent")]
    with pytest.raises(Stopping):
        world.handle(task(ASSIGNEES))
    assert set(world.store.maps[TASK]) == {BOB}
    assert world.store.dirty[TASK] is False
    assert world.transfers == []


def test_handlings_that_began_during_a_probe_take_its_answer(world):
    """A new mailbox is probed once; the handlings that began before the probe finished (and
    so read no state for it) neither probe again nor ask the store for its state."""
    asked, begun = [], []
    state_of, begin = world.store.mailbox_state, world.store.begin
    all_begun, first_done = asyncio.Event(), asyncio.Event()

    async def counted(mailbox):
        asked.append(mailbox)
        await all_begun.wait()  # the probe lasts until every handling has begun
        return await state_of(mailbox)

    async def slow_begin(*args):
        answer = await begin(*args)
        begun.append(answer)
        if len(begun) == 10:
            all_begun.set()
        if len(begun) > 1:  # the others go on once the first handling is over
            await first_done.wait()
        return answer

    world.store.mailbox_state, world.store.begin = counted, slow_begin
    alice = ASSIGNEES[:1]

    async def many():
        first = asyncio.create_task(world.handler.handle(task(alice, task_id=str(uuid.uuid4()))))
        others = [
            asyncio.create_task(world.handler.handle(task(alice, task_id=str(uuid.uuid4()))))
            for _ in range(9)
        ]
        await first
        first_done.set()
        await asyncio.gather(*others)

    asyncio.run(many())
    assert len(world.events(A_BOX)) == 10
    assert world.graph.count("GET") == 1
    assert len(asked) == 2  # the probe's own two reads: before and after claiming it
    asked.clear()
    world.handle(task(alice, task_id=str(uuid.uuid4())))
    assert asked == []  # known at begin now
