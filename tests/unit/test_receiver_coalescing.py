"""Publish calls to sync requests: one at once, the rest of a window folded into one more."""

from __future__ import annotations

import uuid

import pytest

from services.receiver.coalescing import Due, PublishCoalescer

A, B = uuid.uuid4(), uuid.uuid4()


def test_the_first_call_asks_at_once_and_a_burst_folds_into_one_more():
    coalescer = PublishCoalescer(2.0, quiet_seconds=0.25)
    published = [coalescer.offer(A, 0.0)]
    published += [coalescer.offer(A, 0.05 * k) for k in range(1, 20)]  # calls until 0.95 s
    assert [d for d in published if d] == [Due(A, 0.0)]
    assert coalescer.due(1.1) == []
    assert coalescer.next_deadline() == pytest.approx(1.2)  # the calls paused for 0.25 s
    assert coalescer.due(1.21) == [Due(A, 0.05)]  # answers the oldest folded call
    assert coalescer.due(3.3) == []  # nothing came meanwhile: the window is forgotten
    assert coalescer.next_deadline() is None


def test_calls_that_never_pause_are_sent_when_the_window_ends():
    coalescer = PublishCoalescer(2.0, quiet_seconds=0.25)
    coalescer.offer(A, 0.0)
    for k in range(1, 20):
        coalescer.offer(A, 0.1 * k)
        assert coalescer.due(0.1 * k + 0.05) == []
    assert coalescer.next_deadline() == 2.0
    assert coalescer.due(2.0) == [Due(A, 0.1)]


def test_a_lone_call_after_the_first_waits_only_the_pause():
    coalescer = PublishCoalescer(2.0, quiet_seconds=0.25)
    coalescer.offer(A, 0.0)
    assert coalescer.offer(A, 0.5) is None
    assert coalescer.due(0.7) == []
    assert coalescer.due(0.75) == [Due(A, 0.5)]


def test_projects_have_windows_of_their_own():
    coalescer = PublishCoalescer(2.0)
    assert coalescer.offer(A, 0.0) == Due(A, 0.0)
    assert coalescer.offer(B, 0.5) == Due(B, 0.5)
    assert coalescer.offer(A, 1.0) is None
    assert coalescer.due(1.25) == [Due(A, 1.0)]
    assert coalescer.offer(B, 3.0) == Due(B, 3.0)  # B's window ended at 2.5


def test_a_call_after_the_window_asks_at_once_again():
    coalescer = PublishCoalescer(1.0)
    coalescer.offer(A, 0.0)
    assert coalescer.offer(A, 1.0) == Due(A, 1.0)


def test_drain_returns_every_folded_call_and_forgets_the_rest():
    coalescer = PublishCoalescer(5.0)
    coalescer.offer(A, 0.0)
    coalescer.offer(A, 1.0)
    coalescer.offer(B, 1.0)
    assert coalescer.drain() == [Due(A, 1.0)]
    assert coalescer.next_deadline() is None


def test_a_zero_window_asks_for_every_call():
    coalescer = PublishCoalescer(0.0)
    assert all(coalescer.offer(A, float(t)) for t in range(5))
