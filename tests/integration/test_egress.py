"""Egress through real servers, for both transports: tinyproxy as the forward proxy (counted in its
log), the mock over TLS with its own CA, verifying the gateway's client certificate."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.config import ProviderConfig
from gateway.errors import UpstreamUnreachable
from gateway.providers.upstream import Provider
from tests.aio_app import serve_app
from tests.egress_servers import Pki, Tinyproxy, TlsMock, make_pki, start_tinyproxy, start_tls_mock

TRANSPORTS = ("lean", "aiohttp")
CHAT = msgspec.json.encode({"model": "mock-gpt-4o", "messages": [{"role": "user", "content": "egress?"}]})


@pytest.fixture(autouse=True)
def _collect_aiohttp_failed_handshakes() -> Iterator[None]:
    """aiohttp (through aiohappyeyeballs) drops the socket of a refused TLS handshake without closing
    it; its ResourceWarning would surface in whichever test the garbage collector runs during. Collect
    it here, where it belongs, and let it go: the leak is the library's, freed by the collector."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


@pytest.fixture(scope="module")
def egress_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("egress")


@pytest.fixture(scope="module")
def pki(egress_dir: Path) -> Pki:
    return make_pki(egress_dir / "pki")


@pytest.fixture(scope="module")
def tls_mock(egress_dir: Path, pki: Pki) -> Iterator[TlsMock]:
    m = start_tls_mock(egress_dir, pki)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def proxy(egress_dir: Path) -> Iterator[Tinyproxy]:
    p = start_tinyproxy(egress_dir / "open")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def auth_proxy(egress_dir: Path) -> Iterator[Tinyproxy]:
    p = start_tinyproxy(egress_dir / "auth", basic_auth=("gw", "s3cret"))
    yield p
    p.stop()


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def provider(base_url: str, transport: str, **egress: Any) -> Provider:
    cfg = msgspec.convert({"kind": "openai", "base_url": base_url, "transport": transport, "warmup_connections": 0,
                           "timeouts": {"connect_s": 10, "first_byte_s": 30}, **egress}, ProviderConfig)
    p = Provider("corp", cfg, 0)
    p.open()
    return p


def tls(pki: Pki, **over: Any) -> dict[str, Any]:
    return {"ca_file": str(pki.ca), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key), **over}


async def chat(p: Provider, close: bool = True) -> dict[str, Any]:
    try:
        resp = await p.send("chat", "mock-gpt-4o", CHAT, {})
        body = await resp.read()
        resp.release()
        assert resp.status == 200
        return msgspec.json.decode(body)  # type: ignore[no-any-return]
    finally:
        if close:
            await p.close()


