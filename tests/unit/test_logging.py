import io
import json
import logging

import structlog

from common.logging import configure_logging, flush_logs, get_logger, redact_text


def capture(fn, fmt="json"):
    stream = io.StringIO()
    configure_logging(fmt=fmt, level="debug", stream=stream, service="test")
    try:
        fn()
        flush_logs()
    finally:
        structlog.contextvars.clear_contextvars()
    return stream.getvalue()


def test_one_json_object_per_line_with_the_bound_correlation_id():
    def emit():
        structlog.contextvars.bind_contextvars(correlation_id="corr-1")
        get_logger("t").info("hello", task_id="t1")
        logging.getLogger("msal").warning("library line")

    lines = [json.loads(line) for line in capture(emit).splitlines()]
    assert [line["event"] for line in lines] == ["hello", "library line"]
    assert all(line["correlation_id"] == "corr-1" and line["service"] == "test" for line in lines)
    assert lines[0]["level"] == "info" and "timestamp" in lines[0]


def test_pikas_own_failure_lines_are_left_out_ours_say_it_once():
    def emit():
        logging.getLogger("pika.adapters.utils.connection_workflow").error("Socket failed")
        logging.getLogger("pika").warning("Unexpected connection close detected")
        get_logger("t").warning("broker connection lost; reconnecting")

    lines = [json.loads(line) for line in capture(emit).splitlines()]
    assert [line["event"] for line in lines] == ["broker connection lost; reconnecting"]


def test_secrets_never_reach_the_output():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    def emit():
        log = get_logger("t")
        log.info("sign-in", password="hunter2", client_secret="s3cr3t", access_token=jwt)
        log.info("calling", url="amqp://admin:hunter2@broker/", header=f"Bearer {jwt}")
        try:
            password = "hunter2"  # noqa: F841 - a local that must not be rendered
            raise RuntimeError(f"failed with token {jwt}")
        except RuntimeError:
            log.exception("boom")

    for fmt in ("json", "console"):
        out = capture(emit, fmt)
        assert "hunter2" not in out and "s3cr3t" not in out and jwt not in out
        assert "[redacted]" in out


def test_redact_text_keeps_ordinary_text():
    assert redact_text("task Pack & label moved") == "task Pack & label moved"


def test_redact_text_removes_every_url_password_form():
    # compose's Redis URL has a password and no user; the Sentinel form lists several hosts.
    cases = {
        "redis://:s3cret@redis:6379/0": "redis://:[redacted]@redis:6379/0",
        "rediss://default:s3cret@cache:6380": "rediss://default:[redacted]@cache:6380",
        "redis+sentinel://:s3cret@s1:26379,s2:26379/mymaster/0": (
            "redis+sentinel://:[redacted]@s1:26379,s2:26379/mymaster/0"
        ),
        "amqp://a:s3cret@n1/,amqp://b:s3cret@n2/": (
            "amqp://a:[redacted]@n1/,amqp://b:[redacted]@n2/"
        ),
    }
    for text, expected in cases.items():
        assert redact_text(f"connect to {text} failed") == f"connect to {expected} failed"


def test_lines_carry_what_orjson_cannot_write_too():
    """Keys that are not strings, integers beyond 64 bits and objects without a JSON form
    still make one parseable line each (a log call never raises)."""

    def emit():
        get_logger("t").info("odd values", counts={1: "a"}, big=2**70, thing=object())

    (line,) = [json.loads(text) for text in capture(emit).splitlines()]
    assert line["counts"] == {"1": "a"}
    assert line["big"] == 2**70
    assert line["thing"].startswith("<object object")
