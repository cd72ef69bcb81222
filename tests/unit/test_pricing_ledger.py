"""Price lookup and overrides, per-request cost and savings against hand computations, ledger totals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.config import AuthConfig, load_config
from gateway.costs.ledger import Ledger, RequestCost, account
from gateway.costs.part import Costs
from gateway.costs.prices import BUILTIN, ModelPrice, PriceTable, PricingConfig, cost_usd, load_pricing, price_tokens
from gateway.governance.auth import Authenticator
from gateway.pipeline.context import CacheOutcome, CompressionRecord, EndpointSpec, RequestContext
from gateway.protocol.usage import Usage, parse_usage
from gateway.providers.routing import Router
from gateway.providers.upstream import Provider
from gateway.store import StoreUnavailable
from gateway.store.embedded import EmbeddedStore

SONNET = ("claude-sonnet-4-5", BUILTIN["claude-sonnet-4-5"])
MINI = ("gpt-4o-mini", BUILTIN["gpt-4o-mini"])


# ----------------------------------------------------------------------------------- prices


@pytest.mark.parametrize(("model", "entry"), [
    ("gpt-4o", "gpt-4o"), ("gpt-4o-2024-08-06", "gpt-4o"), ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4.1-nano", "gpt-4.1-nano"), ("o3-mini", "o3-mini"),
    ("o4-mini-2025-04-16", "o4-mini"), ("openai/gpt-4.1", "gpt-4.1"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"), ("claude-sonnet-4-0", "claude-sonnet-4"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"), ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"), ("Claude-Haiku-4-5", "claude-haiku-4-5"),
    ("gpt-5.1-2025-11-13", "gpt-5.1"), ("gpt-5.1-codex-mini", "gpt-5.1-codex-mini"), ("gpt-5.2", "gpt-5.2"),
    ("gemini-2.5-pro", "gemini-2.5-pro"), ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("gemini-2.5-flash-lite-preview-09-2025", "gemini-2.5-flash-lite"), ("gemini-3-pro-preview", "gemini-3-pro"),
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"), ("amazon.nova-pro-v1:0", "nova-pro"),
    ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
    ("meta.llama3-3-70b-instruct-v1:0", "llama3-3-70b-instruct"), ("eu.amazon.nova-micro-v1:0", "nova-micro"),
])
def test_lookup(model: str, entry: str) -> None:
    found = PriceTable().lookup(model)
    assert found is not None and found[0] == entry


def test_published_rates() -> None:
    s = BUILTIN["claude-sonnet-4-5"]
    assert (s.input, s.cached_input, s.cache_write, s.cache_write_1h, s.output) == (3.0, 0.3, 3.75, 6.0, 15.0)
    o = BUILTIN["gpt-4o"]
    assert (o.input, o.cached_input, o.cache_write, o.output) == (2.5, 1.25, 2.5, 10.0)


def test_gemini_and_bedrock_rates() -> None:
    g = BUILTIN["gemini-2.5-flash"]
    assert (g.input, g.cached_input, g.cache_write, g.output) == (0.30, 0.03, 0.30, 2.50)
    n = PriceTable().lookup("amazon.nova-lite-v1:0")
    assert n is not None and (n[1].input, n[1].output) == (0.06, 0.24)
    # Claude through Bedrock costs what Claude costs at Anthropic.
    assert PriceTable().lookup("us.anthropic.claude-opus-4-1-20250805-v1:0") == PriceTable().lookup("claude-opus-4-1")


def test_unknown_models_are_unpriced_unless_a_default_is_set() -> None:
    assert PriceTable().lookup("mock-house-model") is None
    table = PriceTable(PricingConfig(default=ModelPrice(input=1.0, output=2.0)))
    found = table.lookup("mock-house-model")
    assert found is not None and found[0] == "default" and found[1].cached_input == 1.0


def test_config_overrides_and_aliases() -> None:
    cfg = PricingConfig(models={"gpt-4o": ModelPrice(input=2.0, output=8.0, cached_input=0.5),
                                "House-Model": ModelPrice(input=1.0, output=1.0)},
                        aliases={"my-azure-deploy": "gpt-4o"})
    table = PriceTable(cfg)
    assert table.lookup("gpt-4o-2024-08-06") == ("gpt-4o", ModelPrice(2.0, 8.0, 0.5, 2.0, 2.0))
    assert table.lookup("my-azure-deploy") == table.lookup("gpt-4o")
    assert table.lookup("house-model") is not None


def test_pricing_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("pricing:\n  models:\n    claude-house: {input: 3, output: 15, cached_input: 0.3,"
                    " cache_write: 3.75}\n")
    table = load_pricing(environ={"GATEWAY_PRICING_FILE": str(path)})
    assert table.lookup("claude-house") == ("claude-house", ModelPrice(3.0, 15.0, 0.3, 3.75, 3.0))
    path.write_text("pricing: {models: {x: {input: 1, output: 1, bogus: 2}}}\n")
    with pytest.raises(msgspec.ValidationError, match="bogus"):
        load_pricing(environ={"GATEWAY_PRICING_FILE": str(path)})


# ------------------------------------------------------------------------- per request, by hand


def close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-12


def test_anthropic_priming_then_reading() -> None:
    write = account(Usage(input=1200, cache_write=4000, output=300), SONNET, compression_tokens_saved=500)
    # 1200 x $3 + 4000 x $3.75 + 300 x $15 per million; writes cost 4000 x $0.75 more than input.
    assert close(write.cost_usd, (1200 * 3 + 4000 * 3.75 + 300 * 15) / 1e6)
    assert close(write.saved_provider_cache_usd, -(4000 * 0.75) / 1e6)
    assert close(write.saved_compression_usd, 500 * 3 / 1e6)
    read = account(Usage(input=1200, cache_read=4000, output=300), SONNET)
    assert close(read.cost_usd, (1200 * 3 + 4000 * 0.30 + 300 * 15) / 1e6)
    assert close(read.saved_provider_cache_usd, 4000 * 2.70 / 1e6)
    assert read.saved_cache_usd == 0 and read.price_model == "claude-sonnet-4-5"


def test_one_hour_writes_cost_twice_the_input() -> None:
    cost = account(Usage(cache_write_1h=1000), SONNET)
    assert close(cost.cost_usd, 1000 * 6 / 1e6) and close(cost.saved_provider_cache_usd, -1000 * 3 / 1e6)


def test_openai_cached_tokens() -> None:
    cost = account(Usage(input=36, cache_read=64, output=7), MINI)
    assert close(cost.cost_usd, (36 * 0.15 + 64 * 0.075 + 7 * 0.60) / 1e6)
    assert close(cost.saved_provider_cache_usd, 64 * 0.075 / 1e6)


def test_cache_hit_saves_the_whole_call() -> None:
    hit = account(Usage(input=80, cache_read=20, output=20), ("gpt-4o", BUILTIN["gpt-4o"]), cache_hit=True)
    assert hit.cost_usd == 0 and hit.saved_provider_cache_usd == 0 and hit.saved_compression_usd == 0
    assert close(hit.saved_cache_usd, (80 * 2.5 + 20 * 1.25 + 20 * 10) / 1e6)
    primed = account(Usage(input=10, cache_write=1000, output=5), SONNET, cache_hit=True)
    assert close(primed.saved_cache_usd, (1010 * 3 + 5 * 15) / 1e6)  # a repeat would not write again
    fallback = account(None, ("gpt-4o", BUILTIN["gpt-4o"]), cache_hit=True, hit_tokens=120)
    assert close(fallback.saved_cache_usd, 120 * 2.5 / 1e6)


def test_unpriced_model_costs_nothing_but_keeps_tokens() -> None:
    cost = account(Usage(input=5, output=5), None, compression_tokens_saved=3, compaction_tokens_saved=2)
    assert cost.summary() == {"cost_usd": 0.0, "saved_cache_usd": 0.0, "saved_compression_usd": 0.0,
                              "saved_provider_cache_usd": 0.0, "saved_compaction_usd": 0.0, "price_model": None}
    assert cost.counters()[:8] == [1, 0, 5, 0, 0, 5, 3, 2]


def test_cost_of_nothing_is_zero() -> None:
    assert price_tokens(Usage(), BUILTIN["o1"]) == 0.0


def test_cost_usd_for_other_subsystems() -> None:
    """gateway.governance (budgets) calls cost_usd(model, usage dict) -> float | None."""
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 400}}
    assert cost_usd("gpt-4o-2024-08-06", usage) == pytest.approx((600 * 2.5 + 400 * 1.25 + 100 * 10) / 1e6)
    assert cost_usd("claude-sonnet-4-6", {"input_tokens": 10, "output_tokens": 1,
                                          "cache_read_input_tokens": 100}) == pytest.approx((30 + 30 + 15) / 1e6)
    assert cost_usd("unknown-model", usage) is None and cost_usd("gpt-4o", None) == 0.0


# ------------------------------------------------------------------------------------- totals


class MemoryStore:
    """The three store calls the ledger uses, with an outage switch."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.lists: dict[str, list[bytes]] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("down")

    async def incr_window(self, key: str, amount: int, window_s: float) -> int:
        self._check()
        self.counters[key] = self.counters.get(key, 0) + amount
        return self.counters[key]

    async def list_push(self, key: str, item: bytes, cap: int, ttl_s: float) -> None:
        self._check()
        self.lists.setdefault(key, []).insert(0, item)

    async def list_range(self, key: str, count: int) -> list[bytes]:
        self._check()
        return self.lists.get(key, [])[:count]


