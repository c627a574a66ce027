"""ProjectData's entity types and the rows the published store yields for them.

Property names and types follow the ProjectData reference (Project, Task, Assignment, Resource).
Only the properties a sync product plausibly reads are modelled; enterprise custom fields of an
entity appear as extra properties named after their display name with spaces and special
characters removed.  The project summary task (TaskIndex 0) is generated for every project.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sandbox.odata_filter import Schema
from sandbox.state import CustomField, Plan, Project, Task, Tenant

NAMESPACE = "ReportingData"

# CustomFieldType -> Edm type of its ProjectData property.
CUSTOM_FIELD_EDM_TYPES = {
    4: "Edm.DateTime",
    6: "Edm.Decimal",
    9: "Edm.Decimal",
    15: "Edm.Decimal",
    17: "Edm.Boolean",
    21: "Edm.String",
    27: "Edm.DateTime",
}


@dataclass(frozen=True, eq=False)
class EntitySet:
    name: str
    type_name: str
    keys: tuple[str, ...]
    properties: tuple[tuple[str, str], ...]
    # Collection navigation properties: target entity set name -> the key properties that
    # join a row of this set to the target's rows.
    navigation: dict[str, tuple[str, ...]]
    custom_entity: str | None = None  # the Project Server entity type of its custom fields

    def all_properties(self, tenant: Tenant) -> dict[str, str]:
        properties = dict(self.properties)
        for custom_field in custom_fields_of(tenant, self):
            properties[custom_field.odata_name] = CUSTOM_FIELD_EDM_TYPES.get(
                custom_field.field_type, "Edm.String"
            )
        return properties

    def schema(self, tenant: Tenant) -> Schema:
        return Schema(f"{NAMESPACE}.{self.type_name}", self.all_properties(tenant))

    def key_segment(self, row: dict[str, Any]) -> str:
        if len(self.keys) == 1:
            return f"{self.name}(guid'{row[self.keys[0]]}')"
        keys = ",".join(f"{key}=guid'{row[key]}'" for key in self.keys)
        return f"{self.name}({keys})"


def custom_fields_of(tenant: Tenant, entity_set: EntitySet) -> list[CustomField]:
    if entity_set.custom_entity is None:
        return []
    entity_type = tenant.entity_types[entity_set.custom_entity]
    return [f for f in tenant.custom_fields.values() if f.entity_type_id == entity_type]


_GUID, _TEXT, _DATE, _BOOL = "Edm.Guid", "Edm.String", "Edm.DateTime", "Edm.Boolean"

PROJECTS = EntitySet(
    "Projects",
    "Project",
    ("ProjectId",),
    (
        ("ProjectId", _GUID),
        ("ProjectName", _TEXT),
        ("ProjectType", "Edm.Int32"),
        ("ParentProjectId", _GUID),
        ("ProjectOwnerId", _GUID),
        ("ProjectOwnerName", _TEXT),
        ("EnterpriseProjectTypeName", _TEXT),
        ("ProjectCreatedDate", _DATE),
        ("ProjectModifiedDate", _DATE),
        ("ProjectLastPublishedDate", _DATE),
        ("ProjectStartDate", _DATE),
        ("ProjectFinishDate", _DATE),
        ("ProjectPercentCompleted", "Edm.Int16"),
    ),
    {"Assignments": ("ProjectId",), "Tasks": ("ProjectId",)},
    "ProjectEntity",
)

TASKS = EntitySet(
    "Tasks",
    "Task",
    ("ProjectId", "TaskId"),
    (
        ("ProjectId", _GUID),
        ("TaskId", _GUID),
        ("ProjectName", _TEXT),
        ("TaskName", _TEXT),
        ("ParentTaskId", _GUID),
        ("ParentTaskName", _TEXT),
        ("TaskIndex", "Edm.Int32"),
        ("TaskOutlineLevel", "Edm.Int32"),
        ("TaskOutlineNumber", _TEXT),
        ("TaskStartDate", _DATE),
        ("TaskFinishDate", _DATE),
        ("TaskDuration", "Edm.Decimal"),
        ("TaskCreatedDate", _DATE),
        ("TaskModifiedDate", _DATE),
        ("TaskIsSummary", _BOOL),
        ("TaskIsMilestone", _BOOL),
        ("TaskIsProjectSummary", _BOOL),
        ("TaskIsActive", _BOOL),
        ("TaskPercentCompleted", "Edm.Int16"),
    ),
    {"Assignments": ("ProjectId", "TaskId")},
    "TaskEntity",
)

ASSIGNMENTS = EntitySet(
    "Assignments",
    "Assignment",
    ("ProjectId", "AssignmentId"),
    (
        ("AssignmentId", _GUID),
        ("ProjectId", _GUID),
        ("ProjectName", _TEXT),
        ("TaskId", _GUID),
        ("TaskName", _TEXT),
        ("ResourceId", _GUID),
        ("ResourceName", _TEXT),
        ("AssignmentStartDate", _DATE),
        ("AssignmentFinishDate", _DATE),
        ("AssignmentCreatedDate", _DATE),
        ("AssignmentModifiedDate", _DATE),
        ("AssignmentBookingName", _TEXT),
        ("AssignmentPercentWorkCompleted", "Edm.Int16"),
    ),
    {},
)

RESOURCES = EntitySet(
    "Resources",
    "Resource",
    ("ResourceId",),
    (
        ("ResourceId", _GUID),
        ("ResourceName", _TEXT),
        ("ResourceEmailAddress", _TEXT),
        ("ResourceNTAccount", _TEXT),
        ("ResourceIsActive", _BOOL),
        ("ResourceIsGeneric", _BOOL),
        ("ResourceType", "Edm.Int16"),
        ("ResourceCreatedDate", _DATE),
        ("ResourceModifiedDate", _DATE),
    ),
    {"Assignments": ("ResourceId",)},
    "ResourceEntity",
)

ENTITY_SETS = {s.name: s for s in (PROJECTS, TASKS, ASSIGNMENTS, RESOURCES)}


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class Outline:
    index: int
    level: int
    number: str
    is_summary: bool
    start: datetime | None
    finish: datetime | None


def outline(plan: Plan) -> dict[str, Outline]:
    """TaskIndex, outline level/number, summary flags and rolled-up dates of every task."""
    children: dict[str | None, list[Task]] = {}
    for task in plan.tasks:
        children.setdefault(task.parent_id, []).append(task)
    shapes: dict[str, Outline] = {}
    index = 0

    def visit(task: Task, level: int, number: str) -> tuple[datetime | None, datetime | None]:
        nonlocal index
        index += 1
        own_index = index
        kids = children.get(task.id, [])
        spans = [visit(kid, level + 1, f"{number}.{i}") for i, kid in enumerate(kids, 1)]
        start, finish = roll_up(spans) if kids else (task.start, task.finish)
        shapes[task.id] = Outline(own_index, level, number, bool(kids), start, finish)
        return start, finish

    for position, task in enumerate(children.get(None, []), 1):
        visit(task, 1, str(position))
    return shapes


def roll_up(spans: list[tuple[datetime | None, datetime | None]]) -> tuple[Any, Any]:
    starts = [start for start, _ in spans if start]
    finishes = [finish for _, finish in spans if finish]
    return (min(starts) if starts else None, max(finishes) if finishes else None)


def _duration_hours(start: datetime | None, finish: datetime | None) -> Decimal | None:
    if start is None or finish is None:
        return None
    return Decimal(round((finish - start).total_seconds() / 3600, 2)).quantize(Decimal("0.01"))


def _custom_values(tenant: Tenant, entity_set: EntitySet, values: dict[str, Any]) -> dict:
    return {f.odata_name: values.get(f.id) for f in custom_fields_of(tenant, entity_set)}


def project_row(tenant: Tenant, project: Project, plan: Plan) -> dict[str, Any]:
    shapes = outline(plan)
    start, finish = roll_up([(o.start, o.finish) for o in shapes.values() if o.level == 1])
    owner = next((u for u in tenant.users.values() if u.id == project.owner_id), None)
    return {
        "ProjectId": project.id,
        "ProjectName": plan.name,
        "ProjectType": project.project_type,
        "ParentProjectId": None,
        "ProjectOwnerId": project.owner_id,
        "ProjectOwnerName": owner.display_name if owner else None,
        "EnterpriseProjectTypeName": "Enterprise Project",
        "ProjectCreatedDate": project.created,
        "ProjectModifiedDate": project.modified,
        "ProjectLastPublishedDate": project.modified,
        "ProjectStartDate": start,
        "ProjectFinishDate": finish,
        "ProjectPercentCompleted": 0,
        **_custom_values(tenant, PROJECTS, {}),
    }


def task_rows(tenant: Tenant, project: Project, plan: Plan) -> Iterator[dict[str, Any]]:
    shapes = outline(plan)
    summary = project_row(tenant, project, plan)
    start, finish = summary["ProjectStartDate"], summary["ProjectFinishDate"]
    common = {"ProjectId": project.id, "ProjectName": plan.name, "TaskIsActive": True}
    yield {
        **common,
        "TaskId": project.summary_task_id,
        "TaskName": plan.name,
        # The project summary task is its own parent in the reporting tables.
        "ParentTaskId": project.summary_task_id,
        "ParentTaskName": plan.name,
        "TaskIndex": 0,
        "TaskOutlineLevel": 0,
        "TaskOutlineNumber": "0",
        "TaskStartDate": start,
        "TaskFinishDate": finish,
        "TaskDuration": _duration_hours(start, finish),
        "TaskCreatedDate": project.created,
        "TaskModifiedDate": project.modified,
        "TaskIsSummary": True,
        "TaskIsMilestone": False,
        "TaskIsProjectSummary": True,
        "TaskPercentCompleted": 0,
        **_custom_values(tenant, TASKS, {}),
    }
    names = {task.id: task.name for task in plan.tasks}
    for task in plan.tasks:
        shape = shapes[task.id]
        parent_id = task.parent_id or project.summary_task_id
        yield {
            **common,
            "TaskId": task.id,
            "TaskName": task.name,
            "ParentTaskId": parent_id,
            "ParentTaskName": names.get(parent_id, plan.name),
            "TaskIndex": shape.index,
            "TaskOutlineLevel": shape.level,
            "TaskOutlineNumber": shape.number,
            "TaskStartDate": shape.start,
            "TaskFinishDate": shape.finish,
            "TaskDuration": _duration_hours(shape.start, shape.finish),
            "TaskCreatedDate": task.created,
            "TaskModifiedDate": task.modified,
            "TaskIsSummary": shape.is_summary,
            "TaskIsMilestone": task.milestone,
            "TaskIsProjectSummary": False,
            "TaskPercentCompleted": task.percent_complete,
            **_custom_values(tenant, TASKS, task.custom),
        }


def assignment_rows(tenant: Tenant, project: Project, plan: Plan) -> Iterator[dict[str, Any]]:
    for task in plan.tasks:
        for assignment in task.assignments:
            resource = tenant.resources.get(assignment.resource_id)
            yield {
                "AssignmentId": assignment.id,
                "ProjectId": project.id,
                "ProjectName": plan.name,
                "TaskId": task.id,
                "TaskName": task.name,
                "ResourceId": assignment.resource_id,
                "ResourceName": resource.name if resource else None,
                "AssignmentStartDate": task.start,
                "AssignmentFinishDate": task.finish,
                "AssignmentCreatedDate": assignment.created,
                "AssignmentModifiedDate": assignment.modified,
                "AssignmentBookingName": "Committed",
                "AssignmentPercentWorkCompleted": task.percent_complete,
            }


def resource_rows(tenant: Tenant) -> Iterator[dict[str, Any]]:
    for resource in tenant.resources.values():
        yield {
            "ResourceId": resource.id,
            "ResourceName": resource.name,
            "ResourceEmailAddress": resource.email,
            "ResourceNTAccount": resource.nt_account,
            "ResourceIsActive": resource.is_active,
            "ResourceIsGeneric": False,
            "ResourceType": 2,  # Work
            "ResourceCreatedDate": resource.created,
            "ResourceModifiedDate": resource.modified,
            **_custom_values(tenant, RESOURCES, {}),
        }


def rows(
    tenant: Tenant, entity_set: EntitySet, project_id: str | None = None
) -> list[dict[str, Any]]:
    """Every published row of an entity set, optionally of one project only."""
    if entity_set is RESOURCES:
        return list(resource_rows(tenant))
    produce = {
        "Projects": lambda p, plan: [project_row(tenant, p, plan)],
        "Tasks": lambda p, plan: task_rows(tenant, p, plan),
        "Assignments": lambda p, plan: assignment_rows(tenant, p, plan),
    }[entity_set.name]
    return [
        row
        for project, plan in tenant.published_projects()
        if project_id in (None, project.id)
        for row in produce(project, plan)
    ]
