"""Outlook's per-mailbox throttling, alone and inside ``$batch``."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import httpx

from sandbox.client import SandboxClient
from tests.sandbox.conftest import RunningSandbox
from tests.sandbox.test_graph import ADELE, event_body

ALEX = "alex.wilber@contoso.onmicrosoft.com"


async def _concurrent_posts(
    sandbox: RunningSandbox, token: str, count: int
) -> list[httpx.Response]:
    context = ssl.create_default_context(cafile=sandbox.ca_file)
    async with httpx.AsyncClient(verify=context, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{sandbox.settings['PWASYNC_GRAPH_URL']}/users/{ADELE}/events",
                    json=event_body(),
                    headers={"Authorization": f"Bearer {token}"},
                )
                for _ in range(count)
            )
        )


def test_more_than_four_concurrent_requests_get_429(
    sandbox: RunningSandbox, control: SandboxClient, graph_token: str
) -> None:
    control.config(graph_latency_ms=400)
    responses = asyncio.run(_concurrent_posts(sandbox, graph_token, 7))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 4 + [429] * 3
    throttled = next(r for r in responses if r.status_code == 429)
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert 0 < float(throttled.headers["Retry-After"]) <= 0.4
    stats = control.stats()["graph"]
    assert stats["peak_concurrency"]["by_mailbox"][ADELE] == 4
    assert stats["throttled"] == 3


def test_request_budget_per_window(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, graph_token: str
) -> None:
    control.config(mailbox_budget=3)
    url = f"{sandbox.settings['PWASYNC_GRAPH_URL']}/users/{ADELE}/events"
    headers = {"Authorization": f"Bearer {graph_token}"}
    statuses = [http.get(url, headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert http.get(url.replace(ADELE, ALEX), headers=headers).status_code == 200


def _batch(
    sandbox: RunningSandbox, http: httpx.Client, token: str, requests: list[dict[str, Any]]
) -> httpx.Response:
    return http.post(
        f"{sandbox.settings['PWASYNC_GRAPH_URL']}/$batch",
        json={"requests": requests},
        headers={"Authorization": f"Bearer {token}"},
    )


def _post_item(item_id: str, user: str = ADELE, **extra: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "method": "POST",
        "url": f"/users/{user}/events",
        "headers": {"Content-Type": "application/json"},
        "body": event_body(),
        **extra,
    }


def test_batch_runs_at_most_four_items_per_mailbox(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, graph_token: str
) -> None:
    control.config(graph_latency_ms=150)
    requests = [_post_item(str(n)) for n in range(6)] + [_post_item("alex", ALEX)]
    response = _batch(sandbox, http, graph_token, requests)
    assert response.status_code == 200
    items = {item["id"]: item for item in response.json()["responses"]}
    assert {item["status"] for item in items.values()} == {201}
    assert items["alex"]["body"]["organizer"]["emailAddress"]["address"] == ALEX
    assert control.stats()["graph"]["peak_concurrency"]["by_mailbox"][ADELE] == 4


def test_batch_runs_at_most_four_items_at_once_whatever_their_mailboxes(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, graph_token: str
) -> None:
    control.config(graph_latency_ms=300)
    requests = [_post_item(f"adele{n}") for n in range(3)]
    requests += [_post_item(f"alex{n}", ALEX) for n in range(3)]
    started = time.monotonic()
    response = _batch(sandbox, http, graph_token, requests)
    elapsed = time.monotonic() - started
    assert {item["status"] for item in response.json()["responses"]} == {201}
    assert control.stats()["graph"]["peak_concurrency"]["overall"] == 4
    assert elapsed >= 0.6  # two rounds of four items at most, not one round of six


def test_batch_dependencies_and_per_item_errors(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, graph_token: str
) -> None:
    requests = [
        _post_item("1", "nobody@contoso.onmicrosoft.com"),
        _post_item("2", dependsOn=["1"]),
        {"id": "3", "method": "GET", "url": f"/users/{ADELE}/events?$top=1"},
    ]
    items = {i["id"]: i for i in _batch(sandbox, http, graph_token, requests).json()["responses"]}
    assert (items["1"]["status"], items["2"]["status"], items["3"]["status"]) == (404, 424, 200)
    assert items["1"]["body"]["error"]["code"] == "ErrorInvalidUser"


def test_batch_item_throttled_when_the_mailbox_is_busy(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, graph_token: str
) -> None:
    control.config(graph_latency_ms=500)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        context = ssl.create_default_context(cafile=sandbox.ca_file)
        headers = {"Authorization": f"Bearer {graph_token}"}
        async with httpx.AsyncClient(verify=context, timeout=30) as client:
            busy = [
                asyncio.create_task(
                    client.post(
                        f"{sandbox.settings['PWASYNC_GRAPH_URL']}/users/{ADELE}/events",
                        json=event_body(),
                        headers=headers,
                    )
                )
                for _ in range(4)
            ]
            await asyncio.sleep(0.2)
            batch = await client.post(
                f"{sandbox.settings['PWASYNC_GRAPH_URL']}/$batch",
                json={"requests": [_post_item("1")]},
                headers=headers,
            )
            return await asyncio.gather(*busy), batch

    singles, batch = asyncio.run(scenario())
    assert {r.status_code for r in singles} == {201}
    [item] = batch.json()["responses"]
    assert item["status"] == 429 and float(item["headers"]["Retry-After"]) > 0


def test_batch_envelope_validation(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, graph_token: str
) -> None:
    too_many = _batch(sandbox, http, graph_token, [_post_item(str(n)) for n in range(21)])
    assert too_many.status_code == 400
    no_content_type = _batch(
        sandbox,
        http,
        graph_token,
        [{"id": "1", "method": "POST", "url": f"/users/{ADELE}/events", "body": event_body()}],
    )
    assert no_content_type.status_code == 400
    assert "Content-Type" in no_content_type.json()["error"]["message"]
    absolute = _batch(
        sandbox,
        http,
        graph_token,
        [{"id": "1", "method": "GET", "url": f"https://graph.microsoft.com/v1.0/users/{ADELE}"}],
    )
    assert absolute.status_code == 400
