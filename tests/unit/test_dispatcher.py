"""The batching layer with an in-memory transport and limiter (our own ports)."""

import asyncio
import threading
import time
from collections import Counter

import pytest

from common.errors import RetryableApiError
from services.event_writer import graph_protocol as gp
from services.event_writer.dispatcher import GraphDispatcher, _groups, _Op
from services.event_writer.graph_protocol import GraphResult
from services.event_writer.mailbox_limits import Grant
from services.event_writer.steps import Ticket


class Limiter:
    concurrency = 4

    def __init__(self):
        self.lock = threading.Lock()
        self.held = Counter()
        self.peak = Counter()
        self.paused = {}
        self.budget_wait = {}
        self.budget_left = 0  # what a grant says the budget still holds (0: no hand-ons)
        self.charged = Counter()  # requests sent on handed-on slots, per mailbox
        self.grants = 0  # slot requests that granted a slot
        self.leases_hold = True  # what lease_alive says
        self.n = 0

    async def acquire(self, wanted, released=None):
        grants = {}
        self.free(released or {})  # given back in the same script, before counting
        with self.lock:
            for mailbox, count in wanted.items():
                if mailbox in self.budget_wait:
                    grants[mailbox] = Grant((), self.budget_wait[mailbox])
                    continue
                granted = max(0, min(count, self.concurrency - self.held[mailbox]))
                self.held[mailbox] += granted
                self.peak[mailbox] = max(self.peak[mailbox], self.held[mailbox])
                tokens = []
                for _ in range(granted):
                    self.n += 1
                    tokens.append(str(self.n))
                grants[mailbox] = Grant(tuple(tokens), 0.0, self.budget_left)
                self.grants += granted > 0
        return grants

    async def release(self, tokens):
        self.free(tokens)

    def free(self, tokens):
        with self.lock:
            for mailbox, held in tokens.items():
                self.held[mailbox] -= len(held)

    async def pause(self, mailbox, seconds):
        self.paused[mailbox] = seconds

    def lease_alive(self, mailbox, token):
        return self.leases_hold

    async def charge(self, mailbox, requests):
        with self.lock:
            self.charged[mailbox] += requests


class Transport:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = []  # one list of requests per HTTP request
        self.script = {}  # mailbox -> results to answer first

    def _answer(self, request):
        with self.lock:
            queue = self.script.get(request.mailbox)
            if queue:
                return queue.pop(0)
        return GraphResult(201, {"id": f"{request.mailbox}:{request.body['n']}"})

    async def send(self, request):
        with self.lock:
            self.sent.append([request])
        return self._answer(request)

    async def send_batch(self, requests):
        with self.lock:
            self.sent.append(list(requests))
        return [self._answer(r) for r in requests]


