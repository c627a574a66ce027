"""Sign-in through MSAL: delegated tokens for Project Online, app-only tokens for Graph.

Project Online cannot be called with app-only tokens (reference page, section 0), so the PWA
side signs in as a user; Graph calendar writes use the application permission
Calendars.ReadWrite with a client secret or certificate.

MSAL is given our own ``http_client`` (``MsalHttp``) so that sign-in uses the same TLS trust as
everything else, has bounded retries on transport failures (with a custom client MSAL does not
retry), and so that MSAL's user-realm discovery reaches an authority host that listens on a
non-default port: MSAL builds that URL from the host name alone and drops the port.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import msal

from common import metrics
from common.errors import AuthenticationError, ConfigError, RetryableApiError
from common.http import transport_errors
from common.logging import get_logger
from common.settings import Settings

log = get_logger(__name__)


#: Entra error codes an operator can act on, turned into one clear line each.
_AADSTS_HINTS = {
    50126: "wrong user name or password",
    50076: "the account requires multi-factor authentication, which the password grant cannot "
    "do; use PWASYNC_PWA_AUTH=oauth or exempt this service account from MFA",
    50079: "the account must register for multi-factor authentication; use "
    "PWASYNC_PWA_AUTH=oauth or exempt this service account from MFA",
    50053: "the account is locked (too many failed sign-ins) or sign-in is blocked",
    50057: "the account is disabled",
    50034: "the user does not exist in this tenant",
    50055: "the password has expired",
    700016: "the application (client id) is not registered in this tenant",
    7000215: "the client secret is wrong or has expired",
    7000222: "the client secret has expired",
    700027: "the app's certificate was refused: none with PWASYNC_*_CLIENT_CERT_THUMBPRINT is "
    "registered for the app, the key file is not that certificate's, or it expired (compare "
    "both with the app's Certificates & secrets)",
    700024: "the signed client assertion is outside its valid time: check this host's clock",
    50173: "the stored sign-in was revoked (password change or an administrator's revocation)",
    700082: "the stored sign-in expired after a long time unused",
    70043: "the stored sign-in expired under a conditional-access sign-in frequency policy",
    9002313: "the stored refresh token is not valid",
    65001: "an administrator has not consented to the application's permissions",
    70011: "the requested scope is not valid for this application",
    90002: "the tenant does not exist",
}
_RETRYABLE_OAUTH_ERRORS = {"temporarily_unavailable", "server_error"}


class TokenSource(Protocol):
    """Hands out a bearer token; ``invalidate`` forgets one the resource server refused."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


class MsalHttp:
    """The ``http_client`` MSAL calls (see the module docstring for why it exists)."""

    def __init__(self, client: httpx.Client, authority_host: str, *, attempts: int = 3) -> None:
        self._client = client
        authority = urlsplit(authority_host)
        self._authority_hostname = authority.hostname
        self._authority_netloc = authority.netloc
        self._has_explicit_port = authority.port not in (None, 443)
        self._attempts = attempts

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any):
        return self._send("GET", url, params=params, headers=headers, **kwargs)

    def post(self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kw: Any):
        return self._send("POST", url, params=params, data=data, headers=headers, **kw)

    def _route(self, url: str) -> str:
        parts = urlsplit(url)
        if (
            self._has_explicit_port
            and parts.hostname == self._authority_hostname
            and parts.port is None
        ):
            return urlunsplit(parts._replace(netloc=self._authority_netloc))
        return url

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.pop("timeout", None)  # our client's timeouts apply
        data = kwargs.pop("data", None)
        if isinstance(data, dict):
            # MSAL hands the signed client assertion (certificate sign-in) over as bytes;
            # requests sends those as they are, httpx would send their repr ("b'eyJ…'"), which
            # Entra refuses as a malformed JWT (AADSTS50027).
            kwargs["data"] = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        elif data is not None:
            kwargs["content"] = data
        url = self._route(url)
        for attempt in range(1, self._attempts + 1):
            try:
                with transport_errors("sign-in service"):
                    return self._client.request(method, url, **kwargs)
            except RetryableApiError:
                if attempt == self._attempts:
                    raise
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")