def costs() -> list[tuple[str, str, RequestCost]]:
    return [
        ("claude", "team-a", account(Usage(input=1200, cache_write=4000, output=300), SONNET)),
        ("claude", "team-a", account(Usage(input=1200, cache_read=4000, output=300), SONNET,
                                     compression_tokens_saved=100, compaction_tokens_saved=40)),
        ("claude", "team-b", account(Usage(input=10, output=5), SONNET, cache_hit=True)),
        ("gpt-4o-mini", "team-b", account(Usage(input=36, cache_read=64, output=7), MINI)),
    ]


def check_totals(doc: dict[str, Any]) -> None:
    t = doc["totals"]
    assert t["requests"] == 4 and t["cache_hits"] == 1
    assert (t["input_tokens"], t["cached_tokens"], t["cache_write_tokens"], t["output_tokens"]) == (2436, 4064,
                                                                                                   4000, 607)
    hand_cost = ((1200 * 3 + 4000 * 3.75 + 300 * 15) + (1200 * 3 + 4000 * 0.3 + 300 * 15)
                 + (36 * 0.15 + 64 * 0.075 + 7 * 0.6)) / 1e6
    assert t["cost_usd"] == pytest.approx(hand_cost, abs=1e-9)
    assert t["saved_cache_usd"] == pytest.approx((10 * 3 + 5 * 15) / 1e6, abs=1e-9)
    assert t["saved_compression_usd"] == pytest.approx(100 * 3 / 1e6, abs=1e-9)
    assert t["compaction_tokens_saved"] == 40  # each layer apart: compaction is not compression
    assert t["saved_compaction_usd"] == pytest.approx(40 * 3 / 1e6, abs=1e-9)
    assert t["saved_provider_cache_usd"] == pytest.approx((-4000 * 0.75 + 4000 * 2.7 + 64 * 0.075) / 1e6, abs=1e-9)
    assert doc["by_key"]["team-b"]["requests"] == 2 and doc["by_model"]["claude"]["requests"] == 3
    assert {(r["model"], r["key"]) for r in doc["rows"]} == {("claude", "team-a"), ("claude", "team-b"),
                                                             ("gpt-4o-mini", "team-b")}


