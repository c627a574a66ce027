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

from datetime import UTC, datetime

from common.messages import TaskChanged


def order_key(task: TaskChanged) -> str:
    return f"{_utc_text(task.revision)}|{_utc_text(task.read_at)}"


def _utc_text(moment: datetime) -> str:
    """``%Y-%m-%dT%H:%M:%S.%fZ`` of the UTC instant, from ``isoformat`` (half strftime's
    time; the writer computes a key per event), which leaves out a zero microsecond."""
    text = moment.astimezone(UTC).isoformat()[:-6]  # without "+00:00"
    return f"{text}Z" if len(text) == 26 else f"{text}.000000Z"


def is_stale(key: str, newest_accepted: str | None) -> bool:
    return newest_accepted is not None and key < newest_accepted
