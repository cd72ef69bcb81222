"""Every setting of the gateway as msgspec structs, loaded once from a file plus the environment.

`load_config()` is called once per process (in the CLI and in each worker's `__rsgi_init__`);
nothing on the request path reads configuration. Validation errors name the offending key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from gateway.costs.prices import PricingConfig
from gateway.governance.settings import GovernanceSettings, SettingsError, restore_on_keys
from gateway.governance.settings import validate as validate_governance
from gateway.observe.settings import ArchiveConfig, ObserveConfig
from gateway.providers.egress import EgressError
from gateway.providers.egress import build as build_egress
from gateway.providers.resilience import BreakerConfig, RetryBudgetConfig
from gateway.providers.shedding import AdmissionConfig

ProviderKind = Literal["openai", "azure", "anthropic", "compatible", "gemini", "bedrock"]
BUILTIN_MOCK = "builtin:mock"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://", "redis+cluster://",
                 "rediss+cluster://")


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key and why."""


class Timeouts(msgspec.Struct, forbid_unknown_fields=True):
    connect_s: float = 5.0
    first_byte_s: float = 120.0  # until response headers arrive
    total_s: float = 900.0  # whole exchange, streams included


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True):
    kind: ProviderKind = "openai"
    # openai/azure/compatible: the URL the SDK would use as base_url (".../v1");
    # anthropic: the root ("https://api.anthropic.com"); compatible: the root serving both.
    base_url: str = ""
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_version: str | None = None  # Azure OpenAI api-version query parameter
    anthropic_version: str = "2023-06-01"
    headers: dict[str, str] = {}
    max_connections: int = 256
    warmup_connections: int = 2
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    # The HTTP client: "lean" (asyncio + the httptools C parser, the default) or "aiohttp".
    transport: Literal["lean", "aiohttp"] = "lean"
    # Egress (providers/egress.py): unset = HTTPS_PROXY/HTTP_PROXY/NO_PROXY from the environment,
    # "none" = direct, or an http:// proxy URL for this provider alone.
    proxy: str | None = None
    ca_file: str | None = None  # PEM bundle trusted instead of the system's
    client_cert: str | None = None  # PEM certificate (chain) presented to the upstream
    client_key: str | None = None  # its private key, when not in client_cert's file
    # bedrock: the AWS region (else AWS_REGION / AWS_DEFAULT_REGION) and where its credentials are
    # read from (SigV4); an api_key_env / api_key_file instead is a Bedrock API key (bearer token).
    region: str | None = None
    aws_access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    aws_secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"
    aws_session_token_env: str = "AWS_SESSION_TOKEN"
    # When those variables are unset: this profile of the shared credentials file (else $AWS_PROFILE,
    # else "default"), then container credentials (ECS, EKS Pod Identity); see providers/aws_credentials.py.
    aws_profile: str | None = None


def egress_proxy(p: ProviderConfig) -> str | None:
    """The built-in mock is the gateway itself: never reached through a proxy."""
    return "none" if p.base_url.rstrip("/") == BUILTIN_MOCK else p.proxy


class Deployment(msgspec.Struct, forbid_unknown_fields=True):
    provider: str
    model: str | None = None  # the provider's model name; None = the name the client asked for
    weight: float = 1.0


class RouteCache(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    semantic_threshold: float | None = None
    scope: Literal["key", "shared"] | None = None


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: str  # "*" matches any model the client names
    deployments: list[Deployment]
    aliases: list[str] = []
    fallbacks: list[str] = []  # other model names tried in order when every deployment failed
    cache: RouteCache | None = None
    compression: Literal["off", "light", "standard"] | None = None


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True):
    attempts: int = 2  # extra attempts per deployment on connect errors, timeouts, 429, 5xx
    backoff_ms: float = 50.0
    max_backoff_ms: float = 2000.0


