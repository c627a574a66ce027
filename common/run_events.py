"""What each sync run did in Outlook: events created, updated, deleted and failed.

A run's messages carry its correlation id; each writer handling adds its effects to a hash per
correlation id (``pwasync:{S}:runs:events:<correlation id>``, kept 30 days), and
``pwasync runs`` adds them to the poller's run summary.
"""

from __future__ import annotations

from datetime import timedelta

import redis
import redis.asyncio

from common.redis_store import Keys, redis_errors

KEPT = timedelta(days=30)
EFFECTS = ("created", "updated", "deleted", "failed")


class RunEventCounter:
    """The writer's side, on the asyncio client: adds one handling's effects (one MULTI)."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, redis_url: str) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url

    async def add(self, correlation_id: str | None, counts: dict[str, int]) -> None:
        if not correlation_id or not counts:
            return
        key = self._keys.run_events(correlation_id)
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=True)
            for effect, count in counts.items():
                pipe.hincrby(key, effect, count)
            pipe.expire(key, int(KEPT.total_seconds()))
            await pipe.execute()


class RunEvents:
    """The reports' side (``pwasync runs``, ``status``)."""

    def __init__(self, client: redis.Redis, keys: Keys, redis_url: str) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url

    def totals(self, correlation_ids: list[str]) -> dict[str, int]:
        totals = dict.fromkeys(EFFECTS, 0)
        ids = [c for c in correlation_ids if c]
        if not ids:
            return totals
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=False)
            for correlation_id in ids:
                pipe.hgetall(self._keys.run_events(correlation_id))
            for counts in pipe.execute():
                for effect, count in counts.items():
                    totals[effect] = totals.get(effect, 0) + int(count)
        return totals
