"""The Graph edge sends what graph_protocol says, headers included."""

import asyncio

import httpx

from services.event_writer import graph_protocol as gp
from services.event_writer.graph import GraphTransport, LoopTokens


class Tokens:
    def __init__(self):
        self.issued = 0
        self.invalidated = 0

    def token(self):
        self.issued += 1
        return f"t{self.issued}"

    def invalidate(self):
        self.invalidated += 1


def send(answer, request, tokens=None):
    async def go():
        http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        transport = GraphTransport(http, "https://graph.example/v1.0", LoopTokens(tokens))
        try:
            return await transport.send(request)
        finally:
            await http.aclose()

    return asyncio.run(go())


def test_a_single_request_carries_the_immutable_id_preference():
    seen = []

    def answer(request):
        seen.append(request)
        return httpx.Response(201, json={"id": "AAkALg1"})

    result = send(answer, gp.create("a@x.com", {"subject": "s"}), Tokens())
    assert gp.created_id(result) == "AAkALg1"
    [request] = seen
    assert request.headers["Prefer"] == 'IdType="ImmutableId"'
    assert request.headers["Authorization"] == "Bearer t1"


def test_a_refused_token_is_dropped_and_the_request_sent_once_more_with_a_fresh_one():
    seen = []

    def answer(request):
        seen.append(request.headers["Authorization"])
        return httpx.Response(401 if len(seen) == 1 else 201, json={"id": "e1"})

    tokens = Tokens()
    result = send(answer, gp.create("a@x.com", {"subject": "s"}), tokens)
    assert result.status == 201
    assert seen == ["Bearer t1", "Bearer t2"] and tokens.invalidated == 1


def test_a_token_is_reused_between_requests_not_fetched_for_each():
    tokens = Tokens()

    async def go():
        http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(204)))
        transport = GraphTransport(http, "https://graph.example/v1.0", LoopTokens(tokens))
        for _ in range(5):
            await transport.send(gp.delete("a@x.com", "e1"))
        await http.aclose()

    asyncio.run(go())
    assert tokens.issued == 1
