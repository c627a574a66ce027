"""MSAL's token cache at rest: in Redis, encrypted with a key derived from PWASYNC_SECRET_KEY.

The cache holds the operator's refresh token (``pwasync connect``), so it is a secret. It is
stored as one JSON envelope ``{"v": 1, "kdf": "scrypt", "salt": <base64>, "token": <Fernet>}``
under ``pwasync:{<scenario>}:pwa:token-cache``:

- the key is derived from the secret with **scrypt** (n=2^15, r=8, p=1, a random 16-byte salt
  per write), so a passphrase-like secret is still expensive to guess;
- the cache is encrypted and authenticated with **Fernet** (AES-128-CBC + HMAC-SHA256) from
  ``cryptography``: no home-made cryptography, and a wrong key or a tampered value is detected.

Derived keys are kept in memory per salt, so the scrypt cost is paid once per process.
"""

from __future__ import annotations

import base64
import json
import os
import threading

import redis
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from common.errors import ConfigError
from common.redis_store import Keys, redis_errors

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class TokenCacheStore:
    def __init__(self, client: redis.Redis, keys: Keys, redis_url: str, secret_key: str) -> None:
        if not secret_key:
            raise ConfigError("PWASYNC_SECRET_KEY is required to store tokens")
        self._redis = client
        self.key = f"{keys.prefix}:pwa:token-cache"
        self._url = redis_url
        self._secret = secret_key.encode("utf-8")
        self._derived: dict[bytes, Fernet] = {}
        self._lock = threading.Lock()

    def load_raw(self) -> str | None:
        """The stored envelope as it is (to notice a change cheaply), or None."""
        with redis_errors(self._url):
            return self._redis.get(self.key)

    def decrypt(self, envelope: str) -> str:
        try:
            data = json.loads(envelope)
            salt = base64.b64decode(data["salt"])
            return self._fernet(salt).decrypt(data["token"].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ConfigError(
                "PWASYNC_SECRET_KEY does not decrypt the stored PWA sign-in (the key changed, or "
                "the value was tampered with): restore the key, or run `pwasync connect` again"
            ) from None
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                "the stored PWA sign-in is unreadable; run `pwasync connect` again"
            ) from None

    def load(self) -> str | None:
        """The decrypted serialized MSAL cache, or None when nobody has connected yet."""
        envelope = self.load_raw()
        return self.decrypt(envelope) if envelope else None

    def save(self, serialized_cache: str) -> str:
        """Encrypt and store a serialized MSAL cache; returns the stored envelope."""
        salt = os.urandom(16)
        token = self._fernet(salt).encrypt(serialized_cache.encode("utf-8"))
        envelope = json.dumps(
            {
                "v": 1,
                "kdf": "scrypt",
                "salt": base64.b64encode(salt).decode("ascii"),
                "token": token.decode("ascii"),
            }
        )
        with redis_errors(self._url):
            self._redis.set(self.key, envelope)
        return envelope

    def clear(self) -> None:
        with redis_errors(self._url):
            self._redis.delete(self.key)

    def _fernet(self, salt: bytes) -> Fernet:
        with self._lock:
            fernet = self._derived.get(salt)
            if fernet is None:
                kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
                fernet = Fernet(base64.urlsafe_b64encode(kdf.derive(self._secret)))
                self._derived = {salt: fernet}  # only the current salt is worth keeping
            return fernet
