"""Prometheus metrics of every pwasync process, defined once.

Names follow Prometheus practice: the ``pwasync_`` prefix, base units (seconds), ``_total`` on
counters, and low-cardinality labels only (never a task, message or mailbox id). Each process
serves its own registry at ``/metrics`` on ``PWASYNC_HTTP_PORT``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    "Requests by service (graph; the plan source: pwa, dataverse, planner) and status code "
    "(or 'error').",
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
    "Endpoints held over the rolling 30 days (the ledger reads it from Redis at scrape time).",
)
ENDPOINTS_ALLOCATED = Counter(
    "pwasync_endpoints_allocated_total",
    "Endpoints allocated by this ledger process.",
)


def status_label(status: int | None) -> str:
    return str(status) if status is not None else "error"


# The publish receiver (docs/architecture.md, "Publish receiver").
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

# --- issue 15: what the dashboard and the alert rules (deploy/) need --------------------------

QUEUE_MESSAGES = Gauge(
    "pwasync_queue_messages",
    "Ready messages in a queue (a service's work queue and its dead-letter queue), sampled "
    "every 15 s by each consumer of the work queue; take max by queue over replicas.",
    ["queue"],
)
MESSAGES_IN_FLIGHT = Gauge(
    "pwasync_messages_in_flight",
    "Deliveries this process has taken from the queue and not settled yet.",
    ["queue"],
)
SYNC_RUNS = Counter(
    "pwasync_sync_runs_total",
    "Sync runs finished, by status (succeeded, failed, interrupted).",
    ["status"],
)
LAST_SUCCESSFUL_SYNC = Gauge(
    "pwasync_last_successful_sync_timestamp_seconds",
    "Unix time at which the newest successful sync run of the scenario finished (read from "
    "the run history in Redis at scrape time, so every poller replica agrees); the poller's "
    "start while the history holds no successful run.",
)
SYNC_SCHEDULE_INTERVAL = Gauge(
    "pwasync_sync_schedule_interval_seconds",
    "Longest time between two scheduled sync runs (PWASYNC_SCHEDULE); 0 for on_demand.",
)
DELETION_GUARD_ALARM = Gauge(
    "pwasync_deletion_guard_alarm",
    "1 while the deletion guard holds removals back (the alarm in Redis, read at scrape time).",
)
PWA_SIGN_INS = Counter(
    "pwasync_pwa_sign_ins_total",
    "Tokens obtained from the stored PWA sign-in (oauth), by outcome: ok, reconnect_required "
    "(only `pwasync connect` can fix it), failed (anything else).",
    ["outcome"],
)
ENDPOINT_LIMIT = Gauge(
    "pwasync_endpoint_limit",
    "PWASYNC_ENDPOINT_LIMIT as this process sees it; 0 = no limit.",
)

# --- what the writer and the ledger add for the dashboard and the alert rules ------------------

GRAPH_REQUESTS_WAITING = Gauge(
    "pwasync_graph_requests_waiting",
    "Graph requests the writer's dispatcher holds until a mailbox slot, a sender or the end of "
    "a pause lets them go (its backlog; read at scrape time).",
)
TASK_LEASE_CONTENDED = Counter(
    "pwasync_task_lease_contended_total",
    "Task changes handed back because another writer held the task's lease (retried later "
    "without counting an attempt).",
)
ASSIGNEE_FAILURES = Counter(
    "pwasync_assignee_failures_total",
    "Assignee failures recorded by the writers (a mailbox that cannot take events, no e-mail "
    "address, an address refused), by code; counted each time a handling records them.",
    ["code"],
)
HELD_TASKS = Gauge(
    "pwasync_held_tasks",
    "Tasks waiting for an endpoint because PWASYNC_ENDPOINT_LIMIT is reached (read from Redis "
    "at scrape time).",
)


def reading(read: Callable[[], float]) -> Callable[[], float]:
    """A scrape-time reading (``Gauge.set_function``) that fails (Redis away) is no value
    (NaN), not a failed scrape: /metrics must keep answering with everything else."""

    def guarded() -> float:
        try:
            return float(read())
        except Exception:  # noqa: BLE001 - any failure of the reading means "unknown"
            return math.nan

    return guarded
