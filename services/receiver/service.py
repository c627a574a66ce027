"""``pwasync receiver``: Project Server's publish calls become scoped sync requests.

Three parts, each with one job: an HTTP server on ``PWASYNC_RECEIVER_PORT`` that answers each
call at once (``endpoint`` decides what), the ``SyncRequester`` loop that coalesces calls and
publishes ``sync.requested`` through RabbitMQ, and the health server on ``PWASYNC_HTTP_PORT``.
The poller does the rest, as for ``sync-now --project``: one run at a time, requests arriving
meanwhile folded into one more run. Polling stays the net for calls that never come.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

from common import metrics
from common.errors import ConfigError
from common.health import serve_health
from common.logging import get_logger
from common.messages import SyncRequested, encode
from common.rabbit import Publisher, RabbitConnector
from common.redis_store import Keys, connect_redis_for, reply_text
from common.settings import Settings
from common.topology import ROUTING_KEY_SYNC_REQUESTED
from services.receiver.coalescing import PublishCoalescer
from services.receiver.endpoint import MAX_BODY_BYTES, Answer, CallPolicy, OurSite, refused
from services.receiver.refusals import RefusalLog
from services.receiver.requester import SyncRequester
from services.runtime import service_topology

log = get_logger(__name__)

SITE_ID_REFRESH_SECONDS = 60.0
DEBUG_BODY_BYTES = 4096


class SiteIdCache:
    """The site collection id ``events register`` stored, re-read at most once a minute."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client, self._key = client, keys.receiver_site
        self._value: uuid.UUID | None = None
        self._read_at = float("-inf")

    def __call__(self) -> uuid.UUID | None:
        if time.monotonic() - self._read_at >= SITE_ID_REFRESH_SECONDS:
            self._read_at = time.monotonic()
            try:
                stored = self._client.get(self._key)
                self._value = uuid.UUID(reply_text(stored))
            except (redis.RedisError, TypeError, ValueError, AttributeError):
                pass  # unknown or unreadable: keep what we had; WssUrl and the secret still hold
        return self._value


class ReceiverServer:
    """The HTTP side: reads the body within its limit, sends the policy's answer, then hands
    an accepted call to the requester (after the answer: the server's call has a timeout)."""

    def __init__(
        self, port: int, policy: CallPolicy, requester: SyncRequester, refusals: RefusalLog
    ) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                owner._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                owner._send(self, refused(405, "method", "only POST is served"))

            def log_message(self, *_args: object) -> None:
                pass  # the path holds the secret: never the stdlib's access log

        self._policy, self._requester, self._refusals = policy, requester, refusals
        self._httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="receiver-http", daemon=True
        )

    def start(self) -> ReceiverServer:
        self._thread.start()
        log.info("publish receiver listening", port=self.port)
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        received_at = time.monotonic()
        metrics.RECEIVER_CALLS.inc()
        answer = self._read_and_answer(request)
        self._send(request, answer)
        source = request.client_address[0]
        if answer.refusal is not None:
            metrics.RECEIVER_REFUSED.labels(answer.refusal.reason).inc()
            self._refusals.report(source, answer.refusal)
            return
        call = answer.call
        assert call is not None
        log.info(
            "publish call received",
            project_id=str(call.project_id),
            project_name=call.project_name,
            job_id=call.job_id,
            source=source,
        )
        self._requester.announce(call.project_id, received_at)

    def _read_and_answer(self, request: BaseHTTPRequestHandler) -> Answer:
        length_header = request.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            request.close_connection = True
            return refused(411, "no_length", "the call has no Content-Length")
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            request.close_connection = True  # the unread body must not be taken for a request
            return refused(413, "too_large", f"a body of {length} bytes")
        body = request.rfile.read(length)
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer = self._policy.answer_post(request.path, headers, body)
        if answer.call is not None or answer.refusal and answer.refusal.reason != "secret":
            # The first real farm settles the call's unpublished wire form (docs/architecture.md).
            log.debug(
                "publish receiver request",
                content_type=headers.get("content-type"),
                soap_action=headers.get("soapaction"),
                body=body[:DEBUG_BODY_BYTES].decode("utf-8", "replace"),
            )
        return answer

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, answer: Answer) -> None:
        request.send_response(answer.status)
        request.send_header("Content-Type", answer.content_type)
        request.send_header("Content-Length", str(len(answer.body)))
        if request.close_connection:
            request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(answer.body)
        request.wfile.flush()


def sync_publisher(publisher: Publisher, scenario: str):  # noqa: ANN201
    """Publish one scoped ``sync.requested`` for the projects, with a correlation id of its own."""

    def publish(project_ids: list[uuid.UUID]) -> None:
        request = SyncRequested(
            scenario=scenario,
            project_ids=project_ids,
            trigger="publish",
            requested_at=datetime.now(UTC),
        )
        correlation_id = str(uuid.uuid4())
        publisher.publish(
            ROUTING_KEY_SYNC_REQUESTED, encode(request), correlation_id=correlation_id
        )
        log.info(
            "sync requested for published projects",
            project_ids=[str(p) for p in project_ids],
            correlation_id=correlation_id,
        )

    return publish


def run_receiver(settings: Settings, stop: threading.Event) -> None:
    assert settings.receiver_secret is not None  # require_receiver ran first
    connector = RabbitConnector(
        settings.amqp_url.get_secret_value(),
        connection_name=f"pwasync-receiver-{settings.scenario}",
    )
    publisher = Publisher(connector, service_topology(settings))
    client = connect_redis_for(settings)
    requester = SyncRequester(
        PublishCoalescer(settings.receiver_coalesce_seconds),
        sync_publisher(publisher, settings.scenario),
    )
    policy = CallPolicy(
        settings.receiver_secret.get_secret_value(),
        OurSite(settings.pwa_url, SiteIdCache(client, Keys(settings.scenario))),
    )
    try:
        server = ReceiverServer(settings.receiver_port, policy, requester, RefusalLog()).start()
    except OSError as exc:
        raise ConfigError(
            f"PWASYNC_RECEIVER_PORT: cannot listen on port {settings.receiver_port} "
            f"({exc.strerror})"
        ) from None
    health = serve_health(
        settings.http_port,
        liveness={"http": server.alive},  # the requester's loop reports its own heartbeat
        readiness={"broker": lambda: requester.failing_since is None},
    )
    loop = threading.Thread(target=requester.run, args=(stop,), name="sync-requester")
    loop.start()
    try:
        stop.wait()
    finally:
        server.stop()  # no new calls; then the requester flushes what it holds
        loop.join(timeout=15)
        if health is not None:
            health.stop()
        publisher.close()
        client.close()
