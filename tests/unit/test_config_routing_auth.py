"""Configuration loading and validation, routing plans, and key checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.config import AuthConfig, ConfigError, KeyConfig, load_config
from gateway.errors import PermissionDenied, Unauthorized, UnknownModel, UnsupportedRoute
from gateway.governance.auth import Authenticator, hash_key
from gateway.providers.routing import Router
from gateway.providers.upstream import Provider

GOOD = """
providers:
  oa: {kind: openai, base_url: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY}
  an: {kind: anthropic, base_url: "https://api.anthropic.com", api_key_env: ANTHROPIC_API_KEY}
  az: {kind: azure, base_url: "https://x.openai.azure.com", api_version: "2024-10-21"}
models:
  - name: gpt-4o
    aliases: [default]
    deployments: [{provider: oa, weight: 3}, {provider: az, model: gpt4o-deploy, weight: 1}]
    fallbacks: [claude]
  - name: claude
    deployments: [{provider: an, model: claude-sonnet-4-5}]
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_embedded_defaults_need_nothing() -> None:
    cfg = load_config(None, environ={})
    assert not cfg.auth.enabled and cfg.server.mount_mock
    assert {m.name for m in cfg.models} >= {"*", "mock-gpt-4o"}


def test_env_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), environ={"GATEWAY_SERVER__PORT": "9999", "GATEWAY_REDIS_URL":
                                                       "redis://r:6379/0", "GATEWAY_CACHE__SEMANTIC_THRESHOLD": "0.95"})
    assert cfg.server.port == 9999 and cfg.store.redis_url == "redis://r:6379/0"
    assert cfg.cache.semantic_threshold == 0.95


def test_toml_is_accepted(tmp_path: Path) -> None:
    toml = '[server]\nport = 8181\n[providers.up]\nkind = "compatible"\nbase_url = "http://x"\n' \
           '[[models]]\nname = "*"\ndeployments = [{provider = "up"}]\n'
    assert load_config(write(tmp_path, toml, "c.toml"), environ={}).server.port == 8181


@pytest.mark.parametrize(("text", "fragment"), [
    ("server: {port: eighty}", "server.port"),
    ("server: {prot: 80}", "prot"),
    ("models: [{name: a, deployments: [{provider: nope}]}]", "models[0].deployments[0].provider"),
    ("providers: {a: {kind: azure, base_url: 'http://x'}}", "providers.a.api_version"),
    ("providers: {a: {kind: gemnii, base_url: 'http://x'}}", "providers.a.kind"),
    ("providers: {a: {kind: bedrock, base_url: 'http://x'}}", "providers.a.region"),
    ("cache: {semantic_threshold: 1.5}", "cache.semantic_threshold"),
    ("- just\n- a list", "top level"),
    ("server: [", "not valid YAML"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), environ={})
    assert fragment in str(exc.value)


def test_routing_weights_aliases_fallbacks_translation(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), environ={})
    router = Router(cfg, {n: Provider(n, p, 0) for n, p in cfg.providers.items()}, rng=random.Random(7))
    firsts = [router.plan("default", "openai", "chat").targets[0].provider.name for _ in range(400)]
    assert 0.65 < firsts.count("oa") / 400 < 0.85  # weight 3:1
    plan = router.plan("gpt-4o", "openai", "chat").targets
    assert [t.provider.name for t in plan][-1] == "an" and plan[-1].translate
    assert plan[-1].model == "claude-sonnet-4-5"
    az = next(t for t in plan if t.provider.name == "az")
    assert az.provider.url("chat", az.model) == \
        "https://x.openai.azure.com/openai/deployments/gpt4o-deploy/chat/completions?api-version=2024-10-21"
    # Embeddings can't be translated to Anthropic: the fallback is skipped, not mistranslated.
    assert all(not t.translate for t in router.plan("gpt-4o", "openai", "embeddings").targets)
    with pytest.raises(UnsupportedRoute):
        router.plan("claude", "openai", "embeddings")
    with pytest.raises(UnknownModel):
        router.plan("nope", "openai", "chat")
    assert router.model_names() == ["claude", "default", "gpt-4o"]


def test_keys_hashed_master_and_model_allow_list() -> None:
    cfg = AuthConfig(keys=[KeyConfig(id="a", key_sha256=hash_key("sk-a"), models=["m1"]),
                           KeyConfig(id="b", key_env="KEY_B")])
    auth = Authenticator(cfg, environ={"KEY_B": "sk-b", "GATEWAY_MASTER_KEY": "sk-master"})
    assert auth.authenticate({"authorization": "Bearer sk-a"}).id == "a"
    assert auth.authenticate({"x-api-key": "sk-b"}).id == "b"
    assert auth.authenticate({"authorization": "Bearer sk-master"}).admin
    for headers in ({}, {"authorization": "Bearer sk-x"}, {"authorization": "Basic sk-a"}):
        with pytest.raises(Unauthorized):
            auth.authenticate(headers)
    with pytest.raises(PermissionDenied):
        Authenticator.check_model(auth.authenticate({"authorization": "Bearer sk-a"}), "m2")
    auth.require_admin({"authorization": "Bearer sk-master"})
    with pytest.raises(Unauthorized):
        auth.require_admin({"authorization": "Bearer sk-a"})
    assert Authenticator(AuthConfig(enabled=False), environ={}).authenticate({}).id == "anonymous"
