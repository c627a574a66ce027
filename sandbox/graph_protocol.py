"""Graph requests and responses independent of the web framework.

A request reaches the Graph emulation either as an HTTP request or as one item of a
``$batch``; both become a GraphRequest and go through the same pipeline, so a batch item is
authenticated, throttled and counted exactly like a request of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class GraphRequest:
    method: str
    path: str  # after /v1.0, e.g. /users/x/events
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # https://127.0.0.1:N/v1.0

    def query_value(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)

    def json_body(self) -> Any:
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise GraphError(
                400, "UnableToDeserializePostBody", "were unable to deserialize "
            ) from error


@dataclass
class GraphResponse:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)


class GraphError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self, request_id: str, client_request_id: str) -> GraphResponse:
        inner = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id,
            "client-request-id": client_request_id,
        }
        body = {"error": {"code": self.code, "message": self.message, "innerError": inner}}
        return GraphResponse(self.status, body, dict(self.headers))
