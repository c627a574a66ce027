"""`pwasync check`'s custom-field lines write nothing to the PWA (issue 11, item 20)."""

import pytest

from common.errors import PermanentApiError
from common.settings import load_settings
from services.poller.commands import _field_lines

TASK_ENTITY = "8b0d7f0e-0000-4000-8000-000000000001"
SITE = "https://contoso.example/pwa"


class ValidatingFirstPwa:
    """A PWA that validates a CustomFields/Add body before it checks the permission (so a
    nameless field is a 400 whoever asks), and would create any valid field it is sent."""

    site_url, service = SITE, "Project Server"

    def __init__(self, fields):
        self.fields, self.writes = fields, []

    def get_json(self, url, **_kwargs):
        if url.endswith("/EntityTypes/TaskEntity"):
            return {"d": {"ID": TASK_ENTITY}}
        if "/CustomFields?" in url:
            return {"d": {"results": self.fields}}
        raise AssertionError(f"unexpected GET {url}")

    def request_json(self, method, url, **_kwargs):
        if url.endswith("/_api/contextinfo"):
            return {"d": {"GetContextWebInformation": {"FormDigestValue": "digest"}}}
        self.writes.append((method, url))
        if url.endswith("/CustomFields/Add"):
            raise PermanentApiError("Project Server: name is required", status=400)
        raise AssertionError(f"unexpected {method} {url}")


FLAG = {"Id": "1", "Name": "Create event", "FieldType": 17, "EntityType": {"ID": TASK_ENTITY}}


@pytest.mark.parametrize("existing", [[FLAG], []], ids=["field exists", "field missing"])
def test_check_never_posts_a_field_and_never_claims_the_permission(existing):
    pwa = ValidatingFirstPwa(existing)
    found = _field_lines(load_settings({}), pwa, reported_needed=False)
    lines = {line.name: line for line in found}
    assert pwa.writes == []
    permission = lines["permission 'Manage Enterprise Custom Fields'"]
    assert "granted" not in permission.detail and "not checked" in permission.detail
    assert permission.ok  # the flag field line is the one that fails when the field is missing
    assert lines["flag field 'Create event' (Task, Flag)"].ok is bool(existing)
