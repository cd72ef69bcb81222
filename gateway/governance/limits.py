"""Requests and tokens per minute and USD budgets, per key and per team, shared by every replica.

Every applicable window and budget is checked atomically in the store (see counters.py): far from
its limits a worker does so once per lease, for a slice of the limits it then admits requests from
locally (leases.py); near a limit, once per request. Tokens are reserved from an estimate of the
request (prompt + the answer's max_tokens) and corrected from the real usage after the answer
(`settle`); budgets reserve the estimated cost the same way. Refusals are 429s with Retry-After
and OpenAI's x-ratelimit-* headers.
A store outage admits requests (counted, logged once per outage) unless `store_failure: closed`.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from gateway.errors import BudgetExceeded, RateLimited, ServiceUnavailable
from gateway.governance.auth import KeyRecord
from gateway.governance.corrections import Corrections
from gateway.governance.counters import Cap, Counters, Verdict, Window
from gateway.governance.leases import Lease, Leases
from gateway.governance.prices import PriceTable
from gateway.governance.settings import Budget, GovernanceSettings, Quota
from gateway.store import StoreUnavailable

if TYPE_CHECKING:
    from gateway.governance.keys import KeyStore
    from gateway.pipeline.context import RequestContext

log = structlog.get_logger("gateway.governance.limits")
_DAY = 86400
_NONE = Quota()


class KeyPlan(NamedTuple):
    kq: Quota
    tq: Quota
    specs: list[tuple[str, int, bool]]
    names: list[tuple[str, str]]
    token_keys: list[str]
    team: str | None
    expires: float
    tightest: list[tuple[str, int]]  # per kind ("requests", "tokens"): the window with the lowest limit


class Reservation:
    """What a request took from the counters, to correct once its real usage is known."""

    __slots__ = ("caps", "cost", "model", "prompt", "sec", "token_keys", "tokens", "urgent")

    def __init__(self, sec: int, token_keys: list[str], tokens: int, prompt: int,
                 caps: list[tuple[str, int]], cost: int, model: str, urgent: bool = False) -> None:
        self.sec = sec
        self.token_keys = token_keys
        self.tokens = tokens
        self.prompt = prompt
        self.caps = caps  # (counter key, ttl)
        self.cost = cost  # micro-dollars
        self.model = model
        self.urgent = urgent  # a counter is near its limit: correct it at once, not with the batch


def fmt_duration(seconds: float) -> str:
    """OpenAI's reset format: "850ms", "12s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    s = math.ceil(seconds)
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


def micro_usd(usd: float) -> int:
    """Whole micro-dollars, rounded up (less a hair, so float noise in an exact price adds nothing)."""
    return math.ceil(usd * 1e6 - 1e-6)


def period_of(budget: Budget, now: float) -> tuple[str, int, int]:
    """(period id, counter ttl, seconds until the period ends) in UTC."""
    t = time.gmtime(now)
    if budget.period == "day":
        return time.strftime("d%Y%m%d", t), 2 * _DAY, _DAY - (int(now) % _DAY)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    end = time.mktime((year, month, 1, 0, 0, 0, 0, 0, 0)) - time.timezone
    return time.strftime("m%Y%m", t), 62 * _DAY, max(1, int(end - now))


def tag_of(key: KeyRecord) -> str:
    # One Redis Cluster slot for every counter a request touches (the script needs them together).
    return key.team if key.team else "k:" + key.id


def budget_keys(key: KeyRecord, budget: Budget, team_budget: Budget | None, now: float) -> tuple[str, str]:
    tag = tag_of(key)
    kp = period_of(budget, now)[0]
    tp = period_of(team_budget, now)[0] if team_budget else ""
    return f"gw:bud:{{{tag}}}:k:{key.id}:{kp}", f"gw:bud:{{{tag}}}:team:{tp}"


