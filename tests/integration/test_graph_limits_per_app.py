"""Graph's limits are per app and mailbox, not per scenario (issue 11, item 5): writers of two
scenarios that sign in as one Entra app share a mailbox's 4 slots, its pause and its budget;
another app has its own. Every key one decision touches is in one Redis Cluster slot."""

import uuid
from types import SimpleNamespace

import pytest
from redis.crc import key_slot

from services.event_writer.mailbox_limits import GraphLimitKeys, MailboxLimiter, paused_mailboxes

pytestmark = pytest.mark.integration

MAILBOX = "adele@contoso.com"


@pytest.fixture
def app():
    """Settings of two scenarios using one Entra app, and of a third using another app."""
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    client = "11111111-2222-3333-4444-555555555555"
    graph = "https://graph.microsoft.com/v1.0"

    def settings(scenario, tenant_id, client_id, graph_url=graph):
        return SimpleNamespace(
            scenario=scenario, tenant_id=tenant_id, graph_client_id=client_id, graph_url=graph_url
        )

    return (
        settings("north", tenant, client),
        settings("south", tenant.upper(), client),
        settings("west", tenant, "another-app"),
        settings("east", tenant, client, "https://127.0.0.1:8443/v1.0"),  # another Graph
    )


class Writer:
    """A writer's limiter, its calls awaited on the test's event loop."""

    def __init__(self, limiter, run):
        self._limiter, self._run = limiter, run

    def acquire(self, wanted):
        return self._run(self._limiter.acquire(wanted))

    def release(self, tokens):
        return self._run(self._limiter.release(tokens))

    def pause(self, mailbox, seconds):
        return self._run(self._limiter.pause(mailbox, seconds))


@pytest.fixture
def writers(app, redis_client, async_redis, redis_url, loop_runner):
    """A writer's limiter per scenario, built as the writer builds it."""
    made = [
        Writer(
            MailboxLimiter(async_redis, GraphLimitKeys.of_app(s), redis_url, budget=6),
            loop_runner.run,
        )
        for s in app
    ]
    yield made
    for settings in app:
        pattern = GraphLimitKeys.of_app(settings).all_pattern
        found = list(redis_client.scan_iter(match=pattern, count=1000))
        if found:
            redis_client.delete(*found)


def test_two_scenarios_of_one_app_share_a_mailboxs_four_slots(writers):
    north, south, west, east = writers
    assert len(north.acquire({MAILBOX: 4})[MAILBOX].tokens) == 4
    assert south.acquire({MAILBOX: 4})[MAILBOX].tokens == ()  # Graph would answer 429
    assert len(west.acquire({MAILBOX: 4})[MAILBOX].tokens) == 4  # another app: its own
    assert len(east.acquire({MAILBOX: 4})[MAILBOX].tokens) == 4  # another Graph: its own


def test_a_pause_from_graph_holds_for_every_scenario_of_the_app(writers, app, redis_client):
    north, south, west, _ = writers
    north.pause(MAILBOX, 30)
    grant = south.acquire({MAILBOX: 1})[MAILBOX]
    assert grant.tokens == () and 29 < grant.wait_seconds <= 30
    south_keys = GraphLimitKeys.of_app(app[1])
    # `pwasync status` of either scenario shows it.
    assert list(paused_mailboxes(redis_client, south_keys, "redis://test")) == [MAILBOX]
    assert len(west.acquire({MAILBOX: 1})[MAILBOX].tokens) == 1


def test_the_budget_is_the_apps_across_scenarios(writers):
    north, south, *_ = writers
    spent = 0
    for writer in (north, south, north, south):
        grant = writer.acquire({MAILBOX: 4})[MAILBOX]
        spent += len(grant.tokens)
        writer.release({MAILBOX: list(grant.tokens)})
    assert spent == 6  # the budget of 6 once, not 6 per scenario


def test_every_key_of_one_decision_is_in_one_cluster_slot(app):
    keys = GraphLimitKeys.of_app(app[0])
    mailboxes = [f"user{i}@contoso.com" for i in range(50)]
    names = [k for m in mailboxes for k in (keys.slots(m), keys.pause(m), keys.budget(m))]
    assert len({key_slot(name.encode()) for name in names}) == 1
    assert GraphLimitKeys.of_app(app[1]).slots(MAILBOX) == keys.slots(MAILBOX)  # case