def tunnels(proxy: Tinyproxy, mock: TlsMock) -> int:
    return proxy.requests(rf"CONNECT 127\.0\.0\.1:{mock.port} ")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_https_upstream_through_env_proxy_with_client_certificate(
        transport: str, tls_mock: TlsMock, proxy: Tinyproxy, pki: Pki, no_env_proxy: pytest.MonkeyPatch) -> None:
    no_env_proxy.setenv("HTTPS_PROXY", proxy.url)
    before, seen = tunnels(proxy, tls_mock), len(tls_mock.requests())
    answer = await chat(provider(tls_mock.url + "/v1", transport, **tls(pki)))
    assert answer["choices"][0]["message"]["content"]
    assert proxy.wait_requests(rf"CONNECT 127\.0\.0\.1:{tls_mock.port} ", before + 1) == before + 1
    assert len(tls_mock.requests()) == seen + 1  # it reached the mock: the client certificate was accepted


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_certificate_and_key_in_one_file(transport: str, tls_mock: TlsMock, pki: Pki,
                                               no_env_proxy: pytest.MonkeyPatch) -> None:
    p = provider(tls_mock.url + "/v1", transport, ca_file=str(pki.ca), client_cert=str(pki.client_combined))
    assert (await chat(p))["object"] == "chat.completion"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_without_client_certificate_the_server_refuses(transport: str, tls_mock: TlsMock, pki: Pki,
                                                             no_env_proxy: pytest.MonkeyPatch) -> None:
    seen = len(tls_mock.requests())
    with pytest.raises(UpstreamUnreachable):
        await chat(provider(tls_mock.url + "/v1", transport, ca_file=str(pki.ca)))
    assert len(tls_mock.requests()) == seen


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_untrusted_server_certificate_is_refused(transport: str, tls_mock: TlsMock, pki: Pki,
                                                          no_env_proxy: pytest.MonkeyPatch) -> None:
    # The system trust store does not know the test CA, nor does another CA.
    for ca in (None, str(pki.other_ca)):
        with pytest.raises(UpstreamUnreachable) as err:
            await chat(provider(tls_mock.url + "/v1", transport, **tls(pki, ca_file=ca)))
        if transport == "lean":
            assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_proxy_and_proxy_none_go_direct(transport: str, tls_mock: TlsMock, proxy: Tinyproxy, pki: Pki,
                                                 no_env_proxy: pytest.MonkeyPatch) -> None:
    no_env_proxy.setenv("HTTPS_PROXY", proxy.url)
    before = tunnels(proxy, tls_mock)
    no_env_proxy.setenv("NO_PROXY", "example.com,127.0.0.0/8")
    await chat(provider(tls_mock.url + "/v1", transport, **tls(pki)))
    no_env_proxy.delenv("NO_PROXY")
    await chat(provider(tls_mock.url + "/v1", transport, **tls(pki, proxy="none")))
    # Then one that does go through it: the completion signal that the proxy logged what it saw.
    await chat(provider(tls_mock.url + "/v1", transport, **tls(pki)))
    assert proxy.wait_requests(rf"CONNECT 127\.0\.0\.1:{tls_mock.port} ", before + 1) == before + 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_provider_proxy_wins_over_the_environment_and_authenticates(
        transport: str, tls_mock: TlsMock, proxy: Tinyproxy, auth_proxy: Tinyproxy, pki: Pki,
        no_env_proxy: pytest.MonkeyPatch) -> None:
    no_env_proxy.setenv("HTTPS_PROXY", proxy.url)
    before_env, before = tunnels(proxy, tls_mock), tunnels(auth_proxy, tls_mock)
    own = f"http://gw:s3cret@127.0.0.1:{auth_proxy.port}"
    await chat(provider(tls_mock.url + "/v1", transport, **tls(pki, proxy=own)))
    assert auth_proxy.wait_requests(rf"CONNECT 127\.0\.0\.1:{tls_mock.port} ", before + 1) == before + 1
    with pytest.raises(UpstreamUnreachable) as err:
        await chat(provider(tls_mock.url + "/v1", transport,
                            **tls(pki, proxy=f"http://gw:wrong@127.0.0.1:{auth_proxy.port}")))
    assert "proxy authentication failed" in str(err.value) and "wrong" not in str(err.value)
    assert tunnels(proxy, tls_mock) == before_env


@pytest.fixture
async def plain_mock() -> AsyncIterator[str]:
    """An OpenAI-shaped upstream over plain http, in this event loop."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "plain"}, "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    async with serve_app(app) as url:
        yield url


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_upstream_through_http_proxy_in_absolute_form(transport: str, plain_mock: str, proxy: Tinyproxy,
                                                                 no_env_proxy: pytest.MonkeyPatch) -> None:
    no_env_proxy.setenv("HTTP_PROXY", proxy.url)
    no_env_proxy.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # the wrong scheme's proxy is not used
    line = rf"POST {plain_mock.replace('.', '[.]')}/v1/chat/completions "
    before = proxy.requests(line)
    p = provider(plain_mock + "/v1", transport)
    for close in (False, True):  # the second on a kept-alive connection to the proxy, when it keeps one
        assert (await chat(p, close))["choices"][0]["message"]["content"] == "plain"
    assert proxy.wait_requests(line, before + 2) == before + 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_upstream_through_an_authenticating_proxy(transport: str, plain_mock: str, auth_proxy: Tinyproxy,
                                                             no_env_proxy: pytest.MonkeyPatch) -> None:
    line = rf"POST {plain_mock.replace('.', '[.]')}/v1/chat/completions "
    before = auth_proxy.requests(line)
    p = provider(plain_mock + "/v1", transport, proxy=f"http://gw:s3cret@127.0.0.1:{auth_proxy.port}")
    assert (await chat(p))["choices"][0]["message"]["content"] == "plain"
    assert auth_proxy.wait_requests(line, before + 1) == before + 1
