"""Windows sign-ins authenticate connections: each request in flight has a client (one
connection) to itself, and a client freed is reused, authenticated, by the next request."""

import threading

from services.poller.pwa_connections import ConnectionLeases


class Client:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def test_requests_in_flight_at_once_never_share_a_client_and_freed_ones_are_reused():
    made = []
    leases = ConnectionLeases(lambda: made.append(Client()) or made[-1])
    with leases.lease() as first, leases.lease() as second:
        assert first is not second
    with leases.lease() as again:
        assert again in (first, second)
    assert len(made) == 2


def test_many_threads_use_no_more_clients_than_ran_at_once_and_all_are_closed():
    made, in_use, most = [], set(), [0]
    lock, barrier = threading.Lock(), threading.Barrier(4)
    leases = ConnectionLeases(lambda: made.append(Client()) or made[-1])

    def work():
        barrier.wait()
        for _ in range(50):
            with leases.lease() as client:
                with lock:
                    assert client not in in_use
                    in_use.add(client)
                    most[0] = max(most[0], len(in_use))
                with lock:
                    in_use.discard(client)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) <= 4
    leases.close()
    assert all(client.closed for client in made)
