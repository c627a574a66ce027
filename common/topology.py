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

A queue's settings (delivery limit, TTL, dead-letter target and strategy, overflow) are a
policy, not declaration arguments: the broker refuses to redeclare a queue with other arguments
(PRECONDITION_FAILED), so an argument can never change on a running deployment, while a policy
changes on every queue it matches at once. Only ``x-queue-type`` must be an argument. RabbitMQ
sets policies only through its management API or ``rabbitmqctl``, not over AMQP; where pwasync
cannot set them (no management API configured), it creates missing queues with the settings as
arguments instead, so the queues work on any broker (see ``common/broker_policies.py``).
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

#: The delivery limit of the ``.dead`` queues: none. Nothing consumes them but an operator's
#: replay, and RabbitMQ 4 would drop a dead letter past its default limit (it has no target).
UNLIMITED = -1

#: Our policies' priority: above an operator's catch-all policies (only one policy applies to
#: a queue, and ours must be complete), below nothing of ours. Operator policies
#: (``rabbitmqctl set_operator_policy``) still apply on top, the stricter value winning.
POLICY_PRIORITY = 10

QUORUM = {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class QueueSpec:
    name: str
    settings: dict[str, Any]  # the policy definition (keys as in policies, without ``x-``)
    bindings: tuple[str, ...] = ()  # routing keys bound on EXCHANGE
    arguments: dict[str, Any] = field(default_factory=lambda: dict(QUORUM))

    def declaration_arguments(self, *, settings_by_policy: bool) -> dict[str, Any]:
        """What a missing queue is declared with: the queue type, plus the settings where no
        policy of ours carries them (an unlimited delivery limit is then left out: 3.x has no
        limit by default and refuses -1)."""
        if settings_by_policy:
            return dict(self.arguments)
        settings = {k: v for k, v in self.settings.items() if v != UNLIMITED}
        return {**self.arguments, **{f"x-{key}": value for key, value in settings.items()}}

    def policy(self, broker_major_version: int) -> QueuePolicy | None:
        """Our policy for this queue on a broker of that major version (None: nothing to set)."""
        definition = dict(self.settings)
        if broker_major_version < 4 and definition.get("delivery-limit") == UNLIMITED:
            del definition["delivery-limit"]  # 3.x: unlimited is the default, -1 is refused
        if not definition:
            return None
        return QueuePolicy(self.name, f"^{_regex_literal(self.name)}$", definition)


@dataclass(frozen=True)
class QueuePolicy:
    """A RabbitMQ policy matching exactly one of our queues (named after it)."""

    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = POLICY_PRIORITY
    apply_to: str = "queues"


def _regex_literal(text: str) -> str:
    return "".join(f"\\{c}" if c in ".^$*+?()[]{}|\\" else c for c in text)


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
        # at-least-once dead-lettering keeps a dead letter until the target confirms it; it
        # requires overflow=reject-publish on quorum queues.
        safe_dead_lettering = {
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
        }
        specs = [
            QueueSpec(
                self.name,
                {
                    **safe_dead_lettering,
                    "delivery-limit": DELIVERY_LIMIT,
                    "dead-letter-exchange": "",
                    "dead-letter-routing-key": self.dead_letter_queue,
                },
                bindings=(self.routing_key,),
            ),
            QueueSpec(self.dead_letter_queue, {"delivery-limit": UNLIMITED}),
        ]
        for seconds in self.retry_tiers:
            specs.append(
                QueueSpec(
                    self.retry_queue(seconds),
                    {
                        **safe_dead_lettering,
                        "message-ttl": seconds * 1000,
                        "dead-letter-exchange": "",
                        "dead-letter-routing-key": self.name,
                    },
                )
            )
        return specs


@dataclass(frozen=True)
class Topology:
    scenario: str
    exchange: str = EXCHANGE
    work_queues: dict[str, WorkQueue] = field(default_factory=dict)
    #: Our policies carry the queues' settings (applied at start); else missing queues are
    #: declared with them as arguments.
    settings_by_policy: bool = False

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

    def policies(self, broker_major_version: int) -> list[QueuePolicy]:
        policies = (spec.policy(broker_major_version) for spec in self.queue_specs())
        return [policy for policy in policies if policy is not None]


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
