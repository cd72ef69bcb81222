"""`gateway config import-litellm` on real LiteLLM configs (tests/data/litellm) and on every mapped setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import Config, load_config
from gateway.litellm_import import LiteLLMImportError, convert, render
from tests.unit.golden import HERE
from tests.unit.golden.litellm import render_all

DATA = Path(__file__).resolve().parents[1] / "data" / "litellm"
RENDERED = render_all()


def imported(text: str, tmp_path: Path) -> tuple[Config, list[str], str]:
    result = convert(text)
    out = render(result, "litellm.yaml")
    path = tmp_path / "gateway.yaml"
    path.write_text(out)
    # AWS_REGION: what a Bedrock provider without a region of its own reads at start-up.
    return load_config(path, environ={"AWS_REGION": "env-region-1"}), result.skipped, out


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
    # Bedrock: the entry without a region reads AWS_REGION (as the loader does), the other keeps its own.
    assert r["bedrock-claude-v1"] == [("bedrock", "", "anthropic.claude-instant-v1", 1.0)]
    assert r["anthropic-claude"] == [("bedrock", "", "anthropic.claude-instant-v1", 1.0)]
    assert {p.region for p in cfg.providers.values() if p.kind == "bedrock"} == {"env-region-1", "us-east-1"}
    assert any(s.startswith("model_list[1].litellm_params.aws_region_name: absent") for s in skipped)
    assert "*" not in r and any("(*)" in s for s in skipped)
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
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gateway.yaml"
    assert main(["config", "import-litellm", str(DATA / "configs_md_quick_start.yaml"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "not carried over: model_list[5] (*)" in err
    text = out.read_text()
    assert text.startswith("# Imported from the LiteLLM config configs_md_quick_start.yaml")
    assert "#   - model_list[1].litellm_params.aws_region_name: absent" in text
    # One Bedrock deployment has no region in the file: the gateway then wants AWS_REGION, as LiteLLM
    # wanted AWS_REGION_NAME; the check says so.
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert main(["config", "check", str(out)]) == 1
    assert "providers.bedrock.region: required for Bedrock (or set AWS_REGION)" in capsys.readouterr().err
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert main(["config", "check", str(out)]) == 0
    assert ("ok (5 providers, 4 models: anthropic-claude, bedrock-claude-v1, gpt-4o, vllm-models)"
            in capsys.readouterr().out)
    assert main(["config", "import-litellm", str(tmp_path / "missing.yaml")]) == 1


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().startswith("gateway 0.")


def test_every_real_config_has_a_golden_file() -> None:
    on_disk = {str(p.relative_to(HERE)) for p in (HERE / "litellm").glob("*.yaml")}
    assert on_disk == set(RENDERED) and len(RENDERED) >= 8


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_import_matches_its_golden_file(name: str, tmp_path: Path) -> None:
    assert RENDERED[name] == (HERE / name).read_bytes(), \
        f"{name} changed: python -m tests.unit.golden.litellm, then review the diff"
    path = tmp_path / "gateway.yaml"
    path.write_bytes(RENDERED[name])
    load_config(path, environ={"AWS_REGION": "us-east-1"})  # each output loads


def test_real_bedrock_docs(tmp_path: Path) -> None:
    cfg, skipped, _ = imported((DATA / "bedrock_md_proxy_usage.yaml").read_text(), tmp_path)
    [provider] = cfg.providers.values()
    assert (provider.kind, provider.aws_access_key_id_env, provider.aws_secret_access_key_env,
            provider.aws_session_token_env) == \
        ("bedrock", "CUSTOM_AWS_ACCESS_KEY_ID", "CUSTOM_AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    assert routes(cfg) == {"bedrock-claude-v1": [("bedrock", "", "anthropic.claude-instant-v1", 1.0)]}
    assert any("$CUSTOM_AWS_REGION_NAME" in s and "$AWS_REGION" in s for s in skipped)
    cfg, skipped, _ = imported((DATA / "bedrock_md_cross_region.yaml").read_text(), tmp_path)
    assert routes(cfg) == {"bedrock-claude-haiku": [
        ("bedrock", "", "us.anthropic.claude-3-haiku-20240307-v1:0", 1.0)]}
    [provider] = cfg.providers.values()
    assert provider.aws_access_key_id_env == "AWS_ACCESS_KEY_ID"  # the default: nothing written


def test_real_gemini_and_vertex_docs(tmp_path: Path) -> None:
    cfg, skipped, _ = imported((DATA / "gemini_md_response_schema.yaml").read_text(), tmp_path)
    assert routes(cfg) == {"gemini-pro": [("gemini", "", "gemini-1.5-pro", 1.0)]}
    assert cfg.providers["gemini"].api_key_env == "GEMINI_API_KEY"
    cfg, skipped, _ = imported((DATA / "managed_files_md_usage.yaml").read_text(), tmp_path)
    assert list(routes(cfg)) == ["gpt-4o-mini-openai"]
    [vertex] = [s for s in skipped if "gemini-2.0-flash" in s]
    assert vertex.startswith("model_list[0] (gemini-2.0-flash): Vertex AI") and "gemini/<model>" in vertex
    # The entry is reported once, not once per Vertex parameter.
    assert not any("vertex_project" in s and "no gateway equivalent" in s for s in skipped)


def test_every_bedrock_and_gemini_setting(tmp_path: Path) -> None:
    text = """
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/converse/anthropic.claude-sonnet-4-5-v1:0
      aws_region_name: eu-central-1
      aws_access_key_id: AKIDLITERAL
      aws_secret_access_key: os.environ/MY_SECRET
      aws_session_token: os.environ/MY_TOKEN
      timeout: 45
  - model_name: claude
    litellm_params:
      model: bedrock/invoke/anthropic.claude-sonnet-4-5-v1:0
      aws_profile_name: prod
      aws_region_name: us-west-2
  - model_name: imported
    litellm_params:
      model: bedrock/llama/arn:aws:bedrock:ap-south-1:123456789012:imported-model/abc
  - model_name: keyed
    litellm_params:
      model: bedrock/amazon.nova-pro-v1:0
      aws_region_name: us-east-1
      api_key: os.environ/AWS_BEARER_TOKEN_BEDROCK
      aws_bedrock_runtime_endpoint: https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com/
  - model_name: role
    litellm_params:
      model: bedrock/amazon.nova-lite-v1:0
      aws_region_name: us-east-1
      aws_role_name: arn:aws:iam::1:role/x
      aws_session_name: s
  - model_name: titan
    litellm_params: {model: bedrock/amazon.titan-embed-text-v2:0, aws_region_name: us-east-1}
  - model_name: flash
    litellm_params: {model: gemini/gemini-2.5-flash, api_key: os.environ/GOOGLE_KEY, safety_settings: []}
  - model_name: flash-eu
    litellm_params: {model: gemini/gemini-2.5-flash, api_base: https://gemini.example.com/}
  - model_name: gemini-embed
    litellm_params: {model: gemini/text-embedding-004}
  - model_name: vertex-claude
    litellm_params: {model: vertex_ai/claude-sonnet-4-5, vertex_project: p, vertex_location: us-east5}
"""
    cfg, skipped, out = imported(text, tmp_path)
    r = routes(cfg)
    p = cfg.providers
    assert [(p[d.provider].region, d.model) for d in next(m for m in cfg.models if m.name == "claude").deployments] \
        == [("eu-central-1", "anthropic.claude-sonnet-4-5-v1:0"), ("us-west-2", "anthropic.claude-sonnet-4-5-v1:0")]
    claude_eu = p["bedrock-eu-central-1"]
    assert (claude_eu.aws_access_key_id_env, claude_eu.aws_secret_access_key_env, claude_eu.aws_session_token_env,
            claude_eu.timeouts.total_s) == \
        ("BEDROCK_EU_CENTRAL_1_AWS_ACCESS_KEY_ID", "MY_SECRET", "MY_TOKEN", 45.0)
    assert "AKIDLITERAL" not in out
    assert any("aws_access_key_id: a literal key" in s and "$BEDROCK_EU_CENTRAL_1_AWS_ACCESS_KEY_ID" in s
               for s in skipped)
    assert p["bedrock-us-west-2"].aws_profile == "prod"
    assert any("bedrock/invoke/" in s for s in skipped)
    # An ARN names its region, as LiteLLM reads it.
    assert r["imported"] == [("bedrock", "", "arn:aws:bedrock:ap-south-1:123456789012:imported-model/abc", 1.0)]
    assert p["bedrock-ap-south-1"].region == "ap-south-1"
    keyed = p[next(m for m in cfg.models if m.name == "keyed").deployments[0].provider]
    assert (keyed.api_key_env, keyed.base_url) == \
        ("AWS_BEARER_TOKEN_BEDROCK", "https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com")
    assert any(s.startswith("model_list[4].litellm_params.aws_role_name: role assumption") for s in skipped)
    assert any(s.startswith("model_list[4].litellm_params.aws_session_name") for s in skipped)
    assert "role" in r  # imported all the same: given the role's credentials, it works
    assert r["flash"] == [("gemini", "", "gemini-2.5-flash", 1.0)]
    assert r["flash-eu"] == [("gemini", "https://gemini.example.com", "gemini-2.5-flash", 1.0)]
    assert p[next(m for m in cfg.models if m.name == "flash").deployments[0].provider].api_key_env == "GOOGLE_KEY"
    assert any(s.startswith("model_list[6].litellm_params.safety_settings") for s in skipped)
    for name in ("titan", "gemini-embed"):
        assert name not in r and any(f"({name})" in s and "embedding model" in s for s in skipped)
    assert "vertex-claude" not in r and any("(vertex-claude): Vertex AI" in s for s in skipped)


def test_bare_model_names_go_where_litellm_sends_them(tmp_path: Path) -> None:
    text = """
model_list:
  - {model_name: a, litellm_params: {model: claude-sonnet-4-5}}
  - {model_name: b, litellm_params: {model: gemini-2.0-flash}}
  - {model_name: c, litellm_params: {model: gpt-4o}}
"""
    cfg, skipped, _ = imported(text, tmp_path)
    assert routes(cfg) == {"a": [("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5", 1.0)],
                           "c": [("openai", "https://api.openai.com/v1", "gpt-4o", 1.0)]}
    assert any(s.startswith("model_list[1] (b): Vertex AI ('gemini-2.0-flash')") for s in skipped)
