"""structlog configuration: one JSON object per line by default, console rendering on request.

Configured once per process by ``configure_logging``. Per-message context (correlation id,
message id, task id) is bound with ``structlog.contextvars`` inside the thread that handles the
message, so every line that work writes carries it. Library loggers (pika, httpx, msal) go
through the same renderer at WARNING, so the output stays one format.

Our own lines do not pass through the standard library's logging (a LogRecord, the root
logger's handler lock, a second processor chain per line): structlog renders them itself and
hands the line to ``_SINK``. Library records reach the same sink through a logging handler, so
both share one lock and lines never interleave.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any, TextIO

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
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    """Remove bearer tokens, JWTs and URL passwords from free text."""
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or "") + REDACTED, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and _SECRET_KEYS.search(key) else _redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def _redact_event(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    return _redact(event)


class _LineSink:
    """Where every rendered line goes, one whole line at a time."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


_SINK = _LineSink()


class _SinkLogger:
    """structlog's output logger: whatever the level, the rendered line goes to the sink (the
    level was filtered before rendering)."""

    def msg(self, message: str) -> None:
        _SINK.write(message)

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


class _SinkHandler(logging.Handler):
    """Library records, rendered by the ProcessorFormatter, to the same sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _SINK.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def configure_logging(
    *, fmt: str = "json", level: str = "info", stream: TextIO | None = None, service: str = ""
) -> None:
    """Set up structlog and the stdlib root logger for this process."""
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
        renderer = structlog.processors.JSONRenderer()
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


def _add_service(service: str) -> Any:
    def add(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return add


def get_logger(name: str) -> Any:
    """A structlog logger; ``name`` documents the caller (the output does not carry it)."""
    return structlog.get_logger(name)
