"""Dashboard sessions: signed cookies, and the login that issues them instead of a key in the URL."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import errors
from gateway.config import AuthConfig
from gateway.governance.auth import Authenticator
from gateway.observe.api import ObserveAPI
from gateway.observe.session import COOKIE, Sessions, cookie_value, dashboard_sessions
from gateway.observe.settings import ObserveConfig

MASTER = "sk-master-for-tests"


class Clock:
    t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_a_session_is_valid_until_it_expires() -> None:
    clock = Clock()
    s = Sessions(MASTER, ttl_s=60, clock=clock)
    token = s.issue()
    assert MASTER not in token and s.valid(token)
    clock.t += 59
    assert s.valid(token)
    clock.t += 2
    assert not s.valid(token)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
    lambda t: str(int(t.split(".")[0]) + 10_000) + t[t.index("."):],  # expiry pushed out
    lambda t: "",
    lambda t: "garbage",
    lambda t: "..",
    lambda t: t + "." + t,
    lambda t: "x" * 300,
])
def test_a_forged_session_is_refused(mangle: Any) -> None:
    s = Sessions(MASTER, clock=Clock())
    assert not s.valid(mangle(s.issue()))


def test_another_master_key_ends_every_session() -> None:
    token = Sessions(MASTER, clock=Clock()).issue()
    assert not Sessions("sk-rotated", clock=Clock()).valid(token)


def test_cookie_attributes() -> None:
    s = Sessions(MASTER, ttl_s=3600)
    c = s.set_cookie("tok", secure=True)
    assert c.startswith(f"{COOKIE}=tok; ") and "HttpOnly" in c and "SameSite=Strict" in c and "Secure" in c
    assert "Path=/api/vas" in c and "Max-Age=3600" in c
    assert "Secure" not in s.set_cookie("tok", secure=False)
    assert "Max-Age=0" in Sessions.clear_cookie(False)


@pytest.mark.parametrize(("header", "value"), [
    ("a=1; gw_dashboard=tok; b=2", "tok"), ("gw_dashboard=tok", "tok"), ("xgw_dashboard=tok", None),
    ("a=1", None), ("", None), ("gw_dashboard", None),
])
def test_cookie_value(header: str, value: str | None) -> None:
    assert cookie_value({"cookie": header}) == value


class Proto:
    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.sent: list[tuple[int, list[tuple[str, str]], bytes]] = []

    async def __call__(self) -> bytes:
        return self.body

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.sent.append((status, headers, body))


ENV = {"GATEWAY_MASTER_KEY": MASTER}


@pytest.fixture
def api() -> ObserveAPI:
    auth = AuthConfig(enabled=True)
    sessions = dashboard_sessions(auth.master_key_env, ObserveConfig().dashboard_session_s, ENV)
    observer = SimpleNamespace(settings=SimpleNamespace(observe=ObserveConfig()))
    return ObserveAPI(observer, Authenticator(auth, ENV), sessions)  # type: ignore[arg-type]


def test_no_master_key_no_sessions() -> None:
    assert dashboard_sessions("GATEWAY_MASTER_KEY", 60.0, {}) is None
    api = ObserveAPI(SimpleNamespace(), Authenticator(AuthConfig(enabled=False), {}), None)  # type: ignore[arg-type]
    with pytest.raises(errors.NotFound):  # the page then falls back to the header
        _login(api, b'{"key": "anything"}')


def _login(api: ObserveAPI, body: bytes, ctype: str = "application/json") -> Proto:
    proto = Proto(body)
    asyncio.run(api.login(SimpleNamespace(scheme="http"), proto, {"content-type": ctype}))
    return proto


def test_login_sets_the_cookie_that_admits_the_data_endpoints(api: ObserveAPI) -> None:
    proto = _login(api, json.dumps({"key": MASTER}).encode())
    status, headers, _ = proto.sent[0]
    assert status == 200
    cookie = dict(headers)["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and MASTER not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    api._admin({"cookie": f"{COOKIE}={token}"})  # admitted, no key
    with pytest.raises(errors.Unauthorized):
        api._admin({"cookie": f"{COOKIE}={token[:-2]}xx"})
    with pytest.raises(errors.Unauthorized):
        api._admin({})


@pytest.mark.parametrize(("body", "ctype", "error"), [
    (b'{"key": "sk-wrong"}', "application/json", errors.Unauthorized),
    (b'{"key": 5}', "application/json", errors.MalformedBody),
    (b"not json", "application/json", errors.MalformedBody),
    (b"key=" + MASTER.encode(), "application/x-www-form-urlencoded", errors.BadRequest),  # a cross-site form
    (b'{"key": "' + b"k" * 5000 + b'"}', "application/json", errors.PayloadTooLarge),
])
def test_login_refusals(api: ObserveAPI, body: bytes, ctype: str, error: type[errors.GatewayError]) -> None:
    with pytest.raises(error):
        _login(api, body, ctype)


def test_the_page_refuses_a_key_in_the_url_and_needs_none(api: ObserveAPI) -> None:
    with pytest.raises(errors.BadRequest) as exc:
        api.dashboard(SimpleNamespace(query_string=f"key={MASTER}"), Proto(), {})
    assert exc.value.param == "key"
    proto = Proto()
    api.dashboard(SimpleNamespace(query_string="poll_ms=500"), proto, {})
    status, headers, page = proto.sent[0]
    assert status == 200 and b'id="login-form"' in page and MASTER.encode() not in page
    assert dict(headers)["x-frame-options"] == "DENY"


def test_routes_for_the_lead_to_install(api: ObserveAPI) -> None:
    assert set(api.routes()) == {("GET", "/dashboard"), ("GET", "/api/vas/summary"),
                                 ("POST", "/api/vas/login"), ("POST", "/api/vas/logout")}
