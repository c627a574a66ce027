"""A Python client of the sandbox's control surface, for tests, the demo and benchmarks.

    client = SandboxClient.from_env_file(Path(".sandbox/sandbox.env"))
    client.flag_tasks(client.demo_flag_task_ids())
    events = client.events()

Every method raises ``SandboxError`` (with the sandbox's message) when the sandbox refuses.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

DEFAULT_FLAG_FIELD = "Create event"


class SandboxError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def read_env_file(path: Path) -> dict[str, str]:
    """The NAME=value settings of a ``sandbox.env`` file."""
    settings = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, separator, value = line.partition("=")
        if separator and not line.startswith("#"):
            settings[name.strip()] = value.strip()
    return settings


class SandboxClient:
    def __init__(self, base_url: str, ca_file: str | Path, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/_sandbox",
            verify=ssl.create_default_context(cafile=str(ca_file)),
            timeout=timeout,
        )

    @classmethod
    def from_env_file(cls, path: Path, timeout: float = 30.0) -> SandboxClient:
        settings = read_env_file(path)
        return cls(settings["PWASYNC_SANDBOX_URL"], settings["PWASYNC_CA_BUNDLE"], timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        response = self._http.request(method, path, json=body, params=params)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise SandboxError(response.status_code, message)
        return response.json()

    # -- sandbox-wide ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Reload the seed; forget events, statistics and run-time configuration."""
        self._call("POST", "/reset")

    def tenant(self) -> dict[str, Any]:
        """Edition, users, apps, resources, custom fields, projects, service accounts, demo."""
        return self._call("GET", "/tenant")

    def demo_flag_task_ids(self) -> list[str]:
        return self.tenant()["demo"]["flag_task_ids"]

    def update_user(self, upn: str, **changes: Any) -> dict[str, Any]:
        """Change ``password``, ``mailbox`` ("yes"/"no"/"unlicensed"), ``mfa_required``,
        ``locked``, ``password_expired`` or ``pwa_permissions`` of a user."""
        return self._call("PATCH", f"/users/{upn}", changes)

    def revoke_sign_ins(self, upn: str) -> int:
        """Revoke every refresh token of a user; returns how many there were."""
        return self._call("POST", f"/users/{upn}/revoke")["revoked_refresh_tokens"]

    def add_app_certificate(self, client_id: str, certificate_pem: str) -> dict[str, Any]:
        """Register a certificate (PEM, public part) for an app; returns its thumbprints."""
        return self._call("POST", f"/apps/{client_id}/certificates", {"pem": certificate_pem})

    def app_certificates(self, client_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/apps/{client_id}/certificates")["certificates"]

    def remove_app_certificate(self, client_id: str, thumbprint: str) -> None:
        self._call("DELETE", f"/apps/{client_id}/certificates/{thumbprint}")

    def device_codes(self) -> list[dict[str, Any]]:
        """Pending device-code sign-ins (user_code, client_id, scope, expires_in)."""
        return self._call("GET", "/devicecodes")["pending"]

    def approve_device_code(self, user_code: str, upn: str, decline: bool = False) -> None:
        """Do what the user does in the browser: enter the code and sign in (or decline)."""
        self._call(
            "POST", "/devicecodes/approve", {"user_code": user_code, "upn": upn, "decline": decline}
        )

    def config(self, **changes: Any) -> dict[str, Any]:
        """Change run-time settings (see sandbox/README.md); returns the whole configuration."""
        return self._call("POST", "/config", changes) if changes else self._call("GET", "/config")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/stats/reset")

    # -- projects and tasks ----------------------------------------------------------------

    def flag_tasks(
        self,
        task_ids: list[str],
        value: bool | None = True,
        field: str = DEFAULT_FLAG_FIELD,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Set (or with None, clear) a flag custom field on tasks and publish their projects."""
        return self._call(
            "POST",
            "/tasks/flag",
            {"task_ids": task_ids, "value": value, "field": field, "publish": publish},
        )

    def publish_project(self, project_id: str) -> dict[str, Any]:
        return self._call("POST", f"/projects/{project_id}/publish")

    def create_project(
        self,
        name: str,
        tasks: list[dict[str, Any]],
        project_type: int = 0,
        publish: bool = True,
        **spec: Any,
    ) -> dict[str, Any]:
        """Create a project from the seed's project spec (tasks: name, start, finish, parent,
        assignees, flag, milestone, percent_complete, custom); returns its ids."""
        return self._call(
            "POST",
            "/projects",
            {"name": name, "type": project_type, "tasks": tasks, "publish": publish, **spec},
        )

    def add_task(self, project_id: str, publish: bool = True, **task: Any) -> dict[str, Any]:
        return self._call("POST", f"/projects/{project_id}/tasks", {**task, "publish": publish})

    def update_task(self, task_id: str, publish: bool = True, **changes: Any) -> dict[str, Any]:
        """Change ``name``, ``start``, ``finish``, ``flag``, ``assignees``, ``custom``…"""
        return self._call("PATCH", f"/tasks/{task_id}", {**changes, "publish": publish})

    def delete_task(self, task_id: str, publish: bool = True) -> dict[str, Any]:
        return self._call("DELETE", f"/tasks/{task_id}", params={"publish": str(publish).lower()})

    def update_project(self, project_id: str, publish: bool = True, **changes: Any) -> dict:
        """Change ``type`` (6 = master project) or ``name``, and publish."""
        return self._call("PATCH", f"/projects/{project_id}", {**changes, "publish": publish})

    def delete_project(self, project_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/projects/{project_id}")

    def generate(
        self,
        projects: int = 1,
        tasks_per_project: int = 10,
        flagged: bool = False,
        assignees_per_task: int = 1,
        mailboxes: int = 5,
        project_type: int = 0,
        **options: Any,
    ) -> dict[str, Any]:
        """Bulk data; returns project_ids, task_ids, resource_ids and mailboxes (UPNs)."""
        return self._call(
            "POST",
            "/generate",
            {
                "projects": projects,
                "tasks_per_project": tasks_per_project,
                "flagged": flagged,
                "assignees_per_task": assignees_per_task,
                "mailboxes": mailboxes,
                "project_type": project_type,
                **options,
            },
        )

    # -- mailboxes -------------------------------------------------------------------------

    def events(self, mailbox: str | None = None) -> list[dict[str, Any]]:
        """Every event in every mailbox (or in one mailbox)."""
        params = {"mailbox": mailbox} if mailbox else None
        return self._call("GET", "/events", params=params)["events"]

    def mailbox_events(self, upn: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/mailboxes/{upn}/events")["events"]

    def move_event(
        self, upn: str, event_id: str, *, calendar: str | None = None, reimport: bool = False
    ) -> dict[str, Any]:
        """Move an event as its owner would: to another calendar, or archived and back."""
        body: dict[str, Any] = {"reimport": reimport}
        if calendar is not None:
            body["calendar"] = calendar
        return self._call("POST", f"/mailboxes/{upn}/events/{event_id}/move", body)

    def delete_event(self, upn: str, event_id: str) -> None:
        """Delete an event as its owner would in Outlook."""
        self._call("DELETE", f"/mailboxes/{upn}/events/{event_id}")

    def server_events(self) -> dict[str, Any]:
        """The handlers registered with Project Server and the calls its publishes made."""
        return self._call("GET", "/server-events")
