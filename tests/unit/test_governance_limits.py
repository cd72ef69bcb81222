"""The limiter's decisions, refusals and corrections over an in-memory stand-in for the counters."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from gateway.errors import RateLimited, ServiceUnavailable
from gateway.governance.auth import KeyRecord
from gateway.governance.corrections import Corrections
from gateway.governance.counters import Cap, Verdict, Window, WindowState
from gateway.governance.keys import KeyStore
from gateway.governance.limits import BudgetExceeded, Limiter, fmt_duration, micro_usd, period_of
from gateway.governance.prices import PriceTable
from gateway.governance.settings import Budget, GovernanceSettings, Price, Quota
from gateway.pipeline.context import EndpointSpec, RequestContext
from gateway.protocol.usage import Usage, parse_usage
from gateway.protocol.views import decode_view
from gateway.store import StoreUnavailable


class FakeCounters:
    """Same semantics as the scripts, without time: a window is just a running total."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.down = False
        self.adjusted: list[Any] = []
        self.admits = 0

    async def admit(self, windows: list[Window], caps: list[Cap]) -> Verdict:
        self.admits += 1
        if self.down:
            raise StoreUnavailable("down")
        states = []
        ok = True
        for w in windows:
            used = self.values.get(w.key, 0)
            retry = 0 if used + w.amount <= w.limit else (-1 if w.amount > w.limit else 17)
            ok = ok and retry == 0
            states.append(WindowState(used, retry, 42 if used else 0))
        spent = [self.values.get(c.key, 0) for c in caps]
        ok = ok and all(s + c.amount <= c.limit for s, c in zip(spent, caps, strict=True))
        if ok:
            for key, amount in [(w.key, w.amount) for w in windows] + [(c.key, c.amount) for c in caps]:
                self.values[key] = self.values.get(key, 0) + amount
        return Verdict(ok, 1000, states, spent)

    async def adjust(self, windows: list[tuple[int, str, int]], caps: list[tuple[str, int, int]]) -> None:
        self.adjusted.append((windows, caps))
        for key, delta in [*((k, d) for _, k, d in windows), *((k, d) for k, d, _ in caps)]:
            self.values[key] = self.values.get(key, 0) + delta

    async def read(self, keys: list[str]) -> list[int]:
        return [self.values.get(k, 0) for k in keys]


async def settled(limiter: Limiter, ctx: RequestContext) -> None:
    """Settle and write the correction now (it would otherwise wait for its batch)."""
    limiter.settle(ctx)
    assert limiter.corrections is not None
    await limiter.corrections.flush()


def make(counters: FakeCounters | None = None, **settings: Any) -> tuple[Limiter, FakeCounters]:
    """A limiter over fake counters; leases off unless asked for (these tests read exact counters)."""
    settings.setdefault("leases", False)
    s = msgspec.convert(settings, GovernanceSettings)
    counters = counters or FakeCounters()
    return Limiter(s, counters, KeyStore(None), PriceTable(s.prices)), counters


def request(body: dict[str, Any], key: KeyRecord, endpoint: str = "chat") -> RequestContext:
    ctx = RequestContext(EndpointSpec(endpoint, "openai"), {})  # type: ignore[arg-type]
    ctx.body = msgspec.json.encode(body)
    ctx.view = decode_view(ctx.body)
    ctx.model = body["model"]
    ctx.key = key
    return ctx


BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}
KEY = KeyRecord(id="k1", team="t1")


def test_formats() -> None:
    assert fmt_duration(0.25) == "250ms"
    assert fmt_duration(12) == "12s"
    assert fmt_duration(360) == "6m0s"
    assert micro_usd(42 * 1000 / 1e6) == 42_000  # exact prices stay exact despite float noise
    day = period_of(Budget(1, "day"), 86400 * 3 + 10)
    assert day[0].startswith("d19700104") and day[2] == 86390
    month = period_of(Budget(1, "month"), time.mktime((2025, 1, 31, 23, 0, 0, 0, 0, 0)) - time.timezone)
    assert month[0] == "m202501" and month[2] == 3600


async def test_rpm_refusal_is_a_429_with_openai_headers() -> None:
    limiter, _ = make(keys={"*": {"rpm": 2}})
    for _ in range(2):
        await limiter.check(request(BODY, KEY))
    with pytest.raises(RateLimited) as info:
        await limiter.check(request(BODY, KEY))
    err = info.value
    assert err.status == 429 and "key k1" in err.message and "requests per min" in err.message
    assert err.headers["retry-after"] == "17"
    assert err.headers["x-ratelimit-limit-requests"] == "2"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "42s"


