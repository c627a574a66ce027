"""The Graph edge sends what graph_protocol says, headers included (against a local aiohttp
server: the edge's own HTTP client, no Graph)."""

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

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


def send_all(answer, requests, tokens):
    """Send ``requests`` one by one to a server answering with ``answer(request)``; the
    results and what the server saw."""
    seen = []

    async def handle(request):
        seen.append((request.method, request.path, dict(request.headers), await request.read()))
        return answer(len(seen))

    async def go():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            transport = GraphTransport(http, str(server.make_url("/v1.0")), LoopTokens(tokens))
            return [await transport.send(request) for request in requests]

    return asyncio.run(go()), seen


def test_a_single_request_carries_the_immutable_id_preference():
    results, seen = send_all(
        lambda n: web.json_response({"id": "AAkALg1"}, status=201),
        [gp.create("a@x.com", {"subject": "s"})],
        Tokens(),
    )
    assert gp.created_id(results[0]) == "AAkALg1"
    [(method, path, headers, body)] = seen
    assert (method, path) == ("POST", "/v1.0/users/a@x.com/events")
    assert headers["Prefer"] == 'IdType="ImmutableId"'
    assert headers["Authorization"] == "Bearer t1"
    assert headers["Content-Type"] == "application/json" and b'"subject"' in body


def test_a_refused_token_is_dropped_and_the_request_sent_once_more_with_a_fresh_one():
    tokens = Tokens()
    results, seen = send_all(
        lambda n: web.json_response({"id": "e1"}, status=401 if n == 1 else 201),
        [gp.create("a@x.com", {"subject": "s"})],
        tokens,
    )
    assert results[0].status == 201
    assert [h["Authorization"] for _, _, h, _ in seen] == ["Bearer t1", "Bearer t2"]
    assert tokens.invalidated == 1


def test_a_token_is_reused_between_requests_not_fetched_for_each():
    tokens = Tokens()
    results, _ = send_all(
        lambda n: web.Response(status=204), [gp.delete("a@x.com", "e1")] * 5, tokens
    )
    assert [r.status for r in results] == [204] * 5
    assert tokens.issued == 1


def test_an_answer_that_is_not_json_keeps_its_text_as_the_error():
    results, _ = send_all(
        lambda n: web.Response(status=502, text="Bad gateway"),
        [gp.delete("a@x.com", "e1")],
        Tokens(),
    )
    assert results[0].status == 502
    assert results[0].error_code() == (None, "Bad gateway")
