"""Issue 15 part 1: the cluster forms of PWASYNC_AMQP_URL and PWASYNC_REDIS_URL, read without a
server: the nodes and their order, the Sentinel and Cluster URLs, and the client each makes."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from common.broker_policies import ManagementApi
from common.errors import ConfigError, ServiceUnavailable
from common.rabbit import RabbitConnector, broker_address, broker_urls, in_turn
from common.redis_store import Keys, connect_redis, key_node, redis_address, response_error
from common.redis_urls import parse_redis_url
from common.settings import Settings

THREE_NODES = (
    "amqp://pwasync:s3cret@rabbit-0:5672/pwasync,"
    " amqp://pwasync:s3cret@rabbit-1:5673/pwasync ,amqps://pwasync:s3cret@rabbit-2/pwasync"
)


def test_a_comma_separated_amqp_url_is_the_nodes_of_one_cluster_in_the_order_given():
    assert broker_urls(THREE_NODES) == [
        "amqp://pwasync:s3cret@rabbit-0:5672/pwasync",
        "amqp://pwasync:s3cret@rabbit-1:5673/pwasync",
        "amqps://pwasync:s3cret@rabbit-2/pwasync",
    ]
    assert broker_address(THREE_NODES) == "rabbit-0:5672, rabbit-1:5673, rabbit-2:5671"
    with pytest.raises(ConfigError):
        broker_urls(" , ")


def test_every_node_gets_the_same_connection_parameters():
    connector = RabbitConnector(THREE_NODES, connection_name="pwasync-writer-s")
    nodes = connector.node_parameters()
    assert [(p.host, p.port) for p in nodes] == [
        ("rabbit-0", 5672),
        ("rabbit-1", 5673),
        ("rabbit-2", 5671),
    ]
    assert {(p.heartbeat, p.connection_attempts, p.virtual_host) for p in nodes} == {
        (30, 1, "pwasync")
    }
    assert nodes[2].ssl_options is not None and nodes[0].ssl_options is None
    assert all(p.client_properties == {"connection_name": "pwasync-writer-s"} for p in nodes)


def test_nodes_are_tried_round_robin_from_the_node_after_the_last_connection():
    assert in_turn([0, 1, 2], 0) == [0, 1, 2]
    assert in_turn([0, 1, 2], 2) == [2, 0, 1]
    assert in_turn([0, 1, 2], 4) == [1, 2, 0]


def test_a_connector_whose_nodes_all_refuse_names_each_of_them():
    # Ports 1 and 2 on loopback refuse at once: nothing listens there.
    connector = RabbitConnector(
        "amqp://guest:guest@127.0.0.1:1/%2F,amqp://guest:guest@127.0.0.1:2/%2F",
        connection_name="t",
    )
    with pytest.raises(ServiceUnavailable) as caught:
        connector.connect()
    assert "127.0.0.1:1 (" in str(caught.value) and "127.0.0.1:2 (" in str(caught.value)
    assert "guest" not in str(caught.value)
    # The next connection begins with the node after the one the last one began with.
    assert [p.port for p in connector.parameters()] == [2, 1]


def test_the_management_api_of_a_cluster_is_each_node_in_turn():
    api = ManagementApi(
        "http://admin:pw@rabbit-0:15672, http://admin:pw@rabbit-1:15672", ca_bundle=None
    )
    assert api.address == "http://rabbit-0:15672, http://rabbit-1:15672"


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database():
    target = parse_redis_url("redis+sentinel://:p%40ss@sentinel-0:26379,sentinel-1,[::1]:5/main/2")
    assert target.kind == "sentinel"
    assert target.hosts == (("sentinel-0", 26379), ("sentinel-1", 26379), ("::1", 5))
    assert (target.username, target.password, target.master, target.db) == (
        None,
        "p@ss",
        "main",
        2,
    )
    assert (
        target.address == "master main of the Sentinels sentinel-0:26379,sentinel-1:26379,[::1]:5"
    )
    assert parse_redis_url("redis+sentinel://s:26379/main").db == 0


def test_a_cluster_url_names_some_of_its_nodes_and_no_database():
    target = parse_redis_url("redis+cluster://app:pw@redis-0:7000,redis-1:7001")
    assert (target.kind, target.username, target.password) == ("cluster", "app", "pw")
    assert target.hosts == (("redis-0", 7000), ("redis-1", 7001))
    assert parse_redis_url("redis+cluster://redis-0/0").hosts == (("redis-0", 6379),)
    assert "pw" not in target.address


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s:26379", "must name the master"),
        ("redis+sentinel://s:26379/", "must name the master"),
        ("redis+sentinel://s:26379/main/x", "/MASTER_NAME/DB"),
        ("redis+sentinel://s:26379/main/0/1", "/MASTER_NAME/DB"),
        ("redis+cluster://c:7000/3", "database 0 only"),
        ("redis+cluster://c:7000?timeout=1", "no query"),
        ("redis+cluster://c:port", "port"),
        ("redis+cluster://c:7000,,d:7001", "empty host"),
        ("memcached://c:11211", "must be a redis://"),
        ("redis://", "names no host"),
    ],
)
def test_a_malformed_redis_url_says_what_is_wrong_without_echoing_it(url, says):
    with pytest.raises(ValueError, match=says) as caught:
        parse_redis_url(url)
    assert url not in str(caught.value)


def test_settings_take_the_cluster_forms_and_refuse_a_bad_node():
    settings = Settings.model_validate(
        {
            "amqp_url": THREE_NODES,
            "redis_url": "redis+sentinel://:pw@s-0:26379,s-1:26379/main/0",
            "redis_sentinel_password": "sentinel-pw",
        }
    )
    assert settings.redis_sentinel_password.get_secret_value() == "sentinel-pw"
    with pytest.raises(ValueError, match="several separated by commas"):
        Settings.model_validate({"amqp_url": "amqp://a:5672/%2F,http://b:5672/"})
    with pytest.raises(ValueError, match="must name the master"):
        Settings.model_validate({"redis_url": "redis+sentinel://s-0:26379"})


def test_a_sentinel_url_makes_a_client_of_the_master_that_asks_the_sentinels():
    client = connect_redis(
        "redis+sentinel://:redis-pw@s-0:26379,s-1:26380/main/3", sentinel_password="sp"
    )
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "main"
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "redis-pw"
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [("s-0", 26379), ("s-1", 26380)]
    assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"sp"}
    # No retry of its own: a write whose reply was lost is never sent twice.
    assert pool.connection_kwargs["retry"].get_retries() == 0
    assert key_node(client, "pwasync:{s}:ledger:endpoints") is client


def test_a_cluster_none_of_whose_nodes_answer_is_unavailable_without_its_password():
    # redis-py's cluster client asks the nodes for the slot map when it is made; nothing
    # listens on port 1. (The cluster client itself: tests/integration/test_redis_cluster.py.)
    with pytest.raises(ServiceUnavailable) as caught:
        connect_redis("redis+cluster://:pw@127.0.0.1:1")
    assert "the cluster of 127.0.0.1:1" in str(caught.value) and "pw" not in str(caught.value)


def test_a_single_server_client_is_as_before():
    client = connect_redis("redis://:pw@127.0.0.1:6390/4")
    assert not isinstance(client, RedisCluster)
    assert client.connection_pool.connection_kwargs["db"] == 4
    assert redis_address("redis://:pw@127.0.0.1:6390/4") == "127.0.0.1:6390"
    with pytest.raises(ConfigError, match="PWASYNC_REDIS_URL"):
        connect_redis("redis+sentinel://s:26379")


def test_a_moved_reply_is_retryable():
    import redis.exceptions

    error = response_error(
        "redis+cluster://c:7000", redis.exceptions.MovedError("3999 127.0.0.1:7001")
    )
    assert isinstance(error, ServiceUnavailable)


def _every_key(keys: object, sample: str) -> list[str]:
    """Every key a key layout makes: its properties, and its methods called with ``sample``."""
    made = []
    for name in dir(type(keys)):
        if name.startswith("_") or name in ("prefix", "scenario", "of_app"):
            continue
        value = getattr(keys, name)
        made.append(value(sample) if callable(value) else value)
    return made


def test_every_key_of_a_scenario_is_in_one_redis_cluster_slot():
    from redis.crc import key_slot

    from services.event_writer.mailbox_limits import GraphLimitKeys

    for scenario in ("default", "s-1", "x_y"):
        made = _every_key(Keys(scenario), "0c7a6f8e-3b1e-4d1a-9a57-1f2a3b4c5d6e")
        assert len(made) >= 15
        assert {key_slot(key.encode()) for key in made} == {key_slot(f"{{{scenario}}}".encode())}
    # Graph's limits are per Entra app (shared by its scenarios): one slot per app.
    graph = GraphLimitKeys("contoso.onmicrosoft.com", "app-id", "graph.microsoft.com")
    assert len({key_slot(key.encode()) for key in _every_key(graph, "anna@contoso.com")}) == 1


class _Answering:
    closed = False

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class _Refusing(_Answering):
    def ping(self) -> bool:
        import redis.exceptions

        raise redis.exceptions.ConnectionError("refused")


def test_a_service_waits_for_a_redis_it_cannot_make_a_client_for_yet():
    """A Redis Cluster client fails when it is made if no node answers: the service makes it
    again, as it pings a single server again, and closes each client that did not answer."""
    import threading

    from services.runtime import wait_for_redis

    refusing = _Refusing()
    tries = iter(
        [
            lambda: (_ for _ in ()).throw(ServiceUnavailable("the cluster of c:7000")),
            lambda: refusing,
            _Answering,
        ]
    )
    client = wait_for_redis(
        lambda: next(tries)(), "redis+cluster://c:7000", threading.Event(), delay=0.01
    )
    assert isinstance(client, _Answering) and not client.closed
    assert refusing.closed
    stopped = threading.Event()
    stopped.set()
    assert wait_for_redis(_Refusing, "redis+cluster://c:7000", stopped) is None
