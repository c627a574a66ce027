"""The RabbitMQ topology of one scenario, declared once, as data.

Every process declares the whole topology of its scenario when it connects (declaring is
idempotent), so a producer never publishes into a void because its consumer has not started yet.

Shape, for scenario ``S``::

    exchange pwasync (topic, durable)
      sync.requested          -> pwasync.S.sync-requested
      S.task.changed          -> pwasync.S.task-changed
      S.transfer.succeeded    -> pwasync.S.transfer-succeeded

    every work queue Q (quorum) has
      Q.dead                  dead letters: explicit, with a reason header; also the broker's
                              target when a message exceeds the delivery limit
      Q.retry.<N>s            delayed retry tiers: a message waits N seconds (queue TTL), then
                              the broker dead-letters it back to Q through the default exchange

``sync.requested`` is not namespaced, because operators publish it by hand; the poller of each
scenario reads the ``scenario`` field of the body and ignores requests for other scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXCHANGE = "pwasync"

#: Retry tiers in seconds. A retry waits in the smallest tier that covers the wanted delay.
RETRY_TIERS_SECONDS: tuple[int, ...] = (2, 10, 60, 300)

#: Redeliveries after a consumer died holding the message (crash, kill, lost connection) before
#: the broker dead-letters it. Handled failures never count: they are retried or dead-lettered
#: explicitly. 20 is RabbitMQ 4's default; set here so 3.x brokers behave the same.
DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[str, ...] = ()  # routing keys bound on EXCHANGE


@dataclass(frozen=True)
class WorkQueue:
    """A queue that a service consumes, with its dead-letter queue and retry tiers."""

    name: str
    routing_key: str
    retry_tiers: tuple[int, ...] = RETRY_TIERS_SECONDS

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dead"

    def retry_queue(self, seconds: int) -> str:
        return f"{self.name}.retry.{seconds}s"

    def tier_for(self, wanted_seconds: float) -> int:
        """The smallest tier that waits at least ``wanted_seconds`` (the largest if none does)."""
        for tier in self.retry_tiers:
            if tier >= wanted_seconds:
                return tier
        return self.retry_tiers[-1]

    def queue_specs(self) -> list[QueueSpec]:
        quorum = {"x-queue-type": "quorum"}
        # at-least-once dead-lettering keeps a dead letter until the target confirms it; it
        # requires overflow=reject-publish on quorum queues.
        safe_dead_lettering = {
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        specs = [
            QueueSpec(
                self.name,
                {
                    **quorum,
                    **safe_dead_lettering,
                    "x-delivery-limit": DELIVERY_LIMIT,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.dead_letter_queue,
                },
                bindings=(self.routing_key,),
            ),
            QueueSpec(self.dead_letter_queue, dict(quorum)),
        ]
        for seconds in self.retry_tiers:
            specs.append(
                QueueSpec(
                    self.retry_queue(seconds),
                    {
                        **quorum,
                        **safe_dead_lettering,
                        "x-message-ttl": seconds * 1000,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self.name,
                    },
                )
            )
        return specs


@dataclass(frozen=True)
class Topology:
    scenario: str
    exchange: str = EXCHANGE
    work_queues: dict[str, WorkQueue] = field(default_factory=dict)

    @property
    def sync_requests(self) -> WorkQueue:
        return self.work_queues["sync_requests"]

    @property
    def task_changes(self) -> WorkQueue:
        return self.work_queues["task_changes"]

    @property
    def transfers(self) -> WorkQueue:
        return self.work_queues["transfers"]

    def queue_specs(self) -> list[QueueSpec]:
        return [spec for queue in self.work_queues.values() for spec in queue.queue_specs()]

    def queue_names(self) -> list[str]:
        return [spec.name for spec in self.queue_specs()]


def routing_key_task_changed(scenario: str) -> str:
    return f"{scenario}.task.changed"


def routing_key_transfer_succeeded(scenario: str) -> str:
    return f"{scenario}.transfer.succeeded"


ROUTING_KEY_SYNC_REQUESTED = "sync.requested"


def topology_for(scenario: str) -> Topology:
    prefix = f"{EXCHANGE}.{scenario}"
    return Topology(
        scenario=scenario,
        work_queues={
            "sync_requests": WorkQueue(f"{prefix}.sync-requested", ROUTING_KEY_SYNC_REQUESTED),
            "task_changes": WorkQueue(f"{prefix}.task-changed", routing_key_task_changed(scenario)),
            "transfers": WorkQueue(
                f"{prefix}.transfer-succeeded", routing_key_transfer_succeeded(scenario)
            ),
        },
    )
