"""Ids are opaque strings; a GUID in any written form has one canonical text."""

import uuid

import pytest
from pydantic import BaseModel, ValidationError

from common.ids import MAX_ID_LENGTH, SourceId, canonical_id, guid

GUID = uuid.UUID("8d3b5c3e-1f0a-4b6e-9f7a-0c1d2e3f4a5b")


@pytest.mark.parametrize(
    "written",
    [str(GUID), str(GUID).upper(), "{" + str(GUID) + "}", GUID.hex, f"  {GUID}  ", GUID],
)
def test_every_form_of_a_guid_has_one_canonical_text(written):
    assert canonical_id(written) == str(GUID)


@pytest.mark.parametrize(
    "planner_id", ["01gzSlKkIUSUl6DF_EilrmQAKDhh", "xqQg5FS2LkCp935s-FIFm2QAFkHM"]
)
def test_a_planner_id_is_kept_as_it_is(planner_id):
    assert canonical_id(planner_id) == planner_id
    assert canonical_id(f" {planner_id}\n") == planner_id


@pytest.mark.parametrize(
    "bad", ["", "   ", "two words", "tab\there", "x" * (MAX_ID_LENGTH + 1), 42, None]
)
def test_what_cannot_be_an_id_is_refused(bad):
    with pytest.raises(ValueError):
        canonical_id(bad)


def test_guid_refuses_an_opaque_id():
    assert guid("{" + str(GUID).upper() + "}") == str(GUID)
    with pytest.raises(ValueError):
        guid("01gzSlKkIUSUl6DF_EilrmQAKDhh")


def test_the_pydantic_type_canonicalises_and_refuses():
    class Row(BaseModel):
        task_id: SourceId

    assert Row(task_id=GUID).task_id == str(GUID)
    assert Row.model_validate_json('{"task_id": "' + str(GUID).upper() + '"}').task_id == str(GUID)
    with pytest.raises(ValidationError):
        Row(task_id="two words")
