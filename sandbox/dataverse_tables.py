"""The Dataverse tables the sandbox emulates: their logical names, entity sets, keys and
columns (Edm types), as the Web API of a Planner premium environment shows them.

Only the columns pwasync or a plausible client reads are kept; every table has ``modifiedon``
and ``statecode`` as every Dataverse table does. Lookups appear as ``_<name>_value``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GUID, TEXT, WHEN, FLAG, NUMBER = (
    "Edm.Guid",
    "Edm.String",
    "Edm.DateTimeOffset",
    "Edm.Boolean",
    "Edm.Int32",
)
_COMMON = {"modifiedon": WHEN, "createdon": WHEN, "statecode": NUMBER, "versionnumber": "Edm.Int64"}


@dataclass
class TableSpec:
    logical_name: str
    entity_set: str
    key: str
    columns: dict[str, str]
    object_type_code: int
    display_name: str
    #: Custom columns added at run time (logical name -> attribute metadata).
    custom: dict[str, dict] = field(default_factory=dict)

    def all_columns(self) -> dict[str, str]:
        return {self.key: GUID, **self.columns, **_COMMON, **dict.fromkeys(self.custom, FLAG)}


def table_specs() -> dict[str, TableSpec]:
    """A fresh set of specs (custom columns are per sandbox run), by entity set."""
    specs = [
        TableSpec(
            "msdyn_project",
            "msdyn_projects",
            "msdyn_projectid",
            {"msdyn_subject": TEXT, "msdyn_description": TEXT},
            10_300,
            "Project",
        ),
        TableSpec(
            "msdyn_projecttask",
            "msdyn_projecttasks",
            "msdyn_projecttaskid",
            {
                "msdyn_subject": TEXT,
                "msdyn_scheduledstart": WHEN,
                "msdyn_scheduledend": WHEN,
                "msdyn_start": WHEN,
                "msdyn_finish": WHEN,
                "msdyn_summary": FLAG,
                "msdyn_ismilestone": FLAG,
                "msdyn_outlinelevel": NUMBER,
                "_msdyn_parenttask_value": GUID,
                "_msdyn_project_value": GUID,
                "_msdyn_projectbucket_value": GUID,
            },
            10_301,
            "Project Task",
        ),
        TableSpec(
            "msdyn_resourceassignment",
            "msdyn_resourceassignments",
            "msdyn_resourceassignmentid",
            {
                "msdyn_name": TEXT,
                "_msdyn_taskid_value": GUID,
                "_msdyn_projectid_value": GUID,
                "_msdyn_bookableresourceid_value": GUID,
                "msdyn_start": WHEN,
                "msdyn_finish": WHEN,
            },
            10_302,
            "Resource Assignment",
        ),
        TableSpec(
            "bookableresource",
            "bookableresources",
            "bookableresourceid",
            {"name": TEXT, "_userid_value": GUID, "resourcetype": NUMBER},
            1150,
            "Bookable Resource",
        ),
        TableSpec(
            "systemuser",
            "systemusers",
            "systemuserid",
            {
                "fullname": TEXT,
                "internalemailaddress": TEXT,
                "azureactivedirectoryobjectid": GUID,
                "isdisabled": FLAG,
            },
            8,
            "User",
        ),
        TableSpec(
            "msdyn_projectlabel",
            "msdyn_projectlabels",
            "msdyn_projectlabelid",
            {
                "msdyn_projectlabeltext": TEXT,
                "msdyn_colorindex": NUMBER,
                "_msdyn_projectid_value": GUID,
            },
            10_303,
            "Project Label",
        ),
        TableSpec(
            "msdyn_projecttasktolabel",
            "msdyn_projecttasktolabels",
            "msdyn_projecttasktolabelid",
            {
                "msdyn_name": TEXT,
                "_msdyn_projecttaskid_value": GUID,
                "_msdyn_projectlabelid_value": GUID,
            },
            10_304,
            "Project Task to Label",
        ),
    ]
    return {spec.entity_set: spec for spec in specs}
