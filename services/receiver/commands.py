"""``pwasync events register | list | unregister`` and the receiver's lines of ``check``.

Each command returns the lines to print and whether it succeeded, like the poller's commands.
Register also stores the PWA's site collection id in Redis, where the receiver reads it to
refuse calls from another site.
"""

from __future__ import annotations

from common.errors import PermanentApiError, PwasyncError
from common.http import new_http_client
from common.redis_store import Keys, connect_redis_for, redis_errors
from common.settings import Settings
from services.poller.connection import open_pwa, redis_if_needed
from services.poller.pwa_check import CheckLine
from services.poller.pwa_http import PwaHttp
from services.receiver.registration import (
    ServerEvents,
    endpoint_url,
    ours,
    register,
    shown_url,
    unregister,
)

PERMISSION_EVENTS = "Manage Server Events"


def events_command(settings: Settings, action: str) -> tuple[list[str], bool]:
    if action == "list":
        settings.require_pwa()
    else:
        settings.require_event_registration()
    with new_http_client(
        ca_bundle=settings.ca_bundle, timeout=settings.http_timeout_seconds
    ) as http:
        events = ServerEvents(open_pwa(settings, http, redis_if_needed(settings)))
        try:
            return _run(settings, events, action)
        except PermanentApiError as exc:
            if exc.status == 403:
                raise PermanentApiError(
                    f"{exc} (the account needs the global permission {PERMISSION_EVENTS!r})"
                ) from None
            raise


def _run(settings: Settings, events: ServerEvents, action: str) -> tuple[list[str], bool]:
    scenario = settings.scenario
    if action == "list":
        handlers = ours(events, scenario)
        if not handlers:
            return [f"no pwasync handler registered for scenario {scenario}"], True
        return [
            f"{h.name}: {shown_url(h.endpoint_url)} (event {h.event_id}, order {h.order}, "
            f"id {h.id})"
            for h in handlers
        ], True
    if action == "unregister":
        removed = unregister(events, scenario)
        if not removed:
            return [f"no pwasync handler registered for scenario {scenario}; nothing removed"], True
        return [f"removed {h.name} (id {h.id})" for h in removed], True
    assert settings.receiver_url and settings.receiver_secret
    url = endpoint_url(settings.receiver_url, settings.receiver_secret.get_secret_value())
    done = register(events, scenario=scenario, url=url)
    _store_site_id(settings, str(events.site_id()))
    return [
        f"{done.action}: handler {done.handler_id} calls {shown_url(url)} on "
        f"{done.event.source} {done.event.name} (event {done.event.id})"
    ], True


def _store_site_id(settings: Settings, site_id: str) -> None:
    url = settings.redis_url.get_secret_value()
    client = connect_redis_for(settings)
    try:
        with redis_errors(url):
            client.set(Keys(settings.scenario).receiver_site, site_id)
    finally:
        client.close()


def receiver_lines(settings: Settings, pwa: PwaHttp) -> list[CheckLine]:
    """``check``: whether our handler is registered, and whether the account may manage it."""
    name = "publish receiver"
    if not settings.receiver_url:
        return [
            CheckLine(name, True, "not configured (PWASYNC_RECEIVER_URL): changes wait for a poll")
        ]
    events = ServerEvents(pwa)
    try:
        handlers = ours(events, settings.scenario)
    except PermanentApiError as exc:
        if exc.status == 403:
            return [
                CheckLine(
                    name,
                    False,
                    f"cannot read the server's event handlers: grant the account the global "
                    f"permission {PERMISSION_EVENTS!r} to register the receiver",
                )
            ]
        return [CheckLine(name, False, str(exc))]
    except PwasyncError as exc:
        return [CheckLine(name, False, str(exc))]
    permission = CheckLine(
        f"permission {PERMISSION_EVENTS!r}",
        True,
        "the account reads the server's event handlers (which needs it)",
    )
    secret = settings.receiver_secret.get_secret_value() if settings.receiver_secret else ""
    wanted = endpoint_url(settings.receiver_url, secret)
    if any(h.endpoint_url == wanted for h in handlers):
        return [permission, CheckLine(name, True, f"registered: {shown_url(wanted)}")]
    detail = (
        f"registered for another URL ({', '.join(shown_url(h.endpoint_url) for h in handlers)})"
        if handlers
        else "not registered"
    )
    return [permission, CheckLine(name, False, f"{detail}: run `pwasync events register`")]
