"""Running many small Graph conversations at once: one per assignee of a task.

A step is a generator that yields ``GraphRequest``s and receives each one's successful
``GraphResult`` (a failed one is thrown into it as the error ``graph_protocol`` says it means),
so the deciding logic reads top to bottom ("look it up; if missing, create it") while the
requests of every assignee of a task travel together, in the same ``$batch`` when they can.
The driver is the only part that knows about futures; tests drive steps with completed ones.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from services.event_writer.graph_protocol import (
    GraphRequest,
    GraphResult,
    error_for,
    outcome_uncertain,
)

Step = Generator[GraphRequest, GraphResult, Any]
Submit = Callable[[GraphRequest], "Future[GraphResult]"]


@dataclass
class StepResults:
    values: dict[Hashable, Any] = field(default_factory=dict)  # a step's return value ...
    errors: dict[Hashable, Exception] = field(default_factory=dict)  # ... or its error
    uncertain: bool = False  # a create failed in a way that may have created the event


def run_steps(submit: Submit, steps: dict[Hashable, Step]) -> StepResults:
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

    for key in steps:
        advance(key, None, None)
    while waiting:
        done, _ = wait(list(waiting), return_when=FIRST_COMPLETED)
        for future in done:
            key, request = waiting.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - thrown into the step that asked
                results.uncertain |= outcome_uncertain(request, exc)
                advance(key, None, exc)
                continue
            if result.ok:
                advance(key, result, None)
            else:
                error = error_for(request, result)
                results.uncertain |= outcome_uncertain(request, error)
                advance(key, None, error)
    return results
