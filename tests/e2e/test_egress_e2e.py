"""A running gateway behind a corporate network: `HTTPS_PROXY` in its environment (tinyproxy, which
logs every tunnel), an upstream with a private CA that demands a client certificate. Both
transports, through the official openai SDK, plain and streamed."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import yaml

from tests.egress_servers import Tinyproxy, TlsMock, make_pki, start_tinyproxy, start_tls_mock

from .conftest import Proc, start_process


@pytest.fixture(scope="module")
def corp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Tinyproxy, TlsMock]]:
    d = tmp_path_factory.mktemp("egress-e2e")
    pki = make_pki(d / "pki")
    mock = start_tls_mock(d, pki)
    proxy = start_tinyproxy(d / "proxy")
    tls = {"ca_file": str(pki.ca), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
    common = {"kind": "openai", "base_url": mock.url + "/v1", "warmup_connections": 0, **tls}
    cfg = {
        "auth": {"enabled": False},
        "cache": {"enabled": False},
        "store": {"embedded_path": str(d / "store.db")},
        "providers": {"lean": {**common}, "aio": {**common, "transport": "aiohttp"}},
        "models": [{"name": "via-lean", "deployments": [{"provider": "lean", "model": "mock-gpt-4o"}]},
                   {"name": "via-aiohttp", "deployments": [{"provider": "aio", "model": "mock-gpt-4o"}]}],
    }
    path = d / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # One worker, no warm-up: each provider opens its first tunnel on its first request.
    env = {"HTTPS_PROXY": proxy.url, "NO_PROXY": ""}
    gw = start_process(["serve", "--config", str(path), "--workers", "1"], d / "gateway.log", env=env,
                       ready_path="/readyz")
    yield gw, proxy, mock
    gw.stop()
    proxy.stop()
    mock.stop()


def test_requests_leave_through_the_proxy_with_the_client_certificate(corp: tuple[Proc, Tinyproxy, TlsMock]) -> None:
    gw, proxy, mock = corp
    tunnel = rf"CONNECT 127\.0\.0\.1:{mock.port} "
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for n, model in enumerate(("via-lean", "via-aiohttp"), start=1):
            resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": model}])
            assert resp.choices[0].message.content == f"This is a mock answer to: {model}"
            assert proxy.wait_requests(tunnel, n) == n  # this provider's first request opened a tunnel
            stream = client.chat.completions.create(model=model, stream=True,
                                                    messages=[{"role": "user", "content": "again"}])
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("This is")
            assert proxy.requests(tunnel) == n  # the next ones reused it (keep-alive inside the tunnel)
    seen = [r for r in mock.requests() if r["path"].endswith("/chat/completions")]
    assert len(seen) == 4
    log = (gw.log.read_text())
    assert "provider_via_proxy" in log and f"127.0.0.1:{proxy.port}" in log
