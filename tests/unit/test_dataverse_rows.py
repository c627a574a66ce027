"""Dataverse rows as the sync's rows, and the flag column's metadata (pure)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from common.errors import PermanentApiError
from services.poller.dataverse_fields import boolean_attribute, find_column, schema_name
from services.poller.dataverse_rows import (
    assignment_row,
    instant,
    mailbox,
    project_listing,
    resource_rows,
    task_row,
)
from services.poller.source import ProjectRow, TaskRow, UnreadableRow

BERLIN = ZoneInfo("Europe/Berlin")
P = "11111111-1111-1111-1111-111111111111"
T = "aaaaaaaa-0000-0000-0000-000000000001"


def row(**values):
    base = {
        "msdyn_projecttaskid": T,
        "msdyn_subject": "Kick-off",
        "msdyn_scheduledstart": "2026-12-14T09:00:00Z",
        "msdyn_scheduledend": "2026-12-14T11:00:00Z",
        "msdyn_start": None,
        "msdyn_finish": None,
        "msdyn_summary": False,
        "msdyn_ismilestone": False,
    }
    return {**base, **values}


def test_dates_are_utc_instants_read_as_the_zone_s_wall_clock():
    parsed = task_row(P, row(), True, BERLIN)
    assert isinstance(parsed, TaskRow)
    assert parsed.start.isoformat() == "2026-12-14T10:00:00"
    assert parsed.finish.isoformat() == "2026-12-14T12:00:00"
    assert parsed.flagged and not parsed.is_summary and not parsed.is_project_summary
    assert instant("2026-07-01T10:00:00", BERLIN).isoformat() == "2026-07-01T12:00:00"


def test_the_other_date_pair_serves_when_the_scheduled_one_is_empty():
    parsed = task_row(
        P,
        row(
            msdyn_scheduledstart=None,
            msdyn_scheduledend=None,
            msdyn_start="2026-12-15T08:00:00Z",
            msdyn_finish="2026-12-15T09:00:00Z",
        ),
        False,
        ZoneInfo("UTC"),
    )
    assert parsed.start.isoformat() == "2026-12-15T08:00:00"


def test_a_milestone_is_at_its_start():
    parsed = task_row(P, row(msdyn_ismilestone=True), True, ZoneInfo("UTC"))
    assert parsed.start == parsed.finish


@pytest.mark.parametrize(
    "bad",
    [
        {"msdyn_scheduledstart": "yesterday"},
        {"msdyn_summary": "maybe"},
        {"msdyn_projecttaskid": "x"},
    ],
)
def test_a_malformed_row_is_unreadable_not_unflagged(bad):
    assert isinstance(task_row(P, row(**bad), True, BERLIN), UnreadableRow)


def test_projects_and_assignments():
    listed = project_listing(
        {"msdyn_projectid": P, "msdyn_subject": "Office"}, instant("2026-12-01T00:00:00Z", BERLIN)
    )
    assert isinstance(listed, ProjectRow) and listed.project_type == 0
    assert isinstance(project_listing({"msdyn_projectid": P}, None), UnreadableRow)
    assignment = {"_msdyn_taskid_value": T, "_msdyn_bookableresourceid_value": P, "statecode": 0}
    assert assignment_row(assignment).resource_id == P
    assert assignment_row({**assignment, "statecode": 1}) is None
    assert assignment_row({**assignment, "_msdyn_bookableresourceid_value": None}) is None


def test_the_mailbox_is_the_e_mail_address_else_the_entra_object_id():
    assert (
        mailbox({"internalemailaddress": " a@b.com ", "azureactivedirectoryobjectid": P})
        == "a@b.com"
    )
    assert mailbox({"internalemailaddress": None, "azureactivedirectoryobjectid": P.upper()}) == P
    assert mailbox({}) is None
    [room, person] = resource_rows(
        [
            {"bookableresourceid": T, "name": "Room", "_userid_value": None},
            {"bookableresourceid": P, "name": "", "_userid_value": "U1"},
        ],
        {"u1": {"fullname": "Adele", "internalemailaddress": "adele@contoso.com"}},
    )
    assert room.email is None and (person.name, person.email) == ("Adele", "adele@contoso.com")


def test_the_flag_column_is_found_by_display_name_or_logical_name():
    attributes = [
        {
            "LogicalName": "new_createevent",
            "SchemaName": "new_CreateEvent",
            "DisplayName": {"LocalizedLabels": [{"Label": "Create event", "LanguageCode": 1033}]},
        }
    ]
    assert find_column(attributes, "Create event").logical_name == "new_createevent"
    assert find_column(attributes, "NEW_CREATEEVENT").logical_name == "new_createevent"
    assert find_column(attributes, "create event") is None  # display names compare exactly
    assert schema_name("new", "Create event") == "new_CreateEvent"
    with pytest.raises(PermanentApiError):
        schema_name("new", "!!")
    body = boolean_attribute("contoso", "In Outlook?")
    assert body["SchemaName"] == "contoso_InOutlook"
    assert body["OptionSet"]["TrueOption"]["Value"] == 1
