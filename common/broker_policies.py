"""Our queue policies, set through RabbitMQ's management HTTP API when a service starts.

A queue's settings live in policies (see ``common/topology.py``), and AMQP 0-9-1 has no method
for policies: only the management API (``PUT /api/policies/{vhost}/{name}``) or ``rabbitmqctl``
on the node sets them. So a service sets them itself when ``PWASYNC_RABBITMQ_MANAGEMENT_URL`` is
given (compose gives it; the user needs the ``policymaker`` or ``administrator`` tag), and
declares missing queues with only their type. Without it, or when the API refuses, missing
queues get their settings as declaration arguments, as before, so pwasync works on any broker;
existing queues are never redeclared with other arguments either way.

Setting the policies is idempotent (each is named after its queue and PUT whole), so every
replica sets them at every start, and a new version's settings reach every existing queue.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx

from common.errors import ConfigError, ServiceUnavailable
from common.http import new_http_client
from common.logging import get_logger
from common.topology import QueuePolicy, Topology

log = get_logger(__name__)

#: Tries to reach the management API at start (it may listen a little after AMQP).
ATTEMPTS = 3


class ManagementApi:
    """The few calls of RabbitMQ's management HTTP API that pwasync makes.

    Several URLs, comma-separated, are the nodes of one cluster (as for ``PWASYNC_AMQP_URL``):
    any node answers for the whole cluster, so each call goes to the first node that answers.
    """

    def __init__(self, management_url: str, *, ca_bundle: Path | None, timeout: float = 10.0):
        self._nodes = []  # (origin, credentials) per node
        for url in (part.strip() for part in management_url.split(",") if part.strip()):
            parts = urlsplit(url)
            port = f":{parts.port}" if parts.port else ""
            auth = (unquote(parts.username or ""), unquote(parts.password or ""))
            self._nodes.append((f"{parts.scheme}://{parts.hostname}{port}", auth))
        self.address = ", ".join(origin for origin, _ in self._nodes)
        self._ca_bundle = ca_bundle
        self._timeout = timeout

    def broker_major_version(self, http: httpx.Client) -> int:
        version = self._call(http, "GET", "/api/overview").json()["rabbitmq_version"]
        return int(str(version).split(".")[0])

    def put_policy(self, http: httpx.Client, vhost: str, policy: QueuePolicy) -> None:
        body = {
            "pattern": policy.pattern,
            "definition": policy.definition,
            "priority": policy.priority,
            "apply-to": policy.apply_to,
        }
        path = f"/api/policies/{quote(vhost, safe='')}/{quote(policy.name, safe='')}"
        self._call(http, "PUT", path, json=body)

    def client(self) -> httpx.Client:
        return new_http_client(ca_bundle=self._ca_bundle, timeout=self._timeout)

    def get(self, http: httpx.Client, path: str, **kwargs: object) -> httpx.Response:
        return self._call(http, "GET", path, **kwargs)

    def _call(self, http: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
        unreachable = []
        for origin, auth in self._nodes:
            try:
                response = http.request(method, origin + path, auth=auth, **kwargs)
            except httpx.HTTPError as exc:
                unreachable.append(f"{origin} ({exc.__class__.__name__})")
                continue
            return _checked(response, origin, method, path)
        raise ServiceUnavailable(
            f"cannot reach the RabbitMQ management API at {', '.join(unreachable)}"
        )


def _checked(response: httpx.Response, origin: str, method: str, path: str) -> httpx.Response:
    if response.status_code in (401, 403):
        raise ConfigError(
            f"the RabbitMQ management API at {origin} refused {method} {path} "
            f"({response.status_code}): the user of PWASYNC_RABBITMQ_MANAGEMENT_URL needs "
            "the policymaker (or administrator) tag"
        )
    if response.status_code >= 500:
        raise ServiceUnavailable(
            f"the RabbitMQ management API at {origin} answered {response.status_code}"
        )
    if response.status_code >= 400:
        raise ConfigError(
            f"the RabbitMQ management API at {origin} refused {method} {path} "
            f"({response.status_code}: {response.text[:300]})"
        )
    return response


def amqp_vhost(amqp_url: str) -> str:
    """The vhost of a broker URL (the first, if several are given): AMQP's default is '/'."""
    path = urlsplit(amqp_url.split(",")[0].strip()).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def apply_policies(api: ManagementApi, vhost: str, topology: Topology) -> int:
    """Set every policy of the scenario; returns how many."""
    with api.client() as http:
        policies = topology.policies(api.broker_major_version(http))
        for policy in policies:
            api.put_policy(http, vhost, policy)
    return len(policies)


def with_queue_policies(
    topology: Topology,
    *,
    management_url: str | None,
    amqp_url: str,
    ca_bundle: Path | None,
    sleep=time.sleep,  # noqa: ANN001 - tests pass a no-op
) -> Topology:
    """The topology to declare: its settings by policy once ours are set, else (no management
    API, or it refused) as arguments of the queues still to be created, with one warning."""
    if management_url is None:
        log.warning(
            "PWASYNC_RABBITMQ_MANAGEMENT_URL is not set: queues created now get their settings "
            "as arguments, which later versions cannot change (set it to let pwasync keep them "
            "as policies)"
        )
        return topology
    api = ManagementApi(management_url, ca_bundle=ca_bundle)
    reason = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            count = apply_policies(api, amqp_vhost(amqp_url), topology)
        except ServiceUnavailable as exc:
            reason = str(exc)
            if attempt < ATTEMPTS:
                sleep(2.0 * attempt)
            continue
        except (ConfigError, KeyError, ValueError) as exc:  # refused, or not the API we know
            reason = str(exc) or exc.__class__.__name__
            break
        log.info("queue policies set", policies=count, management=api.address)
        return replace(topology, settings_by_policy=True)
    log.warning(
        "could not set the queue policies; queues created now get their settings as arguments",
        error=reason,
    )
    return topology
