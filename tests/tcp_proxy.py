"""A TCP forwarder a test can cut: every connection through it dies at once, as when a broker
node restarts or a network path drops, while new connections go through again."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.ports import free_port


def accepted(
    listener: socket.socket, target: tuple[str, int]
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """Each connection made to ``listener``, with a new connection of its own to ``target``,
    until the listener is closed (a connection the target refuses is dropped)."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        yield client, upstream


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        for client, upstream in accepted(self._listener, self._target):
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Drop every live connection; returns how many sockets were cut."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(sockets)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
