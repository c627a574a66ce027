"""One fault run: the sandbox with generated flagged tasks, the real services as processes,
a sync, and the exact check of the end state once the faults are over."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.redis_store import connect_redis
from tests.chaos.end_state import Expectation, Row, assert_exact, measure, settle
from tests.e2e.harness import Pipeline

SERVICES = ("poller", "writer-1", "writer-2", "ledger")


@dataclass(frozen=True)
class Volume:
    run: str  # "short" (default test run) or "long" (make chaos)
    projects: int
    tasks_per_project: int
    assignees: int
    mailboxes: int
    latency_ms: int

    @property
    def tasks(self) -> int:
        return self.projects * self.tasks_per_project


def volumes(short: Volume, long: Volume, *, short_by_default: bool = True) -> list:
    """Parameters for a fault test: the short run by default (unless its time is better spent
    elsewhere), the long one under ``chaos``."""
    return [
        pytest.param(short, id="short", marks=[] if short_by_default else [pytest.mark.chaos]),
        pytest.param(long, id="long", marks=[pytest.mark.chaos, pytest.mark.timeout(1500)]),
    ]


class FaultRun:
    def __init__(
        self,
        workdir: Path,
        *,
        fault: str,
        volume: Volume,
        amqp_url: str,
        redis_url: str,
        scenario: str,
        env: dict[str, str] | None = None,
        edition: str = "online",
    ) -> None:
        self.fault = fault
        self.volume = volume
        self.amqp_url = amqp_url
        self.started = time.monotonic()
        self.pipeline = Pipeline(
            workdir,
            amqp_url=amqp_url,
            redis_url=redis_url,
            scenario=scenario,
            latency_ms=volume.latency_ms,
            edition=edition,
        )
        # Every generated project counts, however old; requests time out quickly.
        self.env = {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z", **(env or {})}
        self.killed: list[str] = []
        self._spares = 0

    # --- arranging -----------------------------------------------------------------------

    def generate(self) -> set[tuple[str, str]]:
        """The volume's flagged tasks in PWA; returns the (mailbox, task) events they need."""
        v = self.volume
        generated = self.pipeline.client.generate(
            projects=v.projects,
            tasks_per_project=v.tasks_per_project,
            flagged=True,
            ensure_field=True,
            assignees_per_task=v.assignees,
            mailboxes=v.mailboxes,
        )
        self.generated = generated
        mailboxes = [m.lower() for m in generated["mailboxes"]]
        events = set()
        for index, task_id in enumerate(generated["task_ids"]):
            position = index % v.tasks_per_project  # the generator's assignment rule
            for offset in range(v.assignees):
                events.add((mailboxes[(position + offset) % v.mailboxes], task_id))
        return events

    def start(self, *names: str, env: dict[str, str] | None = None) -> None:
        for name in names or SERVICES:
            self.pipeline.start(name, {**self.env, **(env or {})})

    def sync(self, *args: str) -> None:
        self.pipeline.cli("sync-now", *args)

    # --- faults --------------------------------------------------------------------------

    def kill(self, name: str, *, replace: bool = True) -> str | None:
        """SIGKILL a service; start a fresh one of the same kind in its place."""
        self.pipeline.services.pop(name).kill()
        self.killed.append(name)
        if not replace:
            return None
        self._spares += 1
        spare = f"{name.split('-')[0]}-spare{self._spares}"
        self.start(spare)
        return spare

    def events_written(self) -> int:
        return self.pipeline.client.health()["events"]

    def tasks_published(self) -> int:
        """Tasks the poller has published (and recorded) so far in this scenario."""
        client = connect_redis(self.pipeline.env["PWASYNC_REDIS_URL"])
        try:
            prefix = f"pwasync:{{{self.pipeline.scenario}}}:poller:tasks:"
            return sum(client.hlen(prefix + p) for p in self.generated["project_ids"])
        finally:
            client.close()

    # --- the end state -------------------------------------------------------------------

    def finish(
        self,
        expectation: Expectation,
        operations: str,
        *,
        timeout: float = 240,
        exact: bool = True,
    ) -> Row:
        settle(self.pipeline, expectation, self.amqp_url, timeout)
        exit_codes = self.pipeline.stop_all()
        row = measure(
            self.pipeline,
            expectation,
            fault=self.fault,
            run=self.volume.run,
            operations=operations,
            amqp_url=self.amqp_url,
            started=self.started,
            exit_codes=exit_codes,
        )
        if exact:
            assert_exact(row, expectation)
        return row

    def close(self) -> None:
        self.pipeline.close()