class Running:
    """A dispatcher on an event loop of its own thread, driven from the test's thread:
    ``submit`` hands back a concurrent Future of the request's answer."""

    def __init__(self, transport, limiter, **kwargs):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make():
            return GraphDispatcher(transport, limiter, **kwargs)

        self.dispatcher = self.call(make())
        self.started = False

    def call(self, coroutine, timeout=10):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self):
        async def start():
            self.dispatcher.start()

        self.call(start())
        self.started = True
        return self

    def submit(self, request):
        async def submit():
            return self.dispatcher.submit(request).future

        future = self.call(submit())

        async def answer():
            return await future

        return asyncio.run_coroutine_threadsafe(answer(), self.loop)

    def waiting(self):
        async def waiting():
            return self.dispatcher.waiting()

        return self.call(waiting())

    def mailboxes_known(self):
        async def known():
            return self.dispatcher.mailboxes_known()

        return self.call(known())

    @property
    def sent(self):
        return self.dispatcher.sent

    def close(self):
        if self.loop.is_running():
            self.call(self.dispatcher.close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def parts():
    transport, limiter = Transport(), Limiter()
    dispatcher = Running(
        transport, limiter, linger_seconds=0.05, max_wait_seconds=1.0, poll_seconds=0.005
    )
    yield transport, limiter, dispatcher
    dispatcher.close()


def submit_all(dispatcher, requests):
    futures = [dispatcher.submit(r) for r in requests]
    dispatcher.start()
    return futures


def test_requests_are_batched_by_twenty_and_each_future_gets_its_own_answer(parts):
    transport, limiter, dispatcher = parts
    requests = [gp.create(f"m{i % 10}@x.com", {"n": i}) for i in range(30)]
    futures = submit_all(dispatcher, requests)
    results = [f.result(timeout=10) for f in futures]
    assert [r.body["id"] for r in results] == [f"m{i % 10}@x.com:{i}" for i in range(30)]
    assert all(len(sent) <= gp.MAX_BATCH for sent in transport.sent)
    assert len(transport.sent) < 30  # batched
    assert max(limiter.peak.values()) <= 4
    deadline = time.monotonic() + 5  # given back by the dispatcher's next round trip
    while sum(limiter.held.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(limiter.held.values()) == 0  # every slot given back


def test_one_mailbox_never_has_more_than_four_requests_in_flight(parts):
    transport, limiter, dispatcher = parts
    futures = submit_all(dispatcher, [gp.create("busy@x.com", {"n": i}) for i in range(13)])
    assert all(f.result(timeout=10).ok for f in futures)
    assert limiter.peak["busy@x.com"] == 4
    assert all(len(sent) <= 4 for sent in transport.sent)


def test_a_throttled_item_pauses_its_mailbox_and_is_sent_again_alone(parts):
    transport, limiter, dispatcher = parts
    transport.script["slow@x.com"] = [GraphResult(429, {}, {"retry-after": "0.01"})]
    futures = submit_all(
        dispatcher, [gp.create("slow@x.com", {"n": 0}), gp.create("fast@x.com", {"n": 1})]
    )
    assert futures[0].result(timeout=10).body["id"] == "slow@x.com:0"
    assert futures[1].result(timeout=10).body["id"] == "fast@x.com:1"
    assert limiter.paused == {"slow@x.com": 0.01}  # shared with every replica
    assert [r.mailbox for r in transport.sent[-1]] == ["slow@x.com"]
    assert dispatcher.sent["throttled"] == 1


def test_a_mailbox_throttled_again_and_again_fails_over_to_a_delayed_retry(parts):
    transport, _, dispatcher = parts
    transport.script["slow@x.com"] = [GraphResult(429, {}, {"retry-after": "0.01"})] * 4
    [future] = submit_all(dispatcher, [gp.create("slow@x.com", {"n": 0})])
    with pytest.raises(RetryableApiError) as caught:
        future.result(timeout=10)
    assert caught.value.retry_after == 0.01


def test_a_long_retry_after_is_not_waited_out_in_the_writer(parts):
    transport, _, dispatcher = parts
    transport.script["slow@x.com"] = [GraphResult(429, {}, {"retry-after": "120"})]
    [future] = submit_all(dispatcher, [gp.create("slow@x.com", {"n": 0})])
    with pytest.raises(RetryableApiError) as caught:
        future.result(timeout=10)
    assert caught.value.retry_after == 120


def test_a_mailbox_out_of_budget_fails_its_requests_as_retryable(parts):
    _, limiter, dispatcher = parts
    limiter.budget_wait["spent@x.com"] = 300.0
    futures = submit_all(
        dispatcher, [gp.create("spent@x.com", {"n": 0}), gp.create("ok@x.com", {"n": 1})]
    )
    with pytest.raises(RetryableApiError) as caught:
        futures[0].result(timeout=10)
    assert caught.value.retry_after == 300.0
    assert futures[1].result(timeout=10).ok


def test_a_failed_batch_fails_each_of_its_requests(parts):
    transport, _, dispatcher = parts

    async def broken(requests):
        raise RetryableApiError("Graph unreachable")

    transport.send_batch = broken
    futures = submit_all(dispatcher, [gp.create(f"m{i}@x.com", {"n": i}) for i in range(3)])
    for future in futures:
        with pytest.raises(RetryableApiError):
            future.result(timeout=10)


def test_the_backlog_counts_what_waits_for_a_slot(parts):
    transport, limiter, dispatcher = parts
    limiter.budget_wait["m@x.com"] = 60.0  # the mailbox's budget is spent: nothing goes
    futures = [dispatcher.submit(gp.create("m@x.com", {"n": i})) for i in range(7)]
    assert dispatcher.waiting() == 7
    del limiter.budget_wait["m@x.com"]
    dispatcher.start()
    for future in futures:
        future.result(timeout=5)
    assert dispatcher.waiting() == 0


@pytest.mark.parametrize("budget_left", [0, 100_000], ids=["slot requests", "hand-ons"])
def test_on_stop_requests_not_sent_yet_fail_as_stopping_and_in_flight_ones_are_answered(
    budget_left,
):
    """SIGTERM: what has not gone to Graph never will (its message is redelivered); what is
    out is answered as usual."""
    from common.errors import Stopping

    release = threading.Event()
    transport, limiter = Transport(), Limiter()
    limiter.budget_left = budget_left

    async def slow(request):
        await asyncio.to_thread(release.wait, 10)
        return GraphResult(201, {"id": "sent"})

    transport.send_batch = None  # one mailbox, one request per send
    transport.send = slow
    limiter.concurrency = 1
    running = Running(transport, limiter, linger_seconds=0.001, batch_size=1).start()
    try:
        out = running.submit(gp.create("m@x.com", {"n": 0}))
        waiting = running.submit(gp.create("m@x.com", {"n": 1}))
        time.sleep(0.2)  # the first is out, the second waits for its slot
        running.loop.call_soon_threadsafe(running.dispatcher._stop.set)
        with pytest.raises(Stopping):
            waiting.result(timeout=5)
        release.set()
        assert out.result(timeout=5).body["id"] == "sent"
        with pytest.raises(Stopping):
            running.submit(gp.create("m@x.com", {"n": 2})).result(timeout=5)
    finally:
        release.set()
        running.close()


def grouped(mailboxes, size=4):
    """The groups ``_groups`` makes of requests for ``mailboxes`` (one letter each)."""
    loop = asyncio.new_event_loop()
    try:
        ops = [
            _Op(gp.create(f"{m}@x.com", {"n": i}), Ticket(loop.create_future()), 0.0)
            for i, m in enumerate(mailboxes)
        ]
        return ["".join(op.request.mailbox[0] for op in group) for group in _groups(ops, size)]
    finally:
        loop.close()


def test_a_batch_carries_several_mailboxes_and_one_mailbox_alone_goes_plain():
    # Mailboxes in turn: each batch holds one request of each of four mailboxes.
    assert grouped("aaaabbbbccccdddd") == ["abcd"] * 4
    assert grouped("aaaabbbb") == ["abab", "abab"]
    # What is left of one mailbox goes as plain requests, each slot free on its own answer.
    assert grouped("aaaab") == ["abaa", "a"]
    assert grouped("aaaa") == ["a", "a", "a", "a"]
    assert grouped("aaaa", size=1) == ["a", "a", "a", "a"]


class InFlight(Transport):
    """Plain requests that take ``seconds``; counts the most in flight per mailbox."""

    def __init__(self, seconds=0.01):
        super().__init__()
        self.seconds = seconds
        self.now = Counter()
        self.peak = Counter()
        self.started = []  # when each request went out

    async def send(self, request):
        with self.lock:
            self.started.append(time.monotonic())
            self.now[request.mailbox] += 1
            self.peak[request.mailbox] = max(self.peak[request.mailbox], self.now[request.mailbox])
        try:
            await asyncio.sleep(self.seconds)
            return await super().send(request)
        finally:
            with self.lock:
                self.now[request.mailbox] -= 1


def one_mailbox(limiter, transport, count):
    running = Running(transport, limiter, linger_seconds=0.001).start()
    try:
        futures = [running.submit(gp.create("m@x.com", {"n": i})) for i in range(count)]
        return [f.result(timeout=10).body["id"] for f in futures]
    finally:
        running.close()


def test_a_plain_requests_slot_goes_straight_to_its_mailboxs_next_request():
    """No slot request between one request of a mailbox and the next: the slot is handed on,
    the request counted in the budget afterwards, and still at most 4 are in flight."""
    transport, limiter = InFlight(), Limiter()
    limiter.budget_left = 100_000
    assert one_mailbox(limiter, transport, 40) == [f"m@x.com:{i}" for i in range(40)]
    assert transport.peak["m@x.com"] == 4
    granted = limiter.n
    assert granted + limiter.charged["m@x.com"] == 40  # each request counted once
    assert limiter.charged["m@x.com"] >= 30 and limiter.grants <= 4


def test_hand_ons_are_bounded_per_slot_request_and_stop_near_the_end_of_the_budget():
    from services.event_writer.dispatcher import HAND_ON_MAX, HAND_ON_RESERVE

    transport, limiter = InFlight(seconds=0.002), Limiter()
    limiter.budget_left = 100_000
    count = 4 * HAND_ON_MAX
    one_mailbox(limiter, transport, count)
    assert limiter.n + limiter.charged["m@x.com"] == count
    assert limiter.charged["m@x.com"] <= HAND_ON_MAX * limiter.grants
    assert limiter.grants >= 3  # the slots went back through a slot request now and then

    transport, limiter = InFlight(seconds=0.002), Limiter()
    limiter.budget_left = HAND_ON_RESERVE  # 9,000 spent: every request asks Redis again
    one_mailbox(limiter, transport, 20)
    assert limiter.charged["m@x.com"] == 0 and limiter.n == 20


def test_a_slot_whose_lease_may_have_lapsed_is_not_handed_on():
    transport, limiter = InFlight(seconds=0.002), Limiter()
    limiter.budget_left = 100_000
    limiter.leases_hold = False  # the renewals have been failing
    assert one_mailbox(limiter, transport, 20) == [f"m@x.com:{i}" for i in range(20)]
    assert limiter.charged["m@x.com"] == 0 and limiter.n == 20


def test_a_throttled_answer_does_not_hand_its_slot_on():
    transport, limiter = InFlight(), Limiter()
    limiter.budget_left = 100_000
    limiter.concurrency = 1
    transport.script["m@x.com"] = [GraphResult(429, {}, {"retry-after": "0.3"})]
    assert one_mailbox(limiter, transport, 3) == [f"m@x.com:{i}" for i in range(3)]
    assert limiter.paused == {"m@x.com": 0.3}
    first, following = transport.started[:2]
    assert following - first >= 0.3  # nothing went to the mailbox during its pause
