"""OData V3 details of the ProjectData feed: literals, values and names (pure functions)."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from uuid import UUID

_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def guid_literal(value: UUID | str) -> str:
    """``guid'…'``; the value is parsed as a UUID first, so nothing else can be injected."""
    return f"guid'{UUID(str(value))}'"


def datetime_literal(value: datetime) -> str:
    """``datetime'…'`` for a naive PWA wall-clock time, with milliseconds when present."""
    if value.tzinfo is not None:
        raise ValueError("ProjectData compares wall-clock times; pass a naive datetime")
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return f"datetime'{text}'"


def string_literal(value: str) -> str:
    """``'…'`` with embedded quotes doubled, as OData requires."""
    return "'" + value.replace("'", "''") + "'"


def any_of(property_name: str, literals: list[str]) -> str:
    return " or ".join(f"{property_name} eq {literal}" for literal in literals)


def query_string(params: dict[str, str]) -> str:
    """Encode query options with %20 for spaces: '+' is not a space to every OData server."""
    return "&".join(
        f"{quote(key, safe='$')}={quote(value, safe=chr(39) + '(),:=/')}"
        for key, value in params.items()
    )


def parse_datetime(value: Any) -> datetime | None:
    """A ProjectData date as a naive wall-clock datetime.

    Verbose JSON gives ``/Date(ms)/``: WCF encodes the server's wall-clock time as if it were
    UTC, so the milliseconds are read back as UTC and the zone dropped, giving the wall clock.
    JSON light gives ``2026-11-24T08:00:00`` (sometimes with fractional seconds).
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"not an OData date: {value!r}")
    if match := _MS_DATE.match(value):
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(match.group(1)))
        return moment.replace(tzinfo=None)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        # An explicit offset (not seen from ProjectData, but harmless): keep the wall clock.
        parsed = parsed.replace(tzinfo=None)
    return parsed


def parse_bool(value: Any) -> bool:
    """A nullable Edm.Boolean (null is false): the Task* flags and FLAG custom fields. Text and
    number forms are tolerated, defensively, for fields exposed as something else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return False


def property_name(display_name: str) -> str:
    """The ProjectData property of an enterprise custom field: its display name with spaces
    and special characters removed (``Create event`` -> ``Createevent``)."""
    normalized = unicodedata.normalize("NFC", display_name)
    return "".join(ch for ch in normalized if ch.isalnum() or ch == "_")
