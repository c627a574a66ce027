"""deploy/kubernetes validates offline, and holds what docs/operations.md promises of it.

Built-in kinds are checked against the Kubernetes OpenAPI schemas that ``kubernetes-validate``
ships (strict: an unknown field is an error); KEDA's kinds against the CRDs vendored in
deploy/kubernetes/schemas/keda. No cluster, no network.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from common.errors import ConfigError
from common.settings import SECRET_SETTINGS, load_settings, unknown_variables
from common.topology import topology_for
from services.poller.sources import require_source

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes the manifests are meant for (every API they use is stable there).
KUBERNETES_VERSION = "1.30"

#: What each service may be given, as Secret keys, and the setting each key feeds.
NEEDS = {
    # Every source's keys; an operator fills those of PWASYNC_SOURCE (POLLER_BY_SOURCE).
    "poller": {"amqp-url": "amqp_url", "redis-url": "redis_url", "pwa-password": "pwa_password",
               "secret-key": "secret_key", "dataverse-client-secret": "dataverse_client_secret",
               "graph-client-secret": "graph_client_secret"},
    "writer": {"amqp-url": "amqp_url", "redis-url": "redis_url",
               "graph-client-secret": "graph_client_secret"},
    "ledger": {"amqp-url": "amqp_url", "redis-url": "redis_url"},
    "receiver": {"amqp-url": "amqp_url", "redis-url": "redis_url",
                 "receiver-secret": "receiver_secret"},
}  # fmt: skip
#: Per PWASYNC_SOURCE (with the settings beside it), the poller's keys secrets.yaml says to fill.
POLLER_BY_SOURCE = [
    ("project", {"PWASYNC_PWA_AUTH": "oauth"}, {"secret-key"}),
    ("project", {"PWASYNC_PWA_AUTH": "sharepoint_online", "PWASYNC_PWA_USERNAME": "svc@contoso"},
     {"pwa-password"}),
    ("dataverse", {"PWASYNC_DATAVERSE_CLIENT_ID": "11111111-1111-1111-1111-111111111111"},
     {"dataverse-client-secret"}),
    ("dataverse", {}, {"graph-client-secret"}),  # without its own app the Graph app signs in
    ("planner", {"PWASYNC_PLANNER_PLANS": "xqQg5FS2LkCp935s-FIFm2QAFkHM"},
     {"graph-client-secret"}),
]  # fmt: skip
CONNECTIONS = {"amqp-url", "redis-url"}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    return sorted(
        p
        for p in KUBE.rglob("*.yaml")
        if "schemas" not in p.relative_to(KUBE).parts and p.name != "kustomization.yaml"
    )


def _resources() -> list[dict]:
    return [doc for path in _manifest_files() for doc in _documents(path)]


def _of_kind(kind: str) -> list[dict]:
    return [doc for doc in _resources() if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict:
    (found,) = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    return found


@cache
def _crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the openAPIV3Schema of every vendored CRD version."""
    schemas = {}
    for path in (KUBE / "schemas").rglob("*.yaml"):
        for crd in _documents(path):
            spec = crd["spec"]
            for version in spec["versions"]:
                api_version = f"{spec['group']}/{version['name']}"
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schemas[(api_version, spec["names"]["kind"])] = schema
    return schemas


def _strict(schema: dict) -> dict:
    """The schema with unknown fields refused, as the API server's strict field validation
    (kubectl's default) refuses them; the CRD itself only says which fields exist."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        open_ended = "additionalProperties" in schema or schema.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(item) for item in schema]
    return schema


def validate(resource: dict) -> None:
    """Raise when ``resource`` does not match its kind's schema (or no schema is known)."""
    key = (resource.get("apiVersion"), resource.get("kind"))
    if key in _crd_schemas():
        jsonschema.Draft7Validator(_crd_schemas()[key]).validate(resource)
        return
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "path", _manifest_files(), ids=lambda p: str(p.relative_to(KUBE)).replace("/", ":")
)
def test_every_manifest_matches_its_schema(path):
    for resource in _documents(path):
        validate(resource)


