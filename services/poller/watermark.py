"""The poller's watermark: the ProjectModifiedDate of the newest project already read.

Stored in Redis as the PWA's own wall-clock value (no conversion), so the next query compares
like with like. It is written only after every task of the projects it covers was published
and confirmed by the broker, so a crash re-reads rather than skips.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import redis

from common.redis_store import Keys, redis_errors


def to_pwa_wall_clock(moment: datetime, pwa_zone: ZoneInfo) -> datetime:
    """An aware instant as the naive wall-clock time PWA would report for it."""
    return moment.astimezone(pwa_zone).replace(tzinfo=None)


class WatermarkStore:
    def __init__(self, client: redis.Redis, keys: Keys, redis_url: str) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url

    def get(self) -> datetime | None:
        with redis_errors(self._url):
            value = self._redis.get(self._keys.watermark)
        return datetime.fromisoformat(value) if value else None

    def initialize(self, start: datetime) -> datetime:
        """Set the watermark to ``start`` unless one exists; return the one in force."""
        with redis_errors(self._url):
            self._redis.set(self._keys.watermark, start.isoformat(), nx=True)
            value = self._redis.get(self._keys.watermark)
        return datetime.fromisoformat(value) if value else start

    def advance(self, to: datetime) -> None:
        """Move the watermark forward to ``to``; never backwards."""
        current = self.get()
        if current is None or to > current:
            with redis_errors(self._url):
                self._redis.set(self._keys.watermark, to.isoformat())
