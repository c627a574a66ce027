"""The basic Planner part of the control surface, for tests and the demo:

planner = PlannerControl(SandboxClient.from_env_file(path))
planner.update_task(task_id, labels=[], due=None)
"""

from __future__ import annotations

from typing import Any

from sandbox.client import SandboxClient


class PlannerControl:
    def __init__(self, client: SandboxClient) -> None:
        self._client = client

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._client._call(method, f"/planner{path}", body)

    def overview(self) -> dict[str, Any]:
        return self._call("GET", "")

    def plan(self, title: str) -> dict[str, Any]:
        """A plan's summary (id, group, labels, task ids by title), by its title."""
        return next(p for p in self.overview()["plans"] if p["title"] == title)

    def labelled_task_ids(self, label: str) -> list[str]:
        """Every task (of every plan) that carries the label of this name."""
        return [
            task_id
            for plan in self.overview()["plans"]
            for task_id in plan["labelled"].get(label, [])
        ]

    def group_ids(self) -> list[str]:
        return [group["id"] for group in self.overview()["groups"]]

    def requests(self) -> dict[str, int]:
        return self.overview()["requests"]

    def reset_requests(self) -> None:
        self._call("POST", "/requests/reset")

    def config(self, **changes: Any) -> dict[str, Any]:
        return self._call("POST", "/config", changes)

    def create_plan(self, group_id: str, title: str, **plan: Any) -> dict[str, Any]:
        return self._call("POST", f"/groups/{group_id}/plans", {"title": title, **plan})

    def update_plan(self, plan_id: str, **changes: Any) -> dict[str, Any]:
        return self._call("PATCH", f"/plans/{plan_id}", changes)

    def delete_plan(self, plan_id: str) -> None:
        self._call("DELETE", f"/plans/{plan_id}")

    def add_task(self, plan_id: str, **task: Any) -> str:
        return self._call("POST", f"/plans/{plan_id}/tasks", task)["id"]

    def generate(self, plan_id: str, count: int, **options: Any) -> list[str]:
        return self._call("POST", f"/plans/{plan_id}/tasks", {"generate": count, **options})["ids"]

    def update_task(self, task_id: str, **changes: Any) -> dict[str, Any]:
        return self._call("PATCH", f"/tasks/{task_id}", changes)

    def delete_task(self, task_id: str) -> None:
        self._call("DELETE", f"/tasks/{task_id}")

    def set_app_roles(self, client_id: str, graph_roles: list[str]) -> None:
        self._client._call(
            "PATCH", f"/apps/{client_id}", {"application_permissions": {"graph": graph_roles}}
        )
