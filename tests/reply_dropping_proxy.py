"""A TCP forwarder in front of Redis that loses one reply: the first command whose request
holds a marker (``EVALSHA``, ``EXEC``) reaches Redis and runs there, but its reply never comes
back and the connection dies, as when a network path drops after the request went out.

Redis's own refusals (``-NOSCRIPT``: the script is loaded and the command sent again) pass
through, so the reply lost is the one of a command that took effect.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.ports import free_port
from tests.tcp_proxy import accepted


class ReplyDroppingProxy:
    def __init__(self, target_host: str, target_port: int, marker: bytes) -> None:
        self._target = (target_host, target_port)
        self._marker = marker.upper()
        self.port = free_port()
        self.dropped = 0
        self._armed = True  # drop one reply only
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _accept(self) -> None:
        for client, upstream in accepted(self._listener, self._target):
            watching = threading.Event()  # a marked request went out on this connection
            threading.Thread(
                target=self._requests, args=(client, upstream, watching), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(upstream, client, watching), daemon=True
            ).start()

    def _requests(self, source: socket.socket, sink: socket.socket, watching) -> None:  # noqa: ANN001
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self._lock:
                    if self._armed and self._marker in data.upper():
                        watching.set()
                sink.sendall(data)
        _close(source, sink)

    def _replies(self, source: socket.socket, sink: socket.socket, watching) -> None:  # noqa: ANN001
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if watching.is_set():
                    watching.clear()
                    with self._lock:
                        if self._armed and not data.startswith(b"-NOSCRIPT"):
                            self._armed = False
                            self.dropped += 1
                            break  # the reply is lost with the connection
                sink.sendall(data)
        _close(source, sink)

    def close(self) -> None:
        self._listener.close()


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
