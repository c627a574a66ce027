from datetime import datetime
from uuid import UUID

import pytest

from services.poller import odata


def test_verbose_dates_are_the_wall_clock_encoded_as_utc():
    # 1764576000000 ms = 2025-12-01T08:00:00Z; PWA meant 08:00 on its own wall clock.
    assert odata.parse_datetime("/Date(1764576000000)/") == datetime(2025, 12, 1, 8, 0)


def test_light_dates_and_nulls():
    assert odata.parse_datetime("2026-11-24T08:00:00") == datetime(2026, 11, 24, 8, 0)
    assert odata.parse_datetime("2026-11-24T08:00:00.123") == datetime(
        2026, 11, 24, 8, 0, 0, 123000
    )
    assert odata.parse_datetime(None) is None


def test_literals_cannot_be_used_for_injection():
    with pytest.raises(ValueError):
        odata.guid_literal("x' or 1 eq 1 or ProjectId eq guid'")
    guid = UUID("6a2c7a4e-0000-4000-8000-000000000001")
    assert odata.guid_literal(guid) == "guid'6a2c7a4e-0000-4000-8000-000000000001'"
    assert odata.string_literal("O'Brien's task") == "'O''Brien''s task'"


def test_datetime_literal_keeps_milliseconds_and_refuses_aware_values():
    assert odata.datetime_literal(datetime(2026, 1, 2, 3, 4, 5)) == "datetime'2026-01-02T03:04:05'"
    assert odata.datetime_literal(datetime(2026, 1, 2, 3, 4, 5, 250000)) == (
        "datetime'2026-01-02T03:04:05.250'"
    )
    with pytest.raises(ValueError):
        odata.datetime_literal(datetime.fromisoformat("2026-01-01T00:00:00+00:00"))


def test_query_strings_encode_spaces_as_percent_20():
    query = odata.query_string({"$filter": "ProjectId eq guid'x'", "$select": "A,B"})
    assert query == "$filter=ProjectId%20eq%20guid'x'&$select=A,B"


@pytest.mark.parametrize(
    ("display", "prop"),
    [
        ("Create event", "Createevent"),
        ("Show In Reports", "ShowInReports"),
        ("Sync-to Outlook?", "SynctoOutlook"),
        ("Größe", "Größe"),
    ],
)
def test_custom_field_property_names(display, prop):
    assert odata.property_name(display) == prop


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (None, False),
        ("Yes", True),
        ("No", False),
        ("true", True),
        (1, True),
        (0, False),
    ],
)
def test_flag_values(value, expected):
    assert odata.parse_bool(value) is expected
