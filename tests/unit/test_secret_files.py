"""Every secret setting NAME may come from a file named by NAME_FILE (Docker/Kubernetes secrets)."""

import pytest

from common.errors import ConfigError
from common.settings import SECRET_SETTINGS, load_settings, unknown_variables

# A valid value for each secret setting (URLs must parse as their kind).
VALUES = {
    "amqp_url": "amqp://pwasync:s3cret-from-file@rabbitmq:5672/%2F",
    "redis_url": "redis://:s3cret-from-file@redis:6379/0",
    "pwa_password": "s3cret-from-file",
    "graph_client_secret": "s3cret-from-file",
    "secret_key": "s3cret-from-file",
    "rabbitmq_management_url": "http://pwasync:s3cret-from-file@rabbitmq:15672",
}


def _variable(name: str) -> str:
    return "PWASYNC_" + name.upper()


def test_every_secret_setting_is_covered():
    # The passwords, client secrets, token key and the URLs that carry passwords; a secret
    # added later (a SecretStr field) is covered without being listed anywhere.
    assert set(VALUES) <= set(SECRET_SETTINGS)
    assert "scenario" not in SECRET_SETTINGS and "pwa_username" not in SECRET_SETTINGS


@pytest.mark.parametrize("name", sorted(VALUES))
def test_a_secret_is_read_from_the_file_named_by_name_file(tmp_path, name):
    secret = tmp_path / name
    secret.write_text(VALUES[name] + "\n")  # `echo value > file` leaves a newline
    settings = load_settings({_variable(name) + "_FILE": str(secret)})
    assert getattr(settings, name).get_secret_value() == VALUES[name]


def test_a_secret_file_is_read_from_the_process_environment(tmp_path, monkeypatch):
    secret = tmp_path / "graph"
    secret.write_text("from-a-mounted-secret")
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("PWASYNC_GRAPH_CLIENT_SECRET_FILE", str(secret))
    monkeypatch.setenv("PWASYNC_GRAPH_CLIENT_SECRET", "")  # blanked, as compose.yaml does
    settings = load_settings()
    assert settings.graph_client_secret.get_secret_value() == "from-a-mounted-secret"


def test_an_empty_secret_file_counts_as_missing(tmp_path):
    secret = tmp_path / "empty"
    secret.write_text("\n")
    settings = load_settings({"PWASYNC_GRAPH_CLIENT_SECRET_FILE": str(secret)})
    assert settings.graph_client_secret is None


def test_name_and_name_file_together_are_refused(tmp_path):
    secret = tmp_path / "pwa"
    secret.write_text("one-value")
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {"PWASYNC_PWA_PASSWORD": "other-value", "PWASYNC_PWA_PASSWORD_FILE": str(secret)}
        )
    message = str(caught.value)
    assert "PWASYNC_PWA_PASSWORD" in message and "PWASYNC_PWA_PASSWORD_FILE" in message
    assert "one-value" not in message and "other-value" not in message


def test_an_empty_name_beside_name_file_is_no_conflict(tmp_path):
    # compose.yaml blanks every secret variable that .env might hold, then gives the file.
    secret = tmp_path / "graph"
    secret.write_text("from-the-file")
    settings = load_settings(
        {"PWASYNC_GRAPH_CLIENT_SECRET": "", "PWASYNC_GRAPH_CLIENT_SECRET_FILE": str(secret)}
    )
    assert settings.graph_client_secret.get_secret_value() == "from-the-file"


def test_an_unreadable_secret_file_is_one_line_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="^PWASYNC_SECRET_KEY_FILE: names no readable file"):
        load_settings({"PWASYNC_SECRET_KEY_FILE": str(tmp_path / "missing")})


def test_a_malformed_value_from_a_file_is_named_but_not_echoed(tmp_path):
    secret = tmp_path / "amqp"
    secret.write_text("http://user:hunter2@rabbitmq")
    with pytest.raises(ConfigError) as caught:
        load_settings({"PWASYNC_AMQP_URL_FILE": str(secret)})
    assert str(caught.value).startswith("PWASYNC_AMQP_URL:")
    assert "hunter2" not in str(caught.value)


def test_name_file_of_a_secret_is_known_and_of_anything_else_unknown():
    environ = {"PWASYNC_GRAPH_CLIENT_SECRET_FILE": "/x", "PWASYNC_SCENARIO_FILE": "/y"}
    assert unknown_variables(environ) == ["PWASYNC_SCENARIO_FILE"]
