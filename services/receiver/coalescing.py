"""Which publish calls become sync requests: few per project, each one soon, none lost.

The first call for a project asks for a sync at once (the lowest latency for the usual single
publish). Calls that arrive while its window is open are folded into one more request, sent
once the calls have paused for a moment (``quiet``) or when the window ends, whichever comes
first: the last publish of a burst is always read after it happened, a burst of twenty
publishes costs two syncs, not twenty, and a lone later publish waits only the pause. Plain
data and the caller's clock: the thread that publishes and its lock live in ``requester``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

#: How long calls must pause before the folded ones are sent (at most the window).
QUIET_SECONDS = 0.25


@dataclass
class _Window:
    ends: float
    # The first and the latest call folded into this window's trailing request (None: none).
    pending_since: float | None = None
    last_call: float | None = None


@dataclass(frozen=True)
class Due:
    """A sync request to publish now, and when the oldest call it answers arrived."""

    project_id: uuid.UUID
    received_at: float


class PublishCoalescer:
    def __init__(self, window_seconds: float, quiet_seconds: float = QUIET_SECONDS) -> None:
        self._window = window_seconds
        self._quiet = min(quiet_seconds, window_seconds)
        self._windows: dict[uuid.UUID, _Window] = {}

    def offer(self, project_id: uuid.UUID, now: float) -> Due | None:
        """A call arrived: returns the request to publish now, or None when it is folded."""
        window = self._windows.get(project_id)
        if window is None or now >= window.ends:
            self._windows[project_id] = _Window(ends=now + self._window)
            return Due(project_id, now)
        if window.pending_since is None:
            window.pending_since = now
        window.last_call = now
        return None

    def due(self, now: float) -> list[Due]:
        """The trailing requests that are due; a window that ended without one is forgotten."""
        ready: list[Due] = []
        for project_id, window in list(self._windows.items()):
            if window.pending_since is None:
                if window.ends <= now:
                    del self._windows[project_id]
            elif self._deadline(window) <= now:
                ready.append(Due(project_id, window.pending_since))
                self._windows[project_id] = _Window(ends=now + self._window)
        return ready

    def next_deadline(self) -> float | None:
        return min((self._deadline(w) for w in self._windows.values()), default=None)

    def drain(self) -> list[Due]:
        """Every folded call's request, now (the process is stopping)."""
        pending = [
            Due(project_id, window.pending_since)
            for project_id, window in self._windows.items()
            if window.pending_since is not None
        ]
        self._windows.clear()
        return pending

    def _deadline(self, window: _Window) -> float:
        if window.last_call is None:
            return window.ends
        return min(window.ends, window.last_call + self._quiet)
