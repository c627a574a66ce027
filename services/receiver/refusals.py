"""Refused calls are logged once per source and reason: a misconfigured farm, or someone
probing the port, must not flood the log, and the first line says what to fix."""

from __future__ import annotations

import threading
from collections import OrderedDict

from common.logging import get_logger
from services.receiver.soap import RefusedCall

log = get_logger(__name__)

#: Sources remembered; the oldest is forgotten first (and would be logged again).
MAX_REMEMBERED = 1024


class RefusalLog:
    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max = max_remembered
        self._lock = threading.Lock()

    def report(self, source: str, refusal: RefusedCall) -> bool:
        """Log the refusal unless this source was refused for this reason before."""
        key = (source, refusal.reason)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._max:
                self._seen.popitem(last=False)
        log.warning(
            "publish receiver refused a call (logged once per source and reason)",
            source=source,
            reason=refusal.reason,
            detail=refusal.detail,
        )
        return True
