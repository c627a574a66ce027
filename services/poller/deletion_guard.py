"""The deletion circuit breaker: a run that would take too many events away pauses and asks.

A PWA that answers with an empty project list, a flag field renamed by mistake, a filter gone
wrong: each looks to the poller like every task leaving the selection. Instead of deleting
calendars wholesale, a run whose removals exceed ``PWASYNC_DELETION_GUARD_PERCENT`` of the
synced tasks (and ``PWASYNC_DELETION_GUARD_MIN_TASKS``) publishes its upserts, holds its
removals back, raises an alarm (an error log line, and ``pwasync status``), and repeats them
on every run until an operator confirms with ``pwasync sync-now --allow-deletions``.
The share is counted in tasks (each holds one event per assignee with a mailbox).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeletionGuard:
    percent: int
    min_tasks: int

    def trips(self, removing: int, synced: int) -> bool:
        """Would removing ``removing`` of ``synced`` tasks need an operator's confirmation?"""
        if removing <= self.min_tasks or self.percent >= 100:
            return False
        return removing * 100 > self.percent * synced