def authority_url(settings: Settings, tenant: str) -> str:
    return f"{settings.authority_host}/{tenant}"


def _instance_discovery(settings: Settings) -> bool | None:
    # MSAL would validate any other host against login.microsoftonline.com, which knows no
    # emulator or proxy; Settings admits such a host only when PWASYNC_AUTHORITY_HOST_TRUSTED
    # says so, and then the check is skipped (reference page, section 6).
    return None if settings.authority_is_microsofts else False


def sign_in_error(result: dict[str, Any], what: str) -> Exception:
    """Translate an MSAL error result into one clear line (never including a secret)."""
    error = str(result.get("error", "unknown_error"))
    codes = result.get("error_codes") or []
    description = str(result.get("error_description", "")).splitlines()[0:1]
    hint = next((_AADSTS_HINTS[c] for c in codes if c in _AADSTS_HINTS), None)
    code_text = f" (AADSTS{codes[0]})" if codes else ""
    text = hint or (description[0] if description else error)
    message = f"{what} sign-in failed{code_text}: {text}"
    if error in _RETRYABLE_OAUTH_ERRORS:
        return RetryableApiError(message, code=error)
    return AuthenticationError(message)


class GraphAppTokens:
    """App-only tokens for Graph (client credentials with a secret or a certificate)."""

    def __init__(self, settings: Settings, http: httpx.Client) -> None:
        settings.require_graph()
        self._settings = settings
        self._http = MsalHttp(http, settings.authority_host)
        self._lock = threading.Lock()
        self._app = self._new_app()

    def _credential(self) -> str | dict[str, str]:
        if self._settings.graph_client_cert is not None:
            return {
                "private_key": _read_pem(self._settings.graph_client_cert),
                "thumbprint": str(self._settings.graph_client_cert_thumbprint),
            }
        assert self._settings.graph_client_secret is not None
        return self._settings.graph_client_secret.get_secret_value()

    def _new_app(self) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            self._settings.graph_client_id,
            client_credential=self._credential(),
            authority=authority_url(self._settings, str(self._settings.tenant_id)),
            http_client=self._http,
            instance_discovery=_instance_discovery(self._settings),
        )

    def token(self) -> str:
        with self._lock:
            result = self._app.acquire_token_for_client(scopes=[self._settings.graph_scope])
        if result and "access_token" in result:
            return str(result["access_token"])
        raise sign_in_error(result or {}, "Graph (app-only)")

    def invalidate(self) -> None:
        # MSAL would hand the refused token out again until it expires; a new app has an empty
        # cache and fetches a fresh one.
        with self._lock:
            self._app = self._new_app()


class PwaPasswordTokens:
    """Delegated Project Online tokens with the OAuth password grant (``sharepoint_online``)."""

    def __init__(self, settings: Settings, http: httpx.Client) -> None:
        settings.require_pwa()
        assert settings.pwa_url and settings.pwa_username and settings.pwa_password
        self._username = settings.pwa_username
        self._password = settings.pwa_password
        origin = urlsplit(settings.pwa_url)
        self._scopes = [f"{origin.scheme}://{origin.netloc}/.default"]
        self._lock = threading.Lock()
        self._app = pwa_public_client(settings, http)

    def token(self) -> str:
        with self._lock:
            result = self._silent() or self._with_password()
        if result and "access_token" in result:
            return str(result["access_token"])
        raise sign_in_error(result or {}, f"Project Online ({self._username})")

    def invalidate(self) -> None:
        with self._lock:
            for account in self._app.get_accounts(username=self._username):
                self._app.remove_account(account)

    def _silent(self) -> dict[str, Any] | None:
        accounts = self._app.get_accounts(username=self._username)
        if not accounts:
            return None
        return self._app.acquire_token_silent(self._scopes, account=accounts[0])

    def _with_password(self) -> dict[str, Any]:
        with warnings.catch_warnings():
            # MSAL warns that the password grant is deprecated for public clients; the README
            # says so once, and PWASYNC_PWA_AUTH=oauth is the durable choice.
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._app.acquire_token_by_username_password(
                self._username, self._password.get_secret_value(), scopes=self._scopes
            )


