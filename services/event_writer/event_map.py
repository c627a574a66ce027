"""The writer's bookkeeping: which event it wrote for each (task, assignee), in Redis.

One hash per task (``…:events:<task id>``), one field per assignee resource id, holding the
mailbox, the event id and the fingerprint of what was written. A hash per task lets one read
return every event of a task, which is what updates and removals need.
"""

from __future__ import annotations

import json
from uuid import UUID

import redis

from common.errors import PermanentError
from common.redis_store import Keys, redis_errors
from services.event_writer.planner import RecordedEvent


class EventMap:
    def __init__(self, client: redis.Redis, keys: Keys, redis_url: str) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url

    def load(self, task_id: UUID) -> dict[UUID, RecordedEvent]:
        with redis_errors(self._url):
            raw = self._redis.hgetall(self._keys.task_events(task_id))
        recorded = {}
        for field, value in raw.items():
            try:
                data = json.loads(value)
                resource_id = UUID(field)
                recorded[resource_id] = RecordedEvent(
                    resource_id=resource_id,
                    mailbox=data["mailbox"],
                    event_id=data["event_id"],
                    fingerprint=data.get("fingerprint", ""),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise PermanentError(f"corrupt event map entry for task {task_id}: {exc}") from None
        return recorded

    def record(self, task_id: UUID, event: RecordedEvent) -> None:
        value = json.dumps(
            {"mailbox": event.mailbox, "event_id": event.event_id, "fingerprint": event.fingerprint}
        )
        with redis_errors(self._url):
            self._redis.hset(self._keys.task_events(task_id), str(event.resource_id), value)

    def forget(self, task_id: UUID, resource_id: UUID) -> None:
        with redis_errors(self._url):
            self._redis.hdel(self._keys.task_events(task_id), str(resource_id))
