"""Which Planner premium projects changed: the deciding logic of change detection (pure).

The sync's change detection compares each project's "modified" with what it last read. A
Dataverse project row's ``modifiedon`` does not move when its tasks, their labels or their
assignments change (a label taken off deletes a link row; the task row stays as it was), so
the reader keeps its own *stamp* per project: when anything of that project last changed, as
seen in the rows of the watched tables (tasks, assignments, labels, task-to-label links).

Each poll reads, per watched table, only what changed: a delta link where the table has change
tracking on (changed rows, and deleted ones as ``$deletedEntity``), else the rows whose
``modifiedon`` is at or after the table's watermark less an overlap (rows are saved by the
scheduling service asynchronously, so one may appear with an earlier ``modifiedon``), with a
periodic full listing of the table's ids for the deletions a watermark cannot see. Every row
seen is kept as (project, modifiedon) by id, so a deletion names its project and a row seen
again unchanged (the overlap) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: What a stamp moves by when only deletions (or late rows) say a project changed.
STAMP_STEP = timedelta(microseconds=1)


@dataclass(frozen=True)
class WatchedTable:
    """One table change detection reads: which column names a row's project, directly
    (``project_column``) or through a row of another watched table (``parent``)."""

    entity_set: str
    logical_name: str
    key: str
    project_column: str | None = None
    parent: tuple[str, str] | None = None  # (lookup column, the parent's entity set)
    fallback_parent: tuple[str, str] | None = None  # tried when the parent is unknown

    @property
    def columns(self) -> tuple[str, ...]:
        names = [self.key, "modifiedon", "versionnumber"]
        for column in (
            self.project_column,
            *(p[0] for p in (self.parent, self.fallback_parent) if p),
        ):
            if column:
                names.append(column)
        return tuple(names)


TASKS = WatchedTable(
    "msdyn_projecttasks", "msdyn_projecttask", "msdyn_projecttaskid", "_msdyn_project_value"
)
ASSIGNMENTS = WatchedTable(
    "msdyn_resourceassignments",
    "msdyn_resourceassignment",
    "msdyn_resourceassignmentid",
    "_msdyn_projectid_value",
)
LABELS = WatchedTable(
    "msdyn_projectlabels", "msdyn_projectlabel", "msdyn_projectlabelid", "_msdyn_projectid_value"
)
LINKS = WatchedTable(
    "msdyn_projecttasktolabels",
    "msdyn_projecttasktolabel",
    "msdyn_projecttasktolabelid",
    parent=("_msdyn_projectlabelid_value", LABELS.entity_set),
    fallback_parent=("_msdyn_projecttaskid_value", TASKS.entity_set),
)


def watched_tables(select_by: str) -> tuple[WatchedTable, ...]:
    """Labels before links: a link's project is found through its label."""
    if select_by == "label":
        return (TASKS, ASSIGNMENTS, LABELS, LINKS)
    return (TASKS, ASSIGNMENTS)


@dataclass(frozen=True)
class Entry:
    """What change detection keeps of a row: its project, ``modifiedon`` (ISO text; to the
    second, so two saves within one second share it) and ``versionnumber`` (the row version,
    which every save moves)."""

    project_id: str
    modified: str
    version: str = ""

    def to_text(self) -> str:
        return f"{self.project_id} {self.modified} {self.version}".rstrip()

    @classmethod
    def from_text(cls, text: str) -> Entry:
        project_id, modified, version = (text.split(" ") + ["", ""])[:3]
        return cls(project_id, modified, version)


@dataclass
class Observed:
    """What one read of a table said: rows (their current state) and deleted ids;
    ``complete`` when it listed every row, so a known id missing from it was deleted too."""

    rows: list[dict[str, Any]]
    deleted: list[str] = field(default_factory=list)
    complete: bool = False
    #: Every row is a change (a delta link's answer); else a row seen before with the same
    #: version (a watermark's overlap, a sweep) is none.
    changes_only: bool = False


