"""The writer process: consumes ``task.changed`` and writes Outlook events through Graph.

One event loop does it all (uvloop's, unless ``PWASYNC_WRITER_EVENT_LOOP=asyncio``): the
consumer (aio-pika) runs each delivery as a task, up to ``PWASYNC_WRITER_CONCURRENCY`` at
once; a handling awaits Redis (redis-py's asyncio client, one pipeline per turn of the loop)
and Graph (aiohttp) through the dispatcher, which batches the requests of every handling
inside the per-mailbox limits shared in Redis. What bounds the requests in flight is
Outlook's limits (4 per mailbox, the 10-minute budget), not a pool of threads. Two loops
renew the leases of the tasks and of the Graph slots in flight. Every loop survives any error
and reports its heartbeat on ``/healthz``, which is served from a thread of its own (so a
blocked event loop turns it stale); a request waits for Graph at most
``graph_answer_timeout``, so a task lease is renewed only while its handling makes progress.

On SIGTERM the consumer stops taking work and lets the handlings in flight finish (the
dispatcher keeps sending for them; requests that would have to wait out a 429 fail over to a
delayed retry instead), then the dispatcher and the connections close.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from common import metrics
from common.async_consumer import AsyncConsumer
from common.async_publisher import AsyncPublisher
from common.errors import ConfigError
from common.health import run_every_async
from common.http import new_graph_session, new_http_client
from common.identity import GraphAppTokens
from common.logging import bound_correlation_id, get_logger
from common.mailboxes import MailboxPolicy
from common.messages import TransferSucceeded
from common.redis_store import Coalescing, connect_redis_async_for
from common.run_events import RunEventCounter
from common.settings import Settings
from common.topology import routing_key_transfer_succeeded
from services.event_writer.dispatcher import GraphDispatcher
from services.event_writer.endpoint_gate import EndpointGate
from services.event_writer.event_mapping import EventRules
from services.event_writer.graph import GraphTransport, LoopTokens
from services.event_writer.handler import TaskChangedHandler
from services.event_writer.mailbox_limits import GraphLimitKeys, MailboxLimiter
from services.event_writer.task_store import LEASE, TaskStore
from services.event_writer.transfers import TransferBatcher
from services.ledger.endpoints import EndpointLedger
from services.runtime import Infrastructure, open_infrastructure

log = get_logger(__name__)

MAX_SENDS = 256  # HTTP requests to Graph in flight per writer (its connections)
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
    infra = open_infrastructure(settings, "writer", stop)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            runner.run(_serve(settings, infra, stop))
    finally:
        infra.close()


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop unless the settings ask for the standard library's loop (None)."""
    if settings.writer_event_loop == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - not installed on Windows (pyproject's marker)
    except ImportError:
        raise ConfigError(
            "PWASYNC_WRITER_EVENT_LOOP=uvloop, but uvloop is not installed here; install it "
            "or set PWASYNC_WRITER_EVENT_LOOP=asyncio"
        ) from None
    return uvloop.new_event_loop


async def _serve(settings: Settings, infra: Infrastructure, stop: threading.Event) -> None:
    stopping = _loop_event(stop)
    timeout = settings.http_timeout_seconds
    token_http = new_http_client(ca_bundle=settings.ca_bundle, timeout=timeout)
    # Signs in first (MSAL reads the authority's configuration): a refusal stops the process
    # with its one line before any session exists that would be left unclosed.
    tokens = LoopTokens(GraphAppTokens(settings, token_http))
    http = new_graph_session(
        ca_bundle=settings.ca_bundle,
        timeout=settings.http_timeout_seconds,
        max_connections=MAX_SENDS + 4,
    )
    transport = GraphTransport(http, settings.graph_url, tokens)
    client = connect_redis_async_for(settings)
    # One pipeline per turn of the event loop for all of the writer's Redis commands: the
    # handlings' begins and finishes and the dispatcher's slot requests travel together.
    batched = Coalescing(client)
    limiter = MailboxLimiter(
        client,
        # Graph's limits are the app's, whatever scenario uses it (README "Inside Graph's
        # limits"): keyed by tenant and client id, not by scenario.
        GraphLimitKeys.of_app(settings),
        infra.redis_url,
        concurrency=settings.graph_mailbox_concurrency,
        budget=settings.graph_mailbox_budget,
        batched=batched,
    )
    dispatcher = GraphDispatcher(
        transport,
        limiter,
        batch_size=settings.graph_batch_size,
        max_sends=MAX_SENDS,
        max_throttle_waits=MAX_THROTTLE_WAITS,
        max_wait_seconds=MAX_THROTTLE_WAIT_SECONDS,
        # A send is one HTTP request (the token's, before it, has its own timeout).
        max_send_seconds=2 * settings.http_timeout_seconds + 60.0,
        stop=stopping,
    ).start()
    metrics.GRAPH_REQUESTS_WAITING.set_function(dispatcher.waiting)
    store = TaskStore(client, infra.keys, infra.redis_url, batched)
    renewers_stop = asyncio.Event()
    renew_every = LEASE.total_seconds() / 3
    renewers = [
        # Same pace after a failed round: a longer wait would let the leases in use run out.
        asyncio.create_task(
            run_every_async(
                "task-lease-renewer",
                renew_every,
                store.renew_leases,
                renewers_stop,
                max_backoff=renew_every,
            )
        ),
        asyncio.create_task(limiter.keep_slots(renewers_stop)),
    ]
    publisher = AsyncPublisher(infra.connector, infra.topology)
    routing_key = routing_key_transfer_succeeded(settings.scenario)
    run_events = RunEventCounter(client, infra.keys, infra.redis_url)

    async def publish_body(body: bytes, correlation_id: str | None) -> None:
        await publisher.publish(routing_key, body, correlation_id=correlation_id)

    transfers = TransferBatcher(publish_body)

    async def publish_transfer(message: TransferSucceeded) -> None:
        correlation_id = bound_correlation_id()
        await transfers.publish(message, correlation_id)

    async def count_outcome(counts: dict[str, int]) -> None:
        await run_events.add(bound_correlation_id(), counts)

    gate = None
    if settings.endpoint_limit:
        ledger = EndpointLedger(infra.redis, infra.keys, infra.redis_url)
        gate = EndpointGate(ledger, settings.endpoint_limit)
    handler = TaskChangedHandler(
        store=store,
        submit=dispatcher.submit,
        publish_transfer=publish_transfer,
        rules=event_rules(settings),
        stop=stopping,
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
    consumer = AsyncConsumer(
        connector=infra.connector,
        topology=infra.topology,
        queue=infra.topology.task_changes,
        handler=handler,
        publisher=publisher,
        concurrency=settings.writer_concurrency,
    )
    infra.consumers.append(consumer)
    log.info(
        "writer starting",
        concurrency=settings.writer_concurrency,
        graph=settings.graph_url,
        batch_size=settings.graph_batch_size,
    )
    try:
        await consumer.run(stopping)
    finally:
        await dispatcher.close(timeout=1.0)
        renewers_stop.set()
        await asyncio.gather(*renewers, return_exceptions=True)
        await transfers.close()
        await publisher.close()
        await client.aclose()
        await http.close()
        token_http.close()
        log.info("writer stopped", graph_requests=dict(dispatcher.sent))


def _loop_event(stop: threading.Event) -> asyncio.Event:
    """``stop`` (set by the signal handler) as an event of the running loop."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def watch() -> None:
        stop.wait()
        loop.call_soon_threadsafe(event.set)

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    return event
