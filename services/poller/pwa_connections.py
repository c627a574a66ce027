"""HTTP clients of one connection each, lent to one request at a time.

A Windows sign-in (Negotiate, NTLM) authenticates a connection, not a request: the legs of a
handshake must travel over the connection whose challenge they answer. One pooled client used
by several threads at once (the poller's parallel reads) would send them over whichever
connection is idle, and IIS refuses the sign-in. So each request borrows a client of its own
connection for all of its legs; the client, authenticated, goes back for the next request,
and there are never more of them than requests made at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import httpx


class ConnectionLeases:
    def __init__(self, new_client: Callable[[], httpx.Client]) -> None:
        self._new_client = new_client
        self._idle: list[httpx.Client] = []
        self._all: list[httpx.Client] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.Client]:
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._new_client()
            with self._lock:
                self._all.append(client)
        try:
            yield client
        finally:
            with self._lock:
                self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            clients, self._all, self._idle = self._all, [], []
        for client in clients:
            client.close()
