"""The connection to the PWA site for ``PWASYNC_PWA_AUTH``, and ``pwasync connect``.

- ``oauth``: the operator's delegated sign-in, made once with the device-code flow and kept
  encrypted in Redis (``common.token_cache``); every process refreshes silently from it.
- ``sharepoint_online``: the OAuth password grant of a service account (no MFA possible).
- ``sharepoint_onprem``: Project Server 2016 / 2019 / Subscription Edition with Windows
  authentication (Negotiate or NTLM, with channel binding).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import httpx
import msal
import redis

from common.errors import AuthenticationError
from common.http import new_http_client
from common.identity import PwaPasswordTokens, PwaStoredTokens, pwa_public_client, sign_in_error
from common.redis_store import Keys, connect_redis_for, redis_errors
from common.settings import Settings
from common.token_cache import TokenCacheStore
from services.poller.pwa_auth import BearerAuth, WindowsAuth
from services.poller.pwa_connections import ConnectionLeases
from services.poller.pwa_http import ON_PREMISES, ONLINE, PwaHttp

_DEVICE_FLOW_ENDINGS = {
    "authorization_declined": "the sign-in was declined in the browser",
    "expired_token": "the code expired before anyone entered it; run `pwasync connect` again",
}


def token_store(settings: Settings, client: redis.Redis) -> TokenCacheStore:
    settings.require_pwa()
    assert settings.secret_key is not None
    return TokenCacheStore(
        client,
        Keys(settings.scenario),
        settings.redis_url.get_secret_value(),
        settings.secret_key.get_secret_value(),
    )


def redis_if_needed(settings: Settings) -> redis.Redis | None:
    """Redis for a one-shot command's PWA sign-in: only ``oauth`` keeps it there (checked
    reachable, so the command fails with one line rather than at its first token)."""
    if settings.pwa_auth != "oauth":
        return None
    url = settings.redis_url.get_secret_value()
    client = connect_redis_for(settings)
    with redis_errors(url):
        client.ping()
    return client


def pwa_auth(
    settings: Settings, http: httpx.Client, redis_client: redis.Redis | None = None
) -> httpx.Auth:
    settings.require_pwa()
    if settings.pwa_auth == "sharepoint_onprem":
        password = settings.pwa_password.get_secret_value() if settings.pwa_password else None
        return WindowsAuth(settings.pwa_username, password)
    if settings.pwa_auth == "sharepoint_online":
        return BearerAuth(PwaPasswordTokens(settings, http))
    assert redis_client is not None, "oauth keeps its token cache in Redis"
    return BearerAuth(PwaStoredTokens(settings, http, token_store(settings, redis_client)))


def open_pwa(
    settings: Settings,
    http: httpx.Client,
    redis_client: redis.Redis | None = None,
    *,
    stop: threading.Event | None = None,
) -> PwaHttp:
    """The PWA site's HTTP edge; ``stop`` (a service's stop event) ends its waits early."""
    assert settings.pwa_url is not None
    on_premises = settings.pwa_auth == "sharepoint_onprem"
    return PwaHttp(
        http,
        settings.pwa_url,
        pwa_auth(settings, http, redis_client),
        stop=stop,
        service=ON_PREMISES if on_premises else ONLINE,
        # Windows sign-ins authenticate connections: one connection per request in flight.
        connections=(
            ConnectionLeases(
                partial(
                    new_http_client,
                    ca_bundle=settings.ca_bundle,
                    timeout=settings.http_timeout_seconds,
                    max_connections=1,
                )
            )
            if on_premises
            else None
        ),
    )


def connect(
    settings: Settings,
    http: httpx.Client,
    store: TokenCacheStore,
    *,
    show: Callable[[str], None] = print,
) -> str:
    """Sign an operator in with the device-code flow and store the encrypted token cache.

    Shows Entra's instruction (open the verification page, enter the code), blocks until the
    operator finished in a browser (or the code expired), and returns the signed-in user name.
    The cache starts empty, so it holds exactly this sign-in.
    """
    assert settings.pwa_url is not None
    scopes = PwaStoredTokens.scopes_for(settings.pwa_url)
    cache = msal.SerializableTokenCache()
    app = pwa_public_client(settings, http, cache)
    flow = app.initiate_device_flow(scopes=scopes)
    if "user_code" not in flow:
        raise sign_in_error(flow, "Project Online (device code)")
    show(str(flow.get("message") or f"enter {flow['user_code']} at {flow['verification_uri']}"))
    result = app.acquire_token_by_device_flow(flow)
    if result.get("error") in _DEVICE_FLOW_ENDINGS:
        raise AuthenticationError(
            f"Project Online device sign-in failed: {_DEVICE_FLOW_ENDINGS[result['error']]}"
        )
    if "access_token" not in result:
        raise sign_in_error(result, "Project Online (device code)")
    accounts = app.get_accounts()
    if not accounts:
        raise AuthenticationError("Project Online device sign-in returned no account")
    store.save(cache.serialize())
    return str(accounts[0].get("username") or "?")
