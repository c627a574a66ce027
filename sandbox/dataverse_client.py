"""The Dataverse part of the sandbox's control surface, for tests and the demo."""

from __future__ import annotations

from typing import Any

from sandbox.client import SandboxClient


class DataverseControl:
    def __init__(self, client: SandboxClient) -> None:
        self._client = client

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._client._call(method, f"/dataverse{path}", body)

    def environment(self) -> dict[str, Any]:
        return self.call("GET", "")

    def rows(self, entity_set: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/rows/{entity_set}")["value"]

    def task_ids_by_name(self) -> dict[str, str]:
        return {
            r["msdyn_subject"]: r["msdyn_projecttaskid"] for r in self.rows("msdyn_projecttasks")
        }

    def project_ids_by_name(self) -> dict[str, str]:
        return {r["msdyn_subject"]: r["msdyn_projectid"] for r in self.rows("msdyn_projects")}

    def update(self, entity_set: str, row_id: str, **values: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/rows/{entity_set}/{row_id}", values)

    def delete(self, entity_set: str, row_id: str) -> None:
        self.call("DELETE", f"/rows/{entity_set}/{row_id}")

    def label(self, task_ids: list[str], on: bool = True, label: str = "Create event") -> int:
        return self.call("POST", "/labels", {"task_ids": task_ids, "label": label, "on": on})[
            "changed"
        ]

    def demo_label_task_ids(self) -> list[str]:
        """The tasks the seed's demo labels (every case of the seed: see seed/dataverse.json)."""
        projects = self.project_ids_by_name()
        wanted = {(projects[p], t) for p, t in self.environment()["demo"]["label_tasks"]}
        return sorted(
            r["msdyn_projecttaskid"]
            for r in self.rows("msdyn_projecttasks")
            if (r["_msdyn_project_value"], r["msdyn_subject"]) in wanted
        )

    def generate(self, name: str, tasks: int, **options: Any) -> dict[str, Any]:
        return self.call("POST", "/generate", {"name": name, "tasks": tasks, **options})

    def change_tracking(self, table: str, enabled: bool) -> dict[str, bool]:
        return self.call("POST", "/change-tracking", {"table": table, "enabled": enabled})

    def expire_delta_tokens(self) -> None:
        self.call("POST", "/delta-tokens/expire")

    def protection(self, limit: int, window_s: float) -> None:
        self.call("POST", "/protection", {"limit": limit, "window_s": window_s})

    def faults(self, entity_set: str, statuses: list[int]) -> None:
        self.call("POST", "/faults", {"entity_set": entity_set, "statuses": statuses})

    def stats(self) -> dict[str, Any]:
        return self.call("GET", "/stats")

    def reset_stats(self) -> None:
        self.call("POST", "/stats/reset")
