"""Handling one ``task.changed``: bring the task's events to the state the message describes.

A coroutine on the writer's event loop, in stages, each a function of its own:

1. **Begin** (``ordering``, ``task_store.begin``): take the task's lease (another writer busy
   with the task: wait up to ``lease_wait_seconds``, then retry the message later) and drop a
   snapshot older than the newest one accepted (acked, nothing written).
2. **Plan** (``planner``): per assignee create, update (only when the fingerprint of the mapped
   fields changed), move, delete or keep; only events in the map are ever updated or deleted.
3. **Execute** (``steps``): one step per assignee, all at once, through the dispatcher (which
   batches them with other tasks' requests inside Outlook's limits).
4. **Classify** (``classify``, pure): what each step's value or error means for the map, the
   assignee failures, the run's counts and the message.
5. **Record** (``task_store.finish``): map entries, assignee failures, the tombstone of a
   removal, and the lease given back.
6. **Publish**: ``transfer.succeeded`` when the task has events, or the error that decides
   the message's fate (``common.ack_policy``).

Exactly-once creates without a lookup before every POST: the POST carries a deterministic
transactionId, and the writer looks the event up by its task-key property first only when the
map may be missing it: the task is **dirty** (an earlier handling died between Graph and
Redis, or did not learn whether its POST worked) or the mailbox is in **verify** state (it held
events of ours when Redis first saw it: Redis lost its data). The first create in a mailbox in
Redis's lifetime asks Graph once whether it holds any event of this scenario.

Outcome: every assignee done -> ack; a retryable failure for any assignee -> the message is
retried later, after the other assignees were done; a mailbox that cannot take events (unknown,
unlicensed, outside the app's scope) or an assignee without e-mail is **recorded for that
assignee** (``writer:failures:<task>``) and the message is acked; any other permanent Graph
error (a request Graph refuses whoever receives it) dead-letters the message with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common import metrics
from common.consumer import Delivery
from common.errors import Contended, PermanentError, PwasyncError, RetryableError, Stopping
from common.logging import get_logger
from common.messages import TaskChanged, TransferSucceeded, decode
from services.event_writer import event_mapping, graph_protocol
from services.event_writer.endpoint_gate import EndpointGate
from services.event_writer.event_mapping import EventRules
from services.event_writer.graph_protocol import EventNotFound, MailboxUnavailable
from services.event_writer.ordering import order_key
from services.event_writer.planner import (
    Action,
    Create,
    Delete,
    DesiredEvent,
    Keep,
    Move,
    RecordedEvent,
    Update,
    plan,
)
from services.event_writer.steps import (
    ANSWER_TIMEOUT_SECONDS,
    GraphCalls,
    StepResults,
    Submit,
    run_steps,
)
from services.event_writer.task_store import (
    AssigneeFailure,
    Begun,
    Busy,
    Finish,
    MailboxState,
    Stale,
    TaskStore,
)
from services.ledger.endpoints import Claim

log = get_logger(__name__)

PublishTransfer = Callable[[TransferSucceeded], Awaitable[None]]
#: Receives what one handling did in Outlook ({"created": n, "updated": n, "deleted": n,
#: "failed": n}), to be counted for the sync run that caused it.
CountOutcome = Callable[[dict[str, int]], Awaitable[None]]


@dataclass(frozen=True)
class Written:
    event: RecordedEvent


@dataclass(frozen=True)
class Kept:
    event: RecordedEvent


@dataclass(frozen=True)
class Removed:
    resource_id: str


@dataclass
class _Handling:
    task: TaskChanged
    order: str  # the snapshot's ordering key
    begun: Begun
    calls: GraphCalls
    wanted: frozenset[str] = frozenset()  # the mailboxes the task wants an event in
    deleted: set[str] = field(default_factory=set)  # map entries whose event is gone
    probes_seen: int = 0  # the probes this process had finished when the handling began


@dataclass
class Verdict:
    """What a handling's steps mean (``classify``): what to record, and the message's fate."""

    outcome: Finish
    written: list[str] = field(default_factory=list)  # mailboxes that have the event
    retryable: list[RetryableError] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # permanent Graph refusals
    unexpected: list[Exception] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def error(self) -> Exception | None:
        """The error the message is settled by (None: acked, and published)."""
        if self.unexpected:
            return self.unexpected[0]
        stopped = [e for e in self.retryable if isinstance(e, Stopping)]
        if stopped:  # the rest is done again after the broker redelivers the message
            return Stopping(f"{len(stopped)} mailbox(es) not written: {stopped[0]}")
        if self.retryable:
            waits = [e.retry_after for e in self.retryable if e.retry_after]
            return RetryableError(
                f"{len(self.retryable)} mailbox(es) to retry: {self.retryable[0]}",
                retry_after=max(waits) if waits else None,
            )
        if self.refused:
            return PermanentError(
                "Graph refused the task's event: " + "; ".join(sorted(self.refused))
            )
        return None


async def _no_count(counts: dict[str, int]) -> None:
    return None


def desired_events(
    task: TaskChanged, rules: EventRules, now: datetime
) -> tuple[list[DesiredEvent], list[AssigneeFailure]]:
    """The events the message asks for, one per mailbox, and the assignees who cannot have
    one (no e-mail address, or one ``rules.mailboxes`` refuses)."""
    if task.change == "remove":
        return [], []
    content = event_mapping.event_content(task, rules)
    digest = event_mapping.fingerprint(content)
    desired: dict[str, DesiredEvent] = {}
    failures = []
    for assignee in task.assignees:
        if not assignee.email or not assignee.email.strip():
            failures.append(
                AssigneeFailure(
                    resource_id=assignee.resource_id,
                    assignee=assignee.name,
                    mailbox=None,
                    code="NoEmailAddress",
                    reason="the resource has no e-mail address in PWA",
                    at=now.isoformat(),
                )
            )
            continue
        refused = rules.mailboxes.refusal(assignee.email)
        if refused is not None:
            failures.append(
                AssigneeFailure(
                    resource_id=assignee.resource_id,
                    assignee=assignee.name,
                    mailbox=assignee.email.strip(),
                    code=refused.failure_code,
                    reason=refused.reason,
                    at=now.isoformat(),
                )
            )
            continue
        mailbox = assignee.email.strip().lower()
        # Two resources sharing one mailbox get one event, or a removal of one would take the
        # other's event away.
        desired.setdefault(mailbox, DesiredEvent(assignee.resource_id, mailbox, content, digest))
    return list(desired.values()), failures


def classify(
    task: TaskChanged,
    begun: Begun,
    actions: list[Action],
    results: StepResults,
    *,
    deleted: set[str],
    failures: list[AssigneeFailure],
    now: datetime,
) -> Verdict:
    """What the steps' values and errors mean, per assignee: map entries to record and forget,
    assignee failures, counts for the run, and what is left to retry or was refused."""
    verdict = Verdict(
        Finish(
            failures=list(failures),
            # A task that was dirty stays so unless every step went through: a step that
            # failed (its lookup, say) has not found the event an earlier handling left.
            uncertain=results.uncertain or (begun.was_dirty and bool(results.errors)),
            removal=task.change == "remove",
        )
    )
    for index, action in enumerate(actions):
        resource_id, mailbox = _target(action)
        if resource_id in deleted:
            verdict.outcome.forget.append(resource_id)
        if index in results.values:
            value = results.values[index]
            if isinstance(value, Written):
                verdict.outcome.record.append(value.event)
            if isinstance(value, Written | Kept):
                verdict.written.append(mailbox)
            verdict.counts.update(_EFFECTS.get(type(action), ()))
            continue
        error = results.errors[index]
        if isinstance(error, MailboxUnavailable):
            verdict.outcome.failures.append(_failure(task, resource_id, mailbox, error, now))
            verdict.counts["failed"] += 1
        elif isinstance(error, RetryableError):
            verdict.retryable.append(error)
        elif isinstance(error, PermanentError):
            verdict.refused.append(f"{mailbox}: {error}")
            verdict.counts["failed"] += 1
        else:
            verdict.unexpected.append(error)
    return verdict


class TaskChangedHandler:
    def __init__(
        self,
        *,
        store: TaskStore,
        submit: Submit,
        publish_transfer: PublishTransfer,
        rules: EventRules | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease_wait_seconds: float = 5.0,
        probe_wait_seconds: float = 15.0,
        stop: asyncio.Event | None = None,
        gate: EndpointGate | None = None,
        count_outcome: CountOutcome = _no_count,
        graph_answer_timeout: float = ANSWER_TIMEOUT_SECONDS,
    ) -> None:
        self._store = store
        self._submit = submit
        self._publish_transfer = publish_transfer
        self._rules = rules or EventRules()
        self._clock = clock
        self._lease_wait = lease_wait_seconds
        self._probe_wait = probe_wait_seconds
        self._stop = stop or asyncio.Event()
        self._gate = gate
        self._count_outcome = count_outcome
        self._graph_answer_timeout = graph_answer_timeout
        self._probing: dict[str, asyncio.Future[MailboxState]] = {}  # mailbox -> its probe
        # mailbox -> (number, answer) of the last probe this process finished. A handling that
        # began before it read no state for the mailbox; the probe's answer is as fresh. One
        # entry per mailbox this process ever probed (a mailbox new to Redis): ~100 bytes each.
        self._probed: dict[str, tuple[int, MailboxState]] = {}
        self._probes_finished = 0

    async def __call__(self, delivery: Delivery) -> None:
        await self.handle(decode(delivery.body, TaskChanged))

    async def handle(self, task: TaskChanged) -> None:
        desired, failures = desired_events(task, self._rules, self._clock())
        probes_seen = self._probes_finished
        order = order_key(task)
        begun = await self._begin(task, order, [d.mailbox for d in desired])
        if begun is None:
            return
        claim = await self._admit(task, begun, desired, failures)
        if claim is Claim.HELD:
            return
        calls = GraphCalls(self._submit, self._graph_answer_timeout)
        handling = _Handling(
            task,
            order,
            begun,
            calls,
            frozenset(d.mailbox for d in desired),
            probes_seen=probes_seen,
        )
        try:
            actions = plan(desired, begun.recorded)
            results = await self._execute(handling, actions)
            verdict = classify(
                task,
                begun,
                actions,
                results,
                deleted=handling.deleted,
                failures=failures,
                now=self._clock(),
            )
        except BaseException:
            # Shielded: a handling cancelled by the stop still gives its lease back.
            await asyncio.shield(self._store.abandon(task.task_id, begun.token))
            raise
        await self._record(task, begun, verdict, claim)
        await self._publish(task, verdict, actions)

    # --- the stages ----------------------------------------------------------------------------

    async def _execute(self, handling: _Handling, actions: list[Action]) -> StepResults:
        steps = {i: self._step(handling, action) for i, action in enumerate(actions)}
        return await run_steps(handling.calls, steps)

    async def _record(
        self, task: TaskChanged, begun: Begun, verdict: Verdict, claim: Claim | None
    ) -> None:
        await self._store.finish(task.task_id, begun.token, verdict.outcome)
        if verdict.counts:
            await self._count_outcome(dict(verdict.counts))
        if claim is Claim.CLAIMED and not verdict.written:
            await self._gate.give_back(task.task_id)  # type: ignore[union-attr]

    async def _publish(self, task: TaskChanged, verdict: Verdict, actions: list[Action]) -> None:
        error = verdict.error()
        if error is not None:
            raise error
        if verdict.written and task.change != "remove":
            await self._publish_transfer(
                TransferSucceeded(
                    scenario=task.scenario,
                    project_id=task.project_id,
                    task_id=task.task_id,
                    transferred_at=self._clock(),
                    mailboxes=sorted(set(verdict.written)),
                )
            )
        log.info(
            "task events written",
            task_id=str(task.task_id),
            change=task.change,
            actions=_count(actions),
            mailboxes=len(set(verdict.written)),
            failed=len(verdict.outcome.failures),
        )

    # --- before writing ------------------------------------------------------------------------

    async def _admit(
        self,
        task: TaskChanged,
        begun: Begun,
        desired: list[DesiredEvent],
        failures: list[AssigneeFailure],
    ) -> Claim | None:
        """The endpoint limit (None: no limit, or nothing to claim for)."""
        if self._gate is None:
            return None
        if task.change == "remove":
            await self._gate.forget(task.task_id)
            return None
        if not desired:
            return None
        claim = await self._gate.admit(task)
        if claim is Claim.HELD:
            # Nothing is written, so nothing new can be uncertain; the snapshot stays the
            # newest accepted, and the ledger sends it again when a slot frees up.
            await self._store.finish(
                task.task_id, begun.token, Finish(failures=failures, uncertain=begun.was_dirty)
            )
            log.warning(
                "task held back: the endpoint limit is reached",
                task_id=str(task.task_id),
                project_id=str(task.project_id),
            )
        return claim

    async def _begin(self, task: TaskChanged, order: str, mailboxes: list[str]) -> Begun | None:
        deadline = time.monotonic() + self._lease_wait
        delay = 0.02
        while True:
            begin = await self._store.begin(task.task_id, order, task.change, mailboxes)
            if isinstance(begin, Begun):
                return begin
            if isinstance(begin, Stale):
                log.info(
                    "older snapshot ignored; a newer one was applied",
                    task_id=str(task.task_id),
                    snapshot=order,
                    newest=begin.newest,
                )
                return None
            assert isinstance(begin, Busy)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                # Retried once the holder's lease may have ended (a writer that died holds it
                # until then), and not counted as a failed attempt.
                metrics.TASK_LEASE_CONTENDED.inc()
                raise Contended(
                    "another writer is working on this task", retry_after=begin.retry_after
                )
            await self._pause(min(delay, remaining))
            delay = min(delay * 2, 0.25)

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by the stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # --- the steps, one per assignee -----------------------------------------------------------

    def _step(self, handling: _Handling, action: Action) -> Any:
        if isinstance(action, Create):
            return self._create(handling, action.desired)
        if isinstance(action, Update):
            return self._update(handling, action.desired, action.recorded)
        if isinstance(action, Move):
            return self._move(handling, action.desired, action.recorded)
        if isinstance(action, Delete):
            return self._delete(handling, action.recorded)
        assert isinstance(action, Keep)
        return _done(Kept(action.recorded))

    async def _create(
        self,
        handling: _Handling,
        desired: DesiredEvent,
        *,
        replaces: str | None = None,
        look_up: bool = False,
    ) -> Written:
        task, mailbox, graph = handling.task, desired.mailbox, handling.calls
        state = handling.begun.mailbox_states.get(mailbox)
        if state is None:
            state = await self._mailbox_state(handling, mailbox)
        event_id = None
        if look_up or handling.begun.was_dirty or state == "verify":
            ids = await _find_by_task_key(handling, mailbox)
            if ids:
                event_id = ids[0]
                log.info("event found by its task key; adopting it", mailbox=mailbox)
                for extra in ids[1:]:  # duplicates an earlier failure left: ours, so removed
                    with contextlib.suppress(EventNotFound):
                        await graph(graph_protocol.delete(mailbox, extra))
                await graph(graph_protocol.update(mailbox, event_id, desired.content))
        if event_id is None:
            body = event_mapping.new_event(
                task,
                desired.resource_id,
                self._rules,
                replaces=replaces,
                content=desired.content,
                life=handling.order,
            )
            created = await graph(graph_protocol.create(mailbox, body))
            event_id = graph_protocol.created_id(created)
        return Written(RecordedEvent(desired.resource_id, mailbox, event_id, desired.fingerprint))

    async def _mailbox_state(self, handling: _Handling, mailbox: str) -> MailboxState:
        """Does this mailbox, new to Redis, hold events of ours? Asked once, by one writer;
        the handlings of this process that need it meanwhile wait for that one's answer, and
        those that began before it finished take its answer (without asking Redis again)."""
        probed = self._probed.get(mailbox)
        if probed is not None and probed[0] > handling.probes_seen:
            return probed[1]
        while (shared := self._probing.get(mailbox)) is not None:
            await asyncio.wait([shared])
            if not shared.cancelled():
                return shared.result()
            # That handling's probe failed: this one asks for itself.
        shared = asyncio.get_running_loop().create_future()
        self._probing[mailbox] = shared
        try:
            state = await self._probe(handling, mailbox)
        except BaseException:
            shared.cancel()
            raise
        else:
            shared.set_result(state)
            self._probes_finished += 1
            self._probed[mailbox] = (self._probes_finished, state)
        finally:
            del self._probing[mailbox]
        return state

    async def _probe(self, handling: _Handling, mailbox: str) -> MailboxState:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self._probe_wait
        delay = 0.02
        while True:
            state: MailboxState | None = await self._store.mailbox_state(mailbox)
            if state is not None:
                return state
            if await self._store.claim_probe(mailbox, token):
                break
            if time.monotonic() > deadline or self._stop.is_set():
                raise Contended(f"another writer is still probing {mailbox}")
            await self._pause(delay)  # another replica probes it
            delay = min(delay * 2, 0.25)
        try:
            state = await self._store.mailbox_state(mailbox)
            if state is None:
                found = await handling.calls(
                    graph_protocol.find_by_property(
                        mailbox, event_mapping.SCENARIO_PROPERTY, handling.task.scenario, top=1
                    )
                )
                state = "verify" if graph_protocol.event_ids(found) else "clean"
                await self._store.mark_mailbox(mailbox, state)
        finally:
            await asyncio.shield(self._store.release_probe(mailbox, token))
        return state

    async def _update(
        self, handling: _Handling, desired: DesiredEvent, recorded: RecordedEvent
    ) -> Written:
        try:
            await handling.calls(
                graph_protocol.update(desired.mailbox, recorded.event_id, desired.content)
            )
        except EventNotFound:
            # Moved under another id (archived and back, or a regular id stored before a move):
            # found by its task key and adopted; or deleted by its owner: written again.
            handling.deleted.add(recorded.resource_id)
            return await self._create(handling, desired, replaces=recorded.event_id, look_up=True)
        return Written(
            RecordedEvent(
                desired.resource_id, desired.mailbox, recorded.event_id, desired.fingerprint
            )
        )

    async def _move(
        self, handling: _Handling, desired: DesiredEvent, recorded: RecordedEvent
    ) -> Written:
        await self._delete(handling, recorded)
        return await self._create(handling, desired)

    async def _delete(self, handling: _Handling, recorded: RecordedEvent) -> Removed:
        graph = handling.calls
        # Gone already, or the whole mailbox is: either way the map entry goes.
        with contextlib.suppress(MailboxUnavailable):
            try:
                await graph(graph_protocol.delete(recorded.mailbox, recorded.event_id))
            except EventNotFound:
                # Perhaps moved under another id: what carries the task key goes too, unless
                # the task still wants an event in that mailbox (another assignee's step
                # writes it meanwhile, and must not lose it).
                if recorded.mailbox.lower() not in handling.wanted:
                    for event_id in await _find_by_task_key(handling, recorded.mailbox):
                        with contextlib.suppress(EventNotFound):
                            await graph(graph_protocol.delete(recorded.mailbox, event_id))
        handling.deleted.add(recorded.resource_id)
        return Removed(recorded.resource_id)


def _failure(
    task: TaskChanged, resource_id: str, mailbox: str, error: PwasyncError, now: datetime
) -> AssigneeFailure:
    name = next((a.name for a in task.assignees if a.resource_id == resource_id), "")
    log.error(
        "mailbox cannot take events; recorded for the assignee",
        task_id=str(task.task_id),
        mailbox=mailbox,
        reason=str(error),
    )
    return AssigneeFailure(
        resource_id=resource_id,
        assignee=name,
        mailbox=mailbox,
        code=getattr(error, "code", None) or error.__class__.__name__,
        reason=str(error),
        at=now.isoformat(),
    )


async def _find_by_task_key(handling: _Handling, mailbox: str) -> list[str]:
    """The ids of the task's events in a mailbox (its default calendar)."""
    key = event_mapping.task_key(handling.task.scenario, handling.task.task_id)
    found = await handling.calls(
        graph_protocol.find_by_property(mailbox, event_mapping.TASK_KEY_PROPERTY, key)
    )
    return graph_protocol.event_ids(found)


async def _done(value: Any) -> Any:
    return value  # a step that asks Graph nothing


def _target(action: Action) -> tuple[str, str]:
    if isinstance(action, Create | Update | Move):
        return action.desired.resource_id, action.desired.mailbox
    return action.recorded.resource_id, action.recorded.mailbox


#: What each action did in Outlook once it succeeded.
_EFFECTS: dict[type, tuple[str, ...]] = {
    Create: ("created",),
    Update: ("updated",),
    Move: ("deleted", "created"),
    Delete: ("deleted",),
}


def _count(actions: list[Action]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for action in actions:
        name = type(action).__name__.lower()
        counts[name] = counts.get(name, 0) + 1
    return counts
