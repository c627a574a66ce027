"""The poller's read-ahead: results in order, reads overlapped up to the depth and no further,
a failed read raised at its turn, and nothing more started once the caller leaves."""

import threading
import time

import pytest
import structlog

from services.poller.read_ahead import read_ahead


class Reads:
    """Records how many reads run at once; each takes ``seconds``."""

    def __init__(self, seconds=0.02, fail=None):
        self.seconds, self.fail = seconds, fail
        self.running = self.most = 0
        self.started = []
        self._lock = threading.Lock()

    def __call__(self, item):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append(item)
        try:
            time.sleep(self.seconds)
            if item == self.fail:
                raise RuntimeError(f"cannot read {item}")
            return item * 10
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_results_come_back_in_order_with_at_most_depth_reads_at_once(depth):
    reads = Reads()
    assert list(read_ahead(range(12), reads, depth)) == [(n, n * 10) for n in range(12)]
    assert reads.most == min(depth, 12)
    assert sorted(reads.started) == list(range(12))


def test_a_failed_read_raises_at_its_turn_after_the_ones_before_it():
    got = []
    with pytest.raises(RuntimeError, match="cannot read 2"):
        for _, result in read_ahead(range(6), Reads(fail=2), 3):
            got.append(result)
    assert got == [0, 10]


def test_leaving_early_starts_no_further_reads():
    reads = Reads()
    iterator = read_ahead(range(100), reads, 4)
    assert next(iterator) == (0, 0)
    iterator.close()
    assert len(reads.started) <= 5
    assert reads.running == 0  # the ones running were awaited


def test_reads_see_the_callers_bound_log_fields():
    structlog.contextvars.bind_contextvars(run_id="run-1")
    try:
        seen = [
            r
            for _, r in read_ahead(
                range(3), lambda _: structlog.contextvars.get_contextvars().get("run_id"), 2
            )
        ]
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
    assert seen == ["run-1"] * 3