async def test_totals_shared_through_the_store_survive_an_outage() -> None:
    store = MemoryStore()
    workers = [Ledger(lambda: store), Ledger(lambda: store)]
    for n, (model, key, cost) in enumerate(costs()):
        workers[n % 2].record(model, key, cost)
    store.down = True
    assert not await workers[0].flush()
    assert (await workers[0].totals())["scope"] == "worker"  # its own half, from memory
    store.down = False
    doc = await workers[1].totals()  # flushes its own, reads everyone's flushed so far
    assert doc["scope"] == "shared" and doc["totals"]["requests"] == 2
    await workers[0].flush()
    await workers[0].flush()  # nothing is counted twice
    check_totals(await workers[1].totals())


async def test_totals_in_the_embedded_store(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path / "store.db"))
    try:
        ledger, other = Ledger(lambda: store), Ledger(lambda: store)
        for model, key, cost in costs():
            ledger.record(model, key, cost)
        assert await ledger.flush()
        check_totals(await other.totals())
    finally:
        await store.close()


async def test_no_store_means_worker_totals() -> None:
    ledger = Ledger(lambda: None)
    for model, key, cost in costs():
        ledger.record(model, key, cost)
    doc = await ledger.totals()
    assert doc["scope"] == "worker"
    check_totals(doc)


