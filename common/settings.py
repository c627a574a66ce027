"""Settings: the ``PWASYNC_*`` environment variables of the interface page, and nothing else.

Loaded once in ``main()`` and passed down. Every service reads the same class, so a value means
the same to all of them. A missing or malformed value becomes one ``ConfigError`` line that names
the variable and never echoes its value (URLs may hold passwords).
"""

from __future__ import annotations

import importlib.util
import os
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives import serialization
from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.errors import ConfigError
from common.mailboxes import is_domain
from common.redis_urls import parse_redis_url
from common.schedule import Schedule, parse_schedule

ENV_PREFIX = "PWASYNC_"

#: Variables that are read by the tests or the sandbox tooling, not by the services.
_KNOWN_NON_SETTINGS = {"PWASYNC_SANDBOX_URL"}
_KNOWN_NON_SETTING_PREFIXES = ("PWASYNC_TEST_",)

_SCENARIO = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

#: Microsoft Entra's sign-in hosts (every cloud: global, US Government, China, the sovereign
#: clouds; MSAL's own list). Only these get the client secret or a password unless
#: PWASYNC_AUTHORITY_HOST_TRUSTED says the configured host is trusted (an emulator, a proxy).
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
        "login.sovcloud-identity.fr",
        "login.sovcloud-identity.de",
        "login.sovcloud-identity.sg",
    }
)


