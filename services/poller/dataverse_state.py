"""What Planner premium change detection keeps in Redis (next to the poller's own keys).

- ``pwasync:{S}:dataverse:tables``: hash, entity set -> JSON ``{"delta", "watermark",
  "reconciled_at"}`` (the delta link to read next, or the watermark and the last full sweep);
- ``pwasync:{S}:dataverse:rows:<entity set>``: hash, row id -> ``<project id> <modifiedon>``;
- ``pwasync:{S}:dataverse:stamps``: hash, project id -> when its content last changed (UTC).

One poll's findings are written in one MULTI: the stamps that moved with the rows and links
that moved them, so a crash either keeps both or neither (the next poll reads again).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import redis

from common.redis_store import Keys, redis_errors
from services.poller.dataverse_changes import Entry, Fold


@dataclass
class TableState:
    delta: str | None = None
    watermark: str | None = None
    reconciled_at: str | None = None

    @classmethod
    def from_json(cls, text: str | None) -> TableState:
        data: dict[str, Any] = json.loads(text) if text else {}
        return cls(**{k: data.get(k) for k in ("delta", "watermark", "reconciled_at")})


class DataverseState:
    """``read_only`` (a dry run): what a poll learns is used, and not kept."""

    def __init__(
        self, client: redis.Redis, keys: Keys, redis_url: str, *, read_only: bool = False
    ) -> None:
        self._redis = client
        self._read_only = read_only
        self._prefix = f"{keys.prefix}:dataverse"
        self._url = redis_url

    def _rows_key(self, entity_set: str) -> str:
        return f"{self._prefix}:rows:{entity_set}"

    @property
    def _tables_key(self) -> str:
        return f"{self._prefix}:tables"

    @property
    def _stamps_key(self) -> str:
        return f"{self._prefix}:stamps"

    def tables(self) -> dict[str, TableState]:
        with redis_errors(self._url):
            raw = self._redis.hgetall(self._tables_key)
        return {name: TableState.from_json(value) for name, value in raw.items()}

    def entries(self, entity_set: str, row_ids: set[str]) -> dict[str, Entry]:
        if not row_ids:
            return {}
        ids = sorted(row_ids)
        with redis_errors(self._url):
            values = self._redis.hmget(self._rows_key(entity_set), ids)
        return {i: Entry.from_text(v) for i, v in zip(ids, values, strict=True) if v}

    def all_entries(self, entity_set: str) -> dict[str, Entry]:
        with redis_errors(self._url):
            raw = self._redis.hgetall(self._rows_key(entity_set))
        return {i: Entry.from_text(v) for i, v in raw.items()}

    def stamps(self) -> dict[str, datetime]:
        with redis_errors(self._url):
            raw = self._redis.hgetall(self._stamps_key)
        return {p: datetime.fromisoformat(v) for p, v in raw.items()}

    def commit(
        self, fold: Fold, stamps: dict[str, datetime], tables: dict[str, TableState]
    ) -> None:
        if self._read_only:
            return
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=True)
            for entity_set, entries in fold.keep.items():
                if entries:
                    mapping = {i: e.to_text() for i, e in entries.items()}
                    pipe.hset(self._rows_key(entity_set), mapping=mapping)
            for entity_set, row_ids in fold.drop.items():
                if row_ids:
                    pipe.hdel(self._rows_key(entity_set), *sorted(row_ids))
            if stamps:
                mapping = {p: s.isoformat() for p, s in stamps.items()}
                pipe.hset(self._stamps_key, mapping=mapping)
            if tables:
                mapping = {n: json.dumps(asdict(t), sort_keys=True) for n, t in tables.items()}
                pipe.hset(self._tables_key, mapping=mapping)
            pipe.execute()

    def forget_stamps(self, project_ids: set[str]) -> None:
        if project_ids and not self._read_only:
            with redis_errors(self._url):
                self._redis.hdel(self._stamps_key, *sorted(project_ids))
