"""Dashboard sessions: a stateless, HMAC-signed cookie that every worker and pod can verify.

The master key is typed once into the dashboard's login form (POST /api/vas/login, JSON body);
the answer sets `gw_dashboard=<expiry>.<nonce>.<signature>` as an HttpOnly, SameSite=Strict
cookie scoped to /api/vas, so the key never sits in a URL, a log line, the browser history or
page script. The signing secret is derived from the master key, so rotating the key ends every
session; nothing is stored, so workers that share no memory all accept the same cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Mapping

COOKIE = "gw_dashboard"
COOKIE_PATH = "/api/vas"
_CONTEXT = b"gateway dashboard session v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def cookie_value(headers: Mapping[str, str], name: str = COOKIE) -> str | None:
    """The value of cookie `name` in a Cookie header, or None."""
    raw = headers.get("cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip()
    return None


def dashboard_sessions(master_key_env: str, ttl_s: float, environ: Mapping[str, str] | None = None) -> Sessions | None:
    """The sessions of a gateway with a master key (read once, at start-up), else None."""
    master = (os.environ if environ is None else environ).get(master_key_env, "")
    return Sessions(master, ttl_s) if master else None


class Sessions:
    def __init__(self, master_key: str, ttl_s: float = 12 * 3600.0, clock: Callable[[], float] = time.time) -> None:
        self._secret = hmac.new(hashlib.sha256(master_key.encode()).digest(), _CONTEXT, hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self) -> str:
        payload = f"{int(self._clock() + self.ttl_s)}.{_b64(os.urandom(12))}"
        return f"{payload}.{self._sign(payload)}"

    def valid(self, token: str | None) -> bool:
        if not token or len(token) > 200:
            return False
        payload, _, sig = token.rpartition(".")
        expiry, _, _nonce = payload.partition(".")
        if not expiry.isdigit() or not hmac.compare_digest(sig, self._sign(payload)):
            return False
        return int(expiry) > self._clock()

    def set_cookie(self, token: str, secure: bool) -> str:
        flags = f"Path={COOKIE_PATH}; Max-Age={int(self.ttl_s)}; HttpOnly; SameSite=Strict"
        return f"{COOKIE}={token}; {flags}{'; Secure' if secure else ''}"

    @staticmethod
    def clear_cookie(secure: bool) -> str:
        return f"{COOKIE}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Strict{'; Secure' if secure else ''}"
