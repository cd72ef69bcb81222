"""Governance as two pipeline parts, built once per worker: `Limits` (RPM/TPM and budgets, admitted
before the call and settled after it) and `Policies` (input policies before or beside the call, the
output filter for the answer). Each has a null twin for when governance is off.

Order inside a request: the key is resolved (governance.auth) -> `Limits.admit` (one atomic store
call) -> `Policies.start` (redaction and local checks inline, remote checks beside the call as
`ctx.guards`, the output filter on `ctx.output_filter`). A rate-limited request never costs policy
work; a blocked one gets its tokens and cost back when it is settled.
"""

from __future__ import annotations

from collections import Counter

import aiohttp
import structlog

from gateway.config import Config
from gateway.costs import prices as pricing
from gateway.governance.admin import Admin
from gateway.governance.auth import Authenticator
from gateway.governance.counters import open_counters
from gateway.governance.keys import KeyStore
from gateway.governance.limits import Limiter
from gateway.governance.outfilter import OutputGuard
from gateway.governance.policies import PolicySet, compile_policies
from gateway.governance.prices import PriceTable
from gateway.governance.settings import GovernanceSettings, load_settings
from gateway.pipeline.context import RequestContext
from gateway.store import Store
from gateway.worker.routes import Routes

log = structlog.get_logger("gateway.governance")


class Limits:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def admit(self, ctx: RequestContext) -> None:
        await self.limiter.check(ctx)
        if ctx.reservation is not None and ctx.stream and not ctx.include_usage:
            ctx.collect_stream = True  # no usage will come: estimate it from the text

    def settle(self, ctx: RequestContext) -> None:
        self.limiter.settle(ctx)

    async def close(self) -> None:
        if self.limiter.leases is not None:
            self.limiter.leases.release_all()  # unused slices go back to the store
        if self.limiter.corrections is not None:
            await self.limiter.corrections.flush()


class NullLimits:
    async def admit(self, ctx: RequestContext) -> None:
        return None

    def settle(self, ctx: RequestContext) -> None:
        return None

    async def close(self) -> None:
        return None


class Policies:
    def __init__(self, sets: dict[str, PolicySet], http: aiohttp.ClientSession | None) -> None:
        self.sets = sets
        self.default = sets.get("*")
        self.outputs = {id(ps): OutputGuard(ps.output) for ps in sets.values() if ps.output}
        self.http = http

    async def start(self, ctx: RequestContext) -> None:
        ps = self.sets.get(ctx.model, self.default)
        if ps is None:
            return
        await ps.run_input(ctx)
        if ps.output:
            ctx.output_filter = self.outputs[id(ps)]

    def finish(self, ctx: RequestContext) -> None:
        """After-work: a beside-the-call check nobody waited for (the request ended first) is moot."""
        for guard in ctx.guards:
            if not guard.done():
                guard.cancel()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()


class NullPolicies:
    async def start(self, ctx: RequestContext) -> None:
        return None

    def finish(self, ctx: RequestContext) -> None:
        return None

    async def close(self) -> None:
        return None


class Governance:
    """What the worker builds when governance is on: the two parts, the key store, the admin routes."""

    def __init__(self, settings: GovernanceSettings, keystore: KeyStore, limits: Limits, policies: Policies,
                 routes: Routes) -> None:
        self.settings = settings
        self.keys = keystore
        self.limits = limits
        self.policies = policies
        self.routes = routes


async def build_governance(cfg: Config, store: Store, auth: Authenticator,
                           prices: pricing.PriceTable) -> Governance | None:
    """None when governance is off (`governance.enabled: false`)."""
    settings = load_settings(cfg)
    if not settings.enabled:
        return None
    counters = await open_counters(store, settings.window_s)
    keystore = KeyStore(store, settings.key_cache_ttl_s)
    auth.virtual = keystore
    limiter = Limiter(settings, counters, keystore, PriceTable(settings.prices, prices))
    http = None
    if any(p.kind == "http" for specs in settings.policies.values() for p in specs):
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    stats: Counter[str] = Counter()
    route_names = {name: m.name for m in cfg.models for name in (m.name, *m.aliases)}
    sets = compile_policies(settings.policies, route_names, http, stats)
    teams = {k.id: k.team for k in cfg.auth.keys}
    routes = Admin(auth, teams, keystore, limiter, stats).routes()
    log.info("governance_built", store=type(store).__name__, policy_routes=sorted(settings.policies),
             limits=bool(settings.keys or settings.teams))
    return Governance(settings, keystore, Limits(limiter), Policies(sets, http), routes)
