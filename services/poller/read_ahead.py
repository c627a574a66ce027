"""Reading the next projects while the runner works on this one.

A project's reads (its tasks and its assignments) are a few round trips to the plan's server,
and a run over many projects spends most of its time waiting on them, one project after
another. ``read_ahead`` keeps up to ``depth`` projects' reads in flight on worker threads and
hands the results back in the runner's order, so what the runner decides, publishes and
records stays sequential (project states saved in order, a stop between two projects) while
the round trips overlap.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def read_ahead(
    items: Iterable[Item], read: Callable[[Item], Result], depth: int
) -> Iterator[tuple[Item, Result]]:
    """Each item with ``read(item)``, in order, reading up to ``depth`` items at once. A read
    that failed raises when its item's turn comes, as if read then. Close the iterator when
    leaving early: the reads not started are dropped, the running ones awaited."""
    if depth <= 1:
        for item in items:
            yield item, read(item)
        return
    remaining = iter(items)
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="read-ahead") as pool:

        def submit(item: Item) -> tuple[Item, Future[Result]]:
            # The reader's log lines carry the run's bound fields (run id, correlation id).
            return item, pool.submit(contextvars.copy_context().run, read, item)

        pending = deque(submit(item) for _, item in zip(range(depth), remaining, strict=False))
        try:
            while pending:
                item, future = pending.popleft()
                result = future.result()
                following = next(remaining, _END)
                if following is not _END:
                    pending.append(submit(following))  # type: ignore[arg-type]
                yield item, result
        finally:
            for _, future in pending:
                future.cancel()


_END = object()
