"""Fixtures for the real RabbitMQ and Redis.

Where the broker and Redis come from, in order:
1. ``PWASYNC_TEST_AMQP_URL`` / ``PWASYNC_TEST_REDIS_URL``;
2. the default local ports (127.0.0.1:5672 guest/guest, 127.0.0.1:6379);
3. testcontainers, when a Docker engine answers;
4. otherwise the test fails with a message that says how to provide them (never a skip).

Every test gets its own scenario name, so its queues and keys are its own; they are deleted
afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio

from services.launcher import delete_scenario
from tests.chaos.end_state import RESULTS, Row, format_table

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


# --- the fault suite's table (tests/chaos), also when xdist workers ran the fault runs -------


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: hand this worker's fault-run rows to the controller, which prints
    the table (a worker's terminal output is not shown)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["fault_rows"] = [dataclasses.asdict(row) for row in RESULTS]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001 - xdist's hook
    """On the xdist controller: keep the rows a finished worker handed over."""
    rows = getattr(node, "workeroutput", {}).get("fault_rows", [])
    RESULTS.extend(Row(**row) for row in rows)


_UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``, note when pytest-xdist could not tag the grouped tests (it
    does so by rewriting their node ids, which some pytest versions ignore): a module-pipeline
    group split over two workers would fail in confusing ways, so ``_grouped`` fails each
    grouped test with the cause instead."""
    grouped = [item.nodeid for item in items if item.get_closest_marker("xdist_group")]
    loadgroup = getattr(config.option, "loadgroup", False)
    if loadgroup and grouped and not any("@" in nodeid for nodeid in grouped):
        config.stash[_UNGROUPED] = (
            f"pytest-xdist's --dist loadgroup cannot group tests under pytest"
            f" {pytest.__version__}: install the pytest version pyproject.toml allows"
        )


@pytest.fixture(autouse=True)
def _grouped(request: pytest.FixtureRequest) -> None:
    ungrouped = request.config.stash.get(_UNGROUPED, None)
    if ungrouped and request.node.get_closest_marker("xdist_group"):
        pytest.fail(ungrouped, pytrace=False)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook
    if RESULTS:
        terminalreporter.section("fault suite: the end state of every fault run")
        terminalreporter.write_line(format_table(RESULTS))


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


@pytest.fixture(scope="session")
def _containers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def _service_url(
    env_name: str,
    default: str,
    port: int,
    start_container,
    stack: ExitStack,  # noqa: ANN001
) -> str:
    explicit = os.environ.get(env_name)
    if explicit:
        return explicit
    if _reachable(default, port):
        return default
    if _docker_available():
        return start_container(stack)
    pytest.fail(
        f"no server for {env_name}: set {env_name}, start one on the default port "
        f"({default.split('@')[-1]}), or make a Docker engine available for testcontainers. "
        "Locally: `rabbitmq-server -detached` / `redis-server --daemonize yes --port 6379`.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def amqp_url(_containers: ExitStack) -> str:
    def start(stack: ExitStack) -> str:
        try:
            from testcontainers.rabbitmq import RabbitMqContainer
        except ImportError:  # pragma: no cover - newer testcontainers
            from testcontainers.community.rabbitmq import RabbitMqContainer  # type: ignore
        container = stack.enter_context(RabbitMqContainer("rabbitmq:4.1-management"))
        params = container.get_connection_params()
        return f"amqp://guest:guest@{params.host}:{params.port}/%2F"

    return _service_url("PWASYNC_TEST_AMQP_URL", DEFAULT_AMQP_URL, 5672, start, _containers)


@pytest.fixture(scope="session")
def redis_url(_containers: ExitStack) -> str:
    def start(stack: ExitStack) -> str:
        try:
            from testcontainers.redis import RedisContainer
        except ImportError:  # pragma: no cover - newer testcontainers
            from testcontainers.community.redis import RedisContainer  # type: ignore
        container = stack.enter_context(RedisContainer("redis:7.4"))
        host = container.get_container_host_ip()
        return f"redis://{host}:{container.get_exposed_port(6379)}/0"

    return _service_url("PWASYNC_TEST_REDIS_URL", DEFAULT_REDIS_URL, 6379, start, _containers)


@pytest.fixture
def scenario(amqp_url: str, redis_url: str) -> Iterator[str]:
    """A fresh scenario name; its queues and Redis keys are removed after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    delete_scenario(amqp_url, redis_url, name)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def loop_runner() -> Iterator[asyncio.Runner]:
    """An event loop for a test that drives the writer's coroutines from plain code."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def async_redis(redis_url: str, loop_runner: asyncio.Runner) -> Iterator[redis.asyncio.Redis]:
    """The asyncio client the writer uses, bound to ``loop_runner``'s loop."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    loop_runner.run(client.aclose())


@pytest.fixture
def graph_keys(scenario: str, redis_client: redis.Redis):
    """Graph-limit keys of an Entra app of this test's own (they are per app, not per
    scenario); removed afterwards."""
    from services.event_writer.mailbox_limits import GraphLimitKeys

    keys = GraphLimitKeys(f"tenant-{scenario}", "app")
    yield keys
    found = list(redis_client.scan_iter(match=keys.all_pattern, count=1000))
    if found:
        redis_client.delete(*found)
