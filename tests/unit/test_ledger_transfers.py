"""Issue 11, item 13: a transfer whose allocation Redis could not take is never given up.

A transfer.succeeded's only work is the allocation in Redis, so Redis being away (down,
loading, refusing writes, a replica that has not caught up) says nothing about the message: it
waits for Redis without using up its attempts. After 8 counted attempts (about 21 minutes of
retry tiers) it used to be dead-lettered, and the task kept its events without an endpoint.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import redis.exceptions

from common.ack_policy import DEFAULT_MAX_ATTEMPTS, Retry, decide
from common.consumer import Delivery
from common.errors import ServiceUnavailable
from common.messages import TransferSucceeded
from common.topology import topology_for
from services.ledger.service import TransferHandler


class RedisAway:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def allocate_many(self, *args: object) -> list[bool]:
        raise self.error

    def count_in_use(self) -> int:  # pragma: no cover - not reached
        return 0


def _transfer(scenario: str) -> Delivery:
    body = TransferSucceeded(
        scenario=scenario,
        project_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        transferred_at=datetime(2026, 12, 1, 9, tzinfo=UTC),
        mailboxes=["adele@contoso.com"],
    ).model_dump_json()
    return Delivery(
        body=body.encode(), routing_key="t.transfer.succeeded", message_id=None, correlation_id=None
    )


@pytest.mark.parametrize(
    "error",
    [
        ServiceUnavailable("cannot reach Redis at redis:6379 (ConnectionError)"),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    ],
    ids=["unreachable", "refusing-writes", "read-only-after-failover"],
)
def test_a_transfer_waits_for_redis_without_using_up_its_attempts(error):
    handler = TransferHandler(scenario="s", ledger=RedisAway(error))
    with pytest.raises(Exception) as raised:  # noqa: PT011 - what it is decides the fate
        handler(_transfer("s"))
    queue = topology_for("s").transfers
    decision = decide(raised.value, attempt=DEFAULT_MAX_ATTEMPTS, queue=queue)
    assert isinstance(decision, Retry), decision
    assert decision.counts is False
    assert decision.delay_seconds <= 10