class Limiter:
    def __init__(self, settings: GovernanceSettings, counters: Counters | None, keystore: KeyStore,
                 prices: PriceTable) -> None:
        self.s = settings
        self.counters = counters
        self.keys = keystore
        self.prices = prices
        self.window = settings.window_s
        self.bypassed = 0  # requests admitted without a check because the store was away
        self.outages = 0
        self._in_outage = False
        self._key_default = settings.keys.get("*", _NONE)
        self._team_default = settings.teams.get("*", _NONE)
        self.active = counters is not None
        self.corrections = Corrections(counters) if counters is not None else None
        # Far from their limits, requests are admitted from per-worker leases (leases.py).
        self.leases = Leases(counters, self.corrections) if counters is not None and self.corrections is not None \
            and settings.leases else None
        self._plans: dict[str, KeyPlan] = {}

    def quotas(self, key: KeyRecord) -> tuple[Quota, Quota]:
        kq = self.s.keys.get(key.id, self._key_default)
        vk = self.keys.by_id(key.id) if key.id.startswith("vk_") else None
        if vk is not None:
            q = vk.quota
            kq = Quota(rpm=q.rpm if q.rpm is not None else kq.rpm, tpm=q.tpm if q.tpm is not None else kq.tpm,
                       budget=q.budget or kq.budget)
        tq = self.s.teams.get(key.team, self._team_default) if key.team else _NONE
        return kq, tq

    def estimate(self, ctx: RequestContext) -> tuple[int, int]:
        """(prompt tokens, answer tokens) to reserve before the call."""
        if self.s.token_estimate == "tokenizer":
            from gateway.governance.content import input_texts
            from gateway.transform.compress.tokens import count_tokens

            prompt = count_tokens("\n".join(t for _, _, t in input_texts(ctx.json(), ctx.endpoint.name)))
        else:
            prompt = len(ctx.body) // 4 + 1
        if ctx.endpoint.name == "embeddings":
            return prompt, 0
        view = ctx.view
        out = (view.max_completion_tokens or view.max_tokens) if view is not None else None
        n = (view.n or 1) if view is not None else 1
        return prompt, (out or self.s.default_output_tokens) * max(1, n)

    def _plan(self, key: KeyRecord) -> KeyPlan:
        """What a key's requests are checked against, worked out once per key (for as long as a
        virtual key's record is cached, so a quota change still holds within a second)."""
        now = time.monotonic()
        found = self._plans.get(key.id)
        if found is not None and found.expires > now and found.team == key.team:
            return found
        kq, tq = self.quotas(key)
        tag = tag_of(key)
        specs: list[tuple[str, int, bool]] = []  # (counter key, limit, counts tokens) per window
        names: list[tuple[str, str]] = []  # (scope, "requests" | "tokens") per window
        for scope, q, base in (("key", kq, f"gw:rl:{{{tag}}}:k:{key.id}"), ("team", tq, f"gw:rl:{{{tag}}}:team")):
            if q.rpm is not None:
                specs.append((base + ":r", q.rpm, False))
                names.append((scope, "requests"))
            if q.tpm is not None:
                specs.append((base + ":t", q.tpm, True))
                names.append((scope, "tokens"))
        tightest = []
        for kind in ("requests", "tokens"):
            idx = [i for i, (_, k) in enumerate(names) if k == kind]
            if idx:
                tightest.append((kind, min(idx, key=lambda i: specs[i][1])))
        plan = KeyPlan(kq, tq, specs, names, [k for k, _, t in specs if t], key.team,
                       now + self.s.key_cache_ttl_s / 2,  # with the key cache: a change holds within a second
                       tightest)
        if len(self._plans) > 100_000:
            self._plans.clear()  # bounded: virtual keys come and go
        self._plans[key.id] = plan
        return plan

    async def check(self, ctx: RequestContext) -> None:
        key = ctx.key
        assert key is not None and self.counters is not None
        plan = self._plan(key)
        kq, tq = plan.kq, plan.tq
        if kq is _NONE and tq is _NONE:
            return
        prompt, out = self.estimate(ctx)
        tokens = prompt + out
        windows = [Window(k, limit, tokens if is_tokens else 1) for k, limit, is_tokens in plan.specs]
        names = plan.names
        caps: list[Cap] = []
        cap_meta: list[tuple[str, Budget]] = []
        cost = 0
        now = time.time()
        if kq.budget is not None or tq.budget is not None:
            cost = micro_usd(self.prices.cost(ctx.model, prompt, out))
            kkey, tkey = budget_keys(key, kq.budget or Budget(0), tq.budget, now)
            for scope, b, ckey in (("key", kq.budget, kkey), ("team", tq.budget, tkey)):
                if b is not None:
                    caps.append(Cap(ckey, int(b.usd * 1e6), cost, period_of(b, now)[1]))
                    cap_meta.append((scope, b))
        leases = self.leases
        if leases is not None and leases.eligible(windows, caps):
            try:
                lease = leases.take(windows, caps)
                if lease is None and leases.leasing(windows, caps):
                    lease = await leases.acquire(windows, caps)
            except StoreUnavailable as exc:
                self._store_down(exc)
                return
            if lease is not None:  # admitted from this worker's slice: no store call
                self._store_up()
                if windows:
                    ctx.own_headers = self._lease_headers(plan, lease)
                ctx.reservation = Reservation(lease.sec, plan.token_keys, tokens, prompt,
                                              [(c.key, c.ttl_s) for c in caps], cost, ctx.model)
                return
        try:
            verdict = await self.counters.admit(windows, caps)
        except StoreUnavailable as exc:
            self._store_down(exc)
            return
        self._store_up()
        if leases is not None:
            leases.observe(windows, caps, verdict)
        if not verdict.ok:
            raise self._refusal(verdict, windows, names, caps, cap_meta, key, tokens, now)
        if windows:  # like OpenAI: every answer says where the caller stands
            ctx.own_headers = list(_rate_headers(verdict, windows, names).items())
        token_keys = [w.key for w in windows if w.key.endswith(":t")]
        ctx.reservation = Reservation(
            verdict.now, token_keys, tokens, prompt, [(c.key, c.ttl_s) for c in caps], cost, ctx.model,
            urgent=_near_limit(verdict, windows, caps))

    def _lease_headers(self, plan: KeyPlan, lease: Lease) -> list[tuple[str, str]]:
        """The x-ratelimit-* headers of a request admitted from a lease: as `_rate_headers` gives
        them (the tightest window per kind), from what the lease saw and still holds."""
        reset = fmt_duration(self.window)
        out: list[tuple[str, str]] = []
        for kind, i in plan.tightest:
            limit = plan.specs[i][1]
            remaining = max(0, limit - (lease.used[i] - lease.left[i]))
            out += ((f"x-ratelimit-limit-{kind}", str(limit)), (f"x-ratelimit-remaining-{kind}", str(remaining)),
                    (f"x-ratelimit-reset-{kind}", reset))
        return out

    def _store_down(self, exc: StoreUnavailable) -> None:
        if self.s.store_failure == "closed":
            raise ServiceUnavailable("Rate limits cannot be checked right now (store unavailable); try again.")
        self.bypassed += 1
        if not self._in_outage:
            self._in_outage = True
            self.outages += 1
            log.warning("limits_bypassed_store_unavailable", rule="fail-open", error=str(exc.__cause__ or exc))

    def _store_up(self) -> None:
        if self._in_outage:
            self._in_outage = False
            log.info("limits_enforced_again", bypassed=self.bypassed)

    def _refusal(self, v: Verdict, windows: list[Window], names: list[tuple[str, str]], caps: list[Cap],
                 cap_meta: list[tuple[str, Budget]], key: KeyRecord, tokens: int,
                 now: float) -> RateLimited:
        headers = _rate_headers(v, windows, names)
        refused = [i for i, st in enumerate(v.windows) if st.retry_s]
        if refused:
            i = refused[0]
            scope, kind = names[i]
            st, w = v.windows[i], windows[i]
            who = f"key {key.id}" if scope == "key" else f"team {key.team}"
            unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
            if st.retry_s < 0:
                return RateLimited(f"Request too large for {who} on {unit}: Limit {w.limit}, "
                                   f"Requested {tokens}.", headers=headers)
            retry = max(st.retry_s for st in v.windows if st.retry_s > 0)
            headers["retry-after"] = str(max(1, retry))
            return RateLimited(f"Rate limit reached for {who} on {unit}: Limit {w.limit}, Used {st.used}, "
                               f"Requested {w.amount}. Please try again in {fmt_duration(retry)}.",
                               headers=headers)
        for j, cap in enumerate(caps):
            if v.spent[j] + cap.amount > cap.limit:
                kind, budget = cap_meta[j]
                scope = f"key {key.id}" if kind == "key" else f"team {key.team}"
                headers["retry-after"] = str(period_of(budget, now)[2])
                return BudgetExceeded(
                    f"Budget exceeded for {scope}: spent ${v.spent[j] / 1e6:.4f} of ${budget.usd:.2f} this "
                    f"{budget.period}; this request needs up to ${cap.amount / 1e6:.4f}.", headers=headers)
        return RateLimited("Rate limit reached.", headers=headers)

    def settle(self, ctx: RequestContext) -> None:
        """Correct the reservation from the real usage (after the answer went out; written with the
        other corrections of the next few milliseconds)."""
        res = ctx.reservation
        if res is None or self.corrections is None:
            return
        usage = ctx.usage
        if ctx.cache_hit or (usage is None and not ctx.t_first_byte):
            tin, tout = 0, 0  # answered without the provider, or never answered: nothing was spent
        elif usage is not None:
            tin, tout = usage.prompt, usage.output
        elif ctx.events:
            from gateway.governance.content import stream_text

            tin, tout = res.prompt, len(stream_text(ctx.events)) // 4 + 1
        else:
            return  # no way to know: the reservation stands
        delta = tin + tout - res.tokens
        real = usage if usage is not None and not ctx.cache_hit else None
        cost_delta = micro_usd(self.prices.cost(res.model, tin, tout, real)) - res.cost if res.caps else 0
        if not delta and not cost_delta:
            return
        windows = [(k, delta) for k in res.token_keys] if delta else []
        caps = [(k, cost_delta, ttl) for k, ttl in res.caps] if cost_delta else []
        self.corrections.add(res.sec, windows, caps, now=res.urgent)

    async def spend(self, key: KeyRecord | None, team: str | None) -> dict[str, Any]:
        """Current spend (USD) of a key or a team, this day and this month."""
        assert self.counters is not None
        if self.corrections is not None:
            await self.corrections.flush()  # this worker's pending corrections count too
        now = time.time()
        probe = key or KeyRecord(id="", team=team)
        out: dict[str, Any] = {}
        names: list[str] = []
        for period in ("day", "month"):
            b = Budget(0, period)
            kkey, tkey = budget_keys(probe, b, b, now)
            names.append(kkey if key is not None else tkey)
        day, month = await self.counters.read(names)
        out["day_usd"], out["month_usd"] = day / 1e6, month / 1e6
        if key is not None:
            kq, _ = self.quotas(key)
            out["budget"] = {"usd": kq.budget.usd, "period": kq.budget.period} if kq.budget else None
        else:
            tq = self.s.teams.get(team or "", self._team_default)
            out["budget"] = {"usd": tq.budget.usd, "period": tq.budget.period} if tq.budget else None
        return out


def _near_limit(v: Verdict, windows: list[Window], caps: list[Cap]) -> bool:
    """Less than a quarter of a limit left after this request: its correction may decide whether the
    next request fits, so it must not wait for the batch."""
    for st, w in zip(v.windows, windows, strict=True):
        if w.key.endswith(":t") and (w.limit - st.used - w.amount) * 4 < w.limit:
            return True
    return any((c.limit - spent - c.amount) * 4 < c.limit for spent, c in zip(v.spent, caps, strict=True))


def _rate_headers(v: Verdict, windows: list[Window], names: list[tuple[str, str]]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: the scope that refused, else the tightest one, per kind."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        idx = [i for i, (_, k) in enumerate(names) if k == kind]
        if not idx:
            continue
        i = next((i for i in idx if v.windows[i].retry_s), min(idx, key=lambda i: windows[i].limit))
        st, w = v.windows[i], windows[i]
        headers[f"x-ratelimit-limit-{kind}"] = str(w.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, w.limit - st.used))
        headers[f"x-ratelimit-reset-{kind}"] = fmt_duration(st.reset_s)
    return headers
