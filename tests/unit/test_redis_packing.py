"""The asyncio client's commands packed by hiredis are the bytes redis-py's own packer makes,
and what redis-py refuses it still refuses."""

import pytest
import redis.asyncio
from redis.exceptions import DataError

from common.redis_store import _PACKED_CONNECTIONS, connect_redis_async

COMMANDS = [
    ("EVALSHA", "a" * 40, 2, "pwasync:{app}:slots:u@x", "k2", 10000, 4, "tok-1"),
    ("SET", "key", 1.25),
    ("SET", "k", "é", "PX", 3000),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"writer"),
    ("SET", memoryview(b"view"), bytearray(b"array")),
    ("INCRBY", "k", -7),
]


@pytest.mark.parametrize("args", COMMANDS)
def test_packed_bytes_are_redis_pys(args):
    packed = _PACKED_CONNECTIONS[redis.asyncio.Connection]()
    plain = redis.asyncio.Connection()
    assert b"".join(packed.pack_command(*args)) == b"".join(
        bytes(part) for part in plain.pack_command(*args)
    )


@pytest.mark.parametrize("value", [None, True, {"a": 1}])
def test_values_redis_py_refuses_are_refused(value):
    with pytest.raises(DataError):
        _PACKED_CONNECTIONS[redis.asyncio.Connection]().pack_command("SET", "k", value)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://localhost:6380/0", "unix:///run/redis.sock"]
)
def test_every_single_server_form_packs_with_hiredis(url):
    client = connect_redis_async(url)
    assert client.connection_pool.connection_class in _PACKED_CONNECTIONS.values()
