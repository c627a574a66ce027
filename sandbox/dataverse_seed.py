"""The emulated Planner premium environment's starting data (``seed/dataverse.json``).

The seed names people by their Entra UPN: each becomes a ``systemuser`` (e-mail address and
Entra object id from the directory, unless the seed leaves one out) and a ``bookableresource``
of type User. Each project gets the 25 coloured labels Planner creates with a plan, named as
the seed says (the others unnamed), and its tasks, buckets of nothing, and assignments. Tasks
start unlabelled: the demo and the tests put the "Create event" label on after the services
start, as a plan's user would (``demo.label_task_ids`` names the demo's ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.client_assertion import RegisteredCertificate
from sandbox.dataverse_store import ApplicationUser, DataverseStore
from sandbox.state import AppRegistration, Tenant, deterministic_id

DATAVERSE_SEED = Path(__file__).with_name("seed") / "dataverse.json"
LABEL_COLOURS = 25
GENERIC_RESOURCE, USER_RESOURCE = 1, 3  # bookableresource.resourcetype


def load_dataverse(tenant: Tenant, path: Path | None = None) -> DataverseStore:
    data = json.loads((path or DATAVERSE_SEED).read_text(encoding="utf-8"))
    store = DataverseStore()
    store.publisher_prefixes = set(data.get("publisher_prefixes", ["new"]))
    for app in data["apps"]:
        tenant.apps[app["client_id"].lower()] = AppRegistration(
            client_id=app["client_id"].lower(),
            display_name=app["display_name"],
            is_public=False,
            secret=app["secret"],
            certificates=[RegisteredCertificate.from_pem(p) for p in app.get("certificates", [])],
        )
        store.application_users[app["client_id"].lower()] = ApplicationUser(
            client_id=app["client_id"].lower(),
            systemuser_id=deterministic_id("dataverse-app-user", app["client_id"].lower()),
            read=dict(app["read"]),
            customize=app.get("customize", False),
        )
    for spec in data["people"]:
        add_person(store, tenant, spec)
    for spec in data["projects"]:
        add_project(store, spec)
    for table, enabled in data.get("change_tracking", {}).items():
        store.change_tracking[table] = enabled
    store.demo = data.get("demo", {})
    return store


def resource_id(name: str) -> str:
    return deterministic_id("dataverse-resource", name)


def add_person(store: DataverseStore, tenant: Tenant, spec: dict[str, Any]) -> None:
    """A bookable resource, with its user when the spec names one (``upn``)."""
    user_id = None
    if spec.get("upn"):
        directory = next((u for u in tenant.users.values() if u.upn == spec["upn"]), None)
        user_id = deterministic_id("dataverse-user", spec["upn"])
        store.create(
            "systemusers",
            {
                "systemuserid": user_id,
                "fullname": spec["name"],
                "internalemailaddress": None if spec.get("no_email") else spec["upn"],
                "azureactivedirectoryobjectid": directory.id if directory else None,
                "isdisabled": False,
            },
        )
    store.create(
        "bookableresources",
        {
            "bookableresourceid": resource_id(spec["name"]),
            "name": spec["name"],
            "_userid_value": user_id,
            "resourcetype": USER_RESOURCE if user_id else GENERIC_RESOURCE,
        },
    )


def add_project(store: DataverseStore, spec: dict[str, Any]) -> dict[str, Any]:
    project_id = spec.get("id") or deterministic_id("dataverse-project", spec["name"])
    store.create("msdyn_projects", {"msdyn_projectid": project_id, "msdyn_subject": spec["name"]})
    names = spec.get("labels", ["Create event"])
    for colour in range(LABEL_COLOURS):
        store.create(
            "msdyn_projectlabels",
            {
                "msdyn_projectlabelid": deterministic_id(
                    "dataverse-label", project_id, str(colour)
                ),
                "msdyn_projectlabeltext": names[colour] if colour < len(names) else None,
                "msdyn_colorindex": colour,
                "_msdyn_projectid_value": project_id,
            },
        )
    for task in spec.get("tasks", []):
        add_task(store, project_id, task)
    return store.get("msdyn_projects", project_id) or {}


def add_task(store: DataverseStore, project_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    task_id = spec.get("id") or deterministic_id("dataverse-task", project_id, spec["name"])
    milestone = bool(spec.get("milestone", False))
    values = {
        "msdyn_projecttaskid": task_id,
        "msdyn_subject": spec["name"],
        "_msdyn_project_value": project_id,
        "msdyn_scheduledstart": spec.get("start"),
        "msdyn_scheduledend": spec.get("start") if milestone else spec.get("finish"),
        "msdyn_start": spec.get("start"),
        "msdyn_finish": spec.get("start") if milestone else spec.get("finish"),
        "msdyn_summary": bool(spec.get("summary", False)),
        "msdyn_ismilestone": milestone,
        "msdyn_outlinelevel": spec.get("outline_level", 1),
    }
    row = store.create("msdyn_projecttasks", values)
    for name in spec.get("assignees", []):
        assign(store, project_id, task_id, name)
    for label in spec.get("labels", []):
        set_label(store, task_id, label, True)
    return row


def assign(store: DataverseStore, project_id: str, task_id: str, resource_name: str) -> None:
    store.create(
        "msdyn_resourceassignments",
        {
            "msdyn_resourceassignmentid": deterministic_id(
                "dataverse-assignment", task_id, resource_name
            ),
            "msdyn_name": resource_name,
            "_msdyn_taskid_value": task_id,
            "_msdyn_projectid_value": project_id,
            "_msdyn_bookableresourceid_value": resource_id(resource_name),
        },
    )


def set_label(store: DataverseStore, task_id: str, label_text: str, on: bool) -> bool:
    """Put a label on a task (a link row) or take it off (the link row is deleted), as the
    plan's grid does; False when nothing changed."""
    task = store.get("msdyn_projecttasks", task_id)
    if task is None:
        raise KeyError(f"no task {task_id}")
    label = next(
        (
            row.data
            for row in store.rows["msdyn_projectlabels"].values()
            if row.data["_msdyn_projectid_value"] == task["_msdyn_project_value"]
            and row.data["msdyn_projectlabeltext"] == label_text
        ),
        None,
    )
    if label is None:
        raise KeyError(f"the task's project has no label {label_text!r}")
    link_id = deterministic_id("dataverse-link", task_id, label["msdyn_projectlabelid"])
    exists = store.get("msdyn_projecttasktolabels", link_id) is not None
    if on and not exists:
        store.create(
            "msdyn_projecttasktolabels",
            {
                "msdyn_projecttasktolabelid": link_id,
                "msdyn_name": label_text,
                "_msdyn_projecttaskid_value": task_id,
                "_msdyn_projectlabelid_value": label["msdyn_projectlabelid"],
            },
        )
        return True
    if not on and exists:
        store.delete("msdyn_projecttasktolabels", link_id)
        return True
    return False
