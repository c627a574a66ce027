"""Redis error replies in the error hierarchy (issue 11, item 1): "not now" is retryable, any
other reply is permanent, and neither escapes as a redis-py exception."""

import pytest
from redis._parsers.base import BaseParser

from common.errors import PermanentError, PwasyncError, ServiceUnavailable
from common.redis_store import redis_errors

URL = "redis://:secret@redis.example:6379/0"


def raised(reply: str) -> PwasyncError:
    """What ``redis_errors`` turns the error reply ``reply`` into, parsed as redis-py does."""
    with pytest.raises(PwasyncError) as caught, redis_errors(URL):
        raise BaseParser.parse_error(reply)
    return caught.value


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        # Redis 6 wraps an error raised inside a script in its own prefix.
        "ERR Error running script (call to f_1d2e): @user_script:12: -OOM command not allowed "
        "when used memory > 'maxmemory'.",
    ],
)
def test_a_transient_error_reply_is_retryable(reply):
    error = raised(reply)
    assert isinstance(error, ServiceUnavailable)
    assert "secret" not in str(error)


@pytest.mark.parametrize(
    "reply",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR user_script:3: attempt to compare nil with number",
        "BUSYKEY Target key name already exists.",
        "ERR unknown command 'FOO'",
    ],
)
def test_any_other_error_reply_is_permanent(reply):
    error = raised(reply)
    assert isinstance(error, PermanentError)
    assert "redis.example:6379" in str(error)
