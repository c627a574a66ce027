"""``pwasync sync-now --dry-run``: what the next sync would create, update and delete.

Runs the poller's own sync logic against the PWA (through the same plan source) with a state
store that reads Redis but writes nothing, then the writer's own planner against the events
recorded in Redis, and prints one line per planned change: the action, the mailbox and the
task. Nothing is published, nothing is written to Outlook or Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.http import new_http_client
from common.mailboxes import MailboxPolicy
from common.messages import SyncRequested, TaskChanged
from common.redis_store import Keys, connect_redis_for
from common.settings import Settings
from services.event_writer.handler import desired_events
from services.event_writer.planner import Create, Delete, Keep, Move, Update, plan
from services.event_writer.service import event_rules
from services.event_writer.task_store import TaskReports
from services.poller.changes import ProjectState
from services.poller.deletion_guard import DeletionGuard
from services.poller.sources import open_plan_source
from services.poller.state import PollerState
from services.poller.sync import SyncRunner


@dataclass(frozen=True)
class PlannedChange:
    action: str  # create, update, delete, skip
    mailbox: str
    task: str

    def render(self) -> str:
        return f"{self.action:7} {self.mailbox:40} {self.task}"


class ReadOnlyPollerState:
    """The poller's state for a dry run: reads come from Redis, writes go nowhere."""

    def __init__(self, state: PollerState) -> None:
        self._state = state

    def start(self) -> datetime | None:
        return self._state.start()

    def projects(self) -> dict[str, ProjectState]:
        return self._state.projects()

    def published_tasks(self, project_id: str) -> dict[str, str]:
        return self._state.published_tasks(project_id)

    def published_revisions(self, project_id: str) -> dict[str, datetime | None]:
        return self._state.published_revisions(project_id)

    def count_published(self, project_ids: list[str]) -> int:
        return self._state.count_published(project_ids)

    def _nothing(self, *_args: Any) -> None:
        pass

    save_project = forget_project = record_published = record_removed = _nothing
    record_run = raise_deletion_alarm = clear_deletion_alarm = _nothing


def plan_sync(settings: Settings, request: SyncRequested) -> tuple[list[PlannedChange], int]:
    """The planned changes, and how many removals the deletion guard would hold back."""
    url = settings.redis_url.get_secret_value()
    client = connect_redis_for(settings)
    keys = Keys(settings.scenario)
    messages: list[TaskChanged] = []
    try:
        with new_http_client(ca_bundle=settings.ca_bundle) as http:
            source = open_plan_source(settings, http, client, read_only=True)
            try:
                runner = SyncRunner(
                    scenario=settings.scenario,
                    feed=source.feed,
                    publish=messages.extend,
                    state=ReadOnlyPollerState(PollerState(client, keys, url)),
                    pwa_zone=settings.pwa_zone,
                    task_link=source.task_link,
                    mailboxes=MailboxPolicy.from_settings(settings),
                    deletion_guard=DeletionGuard(
                        settings.deletion_guard_percent, settings.deletion_guard_min_tasks
                    ),
                    parallel_reads=settings.parallel_reads,
                )
                summary = runner.run(request)
            finally:
                source.close()
        store = TaskReports(client, keys, url)
        rules = event_rules(settings)
        changes: list[PlannedChange] = []
        now = datetime.now(UTC)
        for message in messages:
            changes.extend(_planned(message, store, rules, now))
        return changes, summary.removals_held
    finally:
        client.close()


def _planned(message: TaskChanged, store: TaskReports, rules: Any, now: datetime):  # noqa: ANN202
    name = message.task_name or f"(task {message.task_id})"
    label = f"{name} [{message.task_id}]"
    desired, failures = desired_events(message, rules, now)
    for action in plan(desired, store.recorded(message.task_id)):
        if isinstance(action, Create):
            yield PlannedChange("create", action.desired.mailbox, label)
        elif isinstance(action, Update):
            yield PlannedChange("update", action.desired.mailbox, label)
        elif isinstance(action, Move):
            yield PlannedChange("delete", action.recorded.mailbox, label)
            yield PlannedChange("create", action.desired.mailbox, label)
        elif isinstance(action, Delete):
            yield PlannedChange("delete", action.recorded.mailbox, label)
        else:
            assert isinstance(action, Keep)
    for failure in failures:
        yield PlannedChange("skip", f"({failure.assignee}: no e-mail)", label)


def run_dry_run(settings: Settings, request: SyncRequested) -> int:
    changes, held = plan_sync(settings, request)
    for change in changes:
        print(change.render())
    counts = {a: sum(1 for c in changes if c.action == a) for a in ("create", "update", "delete")}
    print(
        f"dry run: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete; nothing was changed"
    )
    if held:
        print(
            f"the deletion guard would hold back the removals of {held} task(s); "
            "`pwasync sync-now --allow-deletions` lets them through"
        )
    return 0
