"""The emulated Dataverse environment's data: rows per table with a row version, the log of
deleted rows that change tracking reports, each table's change-tracking switch, the
application users and their security roles, and service protection's request window.

Every write moves the environment's version and the row's ``modifiedon``; a delta token is a
version (and the time it was issued, as the real tokens carry), so "what changed since" is the
rows and deletions with a later version.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.dataverse_tables import TableSpec, table_specs
from sandbox.state import StateError

#: Service protection per user, per 5-minute window (learn: …/data-platform/api-limits).
DEFAULT_WINDOW_REQUESTS = 6000
DEFAULT_WINDOW_SECONDS = 300.0
READ_LEVELS = ("none", "user", "business_unit", "organization")


@dataclass
class ApplicationUser:
    """An application user of the environment and what its security roles grant."""

    client_id: str
    systemuser_id: str
    read: dict[str, str]  # table logical name -> read level (READ_LEVELS)
    customize: bool = False  # may create columns (System Customizer)

    def read_level(self, logical_name: str) -> str:
        return self.read.get(logical_name, "none")


@dataclass
class Row:
    data: dict[str, Any]
    version: int


@dataclass
class ServiceProtection:
    """A sliding window of request times per caller; over the limit answers 429."""

    limit: int = DEFAULT_WINDOW_REQUESTS
    window_s: float = DEFAULT_WINDOW_SECONDS
    calls: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, caller: str, now: float | None = None) -> float | None:
        """None: the request may run (and is counted); else the seconds to wait."""
        now = time.monotonic() if now is None else now
        window = self.calls.setdefault(caller, deque())
        while window and window[0] <= now - self.window_s:
            window.popleft()
        if len(window) >= self.limit:
            return max(0.001, window[0] + self.window_s - now)
        window.append(now)
        return None


class DataverseStore:
    def __init__(self, clock: Any = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self.specs: dict[str, TableSpec] = table_specs()
        self.rows: dict[str, dict[str, Row]] = {name: {} for name in self.specs}
        self.deleted: dict[str, list[tuple[int, str]]] = {name: [] for name in self.specs}
        self.change_tracking: dict[str, bool] = {s.logical_name: True for s in self.specs.values()}
        self.version = 1000
        #: Delta tokens issued before this version are expired (default lifetime: 7 days).
        self.oldest_token_version = 0
        self.application_users: dict[str, ApplicationUser] = {}
        self.publisher_prefixes: set[str] = {"new"}
        self.protection = ServiceProtection()
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: dict[str, list[int]] = {}  # entity set -> statuses to answer next
        self.metadata_ids: dict[str, str] = {}
        self.demo: dict[str, Any] = {}

    # --- time and versions -----------------------------------------------------------------

    def now(self) -> datetime:
        # Dataverse keeps modifiedon to the second.
        return self._clock().astimezone(UTC).replace(microsecond=0)

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    # --- tables ----------------------------------------------------------------------------

    def spec(self, entity_set: str) -> TableSpec:
        if entity_set not in self.specs:
            raise StateError(f"Resource not found for the segment '{entity_set}'.", 404)
        return self.specs[entity_set]

    def spec_by_logical(self, logical_name: str) -> TableSpec:
        for spec in self.specs.values():
            if spec.logical_name == logical_name:
                return spec
        raise StateError(f"Could not find entity with logical name '{logical_name}'.", 404)

    def get(self, entity_set: str, row_id: str) -> dict[str, Any] | None:
        row = self.rows[self.spec(entity_set).entity_set].get(row_id.lower())
        return row.data if row else None

    def create(self, entity_set: str, values: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(entity_set)
        columns = spec.all_columns()
        unknown = set(values) - set(columns)
        if unknown:
            raise StateError(f"unknown columns of {spec.logical_name}: {sorted(unknown)}")
        row_id = str(uuid.UUID(str(values.get(spec.key) or uuid.uuid4())))
        if row_id in self.rows[entity_set]:
            raise StateError(f"{spec.logical_name} {row_id} exists", 409)
        now = self.now()
        data: dict[str, Any] = dict.fromkeys(columns)
        data.update({"statecode": 0, "createdon": now})
        data.update({k: _value(v) for k, v in values.items()})
        data.update({spec.key: row_id, "modifiedon": now})
        row = Row(data, self._next_version())
        data["versionnumber"] = row.version
        self.rows[entity_set][row_id] = row
        return data

    def update(self, entity_set: str, row_id: str, values: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(entity_set)
        row = self.rows[entity_set].get(row_id.lower())
        if row is None:
            raise StateError(f"{spec.logical_name} With Id = {row_id} Does Not Exist", 404)
        unknown = set(values) - set(spec.all_columns())
        if unknown:
            raise StateError(f"unknown columns of {spec.logical_name}: {sorted(unknown)}")
        row.data.update({k: _value(v) for k, v in values.items()})
        row.data["modifiedon"] = self.now()
        row.version = self._next_version()
        row.data["versionnumber"] = row.version
        return row.data

    def delete(self, entity_set: str, row_id: str) -> None:
        spec = self.spec(entity_set)
        row_id = row_id.lower()
        if self.rows[entity_set].pop(row_id, None) is None:
            raise StateError(f"{spec.logical_name} With Id = {row_id} Does Not Exist", 404)
        self.deleted[entity_set].append((self._next_version(), row_id))
        self._cascade(spec, row_id)

    def _cascade(self, spec: TableSpec, row_id: str) -> None:
        """Deleting a project deletes its tasks, labels and assignments; a task its
        assignments and label links (Dataverse's cascade-delete relationships)."""
        children = {
            "msdyn_project": [
                ("msdyn_projecttasks", "_msdyn_project_value"),
                ("msdyn_resourceassignments", "_msdyn_projectid_value"),
                ("msdyn_projectlabels", "_msdyn_projectid_value"),
            ],
            "msdyn_projecttask": [
                ("msdyn_resourceassignments", "_msdyn_taskid_value"),
                ("msdyn_projecttasktolabels", "_msdyn_projecttaskid_value"),
            ],
            "msdyn_projectlabel": [("msdyn_projecttasktolabels", "_msdyn_projectlabelid_value")],
        }
        for entity_set, column in children.get(spec.logical_name, []):
            for child_id in [
                i for i, r in self.rows[entity_set].items() if r.data[column] == row_id
            ]:
                if child_id in self.rows[entity_set]:
                    self.delete(entity_set, child_id)

    def changed_since(self, entity_set: str, version: int) -> tuple[list[Row], list[str]]:
        """The rows written after ``version`` (their current state) and the ids deleted since
        (a row created and deleted in between is reported deleted only)."""
        changed = [r for r in self.rows[entity_set].values() if r.version > version]
        deleted = [i for v, i in self.deleted[entity_set] if v > version]
        return changed, [i for i in dict.fromkeys(deleted) if i not in self.rows[entity_set]]

    def add_custom_column(self, logical_table: str, metadata: dict[str, Any]) -> str:
        spec = self.spec_by_logical(logical_table)
        logical = str(metadata["SchemaName"]).lower()
        if logical in spec.all_columns():
            raise StateError(
                f"An attribute with the specified name {metadata['SchemaName']} already exists.",
                400,
            )
        spec.custom[logical] = {**metadata, "LogicalName": logical, "MetadataId": str(uuid.uuid4())}
        default = bool(metadata.get("DefaultValue", False))
        for row in self.rows[spec.entity_set].values():
            row.data[logical] = default
        return spec.custom[logical]["MetadataId"]


def _value(value: Any) -> Any:
    """Control-surface values as the store keeps them: date-times aware UTC, GUIDs lower."""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and "T" in value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    if isinstance(value, str) and len(value) == 36:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return value
    return value
