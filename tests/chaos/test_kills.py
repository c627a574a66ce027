"""Fault 1: services killed with SIGKILL mid-run (no shutdown, no acks, no bookkeeping)."""

from __future__ import annotations

import random
import time

import pytest

from tests.chaos.end_state import Expectation
from tests.chaos.scenario import Volume, volumes
from tests.e2e.harness import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

WRITER_KILLS = volumes(
    Volume("short", projects=1, tasks_per_project=150, assignees=1, mailboxes=5, latency_ms=400),
    Volume("long", projects=4, tasks_per_project=500, assignees=2, mailboxes=20, latency_ms=300),
)


@pytest.mark.parametrize("volume", WRITER_KILLS)
def test_writers_killed_every_few_seconds_lose_and_duplicate_nothing(run_factory, volume):
    run = run_factory(f"SIGKILL a writer every {'2-3' if volume.run == 'long' else '1'} s", volume)
    expected = run.generate()
    run.start()
    run.sync()
    rng = random.Random(5)
    at_kill = []  # events written when each kill came
    most = 2 if volume.run == "short" else 40
    assert wait_for(lambda: run.events_written() > 0, timeout=120)
    while run.events_written() < len(expected) and len(at_kill) < most:
        # The short sync lasts a few seconds: its kills come every second.
        time.sleep(rng.uniform(2.0, 3.0) if volume.run == "long" else 1.0)
        writers = [name for name in run.pipeline.services if name.startswith("writer")]
        at_kill.append(run.events_written())
        run.kill(rng.choice(writers))
    assert len(at_kill) >= (2 if volume.run == "short" else 5), "the sync ended before the kills"
    run.finish(
        Expectation(frozenset(expected)),
        f"{len(at_kill)} writer SIGKILLs, at {at_kill[0]} to {at_kill[-1]} events written",
    )


POLLER_KILL = Volume(
    "long", projects=4, tasks_per_project=500, assignees=1, mailboxes=20, latency_ms=100
)


@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_the_poller_killed_mid_poll_resumes_and_publishes_every_task_once(run_factory):
    run = run_factory("SIGKILL the poller mid-poll", POLLER_KILL)
    expected = run.generate()
    # Small pages make the poll long enough to be caught in the middle of it.
    run.pipeline.client.config(pwa_page_sizes={"Tasks": 25, "Assignments": 25})
    run.start()
    run.sync()
    total = POLLER_KILL.tasks
    assert wait_for(lambda: run.tasks_published() >= total // 4, timeout=120)
    published_at_kill = run.tasks_published()
    assert published_at_kill < total, "the poll ended before the kill"
    run.kill("poller")  # and a fresh poller starts in its place
    killed_at = time.monotonic()
    # The dead poller's run lease (20 s) ends, a replica's check (every 10 s) finds the request
    # it left, and the poll resumes project by project.
    assert wait_for(lambda: run.tasks_published() > published_at_kill, timeout=120)
    resumed_in = time.monotonic() - killed_at
    assert wait_for(lambda: run.tasks_published() == total, timeout=300)
    run.finish(
        Expectation(frozenset(expected)),
        f"poller SIGKILL after {published_at_kill}/{total} tasks published; "
        f"resumed {resumed_in:.0f} s later",
    )
    assert resumed_in < 45


LEDGER_KILLS = volumes(
    Volume("short", projects=1, tasks_per_project=150, assignees=1, mailboxes=5, latency_ms=200),
    Volume("long", projects=4, tasks_per_project=500, assignees=2, mailboxes=20, latency_ms=200),
)


@pytest.mark.parametrize("volume", LEDGER_KILLS)
def test_the_ledger_killed_mid_batch_allocates_every_endpoint_once(run_factory, volume):
    run = run_factory("SIGKILL the ledger mid-batch", volume)
    expected = run.generate()
    run.start()
    run.sync()
    kills = 0
    ledger = "ledger"
    while run.events_written() < len(expected) and kills < (2 if volume.run == "short" else 6):
        assert wait_for(lambda: run.events_written() > 0, timeout=120)
        time.sleep(1.0)
        ledger = run.kill(ledger)
        kills += 1
    run.finish(Expectation(frozenset(expected)), f"{kills} ledger SIGKILLs while allocating")
