"""The billing rule: one endpoint per unique task per 30 calendar days.

An endpoint is allocated at the first successful transfer of a task and lasts 30 days from that
transfer; transfers inside the window allocate nothing, whatever the number of assignees,
redeliveries, replicas or syncs. A key per (scenario, task) set with ``NX`` and an absolute
expiry makes that one atomic Redis command: the key exists exactly while the endpoint is held.

The window starts at the transfer's own time (carried by the message), not at the time the
ledger happens to process it, so a ledger that was down for an hour counts the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import redis

from common.redis_store import Keys, redis_errors

WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Endpoint:
    task_id: UUID
    project_id: UUID
    allocated_at: datetime
    expires_at: datetime


class EndpointLedger:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        redis_url: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url
        self._clock = clock

    def allocate(self, task_id: UUID, project_id: UUID, transferred_at: datetime) -> bool:
        """Record a successful transfer. True when it allocated a new endpoint."""
        expires_at = transferred_at + WINDOW
        if expires_at <= self._clock():
            # The window this transfer would open has already closed (a very late message).
            return False
        value = json.dumps(
            {
                "task_id": str(task_id),
                "project_id": str(project_id),
                "allocated_at": transferred_at.astimezone(UTC).isoformat(),
            }
        )
        with redis_errors(self._url):
            created = self._redis.set(
                self._keys.endpoint(task_id),
                value,
                nx=True,
                pxat=int(expires_at.timestamp() * 1000),
            )
        return bool(created)

    def in_use(self) -> list[Endpoint]:
        """Every endpoint held now, oldest first."""
        endpoints = []
        with redis_errors(self._url):
            keys = list(self._redis.scan_iter(match=self._keys.endpoint_pattern, count=1000))
            values = self._redis.mget(keys) if keys else []
        for value in values:
            if value is None:  # expired between SCAN and MGET
                continue
            data = json.loads(value)
            allocated_at = datetime.fromisoformat(data["allocated_at"])
            endpoints.append(
                Endpoint(
                    task_id=UUID(data["task_id"]),
                    project_id=UUID(data["project_id"]),
                    allocated_at=allocated_at,
                    expires_at=allocated_at + WINDOW,
                )
            )
        return sorted(endpoints, key=lambda e: (e.allocated_at, str(e.task_id)))
