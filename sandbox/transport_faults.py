"""Faults below HTTP: a connection that drops, an answer that comes too late, a latency spike.

``serve_with_faults`` wraps one HTTP request of a surface (a whole ``$batch`` included):

- ``reset``: the TCP connection is aborted before the request is handled; the client gets no
  answer at all (a reset, a proxy or load balancer dropping the connection);
- ``timeout``: the request is handled (an event really is created) and answered only after
  ``stall_s``, when the client has long given up: the client cannot know what happened;
- ``spike``: the request is answered ``spike_ms`` later than usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from sandbox.context import Sandbox


async def serve_with_faults(
    sandbox: Sandbox, surface: str, request: Request, respond: Callable[[], Awaitable[Response]]
) -> Response | None:
    """The response, or None when the connection was dropped (nothing more may be sent)."""
    plan = sandbox.config.faults[surface]
    fault = plan.draw_transport(sandbox.rng)
    if fault is not None:
        sandbox.stats.fault(surface, fault)
    if fault == "reset":
        drop_connection(request)
        return None
    if fault == "spike":
        await asyncio.sleep(plan.spike_ms / 1000)
    response = await respond()
    if fault == "timeout":
        await asyncio.sleep(plan.stall_s)
    return response


def connection_of(request: Request) -> asyncio.BaseTransport:
    """The TCP connection (its transport) a request came in on.

    ASGI does not name connections; uvicorn hands the application its connection's ``receive``
    method, whose cycle object holds the transport. A closed connection's port can be reused by
    the next one, so the transport, not the client's address, is what tells connections apart.
    """
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # pragma: no cover - another ASGI server
        raise RuntimeError("the ASGI server exposes no transport for the connection")
    return transport


def drop_connection(request: Request) -> None:
    """Abort the TCP connection under a request without answering it (ASGI has no "reset")."""
    connection_of(request).abort()


class Dropped(Response):
    """What an endpoint returns for a dropped connection: it sends nothing."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI signature
        return None