class KeyConfig(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    key_sha256: str | None = None  # hex SHA-256 of the key: keys are stored hashed
    key_env: str | None = None  # or the name of an environment variable holding the key
    models: list[str] | None = None  # allowed models; None = all
    team: str | None = None


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    master_key_env: str = "GATEWAY_MASTER_KEY"
    keys: list[KeyConfig] = []


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 0  # 0 = the CPU quota from cgroups (or the core count)
    max_body_bytes: int = 10 * 1024 * 1024
    drain_timeout_s: float = 30.0
    mount_mock: bool = False  # serve the built-in mock under /_mock (embedded defaults)
    header_timeout_ms: int = 5000  # a client must send its request headers within this (slowloris)
    body_timeout_s: float = 30.0  # and its body within this once the headers arrived (else 408)


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    redis_url: str = ""  # empty = the embedded store (one machine, no server)
    embedded_path: str = ".gateway/store.db"
    # What a slow Redis may add to a request before the store is bypassed (then probed again).
    connect_timeout_ms: float = 250.0
    op_timeout_ms: float = 500.0


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    semantic_threshold: float = 0.90
    near_miss_threshold: float = 0.85
    ttl_s: float = 3600.0
    max_entries: int = 10_000
    only_temperature_zero: bool = True
    scope: Literal["key", "shared"] = "key"
    semantic: bool = True  # phase 4 (needs the embedding model)
    embed_budget_ms: float = 15.0  # phase 4 only when an embedding can be had this fast
    busy_lag_ms: float = 3.0  # skip phase 4 while the worker's event loop lags more (0 = never skip)
    flight_wait_s: float = 30.0  # identical misses in other workers/pods wait this long for one answer (0: off)
    embed_nice: int = 10  # the embedding threads' nice value above the event loop's (0 = same priority)
    max_wrong_rate: float = 0.01  # the learned verifier's bound on wrong served answers (docs/cache-verifier.md)
    # The pair classifier that judges phase-2/4 candidates: the cross-encoder, the small MLP over
    # cosine and lexical signals (cheaper), or auto: the one with the higher validation recall at
    # max_wrong_rate (docs/cache-verifier.md).
    verifier_model: Literal["auto", "cross", "mlp"] = "auto"
    verify_budget_ms: float = 30.0  # judge a lookup's candidates only when the batch fits this (else a miss)
    # Own weights instead of the shipped ones (e.g. retrained without QQP for commercial use): the
    # cross-encoder's .onnx, its make-eval-cross sidecar beside it (same name, .npz); the embedding
    # model's .onnx (same tokenizer). Empty: the shipped files.
    verifier_path: str = ""
    embed_model_path: str = ""
    # Advanced tunables (rarely changed; documented in docs/embedding.md).
    verifier: bool = True  # off only for the quality benchmark: phases 2 and 4 then trust the score
    near_miss_window: int = 128  # recent intents per partition compared by phase 2
    knn_k: int = 4  # phase-4 candidates tried (best first) before giving up
    l1_entries: int = 2048  # entries each worker keeps in memory in front of the store
    # Answers larger than this are not stored (a batch of embeddings can run to megabytes); those
    # above l1_entry_bytes are served from the store without a copy in each worker's memory.
    max_entry_bytes: int = 1_048_576
    l1_entry_bytes: int = 65_536
    # When the lookup could not embed, the write-back tries within this budget: it must never queue
    # ahead of lookups, which can turn into hits (the vector is otherwise reused, never redone).
    write_embed_budget_ms: float = 15.0


class LogConfig(msgspec.Struct, forbid_unknown_fields=True):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ResilienceConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Retry budget (per provider), breaker (per deployment), shedding (per worker): docs/resilience.md."""

    retry_budget: RetryBudgetConfig = msgspec.field(default_factory=RetryBudgetConfig)
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    admission: AdmissionConfig = msgspec.field(default_factory=AdmissionConfig)


class Config(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    providers: dict[str, ProviderConfig] = {}
    models: list[ModelConfig] = []
    retries: RetryConfig = msgspec.field(default_factory=RetryConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    observe: ObserveConfig = msgspec.field(default_factory=ObserveConfig)
    archive: ArchiveConfig = msgspec.field(default_factory=ArchiveConfig)
    pricing: PricingConfig = msgspec.field(default_factory=PricingConfig)
    governance: GovernanceSettings = msgspec.field(default_factory=GovernanceSettings)
    resilience: ResilienceConfig = msgspec.field(default_factory=ResilienceConfig)


def embedded_defaults() -> dict[str, Any]:
    """No file at all: auth off, every model answered by the built-in mock, so a newcomer gets answers."""
    return {
        "auth": {"enabled": False},
        "server": {"mount_mock": True},
        "providers": {"mock": {"kind": "compatible", "base_url": BUILTIN_MOCK}},
        "models": [
            {"name": "mock-gpt-4o", "deployments": [{"provider": "mock"}]},
            {"name": "mock-claude", "deployments": [{"provider": "mock"}]},
            {"name": "*", "deployments": [{"provider": "mock"}]},
        ],
    }


def upstream_defaults(url: str) -> dict[str, Any]:
    """`--upstream URL`: every model goes to one OpenAI- and Anthropic-compatible base URL."""
    return {
        "auth": {"enabled": False},
        "providers": {"upstream": {"kind": "compatible", "base_url": url.rstrip("/")}},
        "models": [{"name": "*", "deployments": [{"provider": "upstream"}]}],
    }


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


_SHORTCUTS = {
    "GATEWAY_REDIS_URL": ("store", "redis_url"),
    "GATEWAY_LOG_FORMAT": ("log", "format"),
    "GATEWAY_LOG_LEVEL": ("log", "level"),
    "GATEWAY_WORKERS": ("server", "workers"),
    "GATEWAY_PORT": ("server", "port"),
    "GATEWAY_HOST": ("server", "host"),
}


def _env_overrides(data: dict[str, Any], environ: dict[str, str]) -> None:
    """GATEWAY_SECTION__KEY=value (nested by double underscores) plus a few named shortcuts."""
    items: list[tuple[tuple[str, ...], str]] = []
    for name, value in environ.items():
        if name in _SHORTCUTS:
            items.append((_SHORTCUTS[name], value))
        elif name.startswith("GATEWAY_") and "__" in name:
            items.append((tuple(p.lower() for p in name[len("GATEWAY_"):].split("__")), value))
    for path, raw in items:
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment override {'.'.join(path)}: {part} is not a section")
        node[path[-1]] = yaml.safe_load(raw) if raw else raw  # "8080" -> 8080, "true" -> True


def _validate(cfg: Config, environ: dict[str, str]) -> None:
    names: set[str] = set()
    for i, m in enumerate(cfg.models):
        if not m.deployments:
            raise ConfigError(f"models[{i}] ({m.name}): needs at least one deployment")
        for j, d in enumerate(m.deployments):
            if d.provider not in cfg.providers:
                raise ConfigError(
                    f"models[{i}].deployments[{j}].provider: unknown provider {d.provider!r}"
                    f" (configured: {', '.join(sorted(cfg.providers)) or 'none'})"
                )
            if d.weight <= 0:
                raise ConfigError(f"models[{i}].deployments[{j}].weight: must be > 0")
        for n in (m.name, *m.aliases):
            if n in names:
                raise ConfigError(f"models[{i}]: the name or alias {n!r} is used twice")
            names.add(n)
    for i, m in enumerate(cfg.models):
        for f in m.fallbacks:
            if f not in names:
                raise ConfigError(f"models[{i}].fallbacks: unknown model {f!r}")
    for name, p in cfg.providers.items():
        if p.kind == "bedrock" and not p.region:
            raise ConfigError(f"providers.{name}.region: required for Bedrock (or set AWS_REGION)")
        if not p.base_url and p.kind not in ("gemini", "bedrock"):  # those two have a default
            raise ConfigError(f"providers.{name}.base_url: required")
        if p.kind == "azure" and not p.api_version:
            raise ConfigError(f"providers.{name}.api_version: required for Azure OpenAI")
        try:
            build_egress(egress_proxy(p), p.ca_file, p.client_cert, p.client_key, environ)
        except EgressError as exc:
            where = f"{exc.key} (environment, for providers.{name})" if exc.key.isupper() \
                else f"providers.{name}.{exc.key}"
            raise ConfigError(f"{where}: {exc}") from None
    for i, k in enumerate(cfg.auth.keys):
        if not (k.key_sha256 or k.key_env):
            raise ConfigError(f"auth.keys[{i}] ({k.id}): needs key_sha256 or key_env")
    url = cfg.store.redis_url
    if url and not url.startswith(REDIS_SCHEMES):
        raise ConfigError(f"store.redis_url: expected one of {', '.join(REDIS_SCHEMES)}")
    if cfg.server.max_body_bytes <= 0:
        raise ConfigError("server.max_body_bytes: must be > 0")
    if not 0.0 < cfg.cache.semantic_threshold <= 1.0:
        raise ConfigError("cache.semantic_threshold: must be in (0, 1]")
    _validate_resilience(cfg.resilience)
    try:
        validate_governance(cfg.governance)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None


def _validate_resilience(r: ResilienceConfig) -> None:
    if not 0.0 <= r.retry_budget.ratio <= 1.0:
        raise ConfigError("resilience.retry_budget.ratio: must be in [0, 1]")
    if r.retry_budget.min_retries < 0 or r.retry_budget.window_s <= 0:
        raise ConfigError("resilience.retry_budget: min_retries must be >= 0 and window_s > 0")
    b = r.breaker
    if b.consecutive_failures < 1 or not 0.0 < b.failure_rate <= 1.0 or b.window_s <= 0:
        raise ConfigError("resilience.breaker: consecutive_failures >= 1, failure_rate in (0, 1], window_s > 0")
    if b.base_ejection_s <= 0 or b.max_ejection_s < b.base_ejection_s:
        raise ConfigError("resilience.breaker: base_ejection_s > 0 and max_ejection_s >= base_ejection_s")
    if r.admission.max_in_flight < 0:
        raise ConfigError("resilience.admission.max_in_flight: must be >= 0 (0 = no bound)")
    if r.admission.max_per_client < 0:
        raise ConfigError("resilience.admission.max_per_client: must be >= 0 (0 = no bound)")
    a = r.admission
    if a.min_concurrency < 1 or a.max_concurrency < 0 or a.max_queue_ms < 0 or a.lag_target_ms <= 0:
        raise ConfigError("resilience.admission: min_concurrency >= 1, max_concurrency >= 0 (0 = max_in_flight), "
                          "max_queue_ms >= 0 (0 = no bound), lag_target_ms > 0")


def _name_dict_key(message: str, data: dict[str, Any]) -> str:
    """msgspec writes `providers[...]` for a mapping entry: find and name the provider at fault."""
    if "providers[...]" not in message or not isinstance(data.get("providers"), dict):
        return message
    for name, entry in data["providers"].items():
        try:
            msgspec.convert(entry, ProviderConfig, strict=False)
        except msgspec.ValidationError:
            return message.replace("providers[...]", f"providers.{name}")
    return message


def load_config(
    path: str | Path | None = None,
    *,
    upstream: str | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """The configuration from `path` (YAML or TOML), or embedded defaults, plus the environment."""
    env = dict(os.environ if environ is None else environ)
    if path:
        data = _read_file(Path(path))
        if upstream:
            data.setdefault("providers", {}).update(upstream_defaults(upstream)["providers"])
            data.setdefault("models", []).extend(upstream_defaults(upstream)["models"])
    elif upstream:
        data = upstream_defaults(upstream)
    else:
        data = embedded_defaults()
    _env_overrides(data, env)
    if "governance" in data:
        data["governance"] = restore_on_keys(data["governance"])
    try:
        cfg = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec names the path, e.g. "Expected `int`, got `str` - at `$.server.port`".
        raise ConfigError(_name_dict_key(str(exc), data).replace("$.", "")) from None
    for p in cfg.providers.values():
        if p.kind == "bedrock" and not p.region:  # the AWS SDKs' own variables, as they read them
            p.region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    _validate(cfg, env)
    return cfg


def config_source() -> tuple[str | None, str | None]:
    """The config file and upstream chosen by `gateway serve`, handed to workers through the env."""
    return os.environ.get("GATEWAY_CONFIG_FILE") or None, os.environ.get("GATEWAY_UPSTREAM") or None