async def test_team_limit_names_the_team() -> None:
    limiter, _ = make(teams={"t1": {"rpm": 1}})
    await limiter.check(request(BODY, KeyRecord(id="a", team="t1")))
    with pytest.raises(RateLimited, match="team t1"):
        await limiter.check(request(BODY, KeyRecord(id="b", team="t1")))
    await limiter.check(request(BODY, KeyRecord(id="c", team="t2")))  # another team: no limit


async def test_tokens_reserved_from_the_estimate_and_corrected() -> None:
    limiter, counters = make(keys={"k1": {"tpm": 1000}})
    ctx = request(BODY, KEY)
    await limiter.check(ctx)
    res = ctx.reservation
    assert res is not None
    assert res.tokens == len(ctx.body) // 4 + 1 + 10
    ctx.usage = Usage(input=5, output=3)
    ctx.t_first_byte = 1.0
    await settled(limiter, ctx)
    assert counters.values[res.token_keys[0]] == 8


@pytest.mark.parametrize(("tpm", "urgent"), [(10_000, False), (35, True)])
async def test_a_correction_waits_for_its_batch_unless_the_limit_is_near(tpm: int, urgent: bool) -> None:
    limiter, counters = make(keys={"k1": {"tpm": tpm}})
    limiter.corrections = Corrections(counters, interval_s=60)  # no timer can fire during the test
    ctx = request(BODY, KEY)
    await limiter.check(ctx)
    res = ctx.reservation
    assert res is not None
    assert res.urgent is urgent
    ctx.usage = Usage(input=5, output=3)
    ctx.t_first_byte = 1.0
    limiter.settle(ctx)
    await asyncio.sleep(0.001)
    assert counters.values[res.token_keys[0]] == (8 if urgent else res.tokens)
    assert limiter.corrections is not None
    await limiter.corrections.flush()
    assert counters.values[res.token_keys[0]] == 8


async def test_refused_request_too_large_for_the_window() -> None:
    limiter, _ = make(keys={"*": {"tpm": 5}})
    with pytest.raises(RateLimited, match="Request too large") as info:
        await limiter.check(request(BODY, KEY))
    assert "retry-after" not in info.value.headers


async def test_unanswered_and_cached_requests_give_their_reservation_back() -> None:
    limiter, counters = make(keys={"*": {"tpm": 1000}})
    ctx = request(BODY, KEY)
    await limiter.check(ctx)
    await settled(limiter, ctx)  # blocked by a policy: never reached the provider
    assert ctx.reservation is not None
    assert counters.values[ctx.reservation.token_keys[0]] == 0


