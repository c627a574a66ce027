"""The publish receiver end to end on the sandbox's Subscription Edition: registered once, a
publish puts its events in Outlook with no sync-now and an on-demand schedule; a burst of
publishes costs two or three sync requests, each of which runs; every refusal publishes nothing;
with the receiver gone the next poll still finds the change."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from services.receiver.soap import SOAP_11
from tests.e2e.harness import Pipeline, metric_total, wait_for
from tests.ports import free_port, port_open

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SECRET = "e2e-receiver-secret-0123456789"


@pytest.fixture
def se(se):
    """The Subscription Edition pipeline with the receiver's settings."""
    pipe = se
    port, health = free_port(), free_port()
    pipe.env.update(
        {
            "PWASYNC_RECEIVER_PORT": str(port),
            "PWASYNC_RECEIVER_SECRET": SECRET,
            "PWASYNC_RECEIVER_URL": f"http://127.0.0.1:{port}",
            "PWASYNC_RECEIVER_COALESCE_SECONDS": "2",
        }
    )
    pipe.receiver_url = f"http://127.0.0.1:{port}/project-server/events"
    pipe.receiver_metrics = f"http://127.0.0.1:{health}/metrics"
    pipe.health_port = health
    return pipe


def runs(pipeline: Pipeline) -> list[dict]:
    return [r for r in pipeline.redis_json_list("poller:runs") if r["status"] == "succeeded"]


def start_all(se: Pipeline) -> None:
    assert "created Task flag field" in se.cli("fields", "create").stdout
    for name in ("poller", "writer-1", "ledger"):
        se.start(name)
    se.start("receiver", {"PWASYNC_HTTP_PORT": str(se.health_port)})
    assert wait_for(lambda: port_open(int(se.env["PWASYNC_RECEIVER_PORT"])), timeout=30)
    registered = se.cli("events", "register").stdout
    assert registered.startswith("added: handler") and SECRET not in registered
    assert se.cli("events", "register").stdout.startswith("unchanged")


def refused_total(se: Pipeline, reason: str) -> float:
    return metric_total(se.receiver_metrics, f'pwasync_receiver_refused_total{{reason="{reason}"}}')


def syncs_requested(se: Pipeline) -> float:
    return metric_total(se.receiver_metrics, "pwasync_receiver_syncs_requested_total")


def requests_run(se: Pipeline) -> int:
    """The sync requests the poller's runs answered (a run can answer several)."""
    return sum(1 + len(r["coalesced_correlation_ids"]) for r in runs(se))


def settle(se: Pipeline) -> None:
    """Wait until the receiver has requested nothing for longer than its coalescing window and
    every request it made has run: what happens after this is caused by what follows."""
    quiet_for = float(se.env["PWASYNC_RECEIVER_COALESCE_SECONDS"]) + 1
    seen, changed_at = syncs_requested(se), time.monotonic()

    def quiet() -> bool:
        nonlocal seen, changed_at
        requested = syncs_requested(se)
        if requested != seen:
            seen, changed_at = requested, time.monotonic()
        return time.monotonic() - changed_at >= quiet_for and requests_run(se) == requested

    assert wait_for(quiet, timeout=60), (syncs_requested(se), requests_run(se))


def test_a_publish_reaches_outlook_by_itself_and_refusals_publish_nothing(se):
    start_all(se)
    assert se.cli("check", "--mailbox", "adele.vance@contoso.onmicrosoft.com").stdout.count(
        "registered: http://127.0.0.1"
    )

    flagged = se.client.flag_tasks(se.client.demo_flag_task_ids(), value=True, publish=True)
    assert wait_for(lambda: len(se.event_keys()) == 6, timeout=60), se.event_keys()
    assert {r["trigger"] for r in runs(se)} == {"publish"}  # no sync-now, no schedule

    # A burst of 20 concurrent publishes of one project: one sync at once, one for the rest (two
    # when the receiver, slowed by a busy machine, takes calls past a pause or the 2 s window).
    settle(se)
    project_id = flagged["published_project_ids"][0]
    calls, requested = len(se.client.server_events()["calls"]), syncs_requested(se)
    with ThreadPoolExecutor(max_workers=20) as publishers:
        list(publishers.map(lambda _: se.client.publish_project(project_id), range(20)))
    assert wait_for(lambda: len(se.client.server_events()["calls"]) >= calls + 20, timeout=30)
    settle(se)
    assert 2 <= syncs_requested(se) - requested <= 3
    assert set(se.event_keys().values()) == {1}

    # Refusals: each answered at once, none becomes a sync.
    before, requested = len(runs(se)), syncs_requested(se)
    other_site = (
        f'<s:Envelope xmlns:s="{SOAP_11}"><s:Body><OnPublishedRemote>'
        f"<contextInfo><SiteGuid>{uuid.uuid4()}</SiteGuid></contextInfo>"
        f"<e><ProjectGuid>{project_id}</ProjectGuid></e></OnPublishedRemote></s:Body></s:Envelope>"
    )
    cases = [
        (f"{se.receiver_url}/wrong-secret-0123456789", other_site, 404, "secret"),
        (f"{se.receiver_url}/{SECRET}", other_site, 400, "site"),
        (f"{se.receiver_url}/{SECRET}", "not soap at all", 400, "not_soap"),
        (f"{se.receiver_url}/{SECRET}", "x" * 100_000, 413, "too_large"),
    ]
    for url, body, status, reason in cases:
        response = httpx.post(url, content=body, headers={"Content-Type": "text/xml"}, timeout=5)
        assert response.status_code == status, (reason, response.text)
        assert refused_total(se, reason) >= 1
    assert not wait_for(
        lambda: len(runs(se)) > before or syncs_requested(se) > requested, timeout=4
    )
    log = "\n".join(line.get("event", "") for line in se.log_lines("receiver"))
    assert SECRET not in log and "wrong-secret" not in log


def test_with_the_receiver_gone_the_next_poll_still_finds_the_change(se):
    start_all(se)
    se.client.flag_tasks(se.client.demo_flag_task_ids(), value=True, publish=True)
    assert wait_for(lambda: len(se.event_keys()) == 6, timeout=60)

    se.services.pop("receiver").kill()
    task_id = se.client.demo_flag_task_ids()[0]
    se.client.update_task(task_id, name="Site survey (moved)")
    assert wait_for(lambda: se.client.server_events()["calls"][-1].get("error"), timeout=15)
    before = len(runs(se))
    se.cli("sync-now")
    assert wait_for(lambda: len(runs(se)) > before, timeout=60)
    assert wait_for(
        lambda: any(e["subject"] == "Site survey (moved)" for e in se.client.events()), timeout=60
    )
