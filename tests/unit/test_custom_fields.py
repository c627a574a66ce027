from services.poller.custom_fields import FieldInfo, FieldState, check_field

TASK = "8b0d7f0e-0000-4000-8000-000000000001"
PROJECT = "8b0d7f0e-0000-4000-8000-000000000002"


def test_missing_field():
    assert check_field("Create event", [], TASK).state is FieldState.MISSING


def test_correct_flag_field_on_tasks():
    fields = [FieldInfo("1", "Create event", 17, TASK)]
    assert check_field("Create event", fields, TASK).ok


def test_wrong_type_names_the_type_and_the_fix():
    check = check_field("Create event", [FieldInfo("1", "Create event", 21, TASK)], TASK)
    assert check.state is FieldState.WRONG_TYPE
    assert "type TEXT" in check.detail and "Flag" in check.detail


def test_wrong_entity():
    check = check_field("Create event", [FieldInfo("1", "Create event", 17, PROJECT)], TASK)
    assert check.state is FieldState.WRONG_ENTITY


def test_a_field_differing_only_in_case_is_pointed_out():
    check = check_field("Create event", [FieldInfo("1", "Create Event", 17, TASK)], TASK)
    assert check.state is FieldState.WRONG_CASE
    assert (
        "'CreateEvent'" in check.detail
        and "PWASYNC_CREATE_EVENT_FIELD='Create Event'" in check.detail
    )


def test_missing_says_how_to_create_it():
    check = check_field("Create event", [], TASK)
    assert "pwasync fields create" in check.detail
    assert "Manage Enterprise Custom Fields" in check.detail


def test_another_field_with_the_same_projectdata_property_is_pointed_out():
    check = check_field("Create event", [FieldInfo("1", "Create-event", 17, TASK)], TASK)
    assert check.state is FieldState.SAME_PROPERTY
    assert "'Createevent'" in check.detail and "'Create-event'" in check.detail


def test_on_the_rest_api_only_the_exact_name_counts_and_no_projectdata_property_is_named():
    dashed = [FieldInfo("1", "Create-event", 17, TASK)]
    assert check_field("Create event", dashed, TASK, projectdata=False).state is FieldState.MISSING
    other_case = [FieldInfo("1", "Create Event", 17, TASK)]
    check = check_field("Create event", other_case, TASK, projectdata=False)
    assert check.state is FieldState.WRONG_CASE and "ProjectData" not in check.detail