# --------------------------------------------------------------------------------- the hook


CONFIG = """
providers:
  an: {kind: anthropic, base_url: "https://api.anthropic.com"}
models:
  - {name: claude, deployments: [{provider: an, model: claude-sonnet-4-5-20250929}]}
"""


class Proto:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Any, bytes]] = []

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        self.sent.append((status, headers, body))


async def test_costs_part_prices_a_request_and_serves_admin_totals(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path, environ={})
    providers = {name: Provider(name, p, 0) for name, p in cfg.providers.items()}
    auth = Authenticator(AuthConfig(enabled=True), environ={"GATEWAY_MASTER_KEY": "sk-master"})
    router = Router(cfg, providers)
    costs = Costs(PriceTable(), None, auth)

    ctx = RequestContext(EndpointSpec("messages", "anthropic"), {})
    ctx.model, ctx.key = "claude", auth.authenticate({"x-api-key": "sk-master"})
    ctx.plan = router.plan("claude", "anthropic", "messages")
    ctx.usage = parse_usage({"input_tokens": 100, "output_tokens": 10, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 2000})
    ctx.compression = CompressionRecord(tokens_before=900, tokens_after=700, compaction_before=500,
                                        compaction_after=450)
    costs.account(ctx)
    assert ctx.cost is not None
    assert ctx.cost.price_model == "claude-sonnet-4-5"  # from the route, as no target was set
    assert ctx.cost.cost_usd == pytest.approx((100 * 3 + 2000 * 0.3 + 10 * 15) / 1e6)
    assert ctx.cost.saved_compression_usd == pytest.approx(200 * 3 / 1e6)
    assert ctx.cost.saved_compaction_usd == pytest.approx(50 * 3 / 1e6) and ctx.cost.compaction_tokens_saved == 50
    assert ctx.cost.saved_usd == pytest.approx(ctx.cost.saved_compression_usd + ctx.cost.saved_compaction_usd
                                               + ctx.cost.saved_provider_cache_usd)

    hit = RequestContext(EndpointSpec("messages", "anthropic"), {})
    hit.model, hit.key, hit.plan = "claude", ctx.key, ctx.plan
    hit.cache = CacheOutcome(phase=3, tier="exact", similarity=1.0, query="q", tokens_saved=999,
                             response=b'{"usage": {"input_tokens": 50, "output_tokens": 5}}')
    costs.account(hit)
    assert hit.cost is not None
    assert hit.cost.saved_cache_usd == pytest.approx((50 * 3 + 5 * 15) / 1e6)

    proto = Proto()
    await costs.savings(None, proto, {"authorization": "Bearer sk-master"})
    doc = msgspec.json.decode(proto.sent[0][2])
    assert doc["totals"]["requests"] == 2 and doc["totals"]["cached_tokens"] == 2000
    assert doc["by_key"]["master"]["cache_hits"] == 1
    with pytest.raises(Exception, match="master key"):
        await costs.savings(None, proto, {"authorization": "Bearer wrong"})