@dataclass
class Fold:
    """What a poll learned: the projects that changed (with the newest ``modifiedon`` seen of
    their rows; None when only a deletion says so), and the entries to keep and drop."""

    changed: dict[str, datetime | None] = field(default_factory=dict)
    keep: dict[str, dict[str, Entry]] = field(default_factory=dict)  # entity set -> id -> entry
    drop: dict[str, set[str]] = field(default_factory=dict)
    unresolved: int = 0  # rows whose project could not be told (logged)

    def touch(self, project_id: str, modified: datetime | None) -> None:
        before = self.changed.get(project_id)
        if project_id not in self.changed or (
            modified is not None and (before is None or modified > before)
        ):
            self.changed[project_id] = modified


def fold_table(
    table: WatchedTable,
    observed: Observed,
    known: dict[str, Entry],
    parents: dict[str, dict[str, Entry]],
    result: Fold,
) -> None:
    """Add one table's read to ``result``. ``known``: the entries kept of this table for the
    ids observed (every entry, for a complete read); ``parents``: entries of other tables by
    entity set (this poll's included), to find a link's project."""
    keep = result.keep.setdefault(table.entity_set, {})
    drop = result.drop.setdefault(table.entity_set, set())
    seen = set()
    for row in observed.rows:
        row_id = str(row.get(table.key) or "").lower()
        if not row_id:
            continue
        seen.add(row_id)
        project_id = _project_of(table, row, parents)
        before = known.get(row_id)
        if project_id is None:
            project_id = before.project_id if before else None
        if project_id is None:
            result.unresolved += 1
            continue
        entry = Entry(
            project_id, str(row.get("modifiedon") or ""), str(row.get("versionnumber") or "")
        )
        if before == entry and entry.version and not observed.changes_only:
            continue  # seen before as it is (a watermark's overlap, a sweep)
        keep[row_id] = entry
        result.touch(project_id, parse_instant(entry.modified))
        if before is not None and before.project_id != project_id:
            result.touch(before.project_id, None)
    gone = {str(i).lower() for i in observed.deleted}
    if observed.complete:
        gone |= set(known) - seen
    for row_id in sorted(gone):
        before = known.get(row_id)
        if before is not None:
            drop.add(row_id)
            result.touch(before.project_id, None)


def _project_of(
    table: WatchedTable, row: dict[str, Any], parents: dict[str, dict[str, Entry]]
) -> str | None:
    if table.project_column:
        value = row.get(table.project_column)
        return str(value).lower() if value else None
    for link in (table.parent, table.fallback_parent):
        if link is None:
            continue
        column, entity_set = link
        parent_id = str(row.get(column) or "").lower()
        entry = parents.get(entity_set, {}).get(parent_id)
        if entry is not None:
            return entry.project_id
    return None


def parent_ids(table: WatchedTable, rows: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """The parent rows (by entity set) whose entries a table's rows need looked up."""
    wanted: dict[str, set[str]] = {}
    for link in (table.parent, table.fallback_parent):
        if link is None:
            continue
        column, entity_set = link
        wanted.setdefault(entity_set, set()).update(
            str(r[column]).lower() for r in rows if r.get(column)
        )
    return wanted


def next_stamp(previous: datetime | None, modified: datetime | None, now: datetime) -> datetime:
    """A changed project's new stamp (UTC): the newest ``modifiedon`` seen of its rows, and
    always later than the stamp before, so the sync reads it again and orders its messages
    after the earlier ones; a deletion alone (no time of its own) moves it to now."""
    candidates = [moment for moment in (modified,) if moment is not None]
    if previous is not None:
        candidates.append(previous + STAMP_STEP)
    elif modified is None:
        candidates.append(now)
    return max(candidates)


def watermark_after(previous: datetime | None, rows: Iterable[dict[str, Any]]) -> datetime | None:
    """The newest ``modifiedon`` seen so far of a table without change tracking."""
    moments = [m for m in (parse_instant(r.get("modifiedon")) for r in rows) if m is not None]
    if previous is not None:
        moments.append(previous)
    return max(moments) if moments else None


def parse_instant(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
