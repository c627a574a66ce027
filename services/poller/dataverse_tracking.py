"""Reading what changed in the watched tables, once per poll (``dataverse_changes`` decides).

Per table, one request when nothing changed: the delta link where change tracking is on, else
``$filter=modifiedon ge <watermark - overlap>``; a full listing (the table's ids, a page per
5,000 rows) the first time, when a delta link is refused (expired after 7 days, or change
tracking switched off) and, for tables without change tracking, every
PWASYNC_DATAVERSE_RECONCILE_MINUTES to find deleted rows. Whether a table has change tracking
is read from its metadata once per process, and again whenever a tracked read is refused or a
sweep is due.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from common.errors import PermanentApiError
from common.logging import get_logger
from services.poller.dataverse_auth import DataverseHttp, read_collection
from services.poller.dataverse_changes import (
    Entry,
    Fold,
    Observed,
    WatchedTable,
    fold_table,
    next_stamp,
    parent_ids,
    parse_instant,
    watermark_after,
)
from services.poller.dataverse_state import DataverseState, TableState
from services.poller.odata import query_string

log = get_logger(__name__)

#: Refusals of a delta link after which the table is read in full again.
_REFUSED = (400, 403, 404, 410, 422)


class ChangeDetector:
    def __init__(
        self,
        http: DataverseHttp,
        state: DataverseState,
        tables: tuple[WatchedTable, ...],
        *,
        overlap: timedelta,
        reconcile_every: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._http = http
        self._state = state
        self._tables = tables
        self._overlap = overlap
        self._reconcile_every = reconcile_every
        self._clock = clock
        self._tracking: dict[str, bool] = {}  # logical name -> change tracking on

    def change_tracking(self, table: WatchedTable, *, refresh: bool = False) -> bool:
        if refresh or table.logical_name not in self._tracking:
            url = (
                f"{self._http.api_url}/EntityDefinitions(LogicalName='{table.logical_name}')"
                "?$select=LogicalName,ChangeTrackingEnabled"
            )
            enabled = bool(self._http.get_json(url).get("ChangeTrackingEnabled"))
            if self._tracking.get(table.logical_name) != enabled:
                log.info(
                    "change tracking of a Dataverse table",
                    table=table.logical_name,
                    enabled=enabled,
                    detection="delta links" if enabled else "modifiedon watermark and sweeps",
                )
            self._tracking[table.logical_name] = enabled
        return self._tracking[table.logical_name]

    def poll(self) -> dict[str, datetime]:
        """Read every watched table's changes, move the changed projects' stamps, and return
        every stamp (project id -> UTC)."""
        now = self._clock()
        states = self._state.tables()
        fold = Fold()
        new_states = {}
        for table in self._tables:
            state = states.get(table.entity_set, TableState())
            observed, new_states[table.entity_set] = self._read(table, state, now)
            known = (
                self._state.all_entries(table.entity_set)
                if observed.complete
                else self._state.entries(table.entity_set, _ids(table, observed))
            )
            fold_table(table, observed, known, self._parents(table, observed, fold), fold)
        if fold.unresolved:
            log.warning(
                "Dataverse rows whose project could not be told; left to the next full sweep",
                rows=fold.unresolved,
            )
        stamps = self._state.stamps()
        moved = {
            project_id: next_stamp(stamps.get(project_id), modified, now)
            for project_id, modified in fold.changed.items()
        }
        self._state.commit(fold, moved, new_states)
        if moved:
            log.info("Dataverse projects changed since the last poll", projects=len(moved))
        return {**stamps, **moved}

    def forget(self, project_ids: set[str]) -> None:
        self._state.forget_stamps(project_ids)

    # --- one table ---------------------------------------------------------------------------

    def _read(
        self, table: WatchedTable, state: TableState, now: datetime
    ) -> tuple[Observed, TableState]:
        sweep_due = _due(state.reconciled_at, self._reconcile_every, now)
        if self.change_tracking(table, refresh=sweep_due and state.delta is None):
            if state.delta:
                try:
                    return self._delta(table, state.delta)
                except PermanentApiError as exc:
                    if exc.status not in _REFUSED:
                        raise
                    log.warning(
                        "Dataverse refused a delta link; reading the table in full",
                        table=table.logical_name,
                        error=str(exc),
                    )
                    if not self.change_tracking(table, refresh=True):
                        return self._sweep(table, state, now)
            return self._tracked_listing(table, now)
        if state.watermark is None or sweep_due:
            return self._sweep(table, state, now)
        return self._since_watermark(table, state)

    def _url(self, table: WatchedTable, params: dict[str, str]) -> str:
        return f"{self._http.api_url}/{table.entity_set}?{query_string(params)}"

    def _delta(self, table: WatchedTable, link: str) -> tuple[Observed, TableState]:
        read = read_collection(self._http, link, track=True)
        rows = [r for r in read.rows if not _is_deleted(r)]
        deleted = [str(r.get("id")) for r in read.rows if _is_deleted(r)]
        return Observed(rows, deleted, changes_only=True), TableState(delta=read.delta_link or link)

    def _tracked_listing(self, table: WatchedTable, now: datetime) -> tuple[Observed, TableState]:
        read = read_collection(
            self._http, self._url(table, {"$select": ",".join(table.columns)}), track=True
        )
        rows = [r for r in read.rows if not _is_deleted(r)]
        if not read.delta_link:
            # The table's metadata said on, the query ignored the preference: a full listing
            # is what came, and the table is read by watermark for the rest of the process.
            log.warning(
                "Dataverse answered a change-tracking query without a delta link; using "
                "modifiedon for this table",
                table=table.logical_name,
            )
            self._tracking[table.logical_name] = False
            mark = watermark_after(None, rows) or now
            return Observed(rows, complete=True), TableState(
                watermark=mark.isoformat(), reconciled_at=now.isoformat()
            )
        return Observed(rows, complete=True), TableState(
            delta=read.delta_link, reconciled_at=now.isoformat()
        )

    def _sweep(
        self, table: WatchedTable, state: TableState, now: datetime
    ) -> tuple[Observed, TableState]:
        read = read_collection(self._http, self._url(table, {"$select": ",".join(table.columns)}))
        mark = watermark_after(parse_instant(state.watermark), read.rows) or now
        return Observed(read.rows, complete=True), TableState(
            watermark=mark.isoformat(), reconciled_at=now.isoformat()
        )

    def _since_watermark(
        self, table: WatchedTable, state: TableState
    ) -> tuple[Observed, TableState]:
        mark = parse_instant(state.watermark)
        assert mark is not None
        since = (mark - self._overlap).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {"$select": ",".join(table.columns), "$filter": f"modifiedon ge {since}"}
        read = read_collection(self._http, self._url(table, params))
        new_mark = watermark_after(mark, read.rows) or mark
        return Observed(read.rows), TableState(
            watermark=new_mark.isoformat(), reconciled_at=state.reconciled_at
        )

    def _parents(
        self, table: WatchedTable, observed: Observed, fold: Fold
    ) -> dict[str, dict[str, Entry]]:
        parents: dict[str, dict[str, Entry]] = {}
        for entity_set, ids in parent_ids(table, observed.rows).items():
            found = self._state.entries(entity_set, ids)
            found.update(fold.keep.get(entity_set, {}))
            parents[entity_set] = found
        return parents


def _ids(table: WatchedTable, observed: Observed) -> set[str]:
    ids = {str(r.get(table.key) or "").lower() for r in observed.rows}
    return (ids | {str(i).lower() for i in observed.deleted}) - {""}


def _is_deleted(row: dict) -> bool:
    return str(row.get("@odata.context", "")).endswith("$deletedEntity") or (
        row.get("reason") == "deleted" and "id" in row
    )


def _due(last: str | None, every: timedelta, now: datetime) -> bool:
    moment = parse_instant(last)
    return moment is None or now - moment >= every
