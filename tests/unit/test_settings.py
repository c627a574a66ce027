from datetime import UTC, datetime

import pytest
import trustme

from common.errors import ConfigError
from common.settings import load_settings, unknown_variables


def test_defaults_match_the_interface_page():
    settings = load_settings({})
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@localhost:5672/%2F"
    assert settings.redis_url.get_secret_value() == "redis://localhost:6379/0"
    assert settings.scenario == "default"
    assert settings.pwa_auth == "oauth"
    assert settings.pwa_timezone == "UTC"
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.graph_url == "https://graph.microsoft.com/v1.0"
    assert settings.create_event_field == "Create event"
    assert settings.schedule == "on_demand"
    assert settings.endpoint_limit == 0 and settings.endpoint_limit_or_none is None
    assert settings.http_port == 0
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PWASYNC_PWA_TIMEZONE", "Mars/Olympus", "PWASYNC_PWA_TIMEZONE: is not an IANA time zone"),
        ("PWASYNC_SCHEDULE", "hourly", "PWASYNC_SCHEDULE: use on_demand"),
        ("PWASYNC_SCHEDULE", "daily 24:00", "PWASYNC_SCHEDULE: 24:00 is not a time of day"),
        ("PWASYNC_SCHEDULE", "weekly fun 10:00", "PWASYNC_SCHEDULE: unknown day 'fun'"),
        ("PWASYNC_HTTP_PORT", "70000", "PWASYNC_HTTP_PORT:"),
        ("PWASYNC_ENDPOINT_LIMIT", "-1", "PWASYNC_ENDPOINT_LIMIT:"),
        ("PWASYNC_SCENARIO", "Has Spaces", "PWASYNC_SCENARIO: must be"),
        ("PWASYNC_PWA_AUTH", "kerberos", "PWASYNC_PWA_AUTH:"),
        ("PWASYNC_SYNC_START", "yesterday", "PWASYNC_SYNC_START:"),
        ("PWASYNC_CA_BUNDLE", "/nonexistent/ca.pem", "PWASYNC_CA_BUNDLE: names no readable file"),
        ("PWASYNC_GRAPH_URL", "http://graph.example", "PWASYNC_GRAPH_URL: must be an https://"),
        ("PWASYNC_CA_BUNDLE", __file__, "PWASYNC_CA_BUNDLE: holds no PEM CA certificate"),
        ("PWASYNC_GRAPH_CLIENT_CERT", __file__, "PWASYNC_GRAPH_CLIENT_CERT: holds no PEM private"),
        ("PWASYNC_GRAPH_CLIENT_CERT_THUMBPRINT", "AB:CD", "PWASYNC_GRAPH_CLIENT_CERT_THUMBPRINT:"),
    ],
)
def test_malformed_values_give_one_line_naming_the_variable(variable, value, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_a_malformed_url_is_named_but_its_credentials_are_not_echoed():
    with pytest.raises(ConfigError) as caught:
        load_settings({"PWASYNC_AMQP_URL": "http://admin:s3cret-pw@broker:5672/"})
    assert "PWASYNC_AMQP_URL" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


def test_required_settings_are_checked_per_purpose():
    settings = load_settings({"PWASYNC_PWA_AUTH": "sharepoint_online"})
    with pytest.raises(ConfigError) as caught:
        settings.require_pwa()
    assert str(caught.value) == (
        "PWASYNC_PWA_URL, PWASYNC_PWA_CLIENT_ID, PWASYNC_PWA_USERNAME, PWASYNC_PWA_PASSWORD "
        "are required to read Project Online with PWASYNC_PWA_AUTH=sharepoint_online"
    )
    with pytest.raises(
        ConfigError, match="PWASYNC_TENANT_ID, PWASYNC_GRAPH_CLIENT_ID are required"
    ):
        settings.require_graph()
    graph = load_settings({"PWASYNC_TENANT_ID": "t", "PWASYNC_GRAPH_CLIENT_ID": "c"})
    with pytest.raises(
        ConfigError, match="PWASYNC_GRAPH_CLIENT_SECRET or PWASYNC_GRAPH_CLIENT_CERT"
    ):
        graph.require_graph()


@pytest.mark.parametrize(
    ("auth", "variable"),
    [
        ("sharepoint_online", "PWASYNC_PWA_PASSWORD"),
        ("sharepoint_onprem", "PWASYNC_PWA_PASSWORD"),
        ("oauth", "PWASYNC_SECRET_KEY"),
    ],
)
def test_an_empty_secret_counts_as_missing(auth, variable):
    # The fault suite found it: an empty password passed and failed only at the sign-in.
    env = {
        "PWASYNC_PWA_AUTH": auth,
        "PWASYNC_PWA_URL": "https://contoso.sharepoint.com/sites/pwa",
        "PWASYNC_PWA_CLIENT_ID": "c",
        "PWASYNC_PWA_USERNAME": "svc",
        "PWASYNC_PWA_PASSWORD": "pw",
        "PWASYNC_SECRET_KEY": "k",
        variable: "",
    }
    with pytest.raises(ConfigError, match=f"{variable} is required"):
        load_settings(env).require_pwa()
    graph = {"PWASYNC_TENANT_ID": "t", "PWASYNC_GRAPH_CLIENT_ID": "c"}
    with pytest.raises(ConfigError, match="PWASYNC_GRAPH_CLIENT_SECRET or"):
        load_settings({**graph, "PWASYNC_GRAPH_CLIENT_SECRET": ""}).require_graph()


def test_a_usable_client_certificate_and_ca_bundle_are_accepted(tmp_path):
    ca = trustme.CA()
    key, bundle = tmp_path / "key.pem", tmp_path / "ca.pem"
    ca.issue_cert("pwasync").private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    settings = load_settings(
        {
            "PWASYNC_GRAPH_CLIENT_CERT": str(key),
            "PWASYNC_GRAPH_CLIENT_CERT_THUMBPRINT": "0f" * 20,
            "PWASYNC_CA_BUNDLE": str(bundle),
        }
    )
    assert settings.graph_client_cert == key and settings.ca_bundle == bundle


def test_sync_start_without_offset_is_utc():
    settings = load_settings({"PWASYNC_SYNC_START": "2026-03-01T08:00:00"})
    assert settings.sync_start == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_trailing_slashes_are_removed_from_urls():
    settings = load_settings({"PWASYNC_PWA_URL": "https://contoso.sharepoint.com/sites/pwa/"})
    assert settings.pwa_url == "https://contoso.sharepoint.com/sites/pwa"


def test_unknown_pwasync_variables_are_reported():
    env = {"PWASYNC_SCENARIO": "x", "PWASYNC_SCHEDUEL": "daily 10:00", "PWASYNC_TEST_AMQP_URL": "x"}
    assert unknown_variables(env) == ["PWASYNC_SCHEDUEL"]


def test_each_source_chooses_tasks_its_own_way_unless_told():
    assert load_settings({}).source == "project"
    assert load_settings({}).selection == "field"
    assert load_settings({"PWASYNC_SOURCE": "dataverse"}).selection == "label"
    assert load_settings({"PWASYNC_SOURCE": "planner"}).selection == "label"
    told = load_settings({"PWASYNC_SOURCE": "dataverse", "PWASYNC_SELECT_BY": "field"})
    assert told.selection == "field"
    assert load_settings({}).create_event_label == "Create event"
    with pytest.raises(ConfigError, match="PWASYNC_SOURCE:"):
        load_settings({"PWASYNC_SOURCE": "jira"})


def test_project_plans_cannot_be_selected_by_label():
    from services.poller.sources import require_source

    settings = load_settings(
        {"PWASYNC_SELECT_BY": "label", "PWASYNC_PWA_URL": "https://pwa.contoso.com/pwa"}
    )
    with pytest.raises(ConfigError, match="PWASYNC_SELECT_BY=label: Project plans have no labels"):
        require_source(settings)


def test_the_dataverse_settings_name_what_is_missing():
    base = {"PWASYNC_SOURCE": "dataverse", "PWASYNC_TENANT_ID": "contoso.onmicrosoft.com"}
    with pytest.raises(ConfigError, match="PWASYNC_DATAVERSE_URL"):
        load_settings(base).require_dataverse()
    base["PWASYNC_DATAVERSE_URL"] = "https://contoso.crm4.dynamics.com/"
    with pytest.raises(ConfigError, match="PWASYNC_GRAPH_CLIENT_ID"):
        load_settings(base).require_dataverse()
    with pytest.raises(ConfigError, match="PWASYNC_GRAPH_CLIENT_SECRET or"):
        load_settings({**base, "PWASYNC_GRAPH_CLIENT_ID": "app"}).require_dataverse()
    own = {**base, "PWASYNC_DATAVERSE_CLIENT_ID": "app"}
    with pytest.raises(ConfigError, match="PWASYNC_DATAVERSE_CLIENT_SECRET or"):
        load_settings(own).require_dataverse()
    settings = load_settings({**own, "PWASYNC_DATAVERSE_CLIENT_SECRET": "s"})
    settings.require_dataverse()
    assert settings.dataverse_scope == "https://contoso.crm4.dynamics.com/.default"
    with pytest.raises(ConfigError, match="PWASYNC_DATAVERSE_URL"):
        load_settings({"PWASYNC_DATAVERSE_URL": "https://contoso.crm4.dynamics.com/api/data/v9.2"})
