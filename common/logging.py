"""structlog configuration: one JSON object per line by default, console rendering on request.

Configured once per process by ``configure_logging``. Per-message context (correlation id,
message id, task id) is bound with ``structlog.contextvars`` inside the thread that handles the
message, so every line that work writes carries it. Library loggers (pika, httpx, msal) go
through the same renderer at WARNING, so the output stays one format.

Our own lines do not pass through the standard library's logging (a LogRecord, the root
logger's handler lock, a second processor chain per line): structlog renders them itself and
hands the line to ``_SINK``, which writes info lines in batches (see ``_LineSink``). Library
records reach the same sink through a logging handler, so lines keep their order and never
interleave.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import re
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

import orjson
import structlog
import structlog.tracebacks

#: Keys whose values are never written, whatever a caller binds.
_SECRET_KEYS = re.compile(
    r"(password|secret|token|authorization|assertion|private_key|api_key|digest)", re.IGNORECASE
)
#: Bearer tokens and JWT-shaped strings that slip into free text (e.g. an exception message).
_SECRET_TEXT = re.compile(
    r"(Bearer\s+)[A-Za-z0-9\-_.~+/=]+|eyJ[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*"
)
#: ``scheme://user:password@``; the user may be empty (``redis://:password@host``, compose's form).
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    """Remove bearer tokens, JWTs and URL passwords from free text."""
    # Each pattern needs one of these literally: text without any (nearly every value) is
    # returned as it is, without running the expressions.
    if "://" not in text and "Bearer" not in text and "eyJ" not in text:
        return text
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or "") + REDACTED, text)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


#: Values that cannot hold a secret: written as they are.
_SCALARS = frozenset({int, float, bool, type(None)})


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redact_entry(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def _redact_entry(key: Any, item: Any) -> Any:
    if isinstance(key, str) and _secret_key(key):
        return REDACTED
    return item if type(item) in _SCALARS else _redact(item)


def _redact_event(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    return _redact(event)


class _LineSink:
    """Where every rendered line goes, whole lines in the order they were logged.

    Info and debug lines are queued and written together by a background thread every
    ``FLUSH_SECONDS`` (and at exit): the writer logs a line per task from a few hundred
    threads, and a write per line under a shared lock made those threads queue behind each
    other's system calls (about 8 % of a writer's CPU per event, measured). Warnings and errors are
    written at once, after whatever was queued before them, so nothing about a failure waits.
    """

    FLUSH_SECONDS = 0.05

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self._queued: deque[str] = deque()  # append and popleft are atomic: no lock to log
        self._write_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def queue(self, line: str) -> None:
        self._queued.append(line)
        if self._flusher is None:
            self._start_flusher()

    def write_now(self, line: str) -> None:
        self._queued.append(line)
        self.flush()

    def flush(self) -> None:
        with self._write_lock:
            lines = []
            with contextlib.suppress(IndexError):
                while True:
                    lines.append(self._queued.popleft())
            if lines:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    def _start_flusher(self) -> None:
        with self._start_lock:
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, daemon=True)
                self._flusher.start()
                atexit.register(self.flush)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            with contextlib.suppress(Exception):  # a closed stream must not end the thread
                self.flush()


_SINK = _LineSink()


def flush_logs() -> None:
    """Write the queued lines now (tests read the stream right after logging)."""
    _SINK.flush()


class _SinkLogger:
    """structlog's output logger (the level was filtered before rendering)."""

    def queue(self, message: str) -> None:
        _SINK.queue(message)

    def write_now(self, message: str) -> None:
        _SINK.write_now(message)

    debug = info = msg = queue
    warning = warn = error = exception = critical = fatal = log = write_now


class _SinkHandler(logging.Handler):
    """Library records, rendered by the ProcessorFormatter, to the same sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _SINK.write_now(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def configure_logging(
    *, fmt: str = "json", level: str = "info", stream: TextIO | None = None, service: str = ""
) -> None:
    """Set up structlog and the stdlib root logger for this process."""
    _SINK.flush()
    _SINK.stream = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.append(_add_service(service))
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        # Format the traceback to text before redaction sees the event, never with locals.
        exc_processor: Any = structlog.processors.format_exc_info
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
        # Tracebacks as data, without local variables: locals can hold passwords and tokens.
        exc_processor = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            exc_processor,
            _redact_event,
            renderer,
        ],
        logger_factory=lambda *_args: _SinkLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(level.upper()),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exc_processor,
            _redact_event,
            renderer,
        ],
    )
    handler = _SinkHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "msal", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Every pika failure reaches our edge as an exception and is logged there once, in our
    # words ("broker connection lost; reconnecting"); pika's own lines said it again, seven
    # times per failed connection attempt of every connection, during a broker outage.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def _json_line(event: dict[str, Any], default: Any = None, **_: Any) -> str:
    """One JSON line, written by orjson (the standard library's json took ~8 us per line,
    orjson ~2; the writer logs a line per event). Keys that are not strings (a library's
    ``extra``) become strings, values it cannot write go through structlog's fallback, and
    what orjson refuses (an integer beyond 64 bits) is written by the standard library."""
    try:
        return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(event, default=default or repr)


def _add_service(service: str) -> Any:
    def add(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return add


def get_logger(name: str) -> Any:
    """A structlog logger; ``name`` documents the caller (the output does not carry it)."""
    return structlog.get_logger(name)


def bound_correlation_id() -> str | None:
    """The correlation id bound for the work at hand, to carry into what that work publishes."""
    return structlog.contextvars.get_contextvars().get("correlation_id")
