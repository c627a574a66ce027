"""Graph JSON batching: ``POST /v1.0/$batch`` with up to 20 requests.

Items without ``dependsOn`` run concurrently, at most ``batch_concurrency_limit`` of them at
once whichever mailboxes they are for (Outlook runs four of a batch's items in parallel); an
item runs once the items it depends on have finished, and fails with 424 if one of them
failed.  Each item passes through the same pipeline as a request of its own, so it is throttled
and counted one by one: within the batch at most ``mailbox_concurrency_limit`` items of one
mailbox run at the same time (Outlook's four), and an item whose mailbox is already busy with
other traffic gets its own 429 with its own Retry-After.  The batch itself answers 200 with the
item responses in completion order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.graph_protocol import GraphError, GraphRequest, GraphResponse

if TYPE_CHECKING:
    from sandbox.graph import GraphApi

MAX_REQUESTS = 20
METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
_ITEM_HEADERS = ("Content-Type", "Retry-After", "Preference-Applied", "Location")


@dataclass(frozen=True)
class _Item:
    id: str
    depends_on: tuple[str, ...]
    request: GraphRequest


async def run_batch(api: GraphApi, batch: GraphRequest) -> GraphResponse:
    api.sandbox.stats.graph_batches += 1
    request_id = str(uuid.uuid4())
    client_request_id = batch.headers.get("client-request-id") or request_id
    try:
        items = _parse(batch)
    except GraphError as error:
        response = error.response(request_id, client_request_id)
    else:
        response = GraphResponse(200, {"responses": await _execute(api, items)})
    response.headers.update({"request-id": request_id, "client-request-id": client_request_id})
    return response


async def _execute(api: GraphApi, items: list[_Item]) -> list[dict[str, Any]]:
    limit = api.sandbox.config.mailbox_concurrency_limit
    semaphores: dict[str, asyncio.Semaphore] = {}
    running = asyncio.Semaphore(api.sandbox.config.batch_concurrency_limit)

    def gate(mailbox_id: str) -> AbstractAsyncContextManager:
        return semaphores.setdefault(mailbox_id, asyncio.Semaphore(limit))

    finished = {item.id: asyncio.Event() for item in items}
    statuses: dict[str, int] = {}
    responses: list[dict[str, Any]] = []

    async def run(item: _Item) -> None:
        for dependency in item.depends_on:
            await finished[dependency].wait()
        if any(statuses[d] >= 400 for d in item.depends_on):
            response = GraphResponse(
                424,
                {
                    "error": {
                        "code": "FailedDependency",
                        "message": "The request depends on a request that failed.",
                    }
                },
            )
        else:
            async with running:
                response = await api.handle(item.request, gate)
        statuses[item.id] = response.status
        headers = {k: v for k, v in response.headers.items() if k in _ITEM_HEADERS}
        if response.body is not None:
            headers.setdefault("Content-Type", "application/json")
        responses.append(
            {
                "id": item.id,
                "status": response.status,
                "headers": headers,
                **({"body": response.body} if response.body is not None else {}),
            }
        )
        finished[item.id].set()

    await asyncio.gather(*(run(item) for item in items))
    return responses


def _invalid(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _parse(batch: GraphRequest) -> list[_Item]:
    payload = batch.json_body()
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        raise _invalid("Invalid batch payload format.")
    if len(requests) > MAX_REQUESTS:
        raise _invalid(f"The number of requests in a batch cannot exceed {MAX_REQUESTS}.")
    items = [_item(batch, raw) for raw in requests]
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise _invalid("Batch request ids must be unique.")
    for item in items:
        unknown = [d for d in item.depends_on if d not in ids or d == item.id]
        if unknown:
            raise _invalid(f"Request id '{item.id}' depends on unknown request id '{unknown[0]}'.")
    return items


def _item(batch: GraphRequest, raw: Any) -> _Item:
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), str) for k in ("id", "method", "url")
    ):
        raise _invalid(
            "Invalid batch payload format: every request needs an id, a method and a url."
        )
    method, url = raw["method"].upper(), raw["url"]
    if method not in METHODS:
        raise _invalid(f"Invalid method '{raw['method']}' in request id '{raw['id']}'.")
    split = urlsplit(url)
    if split.scheme or split.netloc:
        raise _invalid(
            "Invalid request URL: batch requests must use URLs relative to the "
            "version (e.g. /users/{id}/events)."
        )
    headers = {str(k).lower(): str(v) for k, v in (raw.get("headers") or {}).items()}
    body = raw.get("body")
    if body is not None and "content-type" not in headers:
        raise _invalid(
            f"Write request id : {raw['id']} does not contain Content-Type header or body."
        )
    if "authorization" in batch.headers:  # the batch's token authenticates every item
        headers["authorization"] = batch.headers["authorization"]
    encoded = (
        (json.dumps(body) if not isinstance(body, str) else body).encode()
        if body is not None
        else b""
    )
    depends_on = raw.get("dependsOn") or []
    path = "/" + split.path.lstrip("/")
    if path == "/$batch":
        raise _invalid("A batch cannot contain another batch.")
    return _Item(
        raw["id"],
        tuple(str(d) for d in depends_on),
        GraphRequest(
            method=method,
            path=path,
            query=parse_qsl(split.query, keep_blank_values=True),
            headers=headers,
            body=encoded,
            base_url=batch.base_url,
        ),
    )
