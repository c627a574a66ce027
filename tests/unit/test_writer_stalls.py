"""A handling whose Graph requests never come back (issue 11, item 1): it ends within its
deadline with a retryable error and gives its task lease back, so the lease is not renewed
for a handling that makes no progress and other replicas are not told ``Contended`` forever."""

import asyncio
import time

from common.errors import RetryableError
from services.event_writer.graph_protocol import GraphResult
from services.event_writer.handler import TaskChangedHandler
from services.event_writer.steps import Ticket
from services.event_writer.task_store import Begun
from tests.unit.fakes import MemoryTaskStore, Recorder
from tests.unit.test_writer_handler import A_BOX, ALICE, ASSIGNEES, B_BOX, BOB, NOW, TASK, task


class StuckGraph:
    """A dispatcher that took the requests and will never answer them (its loop died);
    ``in_flight`` ones were already sent (the dispatcher marked them so)."""

    def __init__(self, *, in_flight=False):
        self.futures = []
        self.in_flight = in_flight

    def submit(self, request):
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return Ticket(future, sent=self.in_flight)


def handle_within(handler, message, within):
    """The handler's outcome, or a failure if it is still waiting after ``within`` s."""

    async def run():
        try:
            await asyncio.wait_for(handler.handle(message), within)
            return "done"
        except TimeoutError:
            raise AssertionError(f"the handling still waits for Graph after {within} s") from None
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc

    return asyncio.run(run())


def world(graph):
    store = MemoryTaskStore()
    store.mailboxes = {A_BOX: "clean", B_BOX: "clean"}
    handler = TaskChangedHandler(
        store=store,
        submit=graph.submit,
        publish_transfer=Recorder(),
        clock=lambda: NOW,
        lease_wait_seconds=0.05,
        graph_answer_timeout=0.3,
    )
    return store, handler


def test_requests_never_sent_are_cancelled_and_the_lease_is_given_back():
    graph = StuckGraph()
    store, handler = world(graph)
    started = time.monotonic()
    outcome = handle_within(handler, task(ASSIGNEES), within=5)
    assert isinstance(outcome, RetryableError)  # the message is retried later
    assert 0.3 <= time.monotonic() - started < 3
    assert graph.futures and all(f.cancelled() for f in graph.futures)  # never sent later
    assert TASK not in store.leases
    assert store.dirty[TASK] is False  # nothing was sent, so nothing is uncertain
    # Another writer can take the task at once.
    assert isinstance(asyncio.run(store.begin(TASK, "later", "upsert", [A_BOX])), Begun)


def test_a_create_in_flight_that_never_answers_leaves_the_task_dirty():
    graph = StuckGraph(in_flight=True)
    store, handler = world(graph)
    outcome = handle_within(handler, task(ASSIGNEES), within=5)
    assert isinstance(outcome, RetryableError)
    assert TASK not in store.leases
    assert store.dirty[TASK] is True  # it may have been created: the next handling looks
    assert ALICE not in store.maps.get(TASK, {})


def test_a_handling_that_keeps_getting_answers_is_not_cut_short():
    """The deadline counts per request: a dirty task's lookup and then its create, 0.2 s
    each, take longer than the 0.3 s deadline together and still go through."""

    class SlowGraph:
        def submit(self, request):
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            answer = GraphResult(201, {"id": "e1", "value": []})
            loop.call_later(0.2, future.set_result, answer)
            return Ticket(future, sent=True)

    store, handler = world(SlowGraph())
    store.dirty[TASK] = True
    assert handle_within(handler, task(ASSIGNEES), within=5) == "done"
    assert store.dirty[TASK] is False and set(store.maps[TASK]) == {ALICE, BOB}
