"""The Yes/No column that selects tasks when PWASYNC_SELECT_BY=field (the Dataverse side of
``pwasync fields verify|create``), found and created through the metadata API.

The column is found by its display name (PWASYNC_CREATE_EVENT_FIELD, as in Project) in any of
its labels, or by its logical or schema name, so an operator may name it either way. It is
created as a ``BooleanAttributeMetadata`` on ``msdyn_projecttask`` whose schema name is the
publisher prefix (PWASYNC_DATAVERSE_COLUMN_PREFIX) and the display name's letters and digits;
creating it needs the System Customizer role (or ``prvCreateAttribute``), reading it does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from common.errors import PermanentApiError
from services.poller.dataverse_auth import DataverseHttp

TASK_TABLE = "msdyn_projecttask"
BOOLEAN = "Microsoft.Dynamics.CRM.BooleanAttributeMetadata"
ENGLISH = 1033


@dataclass(frozen=True)
class FlagColumn:
    logical_name: str
    display_name: str


def column_labels(attribute: dict[str, Any]) -> set[str]:
    display = attribute.get("DisplayName") or {}
    labels = {str(label.get("Label") or "") for label in display.get("LocalizedLabels") or []}
    user = display.get("UserLocalizedLabel") or {}
    labels.add(str(user.get("Label") or ""))
    return labels - {""}


def find_column(attributes: list[dict[str, Any]], name: str) -> FlagColumn | None:
    """The Yes/No column named ``name``: by display name exactly, else by logical or schema
    name in any letter case."""
    for attribute in attributes:
        if name in column_labels(attribute):
            return FlagColumn(str(attribute["LogicalName"]), name)
    for attribute in attributes:
        names = {str(attribute.get("LogicalName") or ""), str(attribute.get("SchemaName") or "")}
        if name.lower() in {n.lower() for n in names}:
            return FlagColumn(str(attribute["LogicalName"]), name)
    return None


def schema_name(prefix: str, display_name: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", display_name)
    if not words:
        raise PermanentApiError(f"{display_name!r} has no letters or digits to name a column")
    return f"{prefix}_" + "".join(w[:1].upper() + w[1:] for w in words)


def boolean_attribute(prefix: str, display_name: str) -> dict[str, Any]:
    def label(text: str) -> dict[str, Any]:
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.Label",
            "LocalizedLabels": [
                {
                    "@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel",
                    "Label": text,
                    "LanguageCode": ENGLISH,
                }
            ],
        }

    return {
        "@odata.type": BOOLEAN,
        "SchemaName": schema_name(prefix, display_name),
        "DisplayName": label(display_name),
        "Description": label("pwasync: Yes puts this task in its assignees' Outlook calendars"),
        "RequiredLevel": {"Value": "None", "CanBeChanged": True},
        "DefaultValue": False,
        "OptionSet": {
            "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
            "TrueOption": {"Value": 1, "Label": label("Yes")},
            "FalseOption": {"Value": 0, "Label": label("No")},
            "OptionSetType": "Boolean",
        },
    }


class ColumnFields:
    """Reads and creates the flag column through the environment's metadata API."""

    def __init__(self, http: DataverseHttp) -> None:
        self._http = http
        self._base = f"{http.api_url}/EntityDefinitions(LogicalName='{TASK_TABLE}')/Attributes"

    def boolean_columns(self) -> list[dict[str, Any]]:
        url = f"{self._base}/{BOOLEAN}?$select=LogicalName,SchemaName,DisplayName"
        return list(self._http.get_json(url).get("value") or [])

    def find(self, name: str) -> FlagColumn | None:
        return find_column(self.boolean_columns(), name)

    def require(self, name: str) -> FlagColumn:
        found = self.find(name)
        if found is None:
            raise PermanentApiError(
                f"Dataverse: the task table has no Yes/No column {name!r}: see "
                "`pwasync fields verify`; create it with `pwasync fields create`"
            )
        return found

    def create(self, name: str, prefix: str) -> FlagColumn:
        """Create the column unless it exists (idempotent); returns it."""
        found = self.find(name)
        if found is not None:
            return found
        self._http.post_json(self._base, boolean_attribute(prefix, name))
        return self.require(name)
