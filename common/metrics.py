"""Prometheus metrics of every pwasync process, defined once.

Names follow Prometheus practice: the ``pwasync_`` prefix, base units (seconds), ``_total`` on
counters, and low-cardinality labels only (never a task, message or mailbox id). Each process
serves its own registry at ``/metrics`` on ``PWASYNC_HTTP_PORT``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "pwasync_messages_total",
    "Deliveries handled, by queue and outcome "
    "(acked, retried, dead_lettered, left_for_redelivery).",
    ["queue", "outcome"],
)
HANDLING_SECONDS = Histogram(
    "pwasync_message_handling_seconds",
    "Time from a delivery's start of handling to its settlement.",
    ["queue"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
HTTP_REQUESTS = Counter(
    "pwasync_http_requests_total",
    "Requests to Project Online and Graph, by service and status code (or 'error').",
    ["service", "method", "status"],
)
THROTTLED = Counter(
    "pwasync_throttled_total",
    "429 and 503 answers, by service.",
    ["service"],
)
THROTTLE_WAIT_SECONDS = Counter(
    "pwasync_throttle_wait_seconds_total",
    "Time spent waiting out Retry-After and backoff, by service.",
    ["service"],
)
POLL_SECONDS = Histogram(
    "pwasync_poll_duration_seconds",
    "Duration of sync runs.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
TASKS = Counter(
    "pwasync_poller_tasks_total",
    "Tasks seen by sync runs, by outcome (published, unchanged, removed, skipped) and reason.",
    ["outcome", "reason"],
)
ENDPOINTS_IN_USE = Gauge(
    "pwasync_endpoints_in_use",
    "Endpoints held over the rolling 30 days (as last seen by this process).",
)
ENDPOINTS_ALLOCATED = Counter(
    "pwasync_endpoints_allocated_total",
    "Endpoints allocated by this ledger process.",
)


def status_label(status: int | None) -> str:
    return str(status) if status is not None else "error"


# The publish receiver (README "Publish receiver").
RECEIVER_CALLS = Counter(
    "pwasync_receiver_calls_total", "Calls Project Server made to the publish receiver."
)
RECEIVER_REFUSED = Counter(
    "pwasync_receiver_refused_total",
    "Calls the receiver refused, by reason (secret, site, not_soap, operation, no_project, ...).",
    ["reason"],
)
RECEIVER_SYNCS_REQUESTED = Counter(
    "pwasync_receiver_syncs_requested_total", "sync.requested messages the receiver published."
)
RECEIVER_CALL_TO_REQUEST_SECONDS = Histogram(
    "pwasync_receiver_call_to_request_seconds",
    "Time from a publish call's arrival to the confirmed sync request that answers it.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
