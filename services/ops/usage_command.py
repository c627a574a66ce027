"""``pwasync usage [--json]``: the ledger's endpoints, with the names the plans give them.

The counts come from the ledger alone. The names are read from the plans (the projects in the
report, each project's tasks once); where the plans cannot be read here (not configured on
this host, or failing) the report still comes, with the ids alone and one line saying why.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

from common.errors import PwasyncError
from common.http import new_http_client
from common.logging import get_logger
from common.redis_store import Keys, connect_redis_for, redis_errors
from common.settings import Settings
from services.ledger.endpoints import EndpointLedger
from services.ledger.usage import Names, usage_report, usage_table
from services.ops.plans import open_plans, plan_names

log = get_logger(__name__)


def run_usage(settings: Settings, *, as_json: bool) -> int:
    url = settings.redis_url.get_secret_value()
    client = connect_redis_for(settings)
    ledger = EndpointLedger(client, Keys(settings.scenario), url)
    try:
        with redis_errors(url):
            endpoints, held = ledger.in_use(), ledger.held()
            history = ledger.history()
        pairs = [(e.task_id, e.project_id) for e in endpoints]
        pairs += [(h.task_id, h.project_id) for h in held if h.project_id is not None]
        names, unreadable = _names(settings, client, pairs)
    finally:
        client.close()
    report = usage_report(
        settings.scenario,
        endpoints,
        settings.endpoint_limit_or_none,
        held=held,
        history=history,
        now=datetime.now(UTC),
        names=names,
        names_unreadable=unreadable,
    )
    print(json.dumps(report) if as_json else usage_table(report))
    return 0


def _names(
    settings: Settings, client: redis.Redis, pairs: list[tuple[Any, Any]]
) -> tuple[dict[str, Names], str | None]:
    if not pairs:
        return {}, None
    try:
        with new_http_client(
            ca_bundle=settings.ca_bundle, timeout=settings.http_timeout_seconds
        ) as http:
            return plan_names(open_plans(settings, http, client).feed, pairs), None
    except PwasyncError as exc:
        log.warning("usage: the plans could not name the tasks", error=str(exc))
        return {}, f"the plans could not be read here ({exc})"
