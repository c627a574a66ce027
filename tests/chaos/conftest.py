"""The fault suite's fixtures and its table.

Each fault test has a short form (small volumes, in the default run) and a long form (the
volumes of issue 5, marked ``chaos``: excluded by default, run by ``make chaos``). Every
measured run adds a row to the table printed at the end of the session (by tests/conftest.py,
which also gathers the rows of xdist workers).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.nodes import RABBITMQ_BIN, RabbitNode, RedisServer
from tests.chaos.scenario import FaultRun
from tests.e2e.harness import Pipeline


@pytest.fixture
def run_factory(tmp_path, amqp_url, redis_url, scenario):
    """Makes the test's ``FaultRun`` (on the shared broker and Redis unless told otherwise)."""
    runs = []

    def make(fault, volume, **kwargs):
        run = FaultRun(
            tmp_path,
            fault=fault,
            volume=volume,
            amqp_url=kwargs.pop("amqp", amqp_url),
            redis_url=kwargs.pop("redis", redis_url),
            scenario=scenario,
            **kwargs,
        )
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


@pytest.fixture
def pipeline(tmp_path, amqp_url, redis_url, scenario) -> Iterator[Pipeline]:
    """The sandbox, with no service started yet (as in tests/e2e)."""
    pipe = Pipeline(tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario)
    yield pipe
    pipe.close()


@pytest.fixture
def rabbit_node(tmp_path: Path) -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test's own, which the test may restart."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.fail(f"restarting a broker needs RabbitMQ's scripts in {RABBITMQ_BIN}", False)
    node = RabbitNode(tmp_path / "rabbitmq")
    node.start()
    yield node
    node.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server with AOF of this test's own, which the test may crash and restart."""
    if shutil.which("redis-server") is None:
        pytest.fail("restarting Redis needs redis-server on the PATH", False)
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.close()
