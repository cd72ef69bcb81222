"""`gateway config import-litellm` on real LiteLLM configs (tests/data/litellm) and on every mapped setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import Config, load_config
from gateway.litellm_import import LiteLLMImportError, convert, render

DATA = Path(__file__).resolve().parents[1] / "data" / "litellm"


def imported(text: str, tmp_path: Path) -> tuple[Config, list[str], str]:
    result = convert(text)
    out = render(result, "litellm.yaml")
    path = tmp_path / "gateway.yaml"
    path.write_text(out)
    return load_config(path, environ={}), result.skipped, out


def routes(cfg: Config) -> dict[str, list[tuple[str, str, str | None, float]]]:
    return {m.name: [(cfg.providers[d.provider].kind, cfg.providers[d.provider].base_url, d.model, d.weight)
                     for d in m.deployments] for m in cfg.models}


def test_real_azure_config_with_tpm(tmp_path: Path) -> None:
    cfg, skipped, out = imported((DATA / "azure_config_with_tpm.yaml").read_text(), tmp_path)
    assert routes(cfg) == {"gpt-3.5-turbo": [
        ("azure", "https://my-endpoint-canada-berri992.openai.azure.com", "gpt-35-1", 80000.0),
        ("azure", "https://my-endpoint-europe-berri-992.openai.azure.com", "gpt-35-2", 80000.0)]}
    assert all(p.api_version == "2024-10-21" and p.api_key_env for p in cfg.providers.values())
    # The literal keys of the input ("73g", "9kj") never reach the output.
    assert "73g" not in out and "9kj" not in out
    assert sum("literal key" in s for s in skipped) == 2
    assert cfg.auth.enabled is False and cfg.cache.enabled is False


def test_real_load_balancer(tmp_path: Path) -> None:
    cfg, skipped, out = imported((DATA / "load_balancer.yaml").read_text(), tmp_path)
    assert routes(cfg) == {"gpt-3.5-turbo": [
        ("openai", "https://api.openai.com/v1", None, 1.0), ("openai", "https://api.openai.com/v1", None, 1.0),
        ("openai", "https://openrouter.ai/api/v1", None, 1.0)]}
    assert "sk-uj6F" not in out and "eYVX71" not in out
    assert any("mistral-7b-instruct" in s and "mistralai" in s for s in skipped)
    assert any(s.startswith("litellm_settings.drop_params") for s in skipped)
    assert any(s.startswith("environment_variables.REDIS_PASSWORD") for s in skipped)


def test_real_docs_quick_start(tmp_path: Path) -> None:
    cfg, skipped, _ = imported((DATA / "configs_md_quick_start.yaml").read_text(), tmp_path)
    r = routes(cfg)
    assert r["gpt-4o"] == [("azure", "https://my-endpoint-europe-berri-992.openai.azure.com", "gpt-4o-eu", 6.0),
                           ("azure", "https://my-endpoint-canada-berri992.openai.azure.com", "gpt-4o-ca", 6.0)]
    assert r["vllm-models"] == [("openai", "http://0.0.0.0:4000/v1", "facebook/opt-125m", 1.0)]
    assert {p.api_key_env for p in cfg.providers.values()} == {"AZURE_API_KEY_EU", "AZURE_API_KEY_CA", None}
    assert cfg.auth.enabled and cfg.auth.master_key_env == "GATEWAY_MASTER_KEY"
    for name in ("bedrock-claude-v1", "anthropic-claude", "*"):
        assert name not in r and any(f"({name})" in s for s in skipped)
    assert any(s.startswith("general_settings.alerting") for s in skipped)


def test_real_docs_load_balancing(tmp_path: Path) -> None:
    cfg, skipped, _ = imported((DATA / "configs_md_load_balancing.yaml").read_text(), tmp_path)
    gpt4o = next(m for m in cfg.models if m.name == "gpt-4o")
    assert gpt4o.aliases == ["gpt-4"]  # router_settings.model_group_alias
    assert cfg.retries.attempts == 2  # router_settings.num_retries wins over litellm_settings'
    assert all(p.timeouts.total_s == 30.0 for p in cfg.providers.values())
    # zephyr-beta is on Hugging Face (not a gateway provider), so its fallback cannot be kept either.
    assert "zephyr-beta" not in routes(cfg)
    assert any("fallbacks (zephyr-beta)" in s for s in skipped)
    assert any(s.startswith("litellm_settings.context_window_fallbacks") for s in skipped)


def test_every_mapped_setting(tmp_path: Path) -> None:
    text = """
