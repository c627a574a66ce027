"""Issue 11's first new fault: Redis refusing every write for several seconds mid-sync.

``maxmemory 1`` with ``noeviction`` makes Redis answer every write, and every script (Redis
cannot know that a script will not write), with ``OOM command not allowed``, while reads go on:
the services see error replies, not a lost connection. Afterwards every event must exist
exactly once, the ledger must be exact, and every service must still work: a second sync with
new tasks goes through the same services to the same exact end state. The Redis is the test's
own (the machine's shared one is never reconfigured).

A service whose background loop died on the error reply does not hang the test: the run gets
a bounded time to settle, then fails with what is missing and what each service last logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from tests.chaos.end_state import Expectation, busy_queues, settle
from tests.chaos.scenario import FaultRun, Volume, volumes
from tests.e2e.harness import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SHORT = Volume("short", projects=2, tasks_per_project=150, assignees=1, mailboxes=5, latency_ms=400)
LONG = Volume("long", projects=4, tasks_per_project=500, assignees=2, mailboxes=20, latency_ms=300)
# The short run's own bound: a run that does not settle fails with its report, not a timeout.
# Both forms are `make chaos` only (a minute even short): `make test` holds the same fault at the
# writer's level (tests/integration/test_writer_redis_faults.py, a Redis of its own refusing
# writes for 2 s) within its 15 minutes.
REFUSALS = [
    pytest.param(SHORT, id="short", marks=[pytest.mark.timeout(600), pytest.mark.chaos]),
    volumes(SHORT, LONG)[1],
]
#: After the writes come back, the work in retry tiers (2, 10, 60 s) must be done within this.
SETTLE_SECONDS = {"short": 150, "long": 420}


@contextmanager
def writes_refused(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, decode_responses=True)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        yield client
    finally:
        client.config_set("maxmemory", "0")
        client.close()


def _more_tasks(run: FaultRun, tasks: int) -> set[tuple[str, str]]:
    """A new flagged project for the second sync; the (mailbox, task) events it needs."""
    v = run.volume
    generated = run.pipeline.client.generate(
        projects=1,
        tasks_per_project=tasks,
        flagged=True,
        ensure_field=True,
        assignees_per_task=v.assignees,
        mailboxes=v.mailboxes,
    )
    mailboxes = [m.lower() for m in generated["mailboxes"]]
    return {
        (mailboxes[(index % tasks + offset) % v.mailboxes], task)
        for index, task in enumerate(generated["task_ids"])
        for offset in range(v.assignees)
    }


def _settled_or_report(run: FaultRun, expected: set[tuple[str, str]], what: str) -> None:
    seconds = SETTLE_SECONDS[run.volume.run]
    if settle(run.pipeline, Expectation(frozenset(expected)), run.amqp_url, seconds):
        return
    present = set(run.pipeline.event_keys())
    usage = run.pipeline.usage()
    lines = [
        f"{what}: not settled within {seconds} s: "
        f"{len(expected & present)}/{len(expected)} events, "
        f"ledger {usage['endpoints_in_use']}/{len({t for _, t in expected})}, "
        f"queued {busy_queues(run.pipeline.scenario, run.amqp_url)}; last errors:"
    ]
    for name in run.pipeline.services:
        errors = [
            line
            for line in run.pipeline.log_lines(name)
            if line.get("level") in ("error", "critical", "raw", "exception")
        ]
        for line in errors[-3:]:
            lines.append(f"  {name}: {line.get('event')} {line.get('exception', '')[-300:]}")
    pytest.fail("\n".join(lines), pytrace=False)


def _refusals_seen(run: FaultRun) -> dict[str, int]:
    """Log lines per service that report Redis's refusal (the fault reached them)."""
    return {
        name: sum(1 for line in run.pipeline.log_lines(name) if "maxmemory" in str(line))
        for name in run.pipeline.services
    }


@pytest.mark.parametrize("volume", REFUSALS)
def test_redis_refusing_writes_mid_sync_loses_and_duplicates_nothing(
    redis_server, rabbit_node, run_factory, volume
):
    short = volume.run == "short"
    # A broker of its own too: on the shared one, other runs' sync requests (routing key
    # `sync.requested`, not namespaced) reach this scenario's poller.
    run = run_factory(
        "Redis refusing writes (OOM) mid-sync",
        volume,
        redis=redis_server.url,
        amqp=rabbit_node.url,
    )
    expected = run.generate()
    run.start()
    run.sync()
    seconds = 8 if short else 12
    marks = [len(expected) // 10] if short else [len(expected) // 5, len(expected) // 2]
    refused = []
    for mark in marks:
        assert wait_for(lambda m=mark: run.events_written() >= m, timeout=180)
        at = run.events_written()
        assert at < len(expected), "the sync ended before Redis refused writes"
        with writes_refused(redis_server.url) as client:
            with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
                client.set("pwasync:probe", "1")
            time.sleep(seconds)
        refused.append(at)
    _settled_or_report(run, expected, "after the refusals")
    seen = _refusals_seen(run)
    assert sum(seen.values()) > 0, f"no service met a refused write: {seen}"

    more = _more_tasks(run, tasks=20)
    run.sync()
    _settled_or_report(run, expected | more, "the second sync")
    run.finish(
        Expectation(frozenset(expected | more)),
        f"{len(refused)} x {seconds} s of OOM refusals at {refused} events written "
        f"(seen {seen}), then a second sync of {len(more)} events",
    )
