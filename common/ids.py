"""Ids of projects, tasks and resources as the sources give them: opaque strings.

Project Server's ids are GUIDs, Dataverse's too, but Planner's are not, so nothing above the
source seam may parse an id. A GUID in any of its written forms (braces, upper case) is brought
to one canonical text, so the same task always has the same key in messages and in Redis.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from uuid import UUID

from pydantic import BeforeValidator

#: Longer ids than any source uses are refused: an id lands in Redis keys and message ids.
MAX_ID_LENGTH = 256
_OPAQUE = re.compile(r"[^\s\x00-\x1f\x7f]+")
#: A GUID already in its canonical text, as every message carries its ids: kept as it is
#: without parsing it (an id is checked several times per message; parsing was ~3 us each).
_CANONICAL_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_id(value: Any) -> str:
    """The id's canonical text: a GUID's lowercase form, else the id itself (stripped).
    ValueError for an empty, over-long or non-printable id."""
    if isinstance(value, UUID):
        return str(value)
    if not isinstance(value, str):
        raise ValueError("an id is a string")
    if is_canonical_guid(value):
        return value
    text = value.strip()
    try:
        return str(UUID(text))
    except ValueError:
        pass
    if not text or len(text) > MAX_ID_LENGTH or not _OPAQUE.fullmatch(text):
        raise ValueError(
            f"is not an id (1 to {MAX_ID_LENGTH} printable characters, no spaces): {text[:40]!r}"
        )
    return text


def is_canonical_guid(text: str) -> bool:
    """A GUID in its canonical text: lower case, with hyphens, no braces."""
    return len(text) == 36 and _CANONICAL_GUID.fullmatch(text) is not None


def guid(value: Any) -> str:
    """A GUID's canonical text; ValueError when ``value`` is not a GUID. For sources whose ids
    are GUIDs by their API's contract (Project Server, Dataverse): a value that is not one is a
    malformed row, not an opaque id."""
    return str(value if isinstance(value, UUID) else UUID(str(value).strip()))


SourceId = Annotated[str, BeforeValidator(canonical_id)]