model_list:
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: os.environ/ANTHROPIC_KEY, rpm: 30}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_base: https://eu.example.com/, rpm: 10, timeout: 60}
  - model_name: local
    litellm_params: {model: ollama/llama3, api_base: http://ollama:11434}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, extra_headers: {X-Team: a}, organization: org-1}
  - model_name: az
    litellm_params: {model: azure/prod, api_base: https://x.openai.azure.com, api_version: "2024-06-01",
                     api_key: os.environ/AZ}
router_settings:
  fallbacks: [{claude: [gpt-4o, local]}, {gpt-4o: [claude]}]
  routing_strategy: latency-based-routing
litellm_settings:
  num_retries: 4
  request_timeout: 20
  cache: true
  cache_params: {type: redis, host: redis.internal, port: 6380, ttl: 600, namespace: x}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""
    cfg, skipped, _ = imported(text, tmp_path)
    r = routes(cfg)
    assert r["claude"] == [("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5", 30.0),
                           ("anthropic", "https://eu.example.com", "claude-sonnet-4-5", 10.0)]
    assert r["local"] == [("openai", "http://ollama:11434/v1", "llama3", 1.0)]
    assert r["az"] == [("azure", "https://x.openai.azure.com", "prod", 1.0)]
    by_model = {m.name: m for m in cfg.models}
    assert by_model["claude"].fallbacks == ["gpt-4o", "local"] and by_model["gpt-4o"].fallbacks == ["claude"]
    providers = {p.base_url: p for p in cfg.providers.values()}
    assert providers["https://api.anthropic.com"].api_key_env == "ANTHROPIC_KEY"
    assert providers["https://eu.example.com"].api_key_env == "ANTHROPIC_API_KEY"  # LiteLLM's default variable
    assert providers["https://eu.example.com"].timeouts.total_s == 60.0  # its own timeout beats the global one
    assert providers["https://api.anthropic.com"].timeouts.total_s == 20.0
    assert providers["https://api.openai.com/v1"].headers == {"X-Team": "a", "OpenAI-Organization": "org-1"}
    assert providers["https://x.openai.azure.com"].api_version == "2024-06-01"
    assert cfg.retries.attempts == 4
    assert cfg.auth.enabled and cfg.auth.master_key_env == "LITELLM_MASTER_KEY"
    assert cfg.cache.enabled and cfg.cache.ttl_s == 600.0
    assert cfg.store.redis_url == "redis://redis.internal:6380/0"
    assert any(s.startswith("router_settings.routing_strategy") for s in skipped)
    assert any(s.startswith("litellm_settings.cache_params.namespace") for s in skipped)


def test_not_a_litellm_config() -> None:
    with pytest.raises(LiteLLMImportError, match="model_list"):
        convert("server: {port: 1}\n")
    with pytest.raises(LiteLLMImportError, match="YAML"):
        convert("model_list: [\n")


def test_cli_writes_a_checked_config_and_names_what_it_dropped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gateway.yaml"
    assert main(["config", "import-litellm", str(DATA / "configs_md_quick_start.yaml"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "not carried over: model_list[1] (bedrock-claude-v1)" in err
    text = out.read_text()
    assert text.startswith("# Imported from the LiteLLM config configs_md_quick_start.yaml")
    assert "#   - model_list[1] (bedrock-claude-v1)" in text
    assert main(["config", "check", str(out)]) == 0
    assert "ok (3 providers, 2 models: gpt-4o, vllm-models)" in capsys.readouterr().out
    assert main(["config", "import-litellm", str(tmp_path / "missing.yaml")]) == 1


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().startswith("gateway 0.")
