"""At most N Graph requests in flight per mailbox from this process.

Outlook allows 4 concurrent requests per app and mailbox; a fifth is answered 429. Tasks share
assignees, so without a gate a writer with 8 handler threads would trip that limit on its own.
(Across several writer replicas the limit is shared; that is enforced in Redis by a later
change, and 429s are honoured meanwhile.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

OUTLOOK_CONCURRENCY_PER_MAILBOX = 4


class MailboxGate:
    def __init__(self, per_mailbox: int = OUTLOOK_CONCURRENCY_PER_MAILBOX) -> None:
        self._per_mailbox = per_mailbox
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}

    @contextmanager
    def slot(self, mailbox: str) -> Iterator[None]:
        key = mailbox.lower()
        with self._lock:
            semaphore = self._semaphores.get(key)
            if semaphore is None:
                semaphore = self._semaphores[key] = threading.BoundedSemaphore(self._per_mailbox)
        with semaphore:
            yield
