"""Which publish calls become sync requests: at most one per project per window, none lost.

The first call for a project asks for a sync at once (the lowest latency for the usual single
publish). Calls that arrive while its window is open are folded into one more request when the
window ends, so the last publish of a burst is always read after it happened, and a burst of
twenty publishes costs two syncs, not twenty. Plain data and the caller's clock: the thread
that publishes and its lock live in ``requester``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass
class _Window:
    ends: float
    # When the first call folded into this window's trailing request arrived (None: none yet).
    pending_since: float | None = None


@dataclass(frozen=True)
class Due:
    """A sync request to publish now, and when the oldest call it answers arrived."""

    project_id: uuid.UUID
    received_at: float


class PublishCoalescer:
    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._windows: dict[uuid.UUID, _Window] = {}

    def offer(self, project_id: uuid.UUID, now: float) -> Due | None:
        """A call arrived: returns the request to publish now, or None when it is folded."""
        window = self._windows.get(project_id)
        if window is None or now >= window.ends:
            self._windows[project_id] = _Window(ends=now + self._window)
            return Due(project_id, now)
        if window.pending_since is None:
            window.pending_since = now
        return None

    def due(self, now: float) -> list[Due]:
        """The trailing requests whose window has ended; a window without one is forgotten."""
        ready: list[Due] = []
        for project_id, window in list(self._windows.items()):
            if window.ends > now:
                continue
            if window.pending_since is None:
                del self._windows[project_id]
            else:
                ready.append(Due(project_id, window.pending_since))
                self._windows[project_id] = _Window(ends=now + self._window)
        return ready

    def next_deadline(self) -> float | None:
        return min((w.ends for w in self._windows.values()), default=None)

    def drain(self) -> list[Due]:
        """Every folded call's request, now (the process is stopping)."""
        pending = [
            Due(project_id, window.pending_since)
            for project_id, window in self._windows.items()
            if window.pending_since is not None
        ]
        self._windows.clear()
        return pending