@pytest.mark.parametrize(
    ("resource", "wrong"),
    [
        ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
          "spec": {"replicas": 1, "selectr": {}}}, "unknown field"),
        ({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
          "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [{"metadata": {}}]}},
         "trigger without a type"),
        ({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
          "spec": {"triggers": []}}, "no scaleTargetRef"),
        ({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
          "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [], "coolDown": 1}},
         "unknown field in a CRD"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)  # fmt: skip
def test_the_validator_rejects_a_broken_manifest(resource, wrong):
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(resource)


def test_every_kustomization_lists_existing_files_and_the_base_lists_every_file():
    for kustomization in KUBE.rglob("kustomization.yaml"):
        (doc,) = _documents(kustomization)
        assert doc["kind"] == "Kustomization"
        for entry in doc["resources"]:
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry}"
    (base,) = _documents(KUBE / "base" / "kustomization.yaml")
    on_disk = {p.name for p in (KUBE / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(base["resources"]) == on_disk


def _pod(service: str) -> dict:
    return _named("Deployment", f"pwasync-{service}")["spec"]["template"]


def _container(service: str) -> dict:
    (container,) = _pod(service)["spec"]["containers"]
    return container


@pytest.mark.parametrize("service", sorted(NEEDS))
def test_each_service_runs_non_root_read_only_with_probes_and_measured_resources(service):
    settings = _named("ConfigMap", "pwasync-settings")["data"]
    pod, container = _pod(service)["spec"], _container(service)
    assert container["args"] == [service]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The probes are the ones common/health.py serves, on PWASYNC_HTTP_PORT.
    (port,) = [p for p in container["ports"] if p["name"] == "http"]
    assert port["containerPort"] == int(settings["PWASYNC_HTTP_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert _pod(service)["metadata"]["annotations"]["prometheus.io/port"] == str(
        port["containerPort"]
    )
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}


def test_the_writer_memory_limit_leaves_room_over_its_measured_peak():
    # docs/benchmarks.md, "Writer benchmarks": peak RSS 88-96 MiB per writer.
    resources = _container("writer")["resources"]
    mebibytes = {k: int(v["memory"].removesuffix("Mi")) for k, v in resources.items()}
    assert mebibytes["requests"] >= 96 and mebibytes["limits"] >= 2 * 96


@pytest.mark.parametrize("service", sorted(NEEDS))
def test_each_service_gets_one_secret_with_only_what_it_needs_through_name_file(service):
    secret = _named("Secret", f"pwasync-{service}")
    assert set(secret["stringData"]) == set(NEEDS[service])
    volumes = {v["name"]: v for v in _pod(service)["spec"]["volumes"]}
    (mount,) = [m for m in _container(service)["volumeMounts"] if m["name"] == "secrets"]
    assert mount["readOnly"] is True
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    env = {e["name"]: e["value"] for e in _container(service)["env"]}
    expected = {
        f"PWASYNC_{setting.upper()}_FILE": f"{mount['mountPath']}/{key}"
        for key, setting in NEEDS[service].items()
    }
    assert env == expected
    assert {setting for setting in NEEDS[service].values()} <= set(SECRET_SETTINGS)
    # Credentials of the other services never reach it: the ledger has neither PWA nor Graph.
    credentials = set(NEEDS["poller"]) | set(NEEDS["writer"]) | set(NEEDS["receiver"])
    assert not (set(secret["stringData"]) & credentials - set(NEEDS[service]))


def test_the_shared_settings_are_valid_known_and_hold_no_secret():
    data = _named("ConfigMap", "pwasync-settings")["data"]
    assert unknown_variables(data) == []
    assert not {f"PWASYNC_{name.upper()}" for name in SECRET_SETTINGS} & set(data)
    load_settings(data).parsed_schedule  # noqa: B018 - parses, or raises


SAMPLE = {"amqp-url": "amqp://u:p@rabbitmq:5672/%2F", "redis-url": "redis://:p@redis:6379/0"}


def _service_settings(
    service: str, tmp_path: Path, filled: set[str] | None = None, **settings: str
):
    """The settings the service's container would load, its Secret filled with samples (only
    the ``filled`` keys and the connections, when given; the others empty)."""
    environ = {**_named("ConfigMap", "pwasync-settings")["data"], **settings}
    for variable in _container(service)["env"]:
        key = Path(variable["value"]).name
        value = SAMPLE.get(key, "sample-" + key) + "\n"
        if filled is not None and key not in filled | CONNECTIONS:
            value = ""
        (tmp_path / key).write_text(value)
        environ[variable["name"]] = str(tmp_path / key)
    return load_settings(environ)


@pytest.mark.parametrize(("source", "settings", "filled"), POLLER_BY_SOURCE)
def test_the_poller_starts_with_the_keys_its_source_needs_and_not_without(
    tmp_path, source, settings, filled
):
    settings = {**settings, "PWASYNC_SOURCE": source,
                "PWASYNC_DATAVERSE_URL": "https://contoso.crm4.dynamics.com"}  # fmt: skip
    require_source(_service_settings("poller", tmp_path, filled, **settings))
    assert filled <= set(NEEDS["poller"])
    for key in filled:
        with pytest.raises(ConfigError, match=f"PWASYNC_{NEEDS['poller'][key].upper()}"):
            require_source(_service_settings("poller", tmp_path, filled - {key}, **settings))


def test_a_project_poller_can_read_pwa_and_not_write_outlook(tmp_path):
    settings = _service_settings("poller", tmp_path, {"secret-key"})
    settings.require_pwa()
    with pytest.raises(ConfigError, match="GRAPH_CLIENT_SECRET"):
        settings.require_graph()


def test_the_writer_can_write_outlook_and_not_read_pwa(tmp_path):
    settings = _service_settings("writer", tmp_path)
    settings.require_graph()
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        settings.require_pwa()


def test_the_ledger_has_neither_credential(tmp_path):
    settings = _service_settings("ledger", tmp_path)
    assert settings.amqp_url.get_secret_value() == SAMPLE["amqp-url"]
    with pytest.raises(ConfigError):
        settings.require_graph()
    with pytest.raises(ConfigError):
        settings.require_pwa()


def test_every_secret_in_the_base_is_empty():
    # As in .env.example: nothing runs with a value everyone can read in the repository.
    for secret in _of_kind("Secret"):
        assert set(secret["stringData"].values()) == {""}, secret["metadata"]["name"]


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In")
        for e in selector.get("matchExpressions", [])
    )


@pytest.mark.parametrize("service", sorted(NEEDS))
def test_each_service_has_a_disruption_budget_and_network_policies(service):
    deployment = _named("Deployment", f"pwasync-{service}")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"], labels)
    budgets = [
        b for b in _of_kind("PodDisruptionBudget") if _selects(b["spec"]["selector"], labels)
    ]
    assert len(budgets) == 1 and budgets[0]["spec"]["maxUnavailable"] == 1
    policies = [p for p in _of_kind("NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)]
    assert any({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in policies)
    https_out = any(
        port.get("port") == 443 for p in policies for rule in p["spec"].get("egress", [])
        for port in rule.get("ports", [])
    )  # fmt: skip
    # The ledger and the receiver talk to RabbitMQ and Redis only.
    assert https_out == (service not in ("ledger", "receiver"))


def test_the_poller_may_reach_https_anywhere_whatever_its_source():
    # PWA, Dataverse, Graph and the sign-in service have no fixed addresses: a `to` on the
    # poller's port 443 would cut off some source (README "Kubernetes").
    labels = _pod("poller")["metadata"]["labels"]
    rules = [
        rule
        for p in _of_kind("NetworkPolicy")
        if _selects(p["spec"]["podSelector"], labels)
        for rule in p["spec"].get("egress", [])
        if any(port.get("port") == 443 for port in rule.get("ports", []))
    ]
    assert rules and all("to" not in rule for rule in rules)


def test_keda_scales_the_writers_on_the_scenarios_task_changed_queue():
    scenario = _named("ConfigMap", "pwasync-settings")["data"]["PWASYNC_SCENARIO"]
    scaled = _named("ScaledObject", "pwasync-writer")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "pwasync-writer"
    assert "replicas" not in _named("Deployment", "pwasync-writer")["spec"]  # KEDA owns it
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == topology_for(scenario).task_changes.name
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert int(trigger["metadata"]["value"]) > 0
    auth = _named("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    (ref,) = auth["secretTargetRef"]
    assert ref["parameter"] == "host"
    assert ref["key"] in _named("Secret", ref["name"])["stringData"]
    assert scaled["minReplicaCount"] >= 2  # one writer down is not an outage


def test_the_receiver_can_serve_and_has_neither_credential(tmp_path):
    settings = _service_settings("receiver", tmp_path)
    settings.require_receiver()
    assert settings.pwa_password is None and settings.secret_key is None
    assert settings.graph_client_secret is None
