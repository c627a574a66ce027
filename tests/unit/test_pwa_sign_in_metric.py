"""Every token from the stored PWA sign-in is counted, so an alert can say "run pwasync connect"."""

import threading

import pytest
from prometheus_client import REGISTRY

from common.errors import AuthenticationError, RetryableApiError
from common.identity import PwaStoredTokens


class FakeApp:
    def __init__(self, accounts, result=None):
        self._accounts, self._result = accounts, result

    def get_accounts(self):
        return self._accounts

    def acquire_token_silent_with_error(self, scopes, account, force_refresh):
        return self._result


class FakeCache:
    has_state_changed = False


class FakeStore:
    def load_raw(self):
        return None


def _tokens(app) -> PwaStoredTokens:
    # The MSAL application is the edge: replaced, the counting around it is what is tested.
    tokens = object.__new__(PwaStoredTokens)
    tokens._scopes, tokens._store, tokens._stored = ["https://x/.default"], FakeStore(), None
    tokens._force_refresh, tokens._lock, tokens._cache, tokens._app = (
        False, threading.Lock(), FakeCache(), app
    )  # fmt: skip
    return tokens


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("pwasync_pwa_sign_ins_total", {"outcome": outcome}) or 0.0


def test_nobody_signed_in_counts_as_reconnect_required():
    before = _count("reconnect_required")
    with pytest.raises(AuthenticationError, match="pwasync connect"):
        _tokens(FakeApp(accounts=[])).token()
    assert _count("reconnect_required") == before + 1


def test_a_token_counts_as_ok():
    before = _count("ok")
    app = FakeApp(accounts=[{"username": "svc"}], result={"access_token": "t"})
    assert _tokens(app).token() == "t"
    assert _count("ok") == before + 1


def test_another_failure_counts_as_failed():
    before = _count("failed")
    app = FakeApp(accounts=[{"username": "svc"}], result={"error": "temporarily_unavailable"})
    with pytest.raises(RetryableApiError):
        _tokens(app).token()
    assert _count("failed") == before + 1
