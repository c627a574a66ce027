"""Running many small Graph conversations at once: one per assignee of a task.

A step is a generator that yields ``GraphRequest``s and receives each one's successful
``GraphResult`` (a failed one is thrown into it as the error ``graph_protocol`` says it means),
so the deciding logic reads top to bottom ("look it up; if missing, create it") while the
requests of every assignee of a task travel together, in the same ``$batch`` when they can.
The driver is the only part that knows about futures; tests drive steps with completed ones.

Waiting has a deadline: when no answer at all came for ``answer_timeout`` seconds (a stuck
dispatcher, a mailbox whose slots other replicas never free), the requests still out are given
up. One not sent yet is cancelled (it is never sent, so nothing is uncertain); one in flight
may still be carried out (a create then leaves the task dirty). Either is a retryable error in
its step, so the handling ends, its task lease is given back and the message is retried:
a lease is renewed only while its handling makes progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from common.errors import RetryableApiError
from services.event_writer.graph_protocol import (
    GraphRequest,
    GraphResult,
    error_for,
    outcome_uncertain,
)

Step = Generator[GraphRequest, GraphResult, Any]
Submit = Callable[[GraphRequest], "Future[GraphResult]"]

#: No answer from the dispatcher for this long: the requests still out are given up. Above what
#: one request may take there: 3 throttle waits of up to 30 s and 4 sends of up to 30 s.
ANSWER_TIMEOUT_SECONDS = 300.0


@dataclass
class StepResults:
    values: dict[Hashable, Any] = field(default_factory=dict)  # a step's return value ...
    errors: dict[Hashable, Exception] = field(default_factory=dict)  # ... or its error
    uncertain: bool = False  # a create failed in a way that may have created the event


def run_steps(
    submit: Submit,
    steps: dict[Hashable, Step],
    *,
    answer_timeout: float = ANSWER_TIMEOUT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> StepResults:
    results = StepResults()
    waiting: dict[Future[GraphResult], tuple[Hashable, GraphRequest]] = {}

    def advance(key: Hashable, value: GraphResult | None, error: Exception | None) -> None:
        step = steps[key]
        try:
            request = step.throw(error) if error is not None else step.send(value)  # type: ignore[arg-type]
        except StopIteration as done:
            results.values[key] = done.value
            return
        except Exception as exc:  # noqa: BLE001 - a step's failure is its result
            results.errors[key] = exc
            return
        waiting[submit(request)] = (key, request)

    def judge(key: Hashable, request: GraphRequest, future: Future[GraphResult]) -> None:
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - thrown into the step that asked
            results.uncertain |= outcome_uncertain(request, exc)
            advance(key, None, exc)
            return
        if result.ok:
            advance(key, result, None)
        else:
            error = error_for(request, result)
            results.uncertain |= outcome_uncertain(request, error)
            advance(key, None, error)

    def give_up(key: Hashable, request: GraphRequest, future: Future[GraphResult]) -> None:
        where = f"{request.method} in {request.mailbox}"
        if future.cancel():  # never sent, and now never will be: nothing is uncertain
            advance(key, None, RetryableApiError(f"{where} not sent in {answer_timeout:.0f} s"))
        elif future.done():  # answered just now
            judge(key, request, future)
        else:  # in flight: it may still be carried out
            error = RetryableApiError(f"no answer for {where} in {answer_timeout:.0f} s")
            results.uncertain |= outcome_uncertain(request, error)
            advance(key, None, error)

    for key in steps:
        advance(key, None, None)
    last_answer = clock()
    while waiting:
        timeout = max(0.0, last_answer + answer_timeout - clock())
        done, _ = wait(list(waiting), timeout=timeout, return_when=FIRST_COMPLETED)
        last_answer = clock()  # the requests asked next get a full wait
        if done:
            for future in done:
                judge(*waiting.pop(future), future)
        else:  # no answer at all for answer_timeout: every request still out is given up
            for future, (key, request) in list(waiting.items()):
                del waiting[future]
                give_up(key, request, future)
    return results
