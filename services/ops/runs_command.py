"""``pwasync runs [--json] [--limit N]``: the history of sync runs, newest first.

The poller keeps each run's summary in Redis (docs/architecture.md, "Run summaries"); the
writers count what the run's messages did in Outlook under its correlation id
(``common/run_events.py``): events created (+), updated (~), deleted (-) and failed (!).
"""

from __future__ import annotations

import json
from typing import Any

from common.redis_store import Keys, connect_redis_for
from common.run_events import EFFECTS, RunEvents
from common.settings import Settings
from services.poller.state import PollerState


def load_runs(settings: Settings, limit: int) -> list[dict[str, Any]]:
    """The poller's run summaries, each with ``events``: what its messages did in Outlook."""
    url = settings.redis_url.get_secret_value()
    client = connect_redis_for(settings)
    keys = Keys(settings.scenario)
    try:
        runs = PollerState(client, keys, url).runs(limit)
        run_events = RunEvents(client, keys, url)
        for run in runs:
            ids = [run.get("correlation_id"), *run.get("coalesced_correlation_ids", [])]
            run["events"] = run_events.totals([i for i in ids if i])
        return runs
    finally:
        client.close()


def run_runs(settings: Settings, *, as_json: bool, limit: int) -> int:
    runs = load_runs(settings, limit)
    print(json.dumps(runs) if as_json else runs_table(runs))
    return 0


def runs_table(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no sync runs yet"
    lines = [
        f"{'started (UTC)':19}  {'trigger':8}  {'status':11}  {'secs':>6}  "
        f"{'projects read/listed':>20}  {'published':>9}  {'unchanged':>9}  {'removed':>7}  "
        f"{'events +/~/-/!':>15}  skipped / notes"
    ]
    for run in runs:
        projects, tasks = run.get("projects", {}), run.get("tasks", {})
        notes = [f"{reason} {count}" for reason, count in sorted(tasks.get("skipped", {}).items())]
        refused = run.get("assignees", {}).get("refused", {})
        notes.extend(f"assignees refused: {code} {n}" for code, n in sorted(refused.items()))
        if tasks.get("removals_held"):
            notes.append(f"REMOVALS HELD {tasks['removals_held']} (deletion guard)")
        if run.get("full"):
            notes.append("full")
        if run.get("project_ids") or run.get("task_ids"):
            notes.append(
                f"scoped to {len(run.get('project_ids', []))} project(s), "
                f"{len(run.get('task_ids', []))} task(s)"
            )
        notes.extend(f"error: {e}" for e in run.get("errors", []))
        started = (run.get("started_at") or "")[:19].replace("T", " ")
        duration = run.get("duration_seconds")
        read = f"{projects.get('read', 0)}/{projects.get('listed', 0)}"
        events = run.get("events", {})
        effects = "/".join(str(events.get(e, 0)) for e in EFFECTS)
        lines.append(
            f"{started:19}  {run.get('trigger', ''):8}  {run.get('status', ''):11}  "
            f"{duration if duration is not None else '':>6}  {read:>20}  "
            f"{tasks.get('published', 0):>9}  {tasks.get('unchanged', 0):>9}  "
            f"{tasks.get('removed', 0):>7}  {effects:>15}  {'; '.join(notes)}"
        )
    return "\n".join(lines)
