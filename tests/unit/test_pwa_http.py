"""The PWA HTTP edge with httpx's MockTransport: retries, Retry-After, authentication flows."""

import base64
import threading

import httpx
import pytest

from common.errors import AuthenticationError, PermanentApiError, RetryableApiError, Stopping
from services.poller.pwa_auth import BearerAuth, WindowsAuth
from services.poller.pwa_http import PwaHttp

SITE = "https://contoso.sharepoint.com/sites/pwa"


class Tokens:
    def __init__(self):
        self.issued = 0

    def token(self):
        self.issued += 1
        return f"token-{self.issued}"

    def invalidate(self):
        pass


def client(handler):
    return httpx.Client(transport=httpx.MockTransport(handler))


def pwa(handler, auth=None, **options):
    waits = []
    http = PwaHttp(
        client(handler), SITE, auth or BearerAuth(Tokens()), sleep=waits.append, **options
    )
    return http, waits


def test_retry_after_is_honoured_with_upward_jitter_and_a_bounded_number_of_attempts():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(429, headers={"Retry-After": "2"}, json={})

    http, waits = pwa(handler, max_attempts=3)
    with pytest.raises(RetryableApiError) as raised:
        http.get_json(f"{SITE}/_api/ProjectData/Projects")
    assert len(calls) == 3 and len(waits) == 2
    assert all(2.0 <= w <= 2.4 for w in waits)
    assert raised.value.retry_after == 2.0
    assert http.requests_made == 3


def test_a_retry_after_beyond_the_longest_wait_is_left_to_the_ack_policy():
    def handler(request):
        return httpx.Response(503, headers={"Retry-After": "300"}, json={})

    http, waits = pwa(handler, max_wait_seconds=60)
    with pytest.raises(RetryableApiError) as raised:
        http.get_json(f"{SITE}/_api/ProjectData/Projects")
    assert waits == [] and raised.value.retry_after == 300.0


def test_a_throttled_request_succeeds_after_waiting():
    answers = iter(
        [httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(200, json={"d": {}})]
    )
    http, waits = pwa(lambda request: next(answers))
    assert http.get_json(f"{SITE}/_api/ProjectData") == {"d": {}}
    assert len(waits) == 1


