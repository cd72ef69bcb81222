"""Model prices (USD per million tokens) and the cost of one answer's tokens; overridable in config.

Sources (USD per million tokens, standard/on-demand tier, text; verify before billing anyone, and
override in configuration when a contract or a price changes):
- OpenAI: https://platform.openai.com/docs/pricing ("Text tokens"), recorded 2025-10; gpt-4o,
  gpt-4o-mini, the gpt-4.1 family, o3 and o4-mini re-checked 2026-11-23 against copies of that page
  from 2026-03..06 (unchanged); gpt-5.1, gpt-5.2, gpt-5-pro and the codex models recorded 2025-12
  from the same page. OpenAI charges nothing to write its prompt cache: cache_write = input.
- Anthropic: https://platform.claude.com/docs/en/about-claude/pricing ("Model pricing", with its
  prompt-caching columns), checked 2026-11-23: 5-minute writes 1.25x input, 1-hour writes 2x input,
  cache hits 0.1x input, for every model listed here.
- Google Gemini API: https://ai.google.dev/gemini-api/docs/pricing ("Standard", paid tier), recorded
  2025-12: the prompts <= 200k tokens tier (gemini-2.5-pro and gemini-3-pro charge more above 200k
  tokens; this table has one tier, so configure the long-context price if that is your traffic).
  Cached input is the context-caching price (storage per hour is not billed per request here).
- AWS Bedrock: https://aws.amazon.com/bedrock/pricing/ (on-demand, us-east-1), recorded 2025-12.
  Claude on Bedrock is billed at Anthropic's list prices (the entries above); Amazon Nova and Meta
  Llama entries are Bedrock's own. Cross-region/regional inference-profile premiums are not modelled.
Newer families (after gpt-5.2, Claude 5.x, Gemini after 3) are not built in: price them in configuration.

A model name is priced by exact match, then without its date suffix ("gpt-4o-2024-08-06" ->
"gpt-4o", "claude-sonnet-4-5-20250929" -> "claude-sonnet-4-5") or "-latest", then by the longest
table name it starts with ("claude-sonnet-4-0" -> "claude-sonnet-4"; a version the table lacks may
be mispriced this way, so configure new models). Bedrock model ids lose their inference-profile
region, vendor and version ("us.anthropic.claude-sonnet-4-5-20250929-v1:0" -> "claude-sonnet-4-5",
"amazon.nova-pro-v1:0" -> "nova-pro"), and path prefixes go ("models/gemini-2.5-pro"). Configured
prices win.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gateway.protocol.usage import Usage, parse_usage

PER_TOKEN = 1e-6  # prices are per million tokens


class ModelPrice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """USD per million tokens. Unset cache prices default to `input` (no discount, no premium)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None  # Anthropic 5-minute TTL write
    cache_write_1h: float | None = None  # Anthropic 1-hour TTL write

    def resolved(self) -> ModelPrice:
        return ModelPrice(
            input=self.input, output=self.output,
            cached_input=self.input if self.cached_input is None else self.cached_input,
            cache_write=self.input if self.cache_write is None else self.cache_write,
            cache_write_1h=self.input if self.cache_write_1h is None else self.cache_write_1h,
        )


class PricingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The `pricing:` configuration section.

    models: name -> price, added to (or replacing) the built-in table; names match like built-ins.
    aliases: a deployment name -> the table name it is billed as (Azure deployments, house names).
    default: the price of any model not found; None = unpriced (cost 0, flagged in the ledger).
    """

    models: dict[str, ModelPrice] = {}
    aliases: dict[str, str] = {}
    default: ModelPrice | None = None


def _openai(inp: float, cached: float | None, out: float) -> ModelPrice:
    return ModelPrice(input=inp, output=out, cached_input=cached if cached is not None else inp,
                      cache_write=inp, cache_write_1h=inp)


def _anthropic(inp: float, out: float) -> ModelPrice:
    return ModelPrice(input=inp, output=out, cached_input=round(inp * 0.1, 6),
                      cache_write=round(inp * 1.25, 6), cache_write_1h=round(inp * 2.0, 6))


def _gemini(inp: float, cached: float | None, out: float) -> ModelPrice:
    """Gemini and Bedrock: cache reads at their own price; writes cost the input price."""
    return _openai(inp, cached, out)


BUILTIN: dict[str, ModelPrice] = {
    # OpenAI: input, cached input, output
    "gpt-4o": _openai(2.50, 1.25, 10.00),
    "gpt-4o-2024-05-13": _openai(5.00, None, 15.00),
    "gpt-4o-mini": _openai(0.15, 0.075, 0.60),
    "gpt-4.1": _openai(2.00, 0.50, 8.00),
    "gpt-4.1-mini": _openai(0.40, 0.10, 1.60),
    "gpt-4.1-nano": _openai(0.10, 0.025, 0.40),
    "gpt-5": _openai(1.25, 0.125, 10.00),
    "gpt-5-mini": _openai(0.25, 0.025, 2.00),
    "gpt-5-nano": _openai(0.05, 0.005, 0.40),
    "gpt-5-pro": _openai(15.00, None, 120.00),
    "gpt-5-codex": _openai(1.25, 0.125, 10.00),
    "gpt-5.1": _openai(1.25, 0.125, 10.00),
    "gpt-5.1-codex": _openai(1.25, 0.125, 10.00),
    "gpt-5.1-codex-mini": _openai(0.25, 0.025, 2.00),
    "gpt-5.2": _openai(1.75, 0.175, 14.00),
    "codex-mini": _openai(1.50, 0.375, 6.00),
    "gpt-4-turbo": _openai(10.00, None, 30.00),
    "gpt-3.5-turbo": _openai(0.50, None, 1.50),
    "o1": _openai(15.00, 7.50, 60.00),
    "o1-mini": _openai(1.10, 0.55, 4.40),
    "o1-pro": _openai(150.00, None, 600.00),
    "o3": _openai(2.00, 0.50, 8.00),
    "o3-mini": _openai(1.10, 0.55, 4.40),
    "o3-pro": _openai(20.00, None, 80.00),
    "o4-mini": _openai(1.10, 0.275, 4.40),
    # Anthropic: input, output (cache prices follow the published multipliers)
    "claude-opus-4-8": _anthropic(5.00, 25.00),
    "claude-opus-4-7": _anthropic(5.00, 25.00),
    "claude-opus-4-6": _anthropic(5.00, 25.00),
    "claude-opus-4-5": _anthropic(5.00, 25.00),
    "claude-opus-4-1": _anthropic(15.00, 75.00),
    "claude-opus-4": _anthropic(15.00, 75.00),
    "claude-sonnet-4-6": _anthropic(3.00, 15.00),
    "claude-sonnet-4-5": _anthropic(3.00, 15.00),
    "claude-sonnet-4": _anthropic(3.00, 15.00),
    "claude-3-7-sonnet": _anthropic(3.00, 15.00),
    "claude-3-5-sonnet": _anthropic(3.00, 15.00),
    "claude-haiku-4-5": _anthropic(1.00, 5.00),
    "claude-3-5-haiku": _anthropic(0.80, 4.00),
    "claude-3-opus": _anthropic(15.00, 75.00),
    "claude-3-haiku": ModelPrice(input=0.25, output=1.25, cached_input=0.03, cache_write=0.30,
                                 cache_write_1h=0.50),
    # Google Gemini API: input, cached input (context caching), output; prompts <= 200k tokens
    "gemini-3-pro": _gemini(2.00, 0.20, 12.00),
    "gemini-2.5-pro": _gemini(1.25, 0.125, 10.00),
    "gemini-2.5-flash": _gemini(0.30, 0.03, 2.50),
    "gemini-2.5-flash-lite": _gemini(0.10, 0.01, 0.40),
    "gemini-2.0-flash": _gemini(0.10, 0.025, 0.40),
    "gemini-2.0-flash-lite": _gemini(0.075, None, 0.30),
    "gemini-1.5-pro": _gemini(1.25, None, 5.00),
    "gemini-1.5-flash": _gemini(0.075, None, 0.30),
    # AWS Bedrock's own models: input, cached input, output (Claude on Bedrock: the entries above)
    "nova-premier": _gemini(2.50, 0.625, 12.50),
    "nova-pro": _gemini(0.80, 0.20, 3.20),
    "nova-lite": _gemini(0.06, 0.015, 0.24),
    "nova-micro": _gemini(0.035, 0.00875, 0.14),
    "llama3-3-70b-instruct": _gemini(0.72, None, 0.72),
    "llama4-maverick-17b-instruct": _gemini(0.24, None, 0.97),
    "llama4-scout-17b-instruct": _gemini(0.17, None, 0.66),
}

_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)$")
# Bedrock ids: "[region.]vendor.model[-vN[:M]]", e.g. "us.anthropic.claude-sonnet-4-5-20250929-v1:0".
_BEDROCK_ID = re.compile(r"^(?:(?:us|eu|apac|jp|au|ca|us-gov|global)\.)?"
                         r"(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer)\.(.+?)"
                         r"(?:-v\d+(?::\d+)?)?(?::\d+)?$")


class PriceTable:
    """Built once per worker; `lookup` is a dict hit for every name seen before."""

    def __init__(self, cfg: PricingConfig | None = None) -> None:
        cfg = cfg or PricingConfig()
        merged = {**BUILTIN, **{name.lower(): p for name, p in cfg.models.items()}}
        self._prices = {name: p.resolved() for name, p in merged.items()}
        # Longest first, so "gpt-4o-mini-audio" is billed as gpt-4o-mini rather than gpt-4o.
        self._prefixes = sorted(self._prices, key=len, reverse=True)
        self._aliases = dict(cfg.aliases)
        self._default = cfg.default.resolved() if cfg.default else None
        self._memo: dict[str, tuple[str, ModelPrice] | None] = {}

    def lookup(self, model: str) -> tuple[str, ModelPrice] | None:
        """(the table name, its price) for `model`, or the default, or None when unpriced."""
        if model in self._memo:
            return self._memo[model]
        found = self._find(self._aliases.get(model, model))
        if found is None and self._default is not None:
            found = ("default", self._default)
        if len(self._memo) < 10_000:  # client-chosen names: keep the memo bounded
            self._memo[model] = found
        return found

    def _find(self, model: str) -> tuple[str, ModelPrice] | None:
        name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o", "anthropic/claude-..." prefixes
        bedrock = _BEDROCK_ID.match(name)
        if bedrock:
            name = bedrock.group(1)
        for candidate in (name, _DATE_SUFFIX.sub("", name)):
            if candidate in self._prices:
                return candidate, self._prices[candidate]
        for prefix in self._prefixes:
            if name.startswith(prefix + "-"):
                return prefix, self._prices[prefix]
        return None


class _Rates(msgspec.Struct, frozen=True):
    input: float
    cached_input: float
    cache_write: float
    cache_write_1h: float
    output: float


def _rates(price: ModelPrice) -> _Rates:
    p = price.resolved()
    assert p.cached_input is not None and p.cache_write is not None and p.cache_write_1h is not None
    return _Rates(p.input, p.cached_input, p.cache_write, p.cache_write_1h, p.output)


def price_tokens(usage: Usage, price: ModelPrice) -> float:
    """What the provider bills for these tokens, in USD."""
    p = _rates(price)
    return PER_TOKEN * (usage.input * p.input + usage.cache_read * p.cached_input
                        + usage.cache_write * p.cache_write + usage.cache_write_1h * p.cache_write_1h
                        + usage.output * p.output)


def provider_cache_saving_usd(usage: Usage, price: ModelPrice) -> float:
    """Reads at the discount, minus what writes cost above the input price (negative when priming)."""
    p = _rates(price)
    return PER_TOKEN * (usage.cache_read * (p.input - p.cached_input)
                        - usage.cache_write * (p.cache_write - p.input)
                        - usage.cache_write_1h * (p.cache_write_1h - p.input))


def cost_usd(model: str, usage: Mapping[str, Any] | None, table: PriceTable | None = None) -> float | None:
    """USD for one answer's usage dict (any provider shape); None when the model is unpriced.

    The face other subsystems call (budgets in gateway.governance); without `table` it uses the
    process's default table (built-ins plus GATEWAY_PRICING_FILE, read once).
    """
    found = (table or default_table()).lookup(model)
    tokens = parse_usage(dict(usage)) if usage else None
    if found is None:
        return None
    return price_tokens(tokens, found[1]) if tokens is not None else 0.0


@functools.cache
def default_table() -> PriceTable:
    return load_pricing()


def load_pricing(cfg: PricingConfig | None = None, environ: dict[str, str] | None = None) -> PriceTable:
    """The table from configuration, or from the YAML file named by GATEWAY_PRICING_FILE."""
    if cfg is None:
        env = os.environ if environ is None else environ
        path = env.get("GATEWAY_PRICING_FILE")
        if path:
            data = yaml.safe_load(Path(path).read_text()) or {}
            cfg = msgspec.convert(data.get("pricing", data), PricingConfig, strict=False)
    return PriceTable(cfg)