async def test_anthropic_usage_and_stream_estimate() -> None:
    anthropic = parse_usage({"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 90})
    assert anthropic is not None and (anthropic.prompt, anthropic.output) == (100, 4)
    openai = parse_usage({"prompt_tokens": 7, "completion_tokens": 2})
    assert openai is not None and (openai.prompt, openai.output) == (7, 2)
    limiter, counters = make(keys={"*": {"tpm": 10_000}})
    ctx = request({**BODY, "stream": True}, KEY)
    await limiter.check(ctx)
    ctx.t_first_byte = 1.0

    ctx.events = [(None, b'{"choices":[{"index":0,"delta":{"content":"' + b"w" * 40 + b'"}}]}')]
    await settled(limiter, ctx)
    res = ctx.reservation
    assert res is not None
    assert counters.values[res.token_keys[0]] == res.prompt + 11


async def test_budget_refusal_and_spend() -> None:
    limiter, _ = make(keys={"*": {"budget": {"usd": 0.01, "period": "day"}}},
                      prices={"m": {"input_per_mtok": 100, "output_per_mtok": 100}})
    first = request(BODY, KEY)
    await limiter.check(first)
    assert first.reservation is not None
    cost = first.reservation.cost
    admitted = 1
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(100):
            await limiter.check(request(BODY, KEY))
            admitted += 1
    assert admitted == 10_000 // cost
    assert info.value.code == "budget_exceeded" and "this day" in info.value.message
    assert int(info.value.headers["retry-after"]) <= 86400
    spend = await limiter.spend(KEY, None)
    assert spend["day_usd"] == pytest.approx(admitted * cost / 1e6)
    assert spend["budget"] == {"usd": 0.01, "period": "day"}


async def test_store_outage_fails_open_or_closed() -> None:
    limiter, counters = make(keys={"*": {"rpm": 1}})
    counters.down = True
    for _ in range(3):
        await limiter.check(request(BODY, KEY))
    assert limiter.bypassed == 3 and limiter.outages == 1
    closed, counters = make(keys={"*": {"rpm": 1}}, store_failure="closed")
    counters.down = True
    with pytest.raises(ServiceUnavailable):
        await closed.check(request(BODY, KEY))


async def test_no_quota_means_no_store_call() -> None:
    limiter, counters = make(teams={"other": {"rpm": 1}})
    counters.down = True  # would count a bypass if it were called
    await limiter.check(request(BODY, KEY))
    assert limiter.bypassed == 0


def test_price_table_override_then_the_gateways_table() -> None:
    from gateway.costs.prices import ModelPrice, PricingConfig
    from gateway.costs.prices import PriceTable as GatewayPrices

    table = PriceTable({"house": Price(1, 2)})
    assert table.cost("house-v2", 1_000_000, 1_000_000) == pytest.approx(3.0)  # longest prefix
    plain = PriceTable({})
    assert plain.cost("gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert plain.cost("something-new", 1_000_000, 1_000_000) == pytest.approx(1.0 + 3.0)  # UNPRICED
    # The `pricing:` section reaches budgets too: one price table for the ledger and governance.
    configured = PriceTable({}, GatewayPrices(PricingConfig(models={"something-new": ModelPrice(input=10, output=20)})))
    assert configured.cost("something-new", 1_000_000, 1_000_000) == pytest.approx(30.0)


def test_quota_of_a_virtual_key_overrides_the_defaults() -> None:
    limiter, _ = make(keys={"*": {"rpm": 5, "tpm": 100}})
    from gateway.governance.keys import VirtualKey

    limiter.keys._by_id["vk_1"] = VirtualKey(id="vk_1", digest="d", hint="h", quota=Quota(rpm=50))
    kq, tq = limiter.quotas(KeyRecord(id="vk_1"))
    assert (kq.rpm, kq.tpm, tq) == (50, 100, Quota())


# ------------------------------------------------------------------------------ leases


async def test_far_from_the_limit_requests_are_admitted_from_a_lease() -> None:
    limiter, counters = make(keys={"*": {"rpm": 64_000}}, leases=True)
    for _ in range(2500):
        await limiter.check(request(BODY, KEY))
    # 1/64 of the limit per lease: 1,000 requests per store call.
    assert counters.admits == 3 and counters.values["gw:rl:{t1}:k:k1:r"] == 3000
    assert limiter.leases is not None
    limiter.leases.release_all()
    assert limiter.corrections is not None
    await limiter.corrections.flush()
    assert counters.values["gw:rl:{t1}:k:k1:r"] == 2500  # the unused slice went back


async def test_leases_never_admit_past_the_limit_across_workers() -> None:
    """Two workers share the counters: N per minute admits N, less at most a slice per worker."""
    shared = FakeCounters()
    workers = [make(shared, keys={"*": {"rpm": 640, "tpm": 10_000_000}}, leases=True)[0] for _ in range(2)]
    admitted = 0
    for i in range(800):
        try:
            await workers[i % 2].check(request(BODY, KEY))
            admitted += 1
        except RateLimited:
            pass
    slice_ = 640 // 64
    assert 640 - 2 * slice_ <= admitted <= 640
    assert shared.values["gw:rl:{t1}:k:k1:r"] <= 640


async def test_near_the_limit_each_request_goes_to_the_store() -> None:
    limiter, counters = make(keys={"*": {"rpm": 640}}, leases=True)
    for _ in range(610):  # the last lease (requests 601-610) leaves 3 slices: under LEASE_HEADROOM
        await limiter.check(request(BODY, KEY))
    before = counters.admits
    for _ in range(20):
        await limiter.check(request(BODY, KEY))
    assert counters.admits - before == 20  # near the limit: one by one


async def test_small_limits_are_never_leased() -> None:
    limiter, counters = make(keys={"*": {"rpm": 60}}, leases=True)
    for _ in range(10):
        await limiter.check(request(BODY, KEY))
    assert counters.admits == 10 and counters.values["gw:rl:{t1}:k:k1:r"] == 10


async def test_requests_from_a_lease_say_where_the_caller_stands() -> None:
    limiter, _ = make(keys={"*": {"rpm": 64_000, "tpm": 10_000_000}}, leases=True)
    seen = []
    for _ in range(3):
        ctx = request(BODY, KEY)
        await limiter.check(ctx)
        seen.append(dict(ctx.own_headers))
    assert [h["x-ratelimit-limit-requests"] for h in seen] == ["64000"] * 3
    remaining = [int(h["x-ratelimit-remaining-requests"]) for h in seen]
    assert remaining == [63_999, 63_998, 63_997]  # as if each request had gone to the store
    assert seen[0]["x-ratelimit-reset-requests"] == "1m0s" and "x-ratelimit-remaining-tokens" in seen[0]
