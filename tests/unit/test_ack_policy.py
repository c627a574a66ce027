import pytest

from common.ack_policy import Ack, DeadLetter, Retry, decide
from common.errors import (
    BadMessage,
    Contended,
    PermanentApiError,
    RetryableApiError,
    RetryableError,
)
from common.topology import topology_for

QUEUE = topology_for("x").task_changes


def test_success_is_acked():
    assert decide(None, attempt=1, queue=QUEUE) == Ack()


def test_permanent_errors_are_dead_lettered_at_once_with_the_reason():
    decision = decide(BadMessage("body is not UTF-8 JSON"), attempt=1, queue=QUEUE)
    assert decision == DeadLetter("BadMessage: body is not UTF-8 JSON")
    assert isinstance(decide(PermanentApiError("404"), attempt=1, queue=QUEUE), DeadLetter)


def test_retryable_errors_back_off_with_the_attempt():
    delays = [
        decide(RetryableError("timeout"), attempt=n, queue=QUEUE, max_attempts=10).delay_seconds
        for n in range(1, 7)
    ]
    assert delays == sorted(delays)
    assert delays[0] == QUEUE.retry_tiers[0]
    assert delays[-1] == QUEUE.retry_tiers[-1]


def test_retry_after_is_honoured():
    decision = decide(RetryableApiError("429", retry_after=45), attempt=1, queue=QUEUE)
    assert isinstance(decision, Retry) and decision.delay_seconds >= 45


def test_unexpected_exceptions_are_retried_then_dead_lettered():
    assert isinstance(decide(KeyError("bug"), attempt=1, queue=QUEUE), Retry)
    final = decide(KeyError("bug"), attempt=8, queue=QUEUE, max_attempts=8)
    assert isinstance(final, DeadLetter)
    assert final.reason.startswith("gave up after 8 attempts; last error: KeyError")


@pytest.mark.parametrize("attempt", range(1, 30))
def test_no_decision_ever_requeues_immediately(attempt):
    decision = decide(RetryableError("x"), attempt=attempt, queue=QUEUE)
    assert isinstance(decision, DeadLetter) or decision.delay_seconds >= 1


@pytest.mark.parametrize("attempt", [1, 7, 8, 50])
def test_contention_waits_out_the_lease_without_using_an_attempt(attempt):
    decision = decide(Contended("busy", retry_after=8.5), attempt=attempt, queue=QUEUE)
    assert decision == Retry(QUEUE.tier_for(8.5), "Contended: busy", counts=False)
    assert decision.delay_seconds >= 8.5
    assert decide(Contended("busy"), attempt=1, queue=QUEUE).delay_seconds >= 1
