"""Which of two snapshots of a task is newer: the writer's ordering key (pure).

Two messages about one task can be handled at once by different replicas, or arrive out of
order after a retry. The writer never lets an older snapshot undo a newer one: under the task's
lease it compares the message's key with the newest key it has accepted for the task, applies
only what is not older, and records the newer key before writing to Graph. A removal leaves
that record behind as a tombstone, so a late upsert cannot bring the events back.

The key is the project's publish time (``revision``: ProjectModifiedDate; every change to a
task in PWA needs a publish) and then the poller's read time (``read_at``), which orders two
snapshots of the same publish, e.g. one sent again after a resource's e-mail address changed.
Both are fixed-width UTC strings, so Redis compares them as strings. An equal key is the same
snapshot again (a redelivery) and is applied; applying it changes nothing.
"""

from __future__ import annotations

from datetime import UTC

from common.messages import TaskChanged

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def order_key(task: TaskChanged) -> str:
    revision = task.revision.astimezone(UTC).strftime(_FORMAT)
    read_at = task.read_at.astimezone(UTC).strftime(_FORMAT)
    return f"{revision}|{read_at}"


def is_stale(key: str, newest_accepted: str | None) -> bool:
    return newest_accepted is not None and key < newest_accepted