def test_a_refused_bearer_token_is_replaced_once():
    seen = []

    def handler(request):
        seen.append(request.headers["Authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200, json={})

    http, _ = pwa(handler)
    http.get_json(f"{SITE}/_api/ProjectData")
    assert seen == ["Bearer token-1", "Bearer token-2"]


def test_links_off_the_site_are_refused():
    http, _ = pwa(lambda request: httpx.Response(200, json={}))
    with pytest.raises(PermanentApiError, match="off the site"):
        http.get_json("https://evil.example/_api/ProjectData")


def test_ntlm_is_started_only_by_a_401_that_offers_it():
    sent = []

    def handler(request):
        sent.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={})

    http, _ = pwa(handler, auth=WindowsAuth("CONTOSO\\svc", "pw"))
    http.get_json(f"{SITE}/_api/ProjectData")
    assert sent == [None]  # an authenticated connection needs no handshake


def test_ntlm_refusal_after_the_handshake_is_one_clear_line():
    legs = []

    def handler(request):
        header = request.headers.get("Authorization")
        legs.append(header.split()[0] if header else None)
        if header is None:
            return httpx.Response(401, headers={"WWW-Authenticate": "NTLM"})
        token = base64.b64decode(header.split()[1])
        if token[8] == 1:  # NEGOTIATE_MESSAGE: answer with a CHALLENGE_MESSAGE
            return httpx.Response(401, headers={"WWW-Authenticate": f"NTLM {CHALLENGE}"})
        return httpx.Response(401, headers={"WWW-Authenticate": "NTLM"})

    http, _ = pwa(handler, auth=WindowsAuth("CONTOSO\\svc", "wrong"))
    with pytest.raises(AuthenticationError, match=r"refused the Windows sign-in \(NTLM\)"):
        http.get_json(f"{SITE}/_api/ProjectData")
    assert legs == [None, "NTLM", "NTLM"]


# A CHALLENGE_MESSAGE made by pyspnego's acceptor (flags, server challenge, empty target info).
def _challenge() -> str:
    import os
    import tempfile

    import spnego

    with tempfile.NamedTemporaryFile("w", suffix=".users", delete=False) as users:
        users.write("CONTOSO:svc:pw\n")
    os.environ.setdefault("NTLM_USER_FILE", users.name)
    server = spnego.server(protocol="ntlm")
    negotiate = spnego.client("CONTOSO\\svc", "pw", protocol="ntlm").step()
    return base64.b64encode(server.step(negotiate)).decode()


CHALLENGE = _challenge()


def test_a_stop_request_ends_a_retry_after_wait_at_once():
    stop = threading.Event()
    stop.set()  # SIGTERM arrived: a 45 s Retry-After is not sat out
    http = PwaHttp(
        client(lambda request: httpx.Response(429, headers={"Retry-After": "45"})),
        SITE,
        BearerAuth(Tokens()),
        stop=stop,
    )
    with pytest.raises(Stopping, match="stopping while waiting to retry"):
        http.get_json(f"{SITE}/_api/ProjectData/Projects")
    assert http.requests_made == 1


def test_a_server_offering_no_windows_scheme_is_one_clear_line():
    def handler(request):
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="pwa"'})

    http, _ = pwa(handler, auth=WindowsAuth("CONTOSO\\svc", "pw"))
    with pytest.raises(AuthenticationError, match=r"offers no Windows sign-in .*offers: BASIC"):
        http.get_json(f"{SITE}/_api/ProjectServer/Projects")


def both_offered(understood: str):
    """A server offering Negotiate and NTLM that understands only ``understood`` and refuses
    every answer to its challenge (a wrong password); records the scheme of each leg."""
    legs = []

    def handler(request):
        header = request.headers.get("Authorization")
        legs.append(header.split()[0] if header else None)
        if header is None:
            return httpx.Response(
                401, headers=[("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
            )
        scheme, token = header.split()
        if scheme == understood and base64.b64decode(token)[8:9] == b"\x01":  # NTLM NEGOTIATE
            return httpx.Response(401, headers={"WWW-Authenticate": f"{scheme} {CHALLENGE}"})
        return httpx.Response(401, headers={"WWW-Authenticate": scheme})

    return handler, legs


def test_negotiate_comes_first_and_a_refused_logon_is_not_tried_again_with_ntlm():
    handler, legs = both_offered("NTLM")  # a raw NTLM token under Negotiate is not understood
    http, _ = pwa(handler, auth=WindowsAuth("CONTOSO\\svc", "wrong"))
    with pytest.raises(AuthenticationError, match=r"refused the Windows sign-in \(NTLM\)"):
        http.get_json(f"{SITE}/_api/ProjectServer/Projects")
    # Negotiate's first token was not understood (no logon failed), so NTLM was tried; its
    # refusal after the challenge is final: one failed logon per attempt, not two.
    assert legs == [None, "Negotiate", "NTLM", "NTLM"]


def test_errors_name_what_answered():
    http = PwaHttp(
        client(lambda request: httpx.Response(404, json={"error": {"message": "nope"}})),
        SITE,
        BearerAuth(Tokens()),
        service="Project Server",
    )
    with pytest.raises(PermanentApiError, match=r"^Project Server answered 404: nope"):
        http.get_json(f"{SITE}/_api/ProjectData/Projects")


def test_a_busy_sharepoint_health_score_is_waited_out_like_any_503():
    answers = iter(
        [
            httpx.Response(503, headers={"X-SharePointHealthScore": "10"}),
            httpx.Response(200, json={"value": []}),
        ]
    )
    waits = []
    http = PwaHttp(
        client(lambda request: next(answers)),
        SITE,
        BearerAuth(Tokens()),
        sleep=waits.append,
        service="Project Server",
    )
    assert http.get_json(f"{SITE}/_api/ProjectServer/Projects") == {"value": []}
    assert len(waits) == 1 and http.requests_made == 2


def test_requests_and_throttling_are_counted_under_the_sources_metric_label():
    from prometheus_client import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={}),
                    httpx.Response(200, json={"d": {}})])  # fmt: skip
    before = (
        sample("pwasync_http_requests_total", service="dataverse", method="GET", status="429"),
        sample("pwasync_throttled_total", service="dataverse"),
        sample("pwasync_throttled_total", service="pwa"),
    )
    http, _ = pwa(lambda request: next(answers), metric_service="dataverse")
    http.get_json(f"{SITE}/_api/ProjectData/Projects")
    after = (
        sample("pwasync_http_requests_total", service="dataverse", method="GET", status="429"),
        sample("pwasync_throttled_total", service="dataverse"),
        sample("pwasync_throttled_total", service="pwa"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 0]
