"""Message bodies on the ``pwasync`` exchange, as versioned pydantic models.

``sync.requested`` is published by operators by hand, so its schema is the interface page's
and unknown fields are refused (a typo must not silently mean "sync everything"). The internal
messages carry ``v`` (schema version): a consumer refuses a version it does not know instead of
guessing, and ignores fields it does not know so that a newer producer can add optional ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.errors import BadMessage
from common.ids import SourceId

MAX_TASK_NAME = 2000  # longer names are cut by the poller, never rejected
#: The dates Project can schedule (1984-01-01 to 2149-12-31): a date outside them in the
#: reporting feed is an error in the data (year 1, a sentinel), never a real task date.
PROJECT_DATES = (datetime(1984, 1, 1), datetime(2149, 12, 31, 23, 59, 59))


def within_project_dates(value: datetime) -> bool:
    return PROJECT_DATES[0] <= value.replace(tzinfo=None) <= PROJECT_DATES[1]


class SyncRequested(BaseModel):
    """Ask the poller of ``scenario`` to sync now. ``{}`` is a valid request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str = "default"
    project_ids: list[SourceId] = Field(default_factory=list)
    task_ids: list[SourceId] = Field(default_factory=list)
    full: bool = False
    # Set by pwasync itself; operators may leave them out.
    trigger: Literal["manual", "schedule", "publish"] = "manual"
    requested_at: AwareDatetime | None = None
    # The operator confirms removals the deletion guard held back (docs/operations.md).
    allow_deletions: bool = False


class Assignee(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    resource_id: SourceId
    name: str
    email: str | None = None


class TaskChanged(BaseModel):
    """The desired state of one task's events, as the poller read it from the published plan.

    ``change="upsert"``: every listed assignee with an e-mail should have one event with these
    values, and assignees no longer listed should have none. ``change="remove"``: the task left
    the selection (flag cleared, deleted, lost its dates); every event of it goes.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    scenario: str
    change: Literal["upsert", "remove"] = "upsert"
    project_id: SourceId
    project_name: str = ""
    task_id: SourceId
    task_name: str = ""
    # Wall-clock times of the PWA, naive, interpreted in ``timezone`` (an IANA name).
    start: datetime | None = None
    finish: datetime | None = None
    timezone: str = "UTC"
    assignees: list[Assignee] = Field(default_factory=list)
    # When the plan this snapshot comes from was published (ProjectModifiedDate, in UTC):
    # the writer's ordering key, so an older snapshot never overwrites a newer one.
    revision: AwareDatetime
    read_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    # Set by the poller (issue 3): ``start``/``finish`` as UTC instants, resolved once so that
    # every reader agrees (a wall-clock time in the fall-back fold is its first occurrence, one
    # in the spring-forward gap moves forward by the gap), and a link back to the project in PWA.
    start_utc: AwareDatetime | None = None
    finish_utc: AwareDatetime | None = None
    task_url: str | None = None
    # The task's dates are days (basic Planner): ``start`` and ``finish`` are midnights of
    # ``timezone``, ``finish`` the day after the last day; its events are all-day events.
    all_day: bool = False

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone") from None
        return value

    @field_validator("start", "finish")
    @classmethod
    def _naive(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            raise ValueError("PWA wall-clock times carry no offset; see 'timezone'")
        if value is not None and not within_project_dates(value):
            raise ValueError("is outside the dates Project can schedule (1984 to 2149)")
        return value


class _TaskTransfer(BaseModel):
    """What both versions of ``transfer.succeeded`` say of one task's transfer."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    project_id: SourceId
    task_id: SourceId
    transferred_at: AwareDatetime
    mailboxes: list[str] = Field(default_factory=list)


def _transfer_fields(transfer: _TaskTransfer) -> dict[str, object]:
    """A transfer's own fields, to carry it from one version's model to the other's."""
    return {name: getattr(transfer, name) for name in _TaskTransfer.model_fields}


class TransferSucceeded(_TaskTransfer):
    """A task's events are in Outlook: the ledger's only input."""

    v: Literal[1] = 1
    scenario: str


class Transfer(_TaskTransfer):
    """One task's transfer inside ``TransfersSucceeded``."""

    correlation_id: str | None = None  # the sync run that caused it, for the ledger's lines


#: Transfers carried by one message at most (a writer's batch is what finished while the
#: previous one waited for its confirm: at most this many).
MAX_TRANSFERS = 500


class TransfersSucceeded(BaseModel):
    """Version 2 of ``transfer.succeeded``: the transfers a writer finished together, in one
    confirmed message (one publish, one delivery, one ack and one Redis round trip for them
    all). A ledger that only knows version 1 dead-letters it with the version named, so a
    rolling upgrade loses nothing: upgrade the ledgers first, or replay the dead letters."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[2] = 2
    scenario: str
    transfers: list[Transfer] = Field(min_length=1, max_length=MAX_TRANSFERS)


def transfers_message(items: list[tuple[TransferSucceeded, str | None]]) -> TransfersSucceeded:
    """One version-2 message for transfers of one scenario, with their correlation ids."""
    return TransfersSucceeded(
        scenario=items[0][0].scenario,
        transfers=[
            Transfer(**_transfer_fields(t), correlation_id=correlation_id)
            for t, correlation_id in items
        ],
    )


def decode_transfers(body: bytes) -> list[tuple[TransferSucceeded, str | None]]:
    """A ``transfer.succeeded`` body of either version as its transfers, each with the
    correlation id it carries (None in version 1: the message's own applies)."""
    data = _json_object(body)
    if data.get("v", 1) == TransfersSucceeded.model_fields["v"].default:
        batch = _validate(TransfersSucceeded, data)
        return [
            (TransferSucceeded(scenario=batch.scenario, **_transfer_fields(t)), t.correlation_id)
            for t in batch.transfers
        ]
    return [(_versioned(TransferSucceeded, data), None)]


Model = TypeVar("Model", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode("utf-8")


def decode(body: bytes, model: type[Model]) -> Model:
    """Parse a body into ``model``; any failure is a BadMessage whose text says why."""
    try:  # the usual, well-formed body: parsed and validated in one pass, in Rust
        return model.model_validate_json(body)
    except ValidationError:
        pass  # parsed again below, for the reason in our words
    return _versioned(model, _json_object(body))


def _json_object(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"body must be a JSON object, not {type(data).__name__}")
    return data


def _versioned(model: type[Model], data: dict) -> Model:
    """``data`` as ``model``, refusing a schema version the model is not."""
    version = data.get("v", 1)
    if "v" in model.model_fields and version != model.model_fields["v"].default:
        raise BadMessage(f"unsupported {model.__name__} schema version {version!r}")
    return _validate(model, data)


def _validate(model: type[Model], data: dict) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise BadMessage(f"body does not fit {model.__name__}: {problems}") from None
