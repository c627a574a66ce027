"""``pwasync status [--json]``: one screen of what the scenario is doing.

Queues (ready, unacked, consumers) for every work, retry and dead-letter queue; the last sync
run and whether one is running; the deletion guard's alarm; mailboxes Graph asked to wait;
assignees whose mailbox cannot take events; endpoint usage. Read-only: it never takes a
message or changes a key. No secret appears in it (the broker and management URLs are only
used, never shown).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from common.broker_policies import ManagementApi, amqp_vhost
from common.errors import PwasyncError
from common.rabbit import RabbitConnector, inspect_queues
from common.redis_store import Keys, connect_redis_for
from common.run_events import RunEvents
from common.settings import Settings
from common.topology import topology_for
from services.event_writer.mailbox_limits import GraphLimitKeys, MailboxLimiter
from services.event_writer.task_store import TaskStore
from services.ledger.endpoints import EndpointLedger
from services.ledger.usage import EXPIRING_SOON
from services.poller.state import PollerState

#: Assignee failures listed in the table; the JSON has them all.
FAILURES_SHOWN = 10


def _paused_mailboxes(settings: Settings, client: Any, url: str) -> dict[str, float]:
    """Mailboxes paused for the scenario's Entra app (shared with other scenarios using it);
    none known without the app's settings."""
    if not (settings.tenant_id and settings.graph_client_id):
        return {}
    return MailboxLimiter(client, GraphLimitKeys.of_app(settings), url).paused()


def collect_status(settings: Settings) -> dict[str, Any]:
    url = settings.redis_url.get_secret_value()
    client = connect_redis_for(settings)
    keys = Keys(settings.scenario)
    try:
        poller = PollerState(client, keys, url)
        runs = poller.runs(1)
        last = runs[0] if runs else None
        if last is not None:
            ids = [last.get("correlation_id"), *last.get("coalesced_correlation_ids", [])]
            last["events"] = RunEvents(client, keys, url).totals([i for i in ids if i])
        ledger = EndpointLedger(client, keys, url)
        endpoints = ledger.in_use()
        now = datetime.now(UTC)
        failures = TaskStore(client, keys, url).failures()
        return {
            "scenario": settings.scenario,
            "queues": _queues(settings),
            "sync_running": bool(client.exists(poller.keys.lock)),
            "last_sync": last,
            "deletion_guard": poller.deletion_alarm(),
            "throttled_mailboxes": [
                {"mailbox": mailbox, "for_seconds": round(seconds, 1)}
                for mailbox, seconds in sorted(_paused_mailboxes(settings, client, url).items())
            ],
            "failed_assignees": [
                {"task_id": str(task), **failure}
                for task, entries in failures.items()
                for failure in entries
            ],
            "usage": {
                "endpoints_in_use": len(endpoints),
                "limit": settings.endpoint_limit_or_none,
                "held": len(ledger.held()),
                "expiring_within_7_days": sum(
                    1 for e in endpoints if e.expires_at <= now + EXPIRING_SOON
                ),
            },
        }
    finally:
        client.close()


def _queues(settings: Settings) -> list[dict[str, Any]]:
    topology = topology_for(settings.scenario)
    connector = RabbitConnector(settings.amqp_url.get_secret_value(), connection_name="pwasync-cli")
    unacked = _unacked_counts(settings)
    roles = {}
    for queue in topology.work_queues.values():
        roles[queue.name] = "work"
        roles[queue.dead_letter_queue] = "dead"
        roles.update({queue.retry_queue(t): f"retry {t}s" for t in queue.retry_tiers})
    states = inspect_queues(connector, list(roles))
    return [
        {
            "queue": name,
            "role": role,
            "ready": states[name].ready if states[name] else None,
            "unacked": unacked.get(name) if unacked is not None else None,
            "consumers": states[name].consumers if states[name] else None,
        }
        for name, role in roles.items()
    ]


def _unacked_counts(settings: Settings) -> dict[str, int] | None:
    """Unacked messages per queue from the management API; None when it is not configured."""
    if settings.rabbitmq_management_url is None:
        return None
    api = ManagementApi(
        settings.rabbitmq_management_url.get_secret_value(), ca_bundle=settings.ca_bundle
    )
    vhost = amqp_vhost(settings.amqp_url.get_secret_value())
    try:
        with api.client() as http:
            response = api.get(
                http,
                f"/api/queues/{quote(vhost, safe='')}",
                params={"columns": "name,messages_unacknowledged"},
            )
            return {q["name"]: int(q.get("messages_unacknowledged", 0)) for q in response.json()}
    except (PwasyncError, httpx.HTTPError, ValueError):
        return None


def status_table(status: dict[str, Any]) -> str:
    lines = [f"scenario {status['scenario']}", "", "queues (ready / unacked / consumers):"]
    for row in status["queues"]:
        if row["role"].startswith("retry") and not row["ready"]:
            continue  # empty retry tiers are the normal case
        unacked = "n/a" if row["unacked"] is None else row["unacked"]
        ready = "missing" if row["ready"] is None else row["ready"]
        consumers = "-" if row["consumers"] is None else row["consumers"]
        lines.append(f"  {row['queue']:60} {ready!s:>7} / {unacked!s:>5} / {consumers}")
    if any(row["unacked"] is None for row in status["queues"]):
        lines.append("  (unacked: set PWASYNC_RABBITMQ_MANAGEMENT_URL to read them)")

    lines.append("")
    last = status["last_sync"]
    running = " (a sync is running now)" if status["sync_running"] else ""
    if last is None:
        lines.append(f"last sync: none yet{running}")
    else:
        tasks, events = last["tasks"], last.get("events", {})
        lines.append(
            f"last sync: {last['started_at']} {last['trigger']} {last['status']}{running}: "
            f"{last['projects']['read']}/{last['projects']['listed']} projects read, "
            f"{tasks['published']} published, {tasks['unchanged']} unchanged, "
            f"{tasks['removed']} removed; events {events.get('created', 0)} created, "
            f"{events.get('updated', 0)} updated, {events.get('deleted', 0)} deleted, "
            f"{events.get('failed', 0)} failed"
        )
        lines.extend(f"  error: {error}" for error in last.get("errors", []))
    alarm = status["deletion_guard"]
    if alarm:
        lines.append(
            f"DELETION GUARD: {alarm['removing']} of {alarm['synced']} synced tasks would lose "
            f"their events (since {alarm['at']}); confirm with "
            "`pwasync sync-now --allow-deletions` if that is intended"
        )

    lines.append("")
    throttled = status["throttled_mailboxes"]
    lines.append(f"throttled mailboxes: {len(throttled)}")
    lines.extend(f"  {t['mailbox']} for {t['for_seconds']} s" for t in throttled)
    failed = status["failed_assignees"]
    lines.append(f"assignees whose mailbox cannot take events: {len(failed)}")
    for failure in failed[:FAILURES_SHOWN]:
        who = failure.get("mailbox") or failure.get("assignee") or failure.get("resource_id")
        lines.append(f"  {who}: {failure.get('code')} (task {failure['task_id']})")
    if len(failed) > FAILURES_SHOWN:
        lines.append(f"  … {len(failed) - FAILURES_SHOWN} more (pwasync status --json)")

    usage = status["usage"]
    limit = usage["limit"] if usage["limit"] is not None else "none"
    lines += [
        "",
        f"endpoints: {usage['endpoints_in_use']} in use (limit {limit}), {usage['held']} held "
        f"back, {usage['expiring_within_7_days']} expiring within 7 days",
    ]
    return "\n".join(lines)