#: Errors of a stored (device-code) sign-in that only a new ``pwasync connect`` can fix.
RECONNECT = "run `pwasync connect` to sign in again"


class PwaStoredTokens:
    """Delegated Project Online tokens from the operator's stored sign-in (``oauth``).

    ``pwasync connect`` signed the operator in once with the device-code flow and stored MSAL's
    token cache, encrypted, in Redis (``TokenCacheStore``). Every process refreshes silently
    from it, writes it back when MSAL changed it (a new access or refresh token), and re-reads
    it when another process (or a new ``connect``) changed it. A refresh token that is gone,
    revoked or expired ends in one AuthenticationError line saying to run ``pwasync connect``.
    """

    def __init__(self, settings: Settings, http: httpx.Client, store: Any) -> None:
        settings.require_pwa()
        assert settings.pwa_url
        self._scopes = self.scopes_for(settings.pwa_url)
        self._store = store
        self._stored: str | None = None
        self._force_refresh = False
        self._lock = threading.Lock()
        self._cache = msal.SerializableTokenCache()
        self._app = pwa_public_client(settings, http, self._cache)

    @staticmethod
    def scopes_for(pwa_url: str) -> list[str]:
        """SharePoint's delegated ``.default`` scope: the site's origin (its resource URI)."""
        origin = urlsplit(pwa_url)
        return [f"{origin.scheme}://{origin.netloc}/.default"]

    def token(self) -> str:
        """An access token; every outcome is counted for the "run pwasync connect" alert."""
        try:
            token = self._token()
        except (AuthenticationError, ConfigError) as exc:
            # Gone, revoked or expired, or a stored sign-in the key cannot read (token_cache).
            outcome = "reconnect_required" if "pwasync connect" in str(exc) else "failed"
            metrics.PWA_SIGN_INS.labels(outcome).inc()
            raise
        except Exception:
            metrics.PWA_SIGN_INS.labels("failed").inc()
            raise
        metrics.PWA_SIGN_INS.labels("ok").inc()
        return token

    def _token(self) -> str:
        with self._lock:
            self._reload()
            accounts = self._app.get_accounts()
            if not accounts:
                raise AuthenticationError(f"Project Online: nobody is signed in; {RECONNECT}")
            result = self._app.acquire_token_silent_with_error(
                self._scopes, account=accounts[0], force_refresh=self._force_refresh
            )
            self._force_refresh = False
            if self._cache.has_state_changed:
                self._stored = self._store.save(self._cache.serialize())
        who = accounts[0].get("username") or "the stored account"
        if result and "access_token" in result:
            return str(result["access_token"])
        if not result:
            raise AuthenticationError(
                f"Project Online ({who}): the stored sign-in holds no refresh token; {RECONNECT}"
            )
        error = sign_in_error(result, f"Project Online ({who})")
        if isinstance(error, AuthenticationError):
            raise AuthenticationError(f"{error}; {RECONNECT}")
        raise error

    def invalidate(self) -> None:
        # The resource refused the access token: the next call refreshes instead of reusing it.
        with self._lock:
            self._force_refresh = True

    def _reload(self) -> None:
        envelope = self._store.load_raw()
        if envelope != self._stored:
            self._cache.deserialize(self._store.decrypt(envelope) if envelope else None)
            self._stored = envelope


def pwa_public_client(
    settings: Settings, http: httpx.Client, cache: msal.TokenCache | None = None
) -> msal.PublicClientApplication:
    """The Entra public client the PWA side signs in with (``PWASYNC_PWA_CLIENT_ID``)."""
    return msal.PublicClientApplication(
        settings.pwa_client_id,
        authority=authority_url(settings, settings.tenant_id or "organizations"),
        http_client=MsalHttp(http, settings.authority_host),
        instance_discovery=_instance_discovery(settings),
        token_cache=cache,
    )


def _read_pem(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"PWASYNC_GRAPH_CLIENT_CERT: cannot read the file ({exc.strerror})"
        ) from None
