"""Microsoft Entra ID's v2.0 endpoints, as far as MSAL Python's flows need them.

Implemented: OpenID discovery, user-realm discovery (MSAL's step before a password grant), the
device authorization endpoint, and the token endpoint's ``password``, ``client_credentials``,
``refresh_token`` and device-code grants. A confidential client authenticates with its secret or
a certificate (a ``client_assertion`` JWT, sandbox/client_assertion.py). A pending device code
is approved (or declined) through the control surface, standing in for the user's browser; a
user's refresh tokens can be revoked there too. Error bodies copy Entra's: ``error``,
``error_description`` starting with the AADSTS code, ``error_codes``, ``timestamp``,
``trace_id``, ``correlation_id`` and ``error_uri``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.client_assertion import JWT_BEARER, AssertionRefused, verify_client_assertion
from sandbox.context import GRAPH_RESOURCE, DeviceCode, RefreshGrant, Sandbox
from sandbox.state import AppRegistration, User, deterministic_id
from sandbox.tokens import b64url_encode, unsigned_jwt

OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


class EntraError(Exception):
    def __init__(
        self, error: str, code: int, description: str, status: int = 400, **extra: str
    ) -> None:
        super().__init__(description)
        self.error, self.code, self.description, self.status = error, code, description, status
        self.extra = extra

    def response(self, origin: str) -> JSONResponse:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = datetime.now(UTC)
        body = {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.code}: {self.description} Trace ID: {trace_id} "
                f"Correlation ID: {correlation_id} Timestamp: {now:%Y-%m-%d %H:%M:%SZ}"
            ),
            "error_codes": [self.code],
            "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{origin}/error?code={self.code}",
            **self.extra,
        }
        return JSONResponse(body, status_code=self.status, headers=NO_STORE)


def _sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


# ---------------------------------------------------------------------------------------------
# Discovery


async def openid_configuration(request: Request) -> Response:
    sandbox = _sandbox(request)
    tenant = sandbox.tenant
    name = request.path_params["tenant"]
    if not tenant.accepts_tenant(name):
        return _unknown_tenant(name).response(sandbox.origin)
    alias = name.lower() in ("organizations", "common")
    segment = name.lower() if alias else tenant.id
    base = f"{sandbox.origin}/{segment}"
    return JSONResponse(
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{sandbox.origin}/{'{tenantid}' if alias else tenant.id}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{GRAPH_RESOURCE}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }
    )


async def signing_keys(request: Request) -> Response:
    # The sandbox signs with a symmetric key it never publishes; clients must not verify.
    return JSONResponse({"keys": []})


async def user_realm(request: Request) -> Response:
    tenant = _sandbox(request).tenant
    domain = request.path_params["user"].rpartition("@")[2].lower()
    if domain != tenant.domain.lower():
        return JSONResponse(
            {"ver": "1.0", "account_type": "Unknown", "cloud_instance_name": "microsoftonline.com"}
        )
    return JSONResponse(
        {
            "ver": "1.0",
            "account_type": "Managed",
            "domain_name": tenant.domain,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_audience_urn": "urn:federation:MicrosoftOnline",
        }
    )


# ---------------------------------------------------------------------------------------------
# Token endpoint


@dataclass(frozen=True)
class ResourceScope:
    key: str  # "pwa" or "graph"
    uri: str
    permissions: tuple[str, ...]  # ("",) for .default
    oidc: frozenset[str]

    @property
    def is_default(self) -> bool:
        return self.permissions == (".default",)


async def token(request: Request) -> Response:
    sandbox = _sandbox(request)
    form = await _form(request)
    grant_type = str(form.get("grant_type", ""))
    try:
        if not sandbox.tenant.accepts_tenant(request.path_params["tenant"]):
            raise _unknown_tenant(request.path_params["tenant"])
        body = _issue(sandbox, request, form, grant_type)
    except EntraError as error:
        sandbox.stats.token_response(grant_type or "none", error.error)
        return error.response(sandbox.origin)
    sandbox.stats.token_response(grant_type, None)
    return JSONResponse(body, headers=NO_STORE)


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body; Entra reads nothing from other content types."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


def _issue(
    sandbox: Sandbox, request: Request, form: dict[str, Any], grant_type: str
) -> dict[str, Any]:
    if not grant_type:
        raise EntraError(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        )
    app = _authenticate_client(sandbox, request, form)
    if grant_type == "password":
        return _password_grant(sandbox, app, form)
    if grant_type == "client_credentials":
        return _client_credentials_grant(sandbox, app, form)
    if grant_type == "refresh_token":
        return _refresh_token_grant(sandbox, app, form)
    if grant_type == DEVICE_CODE_GRANT:
        return _device_code_grant(sandbox, app, form)
    raise EntraError(
        "unsupported_grant_type",
        70003,
        f"The app requested an unsupported grant type '{grant_type}'.",
    )


def _authenticate_client(
    sandbox: Sandbox, request: Request, form: dict[str, Any]
) -> AppRegistration:
    client_id, secret = str(form.get("client_id", "")), form.get("client_secret")
    basic = request.headers.get("authorization", "")
    if basic.lower().startswith("basic "):  # RFC 6749 2.3.1, also accepted by Entra
        decoded = base64.b64decode(basic[6:]).decode()
        client_id, _, secret = decoded.partition(":")
    if not client_id:
        raise EntraError(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    app = sandbox.tenant.apps.get(client_id.lower())
    if app is None:
        raise EntraError(
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{sandbox.tenant.display_name}'. This can happen if the application has not been "
            "installed by the administrator of the tenant or consented to by any user in the "
            "tenant. You may have sent your authentication request to the wrong tenant.",
        )
    assertion = form.get("client_assertion")
    if app.is_public and (secret or assertion):
        raise EntraError(
            "invalid_client",
            700025,
            "Client is public so neither "
            "'client_assertion' nor 'client_secret' should be presented.",
            401,
        )
    if app.is_public:
        return app
    if assertion and secret:
        raise EntraError(
            "invalid_request",
            50027,
            "Invalid request: present either 'client_assertion' or 'client_secret', not both.",
        )
    if assertion:
        _authenticate_by_certificate(sandbox, request, form, app)
        return app
    if not secret:
        raise _client_credentials_missing()
    if not secrets.compare_digest(str(secret), app.secret or ""):
        raise EntraError(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            f"client secret value, not the client secret ID, for a secret added to app "
            f"'{app.client_id}'.",
            401,
        )
    return app


def _authenticate_by_certificate(
    sandbox: Sandbox, request: Request, form: dict[str, Any], app: AppRegistration
) -> None:
    assertion_type = str(form.get("client_assertion_type", ""))
    if assertion_type != JWT_BEARER:
        raise EntraError(
            "invalid_request",
            50027,
            f"Invalid client_assertion_type '{assertion_type}': a certificate credential is "
            f"sent as '{JWT_BEARER}'.",
        )
    try:
        verify_client_assertion(
            str(form["client_assertion"]),
            app.client_id,
            app.certificates,
            _token_endpoints(sandbox, request.path_params["tenant"]),
            time.time(),
        )
    except AssertionRefused as refused:
        raise EntraError("invalid_client", refused.code, refused.description, 401) from None


def _token_endpoints(sandbox: Sandbox, segment: str) -> set[str]:
    """What a client assertion's ``aud`` may be: the token endpoint (v2.0 or v1) under the
    tenant's id, its domain or the segment the request used [U: Entra's exact list]."""
    tenants = {segment, sandbox.tenant.id, sandbox.tenant.domain}
    return {
        f"{sandbox.origin}/{tenant}/{path}".lower()
        for tenant in tenants
        for path in ("oauth2/v2.0/token", "oauth2/token")
    }


def _parse_scope(sandbox: Sandbox, raw: str) -> ResourceScope:
    requested = raw.split()
    oidc = frozenset(s for s in requested if s in OIDC_SCOPES)
    resources: dict[str, list[str]] = {}
    for scope in (s for s in requested if s not in OIDC_SCOPES):
        if "/" not in scope:  # a bare permission name means Microsoft Graph
            scope = f"{GRAPH_RESOURCE}/{scope}"
        uri, _, permission = scope.rpartition("/")
        resources.setdefault(uri.rstrip("/"), []).append(permission)
    if len(resources) > 1:
        raise EntraError(
            "invalid_scope",
            28000,
            "Provided value for the input parameter scope "
            "is not valid because it contains more than one resource. Scope "
            f"{raw} is not valid.",
        )
    if not resources:
        raise EntraError(
            "invalid_scope",
            70011,
            "The provided value for the input parameter "
            f"'scope' is not valid. The scope '{raw}' does not name a resource.",
        )
    uri, permissions = next(iter(resources.items()))
    keys = {sandbox.origin: "pwa", GRAPH_RESOURCE: "graph", sandbox.dataverse_url: "dataverse"}
    if uri not in keys:
        raise EntraError(
            "invalid_resource",
            500011,
            f"The resource principal named {uri} was not found in the tenant named "
            f"{sandbox.tenant.display_name}. This can happen if the application has not been "
            "installed by the administrator of the tenant or consented to by any user in the "
            "tenant. You might have sent your authentication request to the wrong tenant.",
        )
    if ".default" in permissions and len(permissions) > 1 or "" in permissions:
        raise EntraError(
            "invalid_scope",
            70011,
            "The provided value for the input parameter "
            f"'scope' is not valid. The scope '{raw}' is not valid.",
        )
    return ResourceScope(keys[uri], uri, tuple(permissions), oidc)


def _password_grant(sandbox: Sandbox, app: AppRegistration, form: dict[str, Any]) -> dict:
    scope = _parse_scope(sandbox, str(form.get("scope", "")))
    granted = _delegated_permissions(app, scope)
    user = sandbox.tenant.user(str(form.get("username", "")))
    if user is None:
        raise EntraError(
            "invalid_grant",
            50034,
            "The user account {EUII Hidden} does not exist "
            f"in the {sandbox.tenant.domain} directory. To sign into this "
            "application, the account must be added to the directory.",
        )
    _check_sign_in(user)
    if not secrets.compare_digest(str(form.get("password", "")), user.password):
        raise EntraError(
            "invalid_grant",
            50126,
            "Error validating credentials due to invalid username or password.",
        )
    if user.password_expired:
        raise EntraError(
            "invalid_grant",
            50055,
            "The password is expired.",
            suberror="user_password_expired",
        )
    if user.mfa_required:
        raise EntraError(
            "invalid_grant",
            50076,
            "Due to a configuration change made by your administrator, or because you moved to "
            "a new location, you must use multi-factor authentication to access "
            f"'{scope.uri}'.",
            suberror="basic_action",
        )
    return _user_tokens(sandbox, app, user, scope, granted, form)


def _check_sign_in(user: User) -> None:
    if user.locked:
        raise EntraError(
            "invalid_grant",
            50053,
            "The account is locked, you've tried to sign in "
            "too many times with an incorrect user ID or password.",
        )


def _delegated_permissions(app: AppRegistration, scope: ResourceScope) -> list[str]:
    granted = app.delegated.get(scope.key, [])
    missing = [p for p in scope.permissions if p != ".default" and p not in granted]
    if missing or not granted:
        raise EntraError(
            "invalid_grant",
            65001,
            f"The user or administrator has not consented to use the application with ID "
            f"'{app.client_id}' named '{app.display_name}'. Send an interactive authorization "
            "request for this user and resource.",
            suberror="consent_required",
        )
    return granted if scope.is_default else list(scope.permissions)


def _client_credentials_grant(sandbox: Sandbox, app: AppRegistration, form: dict[str, Any]) -> dict:
    raw = str(form.get("scope", ""))
    scope = _parse_scope(sandbox, raw)
    if not scope.is_default or scope.oidc:
        raise EntraError(
            "invalid_scope",
            1002012,
            f"The provided value for scope {raw} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    lifetime = sandbox.config.token_lifetime_s
    claims = _base_claims(sandbox, app, scope.uri, lifetime)
    claims.update(
        oid=deterministic_id(app.client_id, "service-principal"),
        sub=deterministic_id(app.client_id, "service-principal"),
        idtyp="app",
    )
    roles = app.application.get(scope.key, [])
    if roles:
        claims["roles"] = roles
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": sandbox.signer.mint(claims),
    }


def _refresh_token_grant(sandbox: Sandbox, app: AppRegistration, form: dict[str, Any]) -> dict:
    if str(form.get("refresh_token", "")) in sandbox.revoked_refresh_tokens:
        raise EntraError(
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being "
            "revoked, a fresh auth token is needed. The user might have changed or "
            "reset their password.",
        )
    grant = sandbox.refresh_grants.get(str(form.get("refresh_token", "")))
    if grant is None or grant.client_id != app.client_id:
        raise EntraError(
            "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
        )
    scope = _parse_scope(sandbox, str(form.get("scope", "")))
    granted = _delegated_permissions(app, scope)
    user = sandbox.tenant.user(grant.upn)
    if user is None:
        raise EntraError(
            "invalid_grant",
            50034,
            "The user account {EUII Hidden} does not exist "
            f"in the {sandbox.tenant.domain} directory.",
        )
    _check_sign_in(user)
    return _user_tokens(sandbox, app, user, scope, granted, form)


# ---------------------------------------------------------------------------------------------
# Device code (RFC 8628)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_CODE_LIFETIME_S = 900
#: Entra says 5 seconds; MSAL waits this long between polls, so the sandbox asks for 1.
DEVICE_CODE_INTERVAL_S = 1
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"


async def device_code(request: Request) -> Response:
    sandbox = _sandbox(request)
    form = await _form(request)
    try:
        if not sandbox.tenant.accepts_tenant(request.path_params["tenant"]):
            raise _unknown_tenant(request.path_params["tenant"])
        app = _authenticate_client(sandbox, request, form)
        if not app.is_public:
            raise _client_credentials_missing()
        raw_scope = str(form.get("scope", ""))
        _delegated_permissions(app, _parse_scope(sandbox, raw_scope))
    except EntraError as error:
        return error.response(sandbox.origin)
    code = DeviceCode(
        device_code=secrets.token_urlsafe(48),
        user_code="".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9)),
        client_id=app.client_id,
        scope=raw_scope,
        expires_at=time.time() + DEVICE_CODE_LIFETIME_S,
    )
    sandbox.device_codes[code.device_code] = code
    verification_uri = f"{sandbox.origin}/devicelogin"
    return JSONResponse(
        {
            "user_code": code.user_code,
            "device_code": code.device_code,
            "verification_uri": verification_uri,
            "expires_in": DEVICE_CODE_LIFETIME_S,
            "interval": DEVICE_CODE_INTERVAL_S,
            "message": "To sign in, use a web browser to open the page "
            f"{verification_uri} and enter the code {code.user_code} to authenticate.",
        },
        headers=NO_STORE,
    )


def _device_code_grant(sandbox: Sandbox, app: AppRegistration, form: dict[str, Any]) -> dict:
    code = sandbox.device_codes.get(str(form.get("device_code", "")))
    if code is None or code.client_id != app.client_id:
        raise EntraError(
            "invalid_grant",
            70000,
            "The provided value for the input parameter 'device_code' is not valid.",
        )
    if time.time() > code.expires_at:
        del sandbox.device_codes[code.device_code]
        raise EntraError(
            "expired_token",
            70020,
            "The provided value for the input parameter "
            "'device_code' is not valid. This device code has expired.",
        )
    if code.declined:
        del sandbox.device_codes[code.device_code]
        raise EntraError(
            "authorization_declined", 70000, "The user has declined to authorize the application."
        )
    if code.approved_upn is None:
        raise EntraError(
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        )
    del sandbox.device_codes[code.device_code]  # a device code is redeemed once
    user = sandbox.tenant.user(code.approved_upn)
    if user is None:
        raise EntraError(
            "invalid_grant",
            50034,
            "The user account {EUII Hidden} does not exist "
            f"in the {sandbox.tenant.domain} directory.",
        )
    _check_sign_in(user)  # MFA is satisfied in the browser; a locked account still fails
    scope = _parse_scope(sandbox, code.scope)
    granted = _delegated_permissions(app, scope)
    return _user_tokens(sandbox, app, user, scope, granted, form)


def approve_device_code(sandbox: Sandbox, user_code: str, upn: str, decline: bool) -> DeviceCode:
    """What the user does in the browser: enter the code, sign in (or decline)."""
    wanted = user_code.replace("-", "").upper()
    code = next((c for c in sandbox.device_codes.values() if c.user_code == wanted), None)
    if code is None:
        raise KeyError(f"no pending device code {user_code}")
    if sandbox.tenant.user(upn) is None:
        raise KeyError(f"no user {upn}")
    code.declined, code.approved_upn = decline, None if decline else upn
    return code


def revoke_sign_ins(sandbox: Sandbox, upn: str) -> int:
    """Revoke every refresh token of a user (as ``Revoke-MgUserSignInSession`` does)."""
    revoked = [
        rt for rt, grant in sandbox.refresh_grants.items() if grant.upn.casefold() == upn.casefold()
    ]
    for refresh_token in revoked:
        del sandbox.refresh_grants[refresh_token]
        sandbox.revoked_refresh_tokens.add(refresh_token)
    return len(revoked)


def _base_claims(
    sandbox: Sandbox, app: AppRegistration, audience: str, lifetime: int
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "aud": audience,
        "iss": f"{sandbox.origin}/{sandbox.tenant.id}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "appid": app.client_id,
        "appidacr": "0" if app.is_public else "1",
        "tid": sandbox.tenant.id,
        "ver": "1.0",
    }


def _user_tokens(
    sandbox: Sandbox,
    app: AppRegistration,
    user: User,
    scope: ResourceScope,
    granted: list[str],
    form: dict[str, Any],
) -> dict[str, Any]:
    lifetime = sandbox.config.token_lifetime_s
    claims = _base_claims(sandbox, app, scope.uri, lifetime)
    claims.update(
        scp=" ".join(granted),
        upn=user.upn,
        unique_name=user.upn,
        name=user.display_name,
        oid=user.id,
        sub=deterministic_id(user.id, app.client_id),
        idtyp="user",
    )
    body: dict[str, Any] = {
        "token_type": "Bearer",
        # Entra answers a .default request with the consented permissions plus .default.
        "scope": " ".join(
            [f"{scope.uri}/{p}" for p in granted]
            + ([f"{scope.uri}/.default"] if scope.is_default else [])
        ),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": sandbox.signer.mint(claims),
    }
    if "offline_access" in scope.oidc:
        refresh_token = secrets.token_urlsafe(64)
        sandbox.refresh_grants[refresh_token] = RefreshGrant(user.upn, app.client_id)
        body["refresh_token"] = refresh_token
    if "openid" in scope.oidc:
        body["id_token"] = _id_token(sandbox, app, user, claims["iat"])
    if str(form.get("client_info", "")) == "1":
        info = {"uid": user.id, "utid": sandbox.tenant.id}
        body["client_info"] = b64url_encode(json.dumps(info).encode())
    return body


def _id_token(sandbox: Sandbox, app: AppRegistration, user: User, now: int) -> str:
    return unsigned_jwt(
        {
            "aud": app.client_id,
            "iss": f"{sandbox.origin}/{sandbox.tenant.id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.upn,
            "sub": deterministic_id(user.id, app.client_id),
            "tid": sandbox.tenant.id,
            "ver": "2.0",
        }
    )


def _client_credentials_missing() -> EntraError:
    """AADSTS7000218, Entra's answer to a confidential client without a secret or assertion."""
    return EntraError(
        "invalid_client",
        7000218,
        "The request body must contain the "
        "following parameter: 'client_assertion' or 'client_secret'.",
        401,
    )


def _unknown_tenant(name: str) -> EntraError:
    return EntraError(
        "invalid_request",
        90002,
        f"Tenant '{name}' not found. Check to make sure "
        "you have the correct tenant ID and are signing into the correct cloud.",
    )


routes = [
    Route("/common/userrealm/{user}", user_realm, methods=["GET"]),
    Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/{tenant}/discovery/v2.0/keys", signing_keys, methods=["GET"]),
    Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
    Route("/{tenant}/oauth2/v2.0/devicecode", device_code, methods=["POST"]),
]
