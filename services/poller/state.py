"""The poller's memory in Redis: the sync start, what it last read of each project, the
fingerprint of every task it published, and the run summaries.

Keys (every one carries the scenario's hash tag, so they share one Redis Cluster slot):

- ``pwasync:{S}:poller:start``: the sync start, a naive PWA wall-clock ISO time (set once);
- ``pwasync:{S}:poller:projects``: hash, project id -> ``{"modified", "type", "read_at"}``;
- ``pwasync:{S}:poller:tasks:<project id>``: hash, task id -> content fingerprint of the
  task as last published and, after a space, the revision it carried (UTC ISO; its removal
  orders after it); present exactly while the writer was told the task has events;
- ``pwasync:{S}:poller:runs``: list of run summaries (JSON, newest first, at most 200);
- ``pwasync:{S}:poller:deletion-guard``: the deletion guard's alarm (JSON) while removals are
  held back.

A task's fingerprint is written only after the broker confirmed its message, and a project's
state only after every task of it was handled, so a crash re-reads rather than skips.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

from common.redis_store import Keys, redis_errors
from services.poller.changes import ProjectState

MAX_RUNS_KEPT = 200


class PollerKeys:
    def __init__(self, keys: Keys) -> None:
        self.prefix = f"{keys.prefix}:poller"
        self.legacy_watermark = keys.watermark

    @property
    def start(self) -> str:
        return f"{self.prefix}:start"

    @property
    def projects(self) -> str:
        return f"{self.prefix}:projects"

    def tasks(self, project_id: str) -> str:
        return f"{self.prefix}:tasks:{project_id}"

    @property
    def runs(self) -> str:
        return f"{self.prefix}:runs"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:lock"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def processing(self) -> str:
        return f"{self.prefix}:processing"

    @property
    def deletion_guard(self) -> str:
        return f"{self.prefix}:deletion-guard"

    def tick(self, due: datetime) -> str:
        """One key per scheduled instant to the second, whatever its zone (naive = UTC)."""
        instant = due if due.tzinfo is not None else due.replace(tzinfo=UTC)
        return f"{self.prefix}:tick:{instant.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


class PollerState:
    def __init__(self, client: redis.Redis, keys: Keys, redis_url: str) -> None:
        self._redis = client
        self.keys = PollerKeys(keys)
        self._url = redis_url

    # --- the sync start ------------------------------------------------------------------

    def initialize_start(self, start: datetime) -> datetime:
        """Set the sync start unless one exists (the skeleton's watermark counts as one);
        return the one in force."""
        with redis_errors(self._url):
            legacy = self._redis.get(self.keys.legacy_watermark)
            self._redis.set(self.keys.start, legacy or start.isoformat(), nx=True)
            value = self._redis.get(self.keys.start)
        return datetime.fromisoformat(value) if value else start

    def start(self) -> datetime | None:
        with redis_errors(self._url):
            value = self._redis.get(self.keys.start)
        return datetime.fromisoformat(value) if value else None

    # --- projects and task fingerprints --------------------------------------------------

    def projects(self) -> dict[str, ProjectState]:
        with redis_errors(self._url):
            raw = self._redis.hgetall(self.keys.projects)
        return {pid: ProjectState.from_json(value) for pid, value in raw.items()}

    def save_project(self, project_id: str, state: ProjectState) -> None:
        with redis_errors(self._url):
            self._redis.hset(self.keys.projects, str(project_id), state.to_json())

    def forget_project(self, project_id: str) -> None:
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self.keys.projects, str(project_id))
            pipe.delete(self.keys.tasks(project_id))
            pipe.execute()

    def published_tasks(self, project_id: str) -> dict[str, str]:
        with redis_errors(self._url):
            raw = self._redis.hgetall(self.keys.tasks(project_id))
        return {tid: value.split(" ", 1)[0] for tid, value in raw.items()}

    def published_revisions(self, project_id: str) -> dict[str, datetime | None]:
        """The revision each task was last published with (None: recorded before revisions
        were kept), which its removal must order after."""
        with redis_errors(self._url):
            raw = self._redis.hgetall(self.keys.tasks(project_id))
        return {tid: _revision(value) for tid, value in raw.items()}

    def record_published(self, project_id: str, published: list[tuple[str, str, datetime]]) -> None:
        """Keep each published task's fingerprint and revision (task id, digest, revision)."""
        if not published:
            return
        mapping = {
            str(task_id): f"{digest} {revision.astimezone(UTC).isoformat()}"
            for task_id, digest, revision in published
        }
        with redis_errors(self._url):
            self._redis.hset(self.keys.tasks(project_id), mapping=mapping)

    def record_removed(self, project_id: str, task_ids: list[str]) -> None:
        if not task_ids:
            return
        with redis_errors(self._url):
            self._redis.hdel(self.keys.tasks(project_id), *(str(t) for t in task_ids))

    def count_published(self, project_ids: list[str]) -> int:
        """Tasks that have events now, over the given projects (one round trip)."""
        if not project_ids:
            return 0
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=False)
            for project_id in project_ids:
                pipe.hlen(self.keys.tasks(project_id))
            return sum(pipe.execute())

    # --- the deletion guard's alarm ------------------------------------------------------

    def raise_deletion_alarm(self, alarm: dict[str, Any]) -> None:
        with redis_errors(self._url):
            self._redis.set(self.keys.deletion_guard, json.dumps(alarm, sort_keys=True))

    def clear_deletion_alarm(self) -> None:
        with redis_errors(self._url):
            self._redis.delete(self.keys.deletion_guard)

    def deletion_alarm(self) -> dict[str, Any] | None:
        with redis_errors(self._url):
            value = self._redis.get(self.keys.deletion_guard)
        return json.loads(value) if value else None

    # --- run summaries -------------------------------------------------------------------

    def record_run(self, summary: dict[str, Any]) -> None:
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(self.keys.runs, json.dumps(summary, sort_keys=True))
            pipe.ltrim(self.keys.runs, 0, MAX_RUNS_KEPT - 1)
            pipe.execute()

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with redis_errors(self._url):
            raw = self._redis.lrange(self.keys.runs, 0, max(0, limit - 1))
        return [json.loads(item) for item in raw]


def _revision(value: str) -> datetime | None:
    _, _, revision = value.partition(" ")
    return datetime.fromisoformat(revision) if revision else None
