"""``/healthz``, ``/readyz`` and ``/metrics`` on ``PWASYNC_HTTP_PORT`` (0.0.0.0).

- ``/healthz``: the process's loops are alive (each consumer's I/O loop touched its heartbeat
  recently, connected or reconnecting). A failing liveness probe means "restart me".
- ``/readyz``: the broker connection is up and consuming, and Redis answers PING. A failing
  readiness probe means "do not count on me now"; it recovers by itself.
- ``/metrics``: Prometheus text format.

A standard-library threading server in a daemon thread: three tiny endpoints do not justify a
web framework in every service.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common import metrics  # noqa: F401 - the metrics served at /metrics are defined there
from common.logging import get_logger

log = get_logger(__name__)

Check = Callable[[], bool]


class HealthServer:
    def __init__(self, port: int, *, liveness: dict[str, Check], readiness: dict[str, Check]):
        self._liveness = liveness
        self._readiness = readiness
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server._answer(self)

            def log_message(self, *_args: object) -> None:
                pass  # probes every few seconds would drown the service's own log

        self._httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="health-server", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("serving /healthz, /readyz and /metrics", port=self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(request, 200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            checks = self._liveness if path == "/healthz" else self._readiness
            results = {name: _safe(check) for name, check in checks.items()}
            ok = all(results.values())
            body = json.dumps({"status": "ok" if ok else "failing", "checks": results})
            self._send(request, 200 if ok else 503, body.encode(), "application/json")
        else:
            self._send(request, 404, b'{"error": "not found"}', "application/json")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


def _safe(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - a probe that raises is a failing probe
        return False
