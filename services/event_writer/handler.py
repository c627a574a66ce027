"""Handling one ``task.changed``: bring the task's events to the state the message describes.

Exactly-once effect under at-least-once delivery: before creating, the writer looks the event up
by its task-key extended property (a crash after Graph created it but before the bookkeeping was
written leaves such an event behind), and the POST carries a deterministic transactionId. Each
event is recorded in Redis as soon as it is written, so a retry repeats only what is missing.

Outcome per message: every assignee done -> ``transfer.succeeded`` is published (when the task
has at least one event) and the delivery is acked; a retryable failure for any assignee ->
the message is retried later, after the other assignees were done; a mailbox that cannot take
events is logged and skipped without blocking the others; if every assignee failed
permanently, the message is dead-lettered with the reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from common.consumer import Delivery
from common.errors import PermanentError, RetryableError
from common.logging import get_logger
from common.messages import TaskChanged, TransferSucceeded, decode
from services.event_writer import event_mapping
from services.event_writer.event_map import EventMap
from services.event_writer.graph import EventNotFound, GraphCalendar
from services.event_writer.planner import (
    Action,
    Create,
    Delete,
    DesiredEvent,
    Keep,
    RecordedEvent,
    Update,
    plan,
)

log = get_logger(__name__)

PublishTransfer = Callable[[TransferSucceeded], None]


@dataclass
class Outcome:
    written: list[str] = field(default_factory=list)  # mailboxes that hold the event now
    permanent_failures: dict[str, str] = field(default_factory=dict)
    retryable_failures: dict[str, RetryableError] = field(default_factory=dict)


class TaskChangedHandler:
    def __init__(
        self,
        *,
        calendar: GraphCalendar,
        event_map: EventMap,
        publish_transfer: PublishTransfer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._calendar = calendar
        self._event_map = event_map
        self._publish_transfer = publish_transfer
        self._clock = clock

    def __call__(self, delivery: Delivery) -> None:
        self.handle(decode(delivery.body, TaskChanged))

    def handle(self, task: TaskChanged) -> None:
        recorded = self._event_map.load(task.task_id)
        actions = plan(self._desired(task), recorded)
        outcome = Outcome()
        for action in actions:
            self._apply(task, action, outcome)

        if outcome.retryable_failures:
            first = next(iter(outcome.retryable_failures.values()))
            raise RetryableError(
                f"{len(outcome.retryable_failures)} mailbox(es) to retry: {first}",
                retry_after=first.retry_after,
            )
        if outcome.written:
            self._publish_transfer(
                TransferSucceeded(
                    scenario=task.scenario,
                    project_id=task.project_id,
                    task_id=task.task_id,
                    transferred_at=self._clock(),
                    mailboxes=sorted(outcome.written),
                )
            )
        elif outcome.permanent_failures:
            reasons = "; ".join(f"{m}: {r}" for m, r in sorted(outcome.permanent_failures.items()))
            raise PermanentError(f"no mailbox of the task could take its event ({reasons})")
        log.info(
            "task events written",
            task_id=str(task.task_id),
            change=task.change,
            actions=_count(actions),
            mailboxes=len(outcome.written),
            failed=len(outcome.permanent_failures),
        )

    def _desired(self, task: TaskChanged) -> list[DesiredEvent]:
        if task.change == "remove":
            return []
        content = event_mapping.event_content(task)
        digest = event_mapping.fingerprint(content)
        desired: dict[str, DesiredEvent] = {}
        for assignee in task.assignees:
            if not assignee.email:
                log.info(
                    "assignee has no e-mail address; no event for them",
                    task_id=str(task.task_id),
                    resource_id=str(assignee.resource_id),
                    assignee=assignee.name,
                )
                continue
            mailbox = assignee.email.strip().lower()
            # Two resources sharing one mailbox get one event, or a removal of one would take
            # the other's event away.
            desired.setdefault(
                mailbox, DesiredEvent(assignee.resource_id, mailbox, content, digest)
            )
        return list(desired.values())

    def _apply(self, task: TaskChanged, action: Action, outcome: Outcome) -> None:
        mailbox = _mailbox_of(action)
        try:
            if isinstance(action, Create):
                self._create(task, action.desired)
                outcome.written.append(mailbox)
            elif isinstance(action, Update):
                self._update(task, action)
                outcome.written.append(mailbox)
            elif isinstance(action, Delete):
                self._calendar.delete_event(mailbox, action.recorded.event_id)
                self._event_map.forget(task.task_id, action.recorded.resource_id)
            elif isinstance(action, Keep):
                outcome.written.append(mailbox)
        except RetryableError as exc:
            outcome.retryable_failures[mailbox] = exc
        except PermanentError as exc:
            log.error(
                "mailbox failed permanently; other assignees continue",
                task_id=str(task.task_id),
                mailbox=mailbox,
                reason=str(exc),
            )
            outcome.permanent_failures[mailbox] = str(exc)

    def _create(self, task: TaskChanged, desired: DesiredEvent) -> None:
        key = event_mapping.task_key(task.scenario, task.task_id)
        event_id = self._calendar.find_event_id(
            desired.mailbox, event_mapping.TASK_KEY_PROPERTY, key
        )
        if event_id is None:
            created = self._calendar.create_event(
                desired.mailbox, event_mapping.new_event(task, desired.resource_id)
            )
            event_id = created["id"]
        else:
            # Found from an earlier attempt whose bookkeeping was lost: bring it up to date.
            self._calendar.update_event(desired.mailbox, event_id, desired.content)
        self._record(task, desired, event_id)

    def _update(self, task: TaskChanged, action: Update) -> None:
        try:
            self._calendar.update_event(
                action.desired.mailbox, action.recorded.event_id, action.desired.content
            )
            self._record(task, action.desired, action.recorded.event_id)
        except EventNotFound:
            # The owner deleted it in Outlook; the task still wants it, so it is written again.
            self._event_map.forget(task.task_id, action.recorded.resource_id)
            self._create(task, action.desired)

    def _record(self, task: TaskChanged, desired: DesiredEvent, event_id: str) -> None:
        self._event_map.record(
            task.task_id,
            RecordedEvent(desired.resource_id, desired.mailbox, event_id, desired.fingerprint),
        )


def _mailbox_of(action: Action) -> str:
    if isinstance(action, Create | Update):
        return action.desired.mailbox
    return action.recorded.mailbox


def _count(actions: list[Action]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for action in actions:
        name = type(action).__name__.lower()
        counts[name] = counts.get(name, 0) + 1
    return counts
