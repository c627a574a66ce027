"""The ProjectServer REST API's published entities, built from the tenant's stores.

``PublishedProject`` (every project: a never-published one appears as a "virtual" published
project with ``LastPublishedDate`` 0001-01-01 and its draft's name), ``PublishedTask`` (the
published plan without the project summary task, which is the ``ProjectSummaryTask``
navigation), ``PublishedAssignment``, ``PublishedProjectResource`` (a project's team member:
its ``Id`` is the enterprise resource's) and ``EnterpriseResource``.  Task custom field values
are extra task properties named by the field's InternalName with the first underscore escaped
(``Custom_x005f_<32 hex>``).

A ``Node`` is one entity: plain Python values (dates as naive wall-clock datetimes, "no date"
as ``MIN_DATE``) for ``$filter``/``$orderby``, and navigations that build their targets only
when a query expands them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.reporting import outline, roll_up
from sandbox.state import CustomField, Project, Resource, Task, Tenant

MIN_DATE = datetime(1, 1, 1)  # DateTime.MinValue: what the API writes for "no date"
# The default enterprise project type ("Enterprise Project") of every Project Server.
ENTERPRISE_PROJECT_TYPE_ID = "09fa52b4-059b-4527-926e-99f9be96437a"


@dataclass(frozen=True, eq=False)
class EntityType:
    name: str  # "PS.PublishedTask"
    properties: tuple[tuple[str, str], ...]  # (name, Edm type)
    # name -> (target type key, is a collection); a target of None cannot be expanded
    navigation: dict[str, tuple[str | None, bool]]
    has_custom_fields: bool = False


_GUID, _TEXT, _DATE, _BOOL, _INT = (
    "Edm.Guid",
    "Edm.String",
    "Edm.DateTime",
    "Edm.Boolean",
    "Edm.Int32",
)

TYPES = {
    "PublishedProject": EntityType(
        "PS.PublishedProject",
        (
            ("Id", _GUID),
            ("Name", _TEXT),
            ("CreatedDate", _DATE),
            ("LastPublishedDate", _DATE),
            ("LastSavedDate", _DATE),
            ("IsCheckedOut", _BOOL),
            ("ProjectType", _INT),
            ("IsEnterpriseProject", _BOOL),
            ("StartDate", _DATE),
            ("FinishDate", _DATE),
            ("EnterpriseProjectTypeId", _GUID),
        ),
        {
            "Tasks": ("PublishedTask", True),
            "Assignments": ("PublishedAssignment", True),
            "ProjectResources": ("PublishedProjectResource", True),
            "Draft": (None, False),
        },
    ),
    "PublishedTask": EntityType(
        "PS.PublishedTask",
        (
            ("Id", _GUID),
            ("Name", _TEXT),
            ("Start", _DATE),
            ("Finish", _DATE),
            ("IsSummary", _BOOL),
            ("IsMilestone", _BOOL),
            ("IsActive", _BOOL),
            ("IsSubProject", _BOOL),
            ("IsExternalTask", _BOOL),
            ("OutlineLevel", _INT),
            ("Created", _DATE),
            ("Modified", _DATE),
            ("PercentComplete", _INT),
        ),
        {"Assignments": ("PublishedAssignment", True)},
        has_custom_fields=True,
    ),
    "PublishedAssignment": EntityType(
        "PS.PublishedAssignment",
        (
            ("Id", _GUID),
            ("Start", _DATE),
            ("Finish", _DATE),
            ("Created", _DATE),
            ("Modified", _DATE),
        ),
        {"Task": ("PublishedTask", False), "Resource": ("PublishedProjectResource", False)},
    ),
    "PublishedProjectResource": EntityType(
        "PS.PublishedProjectResource",
        (("Id", _GUID), ("Name", _TEXT), ("Email", _TEXT)),
        {"EnterpriseResource": ("EnterpriseResource", False)},
    ),
    "EnterpriseResource": EntityType(
        "PS.EnterpriseResource",
        (
            ("Id", _GUID),
            ("Name", _TEXT),
            ("Email", _TEXT),
            ("ResourceType", _INT),
            ("IsGeneric", _BOOL),
            ("IsActive", _BOOL),
            ("IsTeam", _BOOL),
        ),
        {},
    ),
}

# CustomFieldType -> the Edm type its REST property is filtered as.
_CUSTOM_EDM_TYPES = {4: _DATE, 6: "Edm.Double", 9: "Edm.Double", 15: "Edm.Double", 17: _BOOL}


def custom_property_name(custom_field: CustomField) -> str:
    """``Custom_<hex>`` is written ``Custom_x005f_<hex>``: the first underscore escaped."""
    return custom_field.internal_name.replace("_", "_x005f_", 1)


def task_custom_fields(tenant: Tenant) -> dict[str, CustomField]:
    """The Task custom fields by their REST property name."""
    task_entity = tenant.entity_types["TaskEntity"]
    return {
        custom_property_name(f): f
        for f in tenant.custom_fields.values()
        if f.entity_type_id == task_entity
    }


def properties_of(tenant: Tenant, entity_type: EntityType) -> dict[str, str]:
    properties = dict(entity_type.properties)
    if entity_type.has_custom_fields:
        for name, custom_field in task_custom_fields(tenant).items():
            properties[name] = _CUSTOM_EDM_TYPES.get(custom_field.field_type, _TEXT)
    return properties


@dataclass(eq=False)
class Node:
    type: EntityType
    link: str  # relative to {site}/_api
    values: dict[str, Any]
    navigation: dict[str, Callable[[], Any]] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # bad data: raw JSON values


def _date(value: datetime | None) -> datetime:
    return value if value is not None else MIN_DATE


class PublishedStore:
    """The entities of one request; each project's rows are built once, when first needed."""

    def __init__(self, tenant: Tenant, task_overrides: dict[str, dict[str, Any]]) -> None:
        self._tenant = tenant
        self._overrides = task_overrides
        self._tasks: dict[str, dict[str, Node]] = {}
        self._resources: dict[str, dict[str, Node]] = {}
        self._assignments: dict[str, list[Node]] = {}
        self._by_task: dict[str, list[Node]] = {}

    # -- projects --------------------------------------------------------------------------

    def projects(self) -> list[Node]:
        return [self._project(p) for p in sorted(self._tenant.projects.values(), key=_by_id)]

    def project(self, project_id: str) -> Node | None:
        found = self._tenant.projects.get(project_id.lower())
        return self._project(found) if found else None

    def _project(self, project: Project) -> Node:
        plan = project.published or project.draft  # a draft's "virtual" published project
        start, finish = roll_up(
            [(o.start, o.finish) for o in outline(plan).values() if o.level == 1]
        )
        values = {
            "Id": project.id,
            "Name": plan.name,
            "CreatedDate": project.created,
            "LastPublishedDate": _date(project.modified),
            "LastSavedDate": project.modified or project.created,
            "IsCheckedOut": False,
            "ProjectType": project.project_type,
            "IsEnterpriseProject": True,
            "StartDate": _date(start),
            "FinishDate": _date(finish),
            "EnterpriseProjectTypeId": ENTERPRISE_PROJECT_TYPE_ID,
        }
        return Node(
            TYPES["PublishedProject"],
            f"ProjectServer/Projects('{project.id}')",
            values,
            {
                "Tasks": lambda: self.tasks(project),
                "Assignments": lambda: self.assignments(project),
                "ProjectResources": lambda: self.project_resources(project),
            },
        )

    # -- tasks -----------------------------------------------------------------------------

    def tasks(self, project: Project) -> list[Node]:
        return list(self._task_nodes(project).values())

    def _task_nodes(self, project: Project) -> dict[str, Node]:
        if project.id not in self._tasks:
            plan = project.published
            shapes = outline(plan) if plan else {}
            self._tasks[project.id] = {
                task.id: self._task(project, task, shapes[task.id])
                for task in (plan.tasks if plan else [])
            }
        return self._tasks[project.id]

    def _task(self, project: Project, task: Task, shape: Any) -> Node:
        values = {
            "Id": task.id,
            "Name": task.name,
            "Start": _date(shape.start),
            "Finish": _date(shape.finish),
            "IsSummary": shape.is_summary,
            "IsMilestone": task.milestone,
            "IsActive": True,
            "IsSubProject": False,
            "IsExternalTask": False,
            "OutlineLevel": shape.level,
            "Created": task.created,
            "Modified": task.modified,
            "PercentComplete": task.percent_complete,
        }
        for name, custom_field in task_custom_fields(self._tenant).items():
            values[name] = task.custom.get(custom_field.id)
        return Node(
            TYPES["PublishedTask"],
            f"ProjectServer/Projects('{project.id}')/Tasks('{task.id}')",
            values,
            {"Assignments": lambda: self._assignments_of(project, task.id)},
            self._overrides.get(task.id, {}),
        )

    # -- assignments and the project team -------------------------------------------------

    def assignments(self, project: Project) -> list[Node]:
        if project.id not in self._assignments:
            tasks = self._task_nodes(project)
            team = self._team(project)
            nodes = []
            for task in project.published.tasks if project.published else []:
                of_task = [
                    self._assignment(project, tasks[task.id], assignment, team)
                    for assignment in task.assignments
                ]
                self._by_task[task.id] = of_task
                nodes += of_task
            self._assignments[project.id] = nodes
        return self._assignments[project.id]

    def _assignments_of(self, project: Project, task_id: str) -> list[Node]:
        self.assignments(project)
        return self._by_task.get(task_id, [])

    def _assignment(self, project: Project, task: Node, assignment: Any, team: dict) -> Node:
        values = {
            "Id": assignment.id,
            "Start": task.values["Start"],
            "Finish": task.values["Finish"],
            "Created": assignment.created,
            "Modified": assignment.modified,
        }
        return Node(
            TYPES["PublishedAssignment"],
            f"ProjectServer/Projects('{project.id}')/Assignments('{assignment.id}')",
            values,
            {"Task": lambda: task, "Resource": lambda: team.get(assignment.resource_id)},
        )

    def project_resources(self, project: Project) -> list[Node]:
        return list(self._team(project).values())

    def _team(self, project: Project) -> dict[str, Node]:
        """The resources assigned in the published plan, in order of first assignment."""
        if project.id not in self._resources:
            team: dict[str, Node] = {}
            for task in project.published.tasks if project.published else []:
                for assignment in task.assignments:
                    resource = self._tenant.resources.get(assignment.resource_id)
                    if resource and resource.id not in team:
                        team[resource.id] = self._team_member(project, resource)
            self._resources[project.id] = team
        return self._resources[project.id]

    def _team_member(self, project: Project, resource: Resource) -> Node:
        return Node(
            TYPES["PublishedProjectResource"],
            f"ProjectServer/Projects('{project.id}')/ProjectResources('{resource.id}')",
            {"Id": resource.id, "Name": resource.name, "Email": resource.email or ""},
            {"EnterpriseResource": lambda: self._enterprise(resource)},
        )

    # -- enterprise resources -------------------------------------------------------------

    def enterprise_resources(self) -> list[Node]:
        return [self._enterprise(r) for r in sorted(self._tenant.resources.values(), key=_by_id)]

    def enterprise_resource(self, resource_id: str) -> Node | None:
        found = self._tenant.resources.get(resource_id.lower())
        return self._enterprise(found) if found else None

    def _enterprise(self, resource: Resource) -> Node:
        values = {
            "Id": resource.id,
            "Name": resource.name,
            "Email": resource.email or "",
            "ResourceType": 1,  # work
            "IsGeneric": False,
            "IsActive": resource.is_active,
            "IsTeam": False,
        }
        return Node(
            TYPES["EnterpriseResource"],
            f"ProjectServer/EnterpriseResources('{resource.id}')",
            values,
        )


def _by_id(item: Project | Resource) -> str:
    return item.id
