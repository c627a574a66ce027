"""One handling's conversation with Graph: every request awaited with a deadline, every
failed answer turned into the error it stands for.

A step (one per assignee, see ``handler``) is a coroutine that awaits ``GraphCalls(request)``
and gets the successful ``GraphResult``, or the error ``graph_protocol`` says a failed one
means, raised where it asked; so the deciding logic reads top to bottom ("look it up; if
missing, create it") while the requests of every assignee of a task are out at once (in the
same ``$batch`` when they can). ``run_steps`` runs a handling's steps together and collects
each one's value or error.

Waiting has a deadline: a request with no answer ``answer_timeout`` seconds after it was
submitted (a stuck dispatcher, a mailbox whose slots other replicas never free) is given up.
One not sent yet is cancelled (it is never sent, so nothing is uncertain); one in flight may
still be carried out (a create then leaves the task dirty). Either is a retryable error in its
step, so the handling ends, its task lease is given back and the message is retried: a lease
is renewed only while its handling makes progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

from common.errors import RetryableApiError, Stopping
from services.event_writer.graph_protocol import (
    GraphRequest,
    GraphResult,
    error_for,
    outcome_uncertain,
)

#: No answer to one request for this long: it is given up. Above what one request may take
#: there: 3 throttle waits of up to 30 s and 4 sends of up to 30 s.
ANSWER_TIMEOUT_SECONDS = 300.0


@dataclass(eq=False)
class Ticket:
    """A request handed to the dispatcher: its answer to come, and whether it went out."""

    future: asyncio.Future[GraphResult]
    sent: bool = False  # set by the dispatcher when the request is taken to be sent
    given_up: bool = False  # no answer in time: the handling stopped waiting


Submit = Callable[[GraphRequest], Ticket]
Step = Coroutine[Any, Any, Any]


class GraphCalls:
    """Sends one handling's requests and remembers whether a create may have happened
    without its answer (``uncertain``: the task stays dirty)."""

    def __init__(self, submit: Submit, answer_timeout: float = ANSWER_TIMEOUT_SECONDS) -> None:
        self._submit = submit
        self._timeout = answer_timeout
        self.uncertain = False

    async def __call__(self, request: GraphRequest) -> GraphResult:
        ticket = self._submit(request)
        # A timer that gives the request up, not wait_for (that costs a task per request).
        expiry = asyncio.get_running_loop().call_later(self._timeout, self._expire, ticket)
        try:
            result = await ticket.future
        except asyncio.CancelledError:
            if ticket.given_up:  # the timer cancelled the future, not a stop
                raise self._given_up(request, ticket) from None
            ticket.future.cancel()
            raise
        except Stopping:
            raise  # never sent
        except Exception as exc:
            self.uncertain |= outcome_uncertain(request, exc)
            raise
        finally:
            expiry.cancel()
        if result.ok:
            return result
        error = error_for(request, result)
        self.uncertain |= outcome_uncertain(request, error)
        raise error

    @staticmethod
    def _expire(ticket: Ticket) -> None:
        if not ticket.future.done():
            ticket.given_up = True
            ticket.future.cancel()  # nobody waits for it any more; never sent if not out yet

    def _given_up(self, request: GraphRequest, ticket: Ticket) -> Exception:
        where = f"{request.method} in {request.mailbox}"
        if not ticket.sent:
            return RetryableApiError(f"{where} not sent in {self._timeout:.0f} s")
        error = RetryableApiError(f"no answer for {where} in {self._timeout:.0f} s")
        self.uncertain |= outcome_uncertain(request, error)
        return error


@dataclass
class StepResults:
    values: dict[Hashable, Any] = field(default_factory=dict)  # a step's return value ...
    errors: dict[Hashable, Exception] = field(default_factory=dict)  # ... or its error
    uncertain: bool = False  # a create failed in a way that may have created the event


async def run_steps(calls: GraphCalls, steps: dict[Hashable, Step]) -> StepResults:
    """Run every step at once; each one's value or error (a step's failure is its result)."""
    results = StepResults()
    keys = list(steps)
    if len(steps) == 1:  # one assignee, the usual task: awaited here, without a task of its own
        try:
            outcomes = [await steps[keys[0]]]
        except Exception as exc:  # noqa: BLE001 - a step's failure is its result
            outcomes = [exc]
    else:
        outcomes = await asyncio.gather(*steps.values(), return_exceptions=True)
    for key, outcome in zip(keys, outcomes, strict=True):
        if isinstance(outcome, Exception):
            results.errors[key] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome  # cancelled: the handling is being stopped
        else:
            results.values[key] = outcome
    results.uncertain = calls.uncertain
    return results