class Settings(BaseSettings):
    """Every setting of every pwasync process. Each description is its row of the table in
    docs/configuration.md, which `make docs` (common/settings_doc.py) regenerates."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@localhost:5672/%2F"),
        description=(
            "RabbitMQ URL; several, separated by commas, are the nodes of one cluster, tried in "
            "turn ([No single point of "
            "failure](operations.md#no-single-point-of-failure-clusters)) [secret: holds a "
            "password]"
        ),
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"),
        description=(
            "Redis URL: `redis://` or `rediss://` (one server), "
            "`redis+sentinel://[:password@]host:port[,host:port…]/MASTER_NAME[/DB]` (the master "
            "of a Sentinel group; the password is Redis's; Sentinel's default port 26379), "
            "`redis+cluster://[:password@]host:port[,host:port…]` (some nodes of a Redis "
            "Cluster; database 0 only) [secret: holds a password]"
        ),
    )
    # Issue 15: the Sentinels' own password (a redis+sentinel:// URL's password is Redis's).
    redis_sentinel_password: SecretStr | None = Field(
        None,
        description=(
            "the Sentinels' own password (`requirepass` of the Sentinels), for "
            "`redis+sentinel://` [secret]"
        ),
    )
    scenario: str = Field(
        "default",
        description=(
            "scenario id (a-z, 0-9, `-`, `_`): namespaces every queue, Redis key and message"
        ),
    )

    pwa_url: str | None = Field(
        None,
        description="the PWA site, e.g. `https://contoso.sharepoint.com/sites/pwa`",
        json_schema_extra={"doc_default": "required for the poller and `fields`"},
    )
    pwa_auth: Literal["oauth", "sharepoint_online", "sharepoint_onprem"] = Field(
        "oauth",
        description=(
            "`oauth` (an operator's device-code sign-in, `pwasync connect`), "
            "`sharepoint_online` (password grant), `sharepoint_onprem` (Project Server, "
            "Windows: Negotiate or NTLM, with channel binding)"
        ),
    )
    pwa_username: str | None = Field(
        None,
        description=(
            "the PWA account (`sharepoint_*`; on-premises `DOMAIN\\user` or `user@domain`; both "
            "it and `PWASYNC_PWA_PASSWORD` empty on premises: the host's Kerberos credentials, "
            "with `pwasync[kerberos]`)"
        ),
    )
    pwa_password: SecretStr | None = Field(
        None,
        description=(
            "the PWA account's password (`sharepoint_*`, see `PWASYNC_PWA_USERNAME`) [secret]"
        ),
    )
    pwa_client_id: str | None = Field(
        None,
        description="Entra public-client app for `oauth` / `sharepoint_online`",
    )
    pwa_timezone: str = Field(
        "UTC",
        description="IANA zone in which PWA reports task dates",
    )
    # Which PWA API the plans are read through (interface page); `auto` finds out once per
    # process. A plain-http PWA URL is refused unless a lab allows it explicitly.
    pwa_api: Literal["auto", "projectdata", "projectserver"] = Field(
        "auto",
        description=(
            "`auto` (find out once per process), `projectdata`, `projectserver` ([Which "
            "Microsoft Project](sources/project-server.md#which-microsoft-project))"
        ),
    )
    # Where the plans are read; everything above the reader is the same for every source.
    source: Literal["project", "dataverse", "planner"] = Field(
        "project",
        description=(
            "where the plans are read: `project` (Project Server / Project Online through the "
            "PWA), `dataverse` (Planner premium plans), `planner` (basic Planner plans through "
            "Graph)"
        ),
    )
    # How tasks are chosen: a Yes/No field or column, or a Planner label; unset: the source's
    # own way (``field`` for Project, ``label`` for the Planner sources), see ``selection``.
    select_by: Literal["field", "label"] | None = Field(
        None,
        description=(
            "how tasks are chosen: `field` (the Yes/No field or column named by "
            "`PWASYNC_CREATE_EVENT_FIELD`) or `label` (a Planner label named by "
            "`PWASYNC_CREATE_EVENT_LABEL`; not for `project`, whose plans have no labels)"
        ),
        json_schema_extra={"doc_default": "`field` for `project`, `label` for the Planner sources"},
    )
    create_event_label: str = Field(
        "Create event",
        description="the label's name for `PWASYNC_SELECT_BY=label`",
    )
    pwa_allow_http: bool = Field(
        False,
        description=(
            "`true` lets `PWASYNC_PWA_URL` be plain `http://` (a lab only: the sign-in and the "
            "plans would cross the network in clear) (extension)"
        ),
    )

    tenant_id: str | None = Field(
        None,
        description="Entra tenant id or domain",
        json_schema_extra={"doc_default": "required for the writer"},
    )
    graph_client_id: str | None = Field(
        None,
        description="Entra app with the application permission Calendars.ReadWrite",
        json_schema_extra={"doc_default": "required for the writer"},
    )
    graph_client_secret: SecretStr | None = Field(
        None,
        description=(
            "the Graph app's credential: a client secret (or `PWASYNC_GRAPH_CLIENT_CERT` + "
            "`PWASYNC_GRAPH_CLIENT_CERT_THUMBPRINT`) [secret]"
        ),
        json_schema_extra={"doc_default": "one of secret or certificate, for the writer"},
    )
    graph_client_cert: Path | None = Field(
        None,
        description=(
            "or the Graph app's credential as a PEM private key file (unencrypted), with "
            "`PWASYNC_GRAPH_CLIENT_CERT_THUMBPRINT`"
        ),
        json_schema_extra={"doc_default": "one of secret or certificate, for the writer"},
    )
    graph_client_cert_thumbprint: str | None = Field(
        None,
        description=(
            "the SHA-1 thumbprint (40 hexadecimal digits) of `PWASYNC_GRAPH_CLIENT_CERT`'s "
            "certificate"
        ),
        json_schema_extra={"doc_default": "required with the certificate"},
    )
    authority_host: str = Field(
        "https://login.microsoftonline.com",
        description=(
            "sign-in host. A host that is not one of Entra's (any cloud: "
            "`login.microsoftonline.com`, `login.microsoftonline.us`, "
            "`login.partner.microsoftonline.cn`, …) is refused at start unless "
            "`PWASYNC_AUTHORITY_HOST_TRUSTED=true`"
        ),
    )
    graph_url: str = Field(
        "https://graph.microsoft.com/v1.0",
        description=(
            "Graph base URL; the app-only token is asked for `{its origin}/.default`, so a "
            "national cloud needs only this (and its sign-in host): "
            "`https://graph.microsoft.us/v1.0` (US Government L4), "
            "`https://dod-graph.microsoft.us/v1.0` (L5), "
            "`https://microsoftgraph.chinacloudapi.cn/v1.0` (21Vianet)"
        ),
    )
    # Issue 11, item 18 (docs/configuration.md): a sign-in host that is not Microsoft's is refused
    # unless trusted here; the Graph token's audience is PWASYNC_GRAPH_URL's origin unless a
    # Graph behind a proxy or an emulator keeps another resource.
    authority_host_trusted: bool = Field(
        False,
        description=(
            "`true`: `PWASYNC_AUTHORITY_HOST` is yours though it is not Microsoft's (an "
            "emulator such as `pwasync sandbox`, whose `sandbox.env` sets it; a proxy). It then "
            "gets the client secret and the PWA password without MSAL's authority validation, "
            "so set it for no other host (extension)"
        ),
    )
    graph_resource: str | None = Field(
        None,
        description=(
            "the Graph resource (token audience) when it is not `PWASYNC_GRAPH_URL`'s origin: a "
            "Graph behind a proxy or an emulator, e.g. `https://graph.microsoft.com` "
            "(extension)"
        ),
        json_schema_extra={"doc_default": "the Graph URL's origin"},
    )
    ca_bundle: Path | None = Field(
        None,
        description=(
            "an extra PEM CA trusted for every HTTPS call (it adds trust; verification is never "
            "off)"
        ),
    )

    create_event_field: str = Field(
        "Create event",
        description="display name of the task flag field",
    )
    sync_start: datetime | None = Field(
        None,
        description=(
            "ISO 8601 time (UTC if no offset): the sync start; projects last published before "
            "it are left alone until published again (or `--full`). Read once, at the first "
            "poller start"
        ),
        json_schema_extra={"doc_default": "the poller's first start, less the overlap"},
    )
    schedule: str = Field(
        "on_demand",
        description="`on_demand`, `daily HH:MM`, `weekly DAY HH:MM` (mon..sun), `every N minutes`",
    )
    schedule_timezone: str = Field(
        "UTC",
        description="IANA zone of the schedule",
    )
    endpoint_limit: int = Field(
        default=0,
        ge=0,
        description=(
            "most endpoints in use over the rolling 30 days; 0 = no limit. Tasks without an "
            "endpoint are held back at the limit ([Endpoint "
            "limit](architecture.md#endpoint-limit-pwasync_endpoint_limit))"
        ),
    )
    secret_key: SecretStr | None = Field(
        None,
        description=(
            "encrypts the stored sign-in (`oauth`): scrypt (random salt per write) derives a "
            "key for Fernet (AES-128-CBC + HMAC-SHA256, `cryptography`); a wrong key or a "
            "tampered value is detected. Keep it stable: another key means `pwasync connect` "
            "again [secret]"
        ),
        json_schema_extra={"doc_default": "required for `oauth`"},
    )
    http_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "port of `/healthz`, `/readyz`, `/metrics` on 0.0.0.0 "
            "([Operations](operations.md#operations)); 0 = none"
        ),
    )
    log_format: Literal["json", "console"] = Field(
        "json",
        description="`json` (one object per line) or `console`",
    )

    # Extensions of the interface page, documented in docs/configuration.md.
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="`debug`, `info`, `warning`, `error` (extension)",
    )
    writer_concurrency: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description=(
            "tasks handled at once per writer process = its prefetch (extension). A task in "
            "flight is a suspended coroutine, not a thread; Outlook's limits (4 per mailbox, "
            "shared in Redis) bound the Graph requests. 1,000 made ~650 events/s at 1 s Graph "
            "latency with a writer's peak RSS at ~127 MiB (500: ~450/s, ~109 MiB); more buys "
            "little once a core is busy (docs/benchmarks.md)"
        ),
    )
    writer_event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description=(
            "the writer's event loop: `uvloop` (libuv, in C: ~14 % less CPU per event and "
            "~30 MiB less memory at 1 s Graph latency, measured) or `asyncio` (the standard "
            "library's, the way back should uvloop ever misbehave) (extension)"
        ),
    )
    # How long one request to PWA, Graph or the sign-in service may take; a slower one counts as
    # a timeout (retried: the outcome of a POST that timed out is checked before it is repeated).
    http_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description=(
            "how long one request to PWA, Graph or the sign-in service may take before it "
            "counts as timed out and is retried (extension)"
        ),
    )
    # Issue 11, item 19: a service asked to stop exits at the latest this long after the
    # signal, whatever is still in flight (services/runtime.py); below compose's 30 s grace.
    stop_timeout_seconds: float = Field(
        default=25.0,
        gt=0,
        le=3600,
        description=(
            "after SIGTERM/SIGINT, the process exits 0 at the latest this long after the "
            "signal, whatever is still in flight (the consumer's drain, up to 8 s, twice at "
            "worst; the dispatcher; the publisher's confirms; a hanging Graph or PWA call); "
            "keep it below the platform's grace period (compose and Kubernetes: 30 s) "
            "(extension)"
        ),
    )
    # The poller (issue 3): how long after a project's publish it is read once more (reporting
    # lag, clock skew), and the mailbox `pwasync check` reaches with the Graph token.
    sync_overlap_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description=(
            "ProjectData: a project read less than this long after its publish is read once "
            "more when this time has passed, once per publish (reporting lag); also how far "
            "before the poller's first start the default sync start lies (clock skew) "
            "(extension)"
        ),
    )
    check_mailbox: str | None = Field(
        None,
        description="the mailbox `pwasync check` reaches with the Graph token (extension)",
        json_schema_extra={"doc_default": "none: one of an assignee found in the plans"},
    )
    # The writer (issue 6): the default event mapping rules (docs/architecture.md, "What an
    # event looks like") and Outlook's per-mailbox limits, shared by every writer replica
    # through Redis.
    event_show_as: Literal["auto", "free", "tentative", "busy", "oof", "workingElsewhere"] = Field(
        "auto",
        description=(
            "`auto` (same-day task `busy`; multi-day, milestone and all-day `free`), or `free`, "
            "`tentative`, `busy`, `oof`, `workingElsewhere` for every event (extension)"
        ),
    )
    event_all_day: Literal["false", "true", "multi_day"] = Field(
        "false",
        description=(
            "`false`, `true` (every event all-day over the task's dates) or `multi_day` (only "
            "tasks spanning days) (extension)"
        ),
    )
    event_reminder_minutes: str = Field(
        "15",
        description="reminder minutes before the start (0–40320), or `off` (extension)",
    )
    event_category: str = Field(
        default="Project task",
        max_length=255,
        description="Outlook category of the events; empty for none (extension)",
    )
    graph_mailbox_concurrency: int = Field(
        default=4,
        ge=1,
        le=4,
        description="Graph requests in flight per mailbox across every writer (1–4) (extension)",
    )
    graph_mailbox_budget: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Graph requests per mailbox per 10 minutes across every writer (extension)",
    )
    graph_batch_size: int = Field(
        default=4,
        ge=1,
        le=20,
        description=(
            "most requests in one `$batch` (1 = plain requests only, up to 20) (extension). "
            "Outlook runs at most 4 items of a batch at once: a larger batch holds its items' "
            "mailbox slots for several round trips (docs/architecture.md, the dispatcher)"
        ),
    )
    parallel_reads: int = Field(
        default=4,
        ge=1,
        le=16,
        description=(
            "projects the poller reads at once (1–16): their requests overlap, while what is "
            "published and recorded stays in order, project by project (extension)"
        ),
    )
    # Operations (issue 4): the deletion circuit breaker. A run that would take the events of
    # more than this share of the synced tasks away (and more than the minimum number) holds
    # its removals back until an operator confirms with `pwasync sync-now --allow-deletions`.
    deletion_guard_percent: int = Field(
        default=30,
        ge=0,
        le=100,
        description=(
            "a run whose removals exceed this share of the synced tasks holds them back until "
            "confirmed ([Deletion guard](operations.md#deletion-guard)); 100 = off (extension)"
        ),
    )
    deletion_guard_min_tasks: int = Field(
        default=10,
        ge=0,
        description="removals of at most this many tasks always go through (extension)",
    )
    # `pwasync status` reads unacked counts from the RabbitMQ management API when given its
    # URL (e.g. http://user:password@rabbitmq:15672); AMQP alone reports only ready messages.
    rabbitmq_management_url: SecretStr | None = Field(
        None,
        description=(
            "the RabbitMQ management API, e.g. `http://user:password@rabbitmq:15672` (a "
            "cluster: every node's, comma-separated; each call goes to the first that answers): "
            "the services set the queues' settings there as policies at start (the user needs "
            "the `policymaker` or `administrator` tag; see [Messages and "
            "topology](architecture.md#messages-and-topology-commontopologypy)), and `pwasync "
            "status` reads the unacked counts (AMQP can do neither) [secret: holds a password] "
            "(extension)"
        ),
        json_schema_extra={"doc_default": "none (queue settings as declaration arguments)"},
    )
    # The publish receiver (interface page; docs/architecture.md). Calls for one project
    # within this many seconds of its last sync request are folded into one more request.
    receiver_port: int = Field(
        default=8081,
        ge=1,
        le=65535,
        description=(
            "`pwasync receiver`: port on 0.0.0.0 Project Server calls after a publish ([Publish "
            "receiver](architecture.md#publish-receiver-from-publish-to-calendar-in-seconds-servicesreceiver))"
        ),
    )
    receiver_secret: SecretStr | None = Field(
        None,
        description="the endpoint's secret path segment (16+ of A-Z a-z 0-9 `-_.~`) [secret]",
        json_schema_extra={"doc_default": "required for `receiver` and `events register`"},
    )
    receiver_url: str | None = Field(
        None,
        description=(
            "the URL Project Server is told to call, as it reaches the receiver, without the secret"
        ),
        json_schema_extra={"doc_default": "required for `events register`"},
    )
    receiver_coalesce_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description=(
            "calls for one project within this long of its last sync request become one more "
            "request, sent when calls pause for 0.25 s (extension)"
        ),
    )
    # Issue 11, item 17: the only e-mail domains whose mailboxes get events (comma-separated;
    # empty: any). A PWA resource edited to another address gets none (common/mailboxes.py).
    mailbox_domains: str = Field(
        "",
        description=(
            "comma-separated e-mail domains whose mailboxes may receive events, each exactly (a "
            "subdomain is listed on its own); an assignee elsewhere gets none ([Which tasks get "
            "events](architecture.md#which-tasks-get-events)) (extension)"
        ),
        json_schema_extra={"doc_default": "empty: any domain"},
    )
    # Issue 14 (interface page): the basic Planner plans to sync, by id, and the groups whose
    # every plan is synced (comma-separated; PWASYNC_SOURCE=planner needs one of them).
    planner_plans: str = Field(
        "",
        description=(
            "`planner`: basic Planner plan ids, comma-separated ([Basic Planner "
            "plans](sources/planner.md#basic-planner-plans-pwasync_sourceplanner))"
        ),
        json_schema_extra={"doc_default": "one of plans or groups, for `planner`"},
    )
    planner_groups: str = Field(
        "",
        description=(
            "`planner`: ids of groups whose every plan is synced, comma-separated ([Basic "
            "Planner plans](sources/planner.md#basic-planner-plans-pwasync_sourceplanner))"
        ),
        json_schema_extra={"doc_default": "one of plans or groups, for `planner`"},
    )
    # Issue 14, Planner premium (PWASYNC_SOURCE=dataverse; interface page,
    # docs/sources/planner-premium.md): the environment, its application user's app (default:
    # the Graph app), the page size asked for, how often the tables without change tracking are
    # swept for deleted rows, and the publisher prefix `pwasync fields create` gives a new column.
    dataverse_url: str | None = Field(
        None,
        description=(
            "`PWASYNC_SOURCE=dataverse`: the environment, e.g. "
            "`https://contoso.crm4.dynamics.com` (Web API `{URL}/api/data/v9.2`; token scope "
            "`{URL}/.default`) ([Planner "
            "premium](sources/planner-premium.md#planner-premium-dataverse))"
        ),
        json_schema_extra={"doc_default": "required for `dataverse`"},
    )
    dataverse_client_id: str | None = Field(
        None,
        description="`dataverse`: the Entra app of the environment's application user",
        json_schema_extra={"doc_default": "the Graph app's id"},
    )
    dataverse_client_secret: SecretStr | None = Field(
        None,
        description=(
            "`dataverse`: that app's credential, a client secret (or "
            "`PWASYNC_DATAVERSE_CLIENT_CERT` + `PWASYNC_DATAVERSE_CLIENT_CERT_THUMBPRINT`) "
            "[secret]"
        ),
        json_schema_extra={"doc_default": "the Graph app's credential"},
    )
    dataverse_client_cert: Path | None = Field(
        None,
        description=(
            "`dataverse`: or that app's credential as a PEM private key file (unencrypted), "
            "with `PWASYNC_DATAVERSE_CLIENT_CERT_THUMBPRINT`"
        ),
        json_schema_extra={"doc_default": "the Graph app's credential"},
    )
    dataverse_client_cert_thumbprint: str | None = Field(
        None,
        description=(
            "`dataverse`: the SHA-1 thumbprint (40 hexadecimal digits) of "
            "`PWASYNC_DATAVERSE_CLIENT_CERT`'s certificate"
        ),
        json_schema_extra={"doc_default": "required with the certificate"},
    )
    dataverse_page_size: int = Field(
        default=5000,
        ge=1,
        le=5000,
        description=(
            "`dataverse`: rows per page asked for (`Prefer: odata.maxpagesize`, 1–5000) (extension)"
        ),
    )
    dataverse_reconcile_minutes: int = Field(
        default=15,
        ge=1,
        le=10_080,
        description=(
            "`dataverse`: how often a table without change tracking is swept for deleted rows "
            "(a request per 5,000 rows) (extension)"
        ),
    )
    dataverse_column_prefix: str = Field(
        default="new",
        pattern=r"^[a-z][a-z0-9]{1,7}$",
        description=(
            "`dataverse`: the publisher prefix `pwasync fields create` gives the Yes/No column "
            "(extension)"
        ),
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):  # noqa: ANN001
        # NAME_FILE before NAME: a non-empty NAME beside it is refused, so it wins only over
        # an empty NAME (compose.yaml blanks the secrets a service must not get from .env).
        files = _SecretFilesSource(settings_cls)
        return (init_settings, files, env_settings, dotenv_settings, file_secret_settings)

    # --- validation of single values -------------------------------------------------------

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: SecretStr) -> SecretStr:
        # Several URLs, separated by commas: the nodes of one cluster (common/rabbit.py).
        urls = [url.strip() for url in value.get_secret_value().split(",")]
        for url in urls:
            _require_url(
                url, ("amqp", "amqps"), "an amqp:// or amqps:// URL, or several separated by commas"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        parse_redis_url(value.get_secret_value())  # its ValueError names the problem
        return value

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, value: str) -> str:
        if not _SCENARIO.match(value):
            raise ValueError(
                "must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
            )
        return value

    @field_validator("pwa_url")
    @classmethod
    def _pwa_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        _require_url(value, ("https", "http"), "an https:// URL of the PWA site")
        return value.rstrip("/")

    @field_validator("rabbitmq_management_url")
    @classmethod
    def _management_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        for url in value.get_secret_value().split(","):  # a cluster's nodes, as for AMQP
            _require_url(url.strip(), ("http", "https"), "an http(s):// URL, or several")
        return value

    @field_validator("authority_host", "graph_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        _require_url(value, ("https",), "an https:// URL")
        return value.rstrip("/")

    @field_validator("dataverse_url")
    @classmethod
    def _dataverse_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        _require_url(value, ("https",), "an https:// URL (the environment, without /api/…)")
        if urlsplit(value).path.strip("/"):
            raise ValueError(
                "must be the environment's URL only, e.g. https://contoso.crm4.dynamics.com"
            )
        return value.rstrip("/")

    @field_validator("graph_resource")
    @classmethod
    def _graph_resource(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        _require_url(
            value, ("https",), "an https:// URI (the resource, e.g. https://graph.microsoft.com)"
        )
        return value.rstrip("/")

    @field_validator("mailbox_domains")
    @classmethod
    def _mailbox_domains(cls, value: str) -> str:
        domains = [d.strip().removeprefix("@").lower() for d in value.split(",")]
        domains = [d for d in domains if d]
        if not all(is_domain(d) for d in domains):
            raise ValueError("must be e-mail domains separated by commas, e.g. contoso.com")
        return ",".join(domains)

    @model_validator(mode="after")
    def _trusted_authority(self) -> Settings:
        # MSAL validates only Microsoft's hosts; any other one would get the client secret and
        # the service account's password without a check, so it must be named trusted.
        host = urlsplit(self.authority_host).hostname or ""
        if host not in MICROSOFT_AUTHORITY_HOSTS and not self.authority_host_trusted:
            raise ValueError(
                f"PWASYNC_AUTHORITY_HOST: {host} is not a Microsoft sign-in host; set "
                "PWASYNC_AUTHORITY_HOST_TRUSTED=true if it is yours (an emulator, a proxy)"
            )
        return self

    @field_validator("pwa_timezone", "schedule_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone (e.g. Europe/Berlin)") from None
        return value

    @field_validator("event_reminder_minutes")
    @classmethod
    def _reminder(cls, value: str) -> str:
        if value.strip().lower() == "off":
            return "off"
        if not value.strip().isdigit() or int(value) > 40_320:
            raise ValueError("must be a number of minutes from 0 to 40320, or 'off'")
        return str(int(value))

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("sync_start")
    @classmethod
    def _sync_start(cls, value: datetime | None) -> datetime | None:
        # A timestamp without an offset is read as UTC, so it means the same on every host.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=str(_readable(value)))
            except ssl.SSLError:
                raise ValueError("holds no PEM CA certificate") from None
        return value

    @field_validator("graph_client_cert", "dataverse_client_cert")
    @classmethod
    def _client_key(cls, value: Path | None) -> Path | None:
        # Checked here, or a bad file surfaces only at the first sign-in, as a failed task.
        if value is not None:
            try:
                serialization.load_pem_private_key(_readable(value).read_bytes(), password=None)
            except TypeError:
                raise ValueError("holds an encrypted key; pwasync needs it unencrypted") from None
            except ValueError:
                raise ValueError("holds no PEM private key") from None
        return value

    @field_validator("graph_client_cert_thumbprint", "dataverse_client_cert_thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9A-Fa-f]{40}", value):
            raise ValueError("must be the certificate's SHA-1 thumbprint: 40 hexadecimal digits")
        return value

    @field_validator(
        "pwa_username",
        "pwa_client_id",
        "tenant_id",
        "graph_client_id",
        "graph_client_cert_thumbprint",
        "dataverse_client_id",
        "dataverse_client_cert_thumbprint",
        "dataverse_client_secret",
        "check_mailbox",
        # An empty secret is a missing one (it would only fail later, at a sign-in).
        "pwa_password",
        "graph_client_secret",
        "secret_key",
        "receiver_secret",
        "receiver_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    # --- derived values ----------------------------------------------------------------------

    @property
    def pwa_zone(self) -> ZoneInfo:
        return ZoneInfo(self.pwa_timezone)

    @property
    def schedule_zone(self) -> ZoneInfo:
        return ZoneInfo(self.schedule_timezone)

    @property
    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule)

    @property
    def mailbox_domain_set(self) -> frozenset[str]:
        return frozenset(self.mailbox_domains.split(",")) - {""}

    @property
    def graph_scope(self) -> str:
        """The app-only Graph scope: ``{resource}/.default``, the resource being the Graph URL's
        origin (https://graph.microsoft.us for US Government L4, …) unless set."""
        if self.graph_resource:
            return f"{self.graph_resource}/.default"
        parts = urlsplit(self.graph_url)
        return f"{parts.scheme}://{parts.netloc}/.default"

    @property
    def authority_is_microsofts(self) -> bool:
        return (urlsplit(self.authority_host).hostname or "") in MICROSOFT_AUTHORITY_HOSTS

    @property
    def event_reminder(self) -> int | None:
        """Minutes before the start; None when reminders are off."""
        return None if self.event_reminder_minutes == "off" else int(self.event_reminder_minutes)

    @property
    def endpoint_limit_or_none(self) -> int | None:
        return self.endpoint_limit or None

    @property
    def uses_host_kerberos(self) -> bool:
        """Windows sign-in with the host's Kerberos ticket or keytab (no account configured),
        which needs the optional GSSAPI support (``pip install 'pwasync[kerberos]'``)."""
        if self.pwa_username or self.pwa_password:
            return False
        return importlib.util.find_spec("gssapi") is not None

    # --- what each command needs -------------------------------------------------------------

    @property
    def selection(self) -> Literal["field", "label"]:
        """PWASYNC_SELECT_BY, or the source's default way of choosing tasks."""
        if self.select_by is not None:
            return self.select_by
        return "field" if self.source == "project" else "label"

    def require_pwa(self) -> None:
        """Raise ConfigError unless the settings needed to read Project Online are present."""
        product = "Project Server" if self.pwa_auth == "sharepoint_onprem" else "Project Online"
        purpose = f"to read {product} with PWASYNC_PWA_AUTH={self.pwa_auth}"
        needed = {
            "oauth": ("pwa_url", "pwa_client_id", "secret_key"),
            "sharepoint_online": ("pwa_url", "pwa_client_id", "pwa_username", "pwa_password"),
            "sharepoint_onprem": ("pwa_url",),
        }[self.pwa_auth]
        _require(self, purpose, *needed)
        if self.pwa_auth == "sharepoint_onprem" and not self.uses_host_kerberos:
            _require(self, purpose, "pwa_username", "pwa_password")
        if urlsplit(self.pwa_url or "").scheme == "http" and not self.pwa_allow_http:
            raise ConfigError(
                "PWASYNC_PWA_URL must be https://: over http the sign-in and the plans cross the "
                "network in clear (set PWASYNC_PWA_ALLOW_HTTP=true for a lab only)"
            )

    def require_receiver(self) -> None:
        """Raise ConfigError unless the publish receiver can tell its callers apart."""
        secret = self.receiver_secret.get_secret_value() if self.receiver_secret else ""
        if len(secret) < 16 or not _URL_SEGMENT.match(secret):
            raise ConfigError(
                "PWASYNC_RECEIVER_SECRET is required for the publish receiver: at least 16 "
                "characters of A-Z, a-z, 0-9, '-', '_' or '.' (it is a URL path segment; "
                "for example `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )

    def require_event_registration(self) -> None:
        """``pwasync events``: the PWA, the receiver's secret and the URL the farm calls."""
        self.require_pwa()
        self.require_receiver()
        _require(self, "to register the publish receiver", "receiver_url")
        if urlsplit(self.receiver_url or "").scheme not in ("http", "https"):
            raise ConfigError("PWASYNC_RECEIVER_URL must be an http(s):// URL")

    @property
    def planner_plan_ids(self) -> list[str]:
        return _id_list(self.planner_plans)

    @property
    def planner_group_ids(self) -> list[str]:
        return _id_list(self.planner_groups)

    def require_planner(self) -> None:
        """Raise ConfigError unless basic Planner plans to read are named."""
        if not self.planner_plan_ids and not self.planner_group_ids:
            raise ConfigError(
                "PWASYNC_PLANNER_PLANS or PWASYNC_PLANNER_GROUPS is required to read basic "
                "Planner plans (PWASYNC_SOURCE=planner): plan ids, or ids of the groups whose "
                "every plan is synced, comma-separated"
            )
        # The poller signs in to Graph as the writer's app (give it that app's credential).
        self.require_graph("to read basic Planner plans through Graph")

    def require_graph(self, purpose: str = "to write Outlook events") -> None:
        """Raise ConfigError unless the settings of the Graph app (``purpose``) are present."""
        _require(self, purpose, "tenant_id", "graph_client_id")
        if self.graph_client_secret is None and self.graph_client_cert is None:
            raise ConfigError(
                f"PWASYNC_GRAPH_CLIENT_SECRET or PWASYNC_GRAPH_CLIENT_CERT is required {purpose}"
            )
        if self.graph_client_cert is not None:
            _require(self, purpose, "graph_client_cert_thumbprint")

    def require_dataverse(self) -> None:
        """Raise ConfigError unless the Planner premium environment can be read: its URL, the
        tenant, and an app (its own, or the Graph app's) with a credential."""
        purpose = "to read Planner premium plans (PWASYNC_SOURCE=dataverse)"
        _require(self, purpose, "dataverse_url", "tenant_id")
        if self.dataverse_client_id is None:
            purpose += " without PWASYNC_DATAVERSE_CLIENT_ID (the Graph app signs in)"
            _require(self, purpose, "graph_client_id")
            if self.graph_client_secret is None and self.graph_client_cert is None:
                credential = "PWASYNC_GRAPH_CLIENT_SECRET or PWASYNC_GRAPH_CLIENT_CERT"
                raise ConfigError(f"{credential} is required {purpose}")
            return
        if self.dataverse_client_secret is None and self.dataverse_client_cert is None:
            raise ConfigError(
                "PWASYNC_DATAVERSE_CLIENT_SECRET or PWASYNC_DATAVERSE_CLIENT_CERT is required "
                "with PWASYNC_DATAVERSE_CLIENT_ID"
            )
        if self.dataverse_client_cert is not None:
            _require(self, purpose, "dataverse_client_cert_thumbprint")

    @property
    def dataverse_scope(self) -> str:
        """The app-only scope of the environment: ``{environment}/.default``."""
        return f"{self.dataverse_url}/.default"


_URL_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")


def _id_list(value: str) -> list[str]:
    """Comma-separated ids, in order, once each (Planner's ids are case-sensitive)."""
    ids = [part.strip() for part in value.split(",")]
    return list(dict.fromkeys(part for part in ids if part))


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings, turning every validation failure into one ConfigError line."""
    kwargs: dict[str, Any] = {}
    if environ is not None:
        # Explicit mapping (tests): do not read the process environment or a .env file.
        kwargs = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in environ.items()
            if key.startswith(ENV_PREFIX)
        }
        kwargs.update(secret_file_values(environ))
        kwargs["_env_file"] = None
    try:
        if environ is not None:
            return _ExplicitSettings(**kwargs)
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """``PWASYNC_*`` names in the environment that no setting reads (typos, usually)."""
    environ = dict(os.environ) if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    known |= {ENV_PREFIX + name.upper() + FILE_SUFFIX for name in SECRET_SETTINGS}
    return sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in known
        and name not in _KNOWN_NON_SETTINGS
        and not name.startswith(_KNOWN_NON_SETTING_PREFIXES)
    )


class _ExplicitSettings(Settings):
    """Settings built from keyword arguments only (no environment, no .env file)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *args, **kwargs):  # noqa: ANN001
        return (init_settings,)


def _require(settings: Settings, purpose: str, *names: str) -> None:
    missing = [ENV_PREFIX + n.upper() for n in names if getattr(settings, n) in (None, "")]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"{', '.join(missing)} {verb} required {purpose}")


