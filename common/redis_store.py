"""Redis at the edge: the connection and the key layout of a scenario.

Every key of a scenario shares the hash tag ``{scenario}``, so the keys one operation touches
are in one Redis Cluster slot (Lua scripts and MULTI need that), and several scenarios can share
one Redis without seeing each other's keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from common.errors import ServiceUnavailable

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


def redis_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


def connect_redis(url: str) -> redis.Redis:
    """A client with bounded reconnect retries; ``ping`` it to learn whether Redis is there."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=3),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Translate redis-py's connection failures into ``ServiceUnavailable``."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise ServiceUnavailable(
            f"cannot reach Redis at {redis_address(url)} ({exc.__class__.__name__})"
        ) from None


class Keys:
    """Every Redis key of one scenario."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.prefix = f"pwasync:{{{scenario}}}"

    @property
    def watermark(self) -> str:
        """Poller: ProjectModifiedDate of the newest project already read (PWA wall clock)."""
        return f"{self.prefix}:poller:watermark"

    def task_events(self, task_id: object) -> str:
        """Writer: hash of assignee resource id -> the event written for them (JSON)."""
        return f"{self.prefix}:events:{task_id}"

    def endpoint(self, task_id: object) -> str:
        """Ledger: the task's latest endpoint window (JSON); expires when the window ends."""
        return f"{self.prefix}:endpoint:{task_id}"

    @property
    def ledger_endpoints(self) -> str:
        """Ledger: sorted set of task ids scored by the end of their window (ms)."""
        return f"{self.prefix}:ledger:endpoints"

    @property
    def ledger_claims(self) -> str:
        """Ledger: sorted set of task ids holding a slot for their first transfer, scored by the
        end of the claim's lease (ms)."""
        return f"{self.prefix}:ledger:claims"

    @property
    def ledger_held(self) -> str:
        """Ledger: sorted set of task ids held back by the endpoint limit, scored by since (ms)."""
        return f"{self.prefix}:ledger:held"

    @property
    def ledger_held_payloads(self) -> str:
        """Ledger: hash of held task id -> its latest task.changed body."""
        return f"{self.prefix}:ledger:held-payloads"

    def ledger_day(self, day: str) -> str:
        """Ledger: number of endpoints allocated on a UTC day (YYYY-MM-DD)."""
        return f"{self.prefix}:ledger:allocated:{day}"

    @property
    def all_pattern(self) -> str:
        return f"{self.prefix}:*"
