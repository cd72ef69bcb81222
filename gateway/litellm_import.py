"""`gateway config import-litellm`: a LiteLLM proxy config.yaml turned into an equivalent gateway config.

What maps (LiteLLM -> gateway):
- model_list[].model_name -> models[].name; entries sharing a name become one model's deployments.
- litellm_params.model "openai/X" or bare "X" -> an `openai` provider (bare "claude-*" ->
  `anthropic`, bare "gemini-*" is Vertex AI to LiteLLM, so reported like vertex_ai/); "azure/DEPLOYMENT" -> `azure`
  (api_version from litellm_params, else 2024-10-21); "anthropic/X" -> `anthropic`; ollama,
  hosted_vllm and the OpenAI-compatible hosted APIs (openrouter, groq, mistral, deepseek, ...) ->
  `openai` at their base URL. One provider per distinct (kind, api_base, key, api_version).
- "gemini/X" -> a `gemini` provider (the Gemini API, key from $GEMINI_API_KEY unless api_key names
  another). "bedrock/X" (also bedrock/converse/X, bedrock/invoke/X, ARNs) -> a `bedrock` provider
  (Converse): aws_region_name -> region (or the region of an ARN), aws_access_key_id /
  aws_secret_access_key / aws_session_token "os.environ/NAME" -> aws_*_env, aws_profile_name ->
  aws_profile, aws_bedrock_runtime_endpoint / api_base -> base_url, api_key -> a Bedrock API key.
  Role assumption (aws_role_name, aws_web_identity_token) and region variables other than
  AWS_REGION are reported. "vertex_ai/X" cannot be mapped (Vertex authenticates with Google OAuth
  and has its own URL scheme): each entry is reported with the gemini/ alternative. Embedding
  models on Gemini or Bedrock are reported (those providers serve chat only here).
- api_key "os.environ/NAME" -> api_key_env NAME; a literal key is never written into the file: the
  provider reads it from a named variable instead (reported). api_base -> base_url.
- rpm/tpm of a deployment -> its weight (LiteLLM's simple-shuffle picks weighted by rpm, else tpm);
  the limits themselves are reported, not enforced per deployment.
- router_settings / litellm_settings: fallbacks -> models[].fallbacks, num_retries ->
  retries.attempts (LiteLLM counts retries per model group, the gateway per deployment),
  timeout / request_timeout -> every provider's timeouts.total_s, model_group_alias -> aliases.
- general_settings.master_key -> auth (its value comes from the environment variable named); none
  -> auth off, as LiteLLM runs without one. litellm_settings.cache -> cache.enabled (LiteLLM caches
  only when asked), cache_params redis host/port -> store.redis_url.
Everything else is named in `ImportResult.skipped`, which the CLI prints to stderr and writes as a
comment block at the top of the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway import litellm_tables as lt

__all__ = ["ImportResult", "LiteLLMImportError", "convert", "render"]


class LiteLLMImportError(Exception):
    """The input is not a LiteLLM proxy configuration this importer can read."""


@dataclass
class ImportResult:
    config: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


def _env_name(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("os.environ/"):
        return value[len("os.environ/"):]
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class _Importer:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.skipped: list[str] = []
        self.providers: dict[str, dict[str, Any]] = {}
        self._provider_ids: dict[tuple[Any, ...], str] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self._weights: dict[str, list[tuple[dict[str, Any], Any, Any]]] = {}  # name -> (deployment, rpm, tpm)

    def skip(self, where: str, why: str) -> None:
        self.skipped.append(f"{where}: {why}")

    def provider(self, where: str, prefix: str, params: dict[str, Any]) -> str | None:
        kind, default_base, default_key = lt.PROVIDERS[prefix]
        base = params.get("api_base") or default_base
        if _env_name(base):
            self.skip(f"{where}.api_base", f"read from ${_env_name(base)} by LiteLLM; the gateway needs the URL itself")
            return None
        if not base and kind != "gemini":
            self.skip(where, f"{prefix} needs an api_base")
            return None
        base = str(base).rstrip("/")
        if prefix.startswith("ollama"):
            base += "/v1"  # Ollama's OpenAI-compatible endpoint
        version = params.get("api_version") or (lt.AZURE_API_VERSION if kind == "azure" else None)
        if _env_name(version):
            self.skip(f"{where}.api_version", f"read from ${_env_name(version)}; {lt.AZURE_API_VERSION} assumed")
            version = lt.AZURE_API_VERSION
        raw_key = params.get("api_key")
        host = _slug(urlsplit(base).hostname or prefix).split("-") if base else [prefix]
        name = _slug(f"{prefix}-{'-'.join(host[:3])}") if params.get("api_base") else prefix
        identity = (kind, base, str(raw_key), version, repr(params.get("extra_headers")), params.get("organization"))
        if identity in self._provider_ids:
            return self._provider_ids[identity]
        unique, n = name, 2
        while unique in self.providers:
            unique, n = f"{name}-{n}", n + 1
        if raw_key is None:
            key_env = default_key  # LiteLLM reads the provider's usual variable
        elif _env_name(raw_key):
            key_env = _env_name(raw_key)
        elif str(raw_key).lower() in ("none", "", "dummy"):
            key_env = None  # a keyless server (vLLM, Ollama)
        else:
            # A literal key is never copied into a file: the provider reads it from a variable instead.
            key_env = f"{unique.upper().replace('-', '_')}_API_KEY"
            self.skip(f"{where}.api_key", f"a literal key is not written to the file: export it as ${key_env}")
        entry: dict[str, Any] = {"kind": kind}
        if base:
            entry["base_url"] = base
        if key_env:
            entry["api_key_env"] = key_env
        if version and kind == "azure":
            entry["api_version"] = str(version)
        headers = dict(params.get("extra_headers") or {})
        if params.get("organization"):
            headers["OpenAI-Organization"] = str(params["organization"])
        if headers:
            entry["headers"] = {str(k): str(v) for k, v in headers.items()}
        if params.get("timeout") is not None:
            entry["timeouts"] = {"total_s": float(params["timeout"])}
        self.providers[unique] = entry
        self._provider_ids[identity] = unique
        return unique

    def _key_env(self, where: str, param: str, value: Any, default: str, named: str) -> str:
        """The variable a credential is read from: the one LiteLLM names, else one named for it here."""
        env = _env_name(value)
        if env:
            return env
        if value is None:
            return default
        self.skip(f"{where}.{param}", f"a literal key is not written to the file: export it as ${named}")
        return named

    def bedrock(self, where: str, model: str, params: dict[str, Any]) -> str | None:
        region_param = params.get("aws_region_name")
        region: str | None = None
        arn = lt.ARN_REGION.match(model)
        if region_param is None and arn:
            region = arn.group(1)  # LiteLLM, too, takes an ARN's region when none is given
        elif _env_name(region_param):
            if _env_name(region_param) not in lt.GATEWAY_REGION_VARS:
                self.skip(f"{where}.litellm_params.aws_region_name",
                          f"read from ${_env_name(region_param)} by LiteLLM; the gateway reads $AWS_REGION or"
                          " $AWS_DEFAULT_REGION: export one of them, or set the provider's region")
        elif region_param is not None:
            region = str(region_param)
        else:
            self.skip(f"{where}.litellm_params.aws_region_name",
                      "absent: LiteLLM reads $AWS_REGION_NAME or $AWS_REGION, the gateway $AWS_REGION or"
                      " $AWS_DEFAULT_REGION: export one of them, or set the provider's region")
        base = params.get("aws_bedrock_runtime_endpoint") or params.get("api_base")
        if _env_name(base):
            self.skip(f"{where}.aws_bedrock_runtime_endpoint", f"read from ${_env_name(base)} by LiteLLM;"
                      " the gateway needs the URL itself (the regional endpoint is used)")
            base = None
        for param in ("aws_role_name", "aws_web_identity_token", "aws_sts_endpoint", "aws_session_name"):
            if params.get(param) is not None:
                self.skip(f"{where}.litellm_params.{param}", "role assumption (STS) is not done by the gateway:"
                          " give it the role's credentials (environment, shared credentials file or container"
                          " credentials)")
        name = f"bedrock-{region}" if region else "bedrock"
        identity = ("bedrock", base, region, *(str(params.get(k)) for k in sorted(lt.AWS_KEYS | {"api_key"})))
        if identity in self._provider_ids:
            return self._provider_ids[identity]
        unique, n = name, 2
        while unique in self.providers:
            unique, n = f"{name}-{n}", n + 1
        label = unique.upper().replace("-", "_")
        entry: dict[str, Any] = {"kind": "bedrock"}
        if base:
            entry["base_url"] = str(base).rstrip("/")
        if region:
            entry["region"] = region
        if params.get("api_key") is not None:  # a Bedrock API key (bearer token) instead of SigV4
            entry["api_key_env"] = self._key_env(where, "api_key", params["api_key"], "", f"{label}_API_KEY")
        for param, field_name, default in (
                ("aws_access_key_id", "aws_access_key_id_env", "AWS_ACCESS_KEY_ID"),
                ("aws_secret_access_key", "aws_secret_access_key_env", "AWS_SECRET_ACCESS_KEY"),
                ("aws_session_token", "aws_session_token_env", "AWS_SESSION_TOKEN")):
            env = self._key_env(where, param, params.get(param), default, f"{label}_{param.upper()}")
            if env != default:
                entry[field_name] = env
        profile = params.get("aws_profile_name")
        if _env_name(profile):
            self.skip(f"{where}.litellm_params.aws_profile_name", f"read from ${_env_name(profile)} by LiteLLM;"
                      " the gateway reads $AWS_PROFILE (or set the provider's aws_profile)")
        elif profile is not None:
            entry["aws_profile"] = str(profile)
        if params.get("timeout") is not None:
            entry["timeouts"] = {"total_s": float(params["timeout"])}
        self.providers[unique] = entry
        self._provider_ids[identity] = unique
        return unique

    def deployment(self, i: int, item: dict[str, Any]) -> None:
        where = f"model_list[{i}]"
        name = item.get("model_name")
        params = item.get("litellm_params") or {}
        if not isinstance(name, str) or not isinstance(params, dict) or "model" not in params:
            self.skip(where, "needs model_name and litellm_params.model")
            return
        target = str(params["model"])
        prefix, _, rest = target.partition("/")
        if not rest:
            # A bare name: LiteLLM looks it up in its model lists; Claude names are Anthropic's, Gemini
            # names Vertex AI's (gemini/ is the API-key route), the rest OpenAI's.
            prefix = "anthropic" if target.startswith("claude-") else \
                "vertex_ai" if target.startswith("gemini-") else "openai"
            rest = target
        if target == "*":
            self.skip(f"{where} ({name})", "model '*' (every provider LiteLLM knows, by prefix) has no gateway"
                      " equivalent: route '*' to one provider")
            return
        if prefix.startswith("vertex_ai"):
            self.skip(f"{where} ({name})", f"Vertex AI ({target!r}) is not supported: it authenticates with Google"
                      " OAuth (vertex_project, vertex_location, vertex_credentials) at its own URLs; the gateway's"
                      " gemini provider speaks the Gemini API with a key (route gemini/<model> with $GEMINI_API_KEY)")
            return
        if prefix not in lt.PROVIDERS and prefix != "bedrock":
            self.skip(f"{where} ({name})", f"provider {prefix!r} of {target!r} is not supported by the gateway")
            return
        mode = (item.get("model_info") or {}).get("mode") if isinstance(item.get("model_info"), dict) else None
        if prefix in ("gemini", "bedrock") and (mode == "embedding" or "embed" in rest):
            self.skip(f"{where} ({name})", f"{target!r} is an embedding model: the gateway's {prefix} provider"
                      " serves chat (generateContent / Converse) only")
            return
        for key in sorted(set(item) - {"model_name", "litellm_params", "rpm", "tpm"}):
            self.skip(f"{where}.{key}", "no gateway equivalent")
        known = lt.DEPLOYMENT_KEYS | (lt.AWS_KEYS if prefix == "bedrock" else set())
        for key in sorted(set(params) - known):
            self.skip(f"{where}.litellm_params.{key}", "no gateway equivalent")
        if prefix == "bedrock":
            rest = rest.removeprefix("converse/")
            if rest.startswith("invoke/"):
                rest = rest.removeprefix("invoke/")
                self.skip(f"{where} ({name})", "bedrock/invoke/ (InvokeModel) is sent through Converse here")
            if "arn:" in rest:
                rest = rest[rest.index("arn:"):]  # "llama/arn:..." names LiteLLM's request format
            provider = self.bedrock(where, rest, params)
        else:
            provider = self.provider(where, prefix, params)
        if provider is None:
            return
        dep: dict[str, Any] = {"provider": provider}
        if rest != "*" and rest != name:
            dep["model"] = rest
        model = self.models.setdefault(name, {"name": name, "deployments": []})
        model["deployments"].append(dep)
        rpm = params.get("rpm", item.get("rpm"))
        tpm = params.get("tpm", item.get("tpm"))
        if params.get("weight") is not None:
            dep["weight"] = float(params["weight"])
        self._weights.setdefault(name, []).append((dep, rpm, tpm))

    def weights(self) -> None:
        # LiteLLM's simple-shuffle weighs by rpm when every deployment has one, else by tpm.
        for name, deps in self._weights.items():
            if all(rpm is None and tpm is None for _, rpm, tpm in deps):
                continue
            used = ""
            for index, label in ((1, "rpm"), (2, "tpm")):
                values: list[Any] = [d[index] for d in deps]
                if len(deps) > 1 and all(v is not None for v in values):
                    for (dep, _, _), v in zip(deps, values, strict=True):
                        dep.setdefault("weight", float(v) if float(v) > 0 else 1.0)
                    used = f"{label} became the deployments' weights; "
                    break
            self.skip(f"models {name!r} rpm/tpm", f"{used}per-deployment limits are not enforced"
                      " (use governance limits per key or team)")

    def fallbacks(self, where: str, entries: Any) -> None:
        for entry in entries or []:
            if not isinstance(entry, dict):
                self.skip(where, f"unreadable entry {entry!r}")
                continue
            for source, targets in entry.items():
                model = self.models.get(source)
                known = [t for t in (targets or []) if t in self.models and t != source]
                if model is None or not known:
                    self.skip(f"{where} ({source})", "names a model that was not imported")
                    continue
                model.setdefault("fallbacks", [])
                model["fallbacks"] += [t for t in known if t not in model["fallbacks"]]

    def run(self) -> dict[str, Any]:
        items = self.data.get("model_list") or []
        if not isinstance(items, list):
            raise LiteLLMImportError("model_list: expected a list")
        for i, item in enumerate(items):
            if isinstance(item, dict):
                self.deployment(i, item)
        self.weights()
        router = self.data.get("router_settings") or {}
        settings = self.data.get("litellm_settings") or {}
        general = self.data.get("general_settings") or {}
        cfg: dict[str, Any] = {}
        for section, table, known in (("router_settings", router, lt.ROUTER_KEYS),
                                      ("litellm_settings", settings, lt.LITELLM_KEYS)):
            for key in sorted(set(table) - known):
                self.skip(f"{section}.{key}", "no gateway equivalent")
        if router.get("routing_strategy") not in (None, "simple-shuffle"):
            self.skip("router_settings.routing_strategy", "the gateway picks deployments by weight (simple-shuffle)")
        self.fallbacks("litellm_settings.fallbacks", settings.get("fallbacks"))
        self.fallbacks("router_settings.fallbacks", router.get("fallbacks"))
        for alias, target in (router.get("model_group_alias") or {}).items():
            target = target.get("model") if isinstance(target, dict) else target
            if target in self.models and alias not in self.models:
                self.models[target].setdefault("aliases", []).append(alias)
            else:
                self.skip(f"router_settings.model_group_alias.{alias}", "its model was not imported")
        retries = router.get("num_retries", settings.get("num_retries"))
        if retries is not None:
            cfg["retries"] = {"attempts": int(retries)}
        timeout = router.get("timeout", settings.get("request_timeout"))
        if timeout is not None:
            for entry in self.providers.values():
                entry.setdefault("timeouts", {}).setdefault("total_s", float(timeout))
        cfg["auth"] = self.auth(general)
        for key in sorted(set(general) - {"master_key"}):
            self.skip(f"general_settings.{key}", "no gateway equivalent")
        cfg.update(self.cache(settings))
        for name in (self.data.get("environment_variables") or {}):
            self.skip(f"environment_variables.{name}", "set it in the gateway's environment if still needed")
        for key in sorted(set(self.data) - {"model_list", "router_settings", "litellm_settings",
                                            "general_settings", "environment_variables"}):
            self.skip(key, "no gateway equivalent")
        cfg["providers"] = self.providers
        cfg["models"] = list(self.models.values())
        return cfg

    def auth(self, general: dict[str, Any]) -> dict[str, Any]:
        key = general.get("master_key")
        if key is None:
            self.skip("general_settings.master_key", "absent: LiteLLM accepts every caller, so auth is off here too")
            return {"enabled": False}
        env = _env_name(key)
        if env is None:
            env = "GATEWAY_MASTER_KEY"
            self.skip("general_settings.master_key", f"a literal key is not written to the file: export it as ${env}")
        return {"enabled": True, "master_key_env": env}

    def cache(self, settings: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"cache": {"enabled": bool(settings.get("cache"))}}
        params = settings.get("cache_params") or {}
        if not settings.get("cache"):
            return out
        if params.get("ttl") is not None:
            out["cache"]["ttl_s"] = float(params["ttl"])
        kind = params.get("type", "redis" if params.get("host") else "local")
        if kind == "redis" and params.get("host") and not _env_name(params.get("host")):
            port = params.get("port") or 6379
            out["store"] = {"redis_url": f"redis://{params['host']}:{port}/0"}
            if params.get("password"):
                self.skip("litellm_settings.cache_params.password", "put it in the URL through $GATEWAY_REDIS_URL")
        elif kind not in ("local", "redis"):
            self.skip("litellm_settings.cache_params.type", f"{kind!r} caches are not supported (embedded store used)")
        elif kind == "redis":
            self.skip("litellm_settings.cache_params", "Redis from the environment: set $GATEWAY_REDIS_URL")
        for key in sorted(set(params) - {"type", "host", "port", "password", "ttl"}):
            self.skip(f"litellm_settings.cache_params.{key}", "no gateway equivalent")
        return out


def convert(text: str) -> ImportResult:
    """The gateway configuration equivalent to a LiteLLM config.yaml, and what could not be carried over."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LiteLLMImportError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "model_list" not in data:
        raise LiteLLMImportError("not a LiteLLM proxy config (no model_list)")
    importer = _Importer(data)
    cfg = importer.run()
    return ImportResult(cfg, importer.skipped)


def render(result: ImportResult, source: str) -> str:
    """The configuration as YAML, headed by a comment naming every setting not carried over."""
    lines = [f"# Imported from the LiteLLM config {source} by `gateway config import-litellm`."]
    if result.skipped:
        lines.append("# Not carried over (review these):")
        lines += [f"#   - {s}" for s in result.skipped]
    body = yaml.safe_dump(result.config, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "\n".join(lines) + "\n" + body