def _readable(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError("names no readable file")
    return path


def _require_url(value: str, schemes: tuple[str, ...], what: str) -> None:
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(f"must be {what}") from None
    if parts.scheme not in schemes or (parts.scheme != "unix" and not parts.hostname):
        raise ValueError(f"must be {what}")


def _describe(exc: ValidationError) -> str:
    """One line naming each bad variable and why, without echoing any value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across settings names its variables itself
            problems.append(message)
            continue
        problems.append(f"{ENV_PREFIX}{str(error['loc'][0]).upper()}: {message}")
    return "; ".join(problems)


# --- secrets from files ----------------------------------------------------------------------

#: ``PWASYNC_<NAME>_FILE`` names a file holding the value of the secret setting ``NAME``: the
#: Docker and Kubernetes secrets convention, so a secret need not sit in the environment (where
#: ``docker inspect``, ``/proc/PID/environ`` and every child process can read it).
FILE_SUFFIX = "_FILE"

#: The secret settings (every ``SecretStr`` field): each also accepts ``NAME_FILE``. Derived
#: from the model, so a secret added later is covered without being listed here.
SECRET_SETTINGS: tuple[str, ...] = tuple(
    name
    for name, info in Settings.model_fields.items()
    if info.annotation is SecretStr or SecretStr in getattr(info.annotation, "__args__", ())
)


def secret_file_values(environ: dict[str, str]) -> dict[str, str]:
    """The secret settings that ``environ`` gives as ``NAME_FILE``, read from their files.

    One trailing line break is dropped (``echo value > file`` adds it; a Kubernetes Secret made
    from such a file keeps it). A non-empty NAME beside NAME_FILE is refused rather than one
    silently winning. Errors name the variable, never the file's content.
    """
    values = {}
    for name in SECRET_SETTINGS:
        variable = ENV_PREFIX + name.upper()
        path = environ.get(variable + FILE_SUFFIX)
        if path is None:
            continue
        if environ.get(variable):  # empty is unset, as for every secret
            raise ConfigError(f"{variable} and {variable}{FILE_SUFFIX} are both set; set one")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"{variable}{FILE_SUFFIX}: names no readable file") from None
        values[name] = text.removesuffix("\n").removesuffix("\r")
    return values


class _SecretFilesSource(PydanticBaseSettingsSource):
    """pydantic-settings source for ``NAME_FILE``, from the environment and the ``.env`` file."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every secret at once

    def __call__(self) -> dict[str, Any]:
        env_file = self.config.get("env_file")
        environ: dict[str, str] = {}
        if isinstance(env_file, str) and Path(env_file).is_file():
            dotenv = dotenv_values(env_file, encoding=self.config.get("env_file_encoding"))
            environ.update({k: v for k, v in dotenv.items() if v is not None})
        environ.update(os.environ)
        return secret_file_values(environ)
