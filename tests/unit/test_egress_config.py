"""Egress settings: which proxy applies (environment, NO_PROXY, per-provider override) and the errors
`gateway config check` gives for unusable proxy, CA and client-certificate settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.providers.egress import Egress, build, bypassed, parse_proxy


def test_environment_proxies_by_scheme_lower_case_first() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:3128", "HTTP_PROXY": "plain:8080"}
    e = build(None, None, None, None, env)
    assert e.proxy_for("https", "api.openai.com", 443) == parse_proxy("http://lower:3128", "x")
    via = e.proxy_for("http", "vllm", 8000)
    assert via is not None and via.where == "plain:8080"  # a bare host:port is http://
    assert build(None, None, None, None, {"HTTP_PROXY": "http://p:1"}).proxy_for("https", "h", 443) is None


def test_no_proxy_rules() -> None:
    rules = ("example.com", ".corp.internal", "10.0.0.0/8", "localhost:9000", "::1")
    assert bypassed("example.com", 443, rules) and bypassed("api.example.com", 443, rules)
    assert not bypassed("notexample.com", 443, rules)
    assert bypassed("a.corp.internal", 443, rules) and bypassed("corp.internal", 443, rules)
    assert bypassed("10.2.3.4", 443, rules) and not bypassed("11.2.3.4", 443, rules)
    assert bypassed("localhost", 9000, rules) and not bypassed("localhost", 9001, rules)
    assert bypassed("[::1]", 443, rules)
    assert bypassed("anything", 1, ("*",))
    env = {"HTTPS_PROXY": "http://p:1", "NO_PROXY": " Example.COM , "}
    assert build(None, None, None, None, env).proxy_for("https", "api.example.com", 443) is None


def test_provider_override_wins_over_the_environment() -> None:
    env = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "*"}
    assert build("none", None, None, None, env).direct
    own = build("http://user:p%40ss@own:3128", None, None, None, env)
    via = own.proxy_for("https", "api.openai.com", 443)
    assert via is not None and via.where == "own:3128"  # NO_PROXY is the environment's, not the provider's
    assert via.authorization == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert "p%40ss" not in repr(via) and "dXNlcjpwQHNz" not in repr(via)  # credentials stay out of reprs


def test_no_tls_settings_mean_the_system_default() -> None:
    assert build(None, None, None, None, {}).tls is None
    assert isinstance(Egress().ssl_context(), ssl.SSLContext)


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: dict[str, object]) -> str:
    """`gateway config check` on a config with this provider: 'exit code|output'."""
    cfg = {"providers": {"corp": {"kind": "openai", "base_url": "https://llm.corp/v1", **provider}},
           "models": [{"name": "m", "deployments": [{"provider": "corp"}]}]}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["config", "check", str(path)])
    out = capsys.readouterr()
    return f"{code}|{out.out}{out.err}"


def test_config_check_names_unusable_egress_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "nope.pem")
    assert f"providers.corp.ca_file: {missing}: no such file" in check(tmp_path, capsys, {"ca_file": missing})
    key = tmp_path / "client.key"
    key.write_text("not a key")
    assert "providers.corp.client_key: given without client_cert" in check(
        tmp_path, capsys, {"client_key": str(key)})
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    out = check(tmp_path, capsys, {"ca_file": str(junk)})
    assert out.startswith("1|") and "providers.corp.ca_file:" in out and "not a PEM CA bundle" in out
    out = check(tmp_path, capsys, {"client_cert": str(junk), "client_key": str(key)})
    assert out.startswith("1|") and "providers.corp.client_cert:" in out
    assert "providers.corp.client_cert: " + missing in check(tmp_path, capsys, {"client_cert": missing})
    assert "providers.corp.proxy: only http:// proxies" in check(tmp_path, capsys, {"proxy": "socks5://p:1080"})
    for socks in ("socks5://p:1080", "socks5h://u:pw@p:1080", "socks4://p:1080"):
        out = check(tmp_path, capsys, {"proxy": socks})
        assert out.startswith("1|") and "SOCKS (" in out and "HTTP CONNECT proxy in front" in out
        assert "pw" not in out  # a proxy's credentials never reach the message
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.corp:443")
    assert "HTTPS_PROXY (environment, for providers.corp): only http:// proxies" in check(tmp_path, capsys, {})
    assert check(tmp_path, capsys, {"proxy": "none"}).startswith("0|")  # the environment does not apply
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert check(tmp_path, capsys, {}).startswith("0|")
