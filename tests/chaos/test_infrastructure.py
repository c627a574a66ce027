"""Faults 2 and 3: RabbitMQ and Redis restarted mid-run. Both are a node of the test's own
(the machine's shared broker and Redis serve other runs); the services reconnect with backoff,
redeclare the topology, and publisher confirms mean nothing published is lost."""

from __future__ import annotations

import pytest

from tests.chaos.end_state import Expectation
from tests.chaos.scenario import Volume, volumes
from tests.e2e.harness import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

RESTARTS = volumes(
    Volume("short", projects=1, tasks_per_project=150, assignees=1, mailboxes=5, latency_ms=400),
    Volume("long", projects=4, tasks_per_project=500, assignees=2, mailboxes=20, latency_ms=300),
)


def _reconnections(run) -> dict[str, int]:
    """How often each service logged that it lost the broker and reconnected."""
    counts = {}
    for name in ("poller", "writer-1", "writer-2", "ledger"):
        lines = run.pipeline.log_lines(name)
        counts[name] = sum(1 for line in lines if line["event"] == "consuming") - 1
    return counts


@pytest.mark.parametrize("volume", RESTARTS)
def test_rabbitmq_restarted_mid_run_loses_nothing(rabbit_node, run_factory, volume):
    run = run_factory("RabbitMQ restarted mid-run", volume, amqp=rabbit_node.url)
    expected = run.generate()
    run.start()
    run.sync()
    share = [4] if volume.run == "short" else [5, 2]  # restart after 1/4 (1/5 and 1/2) of it
    marks = [len(expected) // n for n in share]
    for mark in marks:
        assert wait_for(lambda m=mark: run.events_written() >= m, timeout=180)
        assert run.events_written() < len(expected), "the sync ended before the restart"
        rabbit_node.restart(down_seconds=1 if volume.run == "short" else 3)
    # Every service consumes again. One still waiting out its backoff (up to 30 s) when the
    # others have finished the work must get there too, so wait for it rather than stop it
    # first; two restarts close together may be one outage to a service in its backoff.
    reconnected = wait_for(
        lambda: all(count >= 1 for count in _reconnections(run).values()), timeout=90
    )
    assert reconnected, _reconnections(run)
    run.finish(
        Expectation(frozenset(expected)),
        f"{rabbit_node.restarts} broker restart(s) (stop, down, boot: "
        f"{'1' if volume.run == 'short' else '3'} s + ~4 s each)",
    )


@pytest.mark.parametrize("volume", RESTARTS)
def test_redis_crashed_and_restarted_mid_run_loses_nothing(redis_server, run_factory, volume):
    run = run_factory("Redis (AOF) crashed and restarted mid-run", volume, redis=redis_server.url)
    expected = run.generate()
    run.start()
    run.sync()
    share = [4] if volume.run == "short" else [5, 2]
    for mark in (len(expected) // n for n in share):
        assert wait_for(lambda m=mark: run.events_written() >= m, timeout=180)
        assert run.events_written() < len(expected), "the sync ended before the crash"
        redis_server.restart(down_seconds=1 if volume.run == "short" else 3)
    run.finish(
        Expectation(frozenset(expected)),
        f"{redis_server.restarts} Redis SIGKILL(s) + restart from the AOF "
        f"(down {'1' if volume.run == 'short' else '3'} s each)",
    )
