"""Background loops that survive any error and report their heartbeat on /healthz (issue 11,
item 1): a loop that died or hangs turns the liveness probe red."""

import threading
import time

import httpx
import redis.exceptions

from common.health import HealthServer, Heartbeats, run_every


def test_a_loop_goes_on_after_any_error_and_keeps_beating():
    heartbeats, stop, calls = Heartbeats(), threading.Event(), []

    def body():
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")

    thread = run_every("renewer", 0.01, body, stop, heartbeats=heartbeats, max_backoff=0.01)
    deadline = time.monotonic() + 5
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 5  # two failed rounds, and it went on
    assert heartbeats.checks()["renewer"]() is True
    stop.set()
    thread.join(2)
    assert heartbeats.checks() == {}  # stopped as asked: not reported as dead


def test_a_loop_that_keeps_failing_backs_off_instead_of_spinning():
    heartbeats, stop, calls = Heartbeats(), threading.Event(), []

    def body():
        calls.append(1)
        raise RuntimeError("always")

    thread = run_every("releaser", 0.01, body, stop, heartbeats=heartbeats, max_backoff=0.2)
    time.sleep(1.0)
    stop.set()
    thread.join(2)
    assert 3 <= len(calls) <= 12  # 0.02, 0.04, ... 0.2 s apart: not 100 rounds a second


def test_a_silent_loop_fails_the_liveness_probe():
    now = [0.0]
    heartbeats = Heartbeats(clock=lambda: now[0])
    beat = heartbeats.register("dispatcher", max_silence=30)
    server = HealthServer(
        0, liveness={"consumers": lambda: True}, readiness={}, heartbeats=heartbeats
    )
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        answer = httpx.get(url)
        assert answer.status_code == 200
        assert answer.json()["checks"] == {"consumers": True, "dispatcher": True}
        now[0] = 31.0  # it stopped beating (died, or stuck in a call)
        answer = httpx.get(url)
        assert answer.status_code == 503
        assert answer.json()["checks"]["dispatcher"] is False
        beat.beat()
        assert httpx.get(url).status_code == 200
    finally:
        server.stop()


def test_names_stay_apart_when_a_loop_runs_twice():
    heartbeats = Heartbeats()
    first, second = heartbeats.register("x", 1), heartbeats.register("x", 1)
    assert set(heartbeats.checks()) == {"x", "x#2"}
    first.close()
    assert set(heartbeats.checks()) == {"x#2"}
    second.close()


def test_the_held_task_releaser_goes_on_after_an_error_reply_and_reports_itself():
    from common.health import HEARTBEATS
    from services.ledger.service import HeldTaskReleaser

    calls, published, stop = [], [], threading.Event()

    class Ledger:
        def release_held(self, limit, publish):
            calls.append(limit)
            if len(calls) == 1:  # raw, as from a store that does not translate it
                raise redis.exceptions.OutOfMemoryError("command not allowed")
            publish("body")
            return ["body"]

    releaser = HeldTaskReleaser(Ledger(), 10, lambda body: published.append(body))
    thread = threading.Thread(target=releaser.run, args=(stop, 0.01), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while len(published) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert thread.is_alive() and len(published) >= 2
    assert HEARTBEATS.checks()["held-releaser"]() is True
    stop.set()
    thread.join(2)
    assert "held-releaser" not in HEARTBEATS.checks()


def test_the_scheduler_reports_its_heartbeat_while_it_runs():
    from common.health import HEARTBEATS
    from tests.unit.test_scheduler import Coordinator, Publisher, RecordingStop, scheduler

    seen = {}

    class Stop(RecordingStop):
        def wait(self, seconds):
            seen.update({n: c() for n, c in HEARTBEATS.checks().items() if n == "scheduler"})
            return super().wait(seconds)

    scheduler(Publisher(failures=1), Coordinator()).run(Stop(limit=2))
    assert seen == {"scheduler": True}
    assert "scheduler" not in HEARTBEATS.checks()  # stopped as asked
