"""The writer process: consumes ``task.changed`` and writes Outlook events through Graph.

Threads: pika's I/O thread; ``PWASYNC_WRITER_CONCURRENCY`` handler threads (= prefetch), which
mostly wait for Graph; one dispatcher thread and a few sender threads that batch the handlers'
Graph requests inside the per-mailbox limits shared in Redis; one thread renewing task leases
and one renewing Graph slots. Every one of these loops survives any error and reports its
heartbeat on ``/healthz``; a handler waits for Graph at most ``graph_answer_timeout`` since the
last answer, so its task lease is renewed only while it makes progress.

On SIGTERM the consumer stops taking work and lets in-flight handlers finish (the dispatcher
keeps sending for them; requests that would have to wait out a 429 fail over to a delayed
retry instead), then the dispatcher and the connections close.
"""

from __future__ import annotations

import threading

import structlog

from common import metrics
from common.health import run_every
from common.http import new_http_client
from common.identity import GraphAppTokens
from common.logging import get_logger
from common.mailboxes import MailboxPolicy
from common.messages import TransferSucceeded
from common.run_events import RunEvents
from common.settings import Settings
from common.topology import routing_key_transfer_succeeded
from services.event_writer.dispatcher import GraphDispatcher
from services.event_writer.endpoint_gate import EndpointGate
from services.event_writer.event_mapping import EventRules
from services.event_writer.graph import GraphTransport
from services.event_writer.handler import TaskChangedHandler
from services.event_writer.mailbox_limits import GraphLimitKeys, MailboxLimiter
from services.event_writer.task_store import LEASE, TaskStore
from services.ledger.endpoints import EndpointLedger
from services.runtime import open_infrastructure

log = get_logger(__name__)

SENDERS = 16  # $batch requests in flight per writer
MAX_THROTTLE_WAITS = 3  # a throttled request is sent again at most this often ...
MAX_THROTTLE_WAIT_SECONDS = 30.0  # ... after a Retry-After of at most this


def graph_answer_timeout(http_timeout: float) -> float:
    """The longest a request may rightly wait in the dispatcher: every send (the first, one
    per throttle wait, one after a 401) up to the HTTP timeout, every throttle wait, and a
    minute for slots held by other replicas. Longer means stuck: the handling gives up."""
    sends = MAX_THROTTLE_WAITS + 2
    return sends * http_timeout + MAX_THROTTLE_WAITS * MAX_THROTTLE_WAIT_SECONDS + 60.0


def event_rules(settings: Settings) -> EventRules:
    return EventRules(
        show_as=settings.event_show_as,
        all_day=settings.event_all_day,
        reminder_minutes=settings.event_reminder,
        category=settings.event_category,
        mailboxes=MailboxPolicy.from_settings(settings),
    )


def run_writer(settings: Settings, stop: threading.Event) -> None:
    settings.require_graph()
    infra = open_infrastructure(settings, "writer", stop, pipelined=True)
    concurrency = settings.writer_concurrency
    http = new_http_client(
        ca_bundle=settings.ca_bundle,
        timeout=settings.http_timeout_seconds,
        max_connections=SENDERS + 4,
    )
    transport = GraphTransport(http, settings.graph_url, GraphAppTokens(settings, http))
    limiter = MailboxLimiter(
        infra.redis,
        # Graph's limits are the app's, whatever scenario uses it (README "Inside Graph's
        # limits"): keyed by tenant and client id, not by scenario.
        GraphLimitKeys.of_app(settings),
        infra.redis_url,
        concurrency=settings.graph_mailbox_concurrency,
        budget=settings.graph_mailbox_budget,
    )
    dispatcher = GraphDispatcher(
        transport,
        limiter,
        batch_size=settings.graph_batch_size,
        senders=SENDERS,
        max_throttle_waits=MAX_THROTTLE_WAITS,
        max_wait_seconds=MAX_THROTTLE_WAIT_SECONDS,
        # A send is one HTTP request (the token's, before it, has its own timeout).
        max_send_seconds=2 * settings.http_timeout_seconds + 60.0,
        stop=stop,
    ).start()
    metrics.GRAPH_REQUESTS_WAITING.set_function(dispatcher.waiting)
    store = TaskStore(infra.redis, infra.keys, infra.redis_url)
    leases_stop = threading.Event()
    renew_every = LEASE.total_seconds() / 3
    # Same pace after a failed round: a longer wait would let the leases in use run out.
    run_every(
        "task-lease-renewer", renew_every, store.renew_leases, leases_stop, max_backoff=renew_every
    )
    limiter.keep_slots(leases_stop)
    routing_key = routing_key_transfer_succeeded(settings.scenario)

    def publish_transfer(message: TransferSucceeded) -> None:
        infra.publish(routing_key, message)

    run_events = RunEvents(infra.redis, infra.keys, infra.redis_url)

    def count_outcome(counts: dict[str, int]) -> None:
        run_events.add(structlog.contextvars.get_contextvars().get("correlation_id"), counts)

    gate = None
    if settings.endpoint_limit:
        ledger = EndpointLedger(infra.redis, infra.keys, infra.redis_url)
        gate = EndpointGate(ledger, settings.endpoint_limit)
    handler = TaskChangedHandler(
        store=store,
        submit=dispatcher.submit,
        publish_transfer=publish_transfer,
        rules=event_rules(settings),
        stop=stop,
        gate=gate,
        count_outcome=count_outcome,
        # A message waiting for a lease (or a probe) held by a writer that died waits only
        # briefly, then goes to a retry tier as a fresh message: every kill of the writer that
        # holds it meanwhile counts towards the broker's delivery limit (20), after which the
        # broker dead-letters it though it is fine.
        lease_wait_seconds=1.0,
        probe_wait_seconds=3.0,
        graph_answer_timeout=graph_answer_timeout(settings.http_timeout_seconds),
    )
    log.info(
        "writer starting",
        concurrency=concurrency,
        graph=settings.graph_url,
        batch_size=settings.graph_batch_size,
    )
    try:
        infra.consumer(infra.topology.task_changes, handler, concurrency=concurrency).run(stop)
    finally:
        dispatcher.close(timeout=1.0)
        leases_stop.set()
        infra.close()
        http.close()
        log.info("writer stopped", graph_requests=dict(dispatcher.sent))
