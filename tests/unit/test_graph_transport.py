"""The Graph edge sends what graph_protocol says, headers included."""

import httpx

from services.event_writer import graph_protocol as gp
from services.event_writer.graph import GraphTransport


class Tokens:
    def token(self):
        return "t"

    def invalidate(self):
        pass


def test_a_single_request_carries_the_immutable_id_preference():
    seen = []

    def answer(request):
        seen.append(request)
        return httpx.Response(201, json={"id": "AAkALg1"})

    http = httpx.Client(transport=httpx.MockTransport(answer))
    transport = GraphTransport(http, "https://graph.example/v1.0", Tokens())
    result = transport.send(gp.create("a@x.com", {"subject": "s"}))
    assert gp.created_id(result) == "AAkALg1"
    [request] = seen
    assert request.headers["Prefer"] == 'IdType="ImmutableId"'
    assert request.headers["Authorization"] == "Bearer t"
