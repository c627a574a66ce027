"""The handlers registered with the sandbox's Project Server, and the calls made to them
(``server_events`` serves and calls them; apart so that ``context`` can hold the store)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RegisteredHandler:
    id: str
    name: str
    event_id: int
    endpoint_url: str
    order: int
    description: str = ""


@dataclass
class ServerEvents:
    handlers: dict[str, RegisteredHandler] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)  # what each call got back
    _tasks: set[asyncio.Task] = field(default_factory=set)

    def clear(self) -> None:
        self.handlers.clear()
        self.calls.clear()
