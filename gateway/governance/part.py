"""Wires governance into a worker: the before-stage (virtual keys, limits, input policies), the
after-hook (usage corrections), the output filter and the admin routes. Built once per worker.

Stage order inside governance: resolve a virtual key -> limits and budgets (one atomic store call)
-> redacting input policies and "before" checks -> "beside" checks as `ctx.guards` -> the output
filter. A rate-limited request never costs policy work; a blocked one gets its tokens and cost back.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from gateway.governance.admin import Admin
from gateway.governance.counters import Counters, open_counters
from gateway.governance.keys import KeyStore, activate
from gateway.governance.limits import Limiter
from gateway.governance.outfilter import OutputGuard
from gateway.governance.policies import PolicySet, compile_policies
from gateway.governance.prices import PriceTable
from gateway.governance.settings import GovernanceSettings, load_settings

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.pipeline.context import RequestContext
    from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.governance")

class Governance:
    def __init__(self, settings: GovernanceSettings, keystore: KeyStore, limiter: Limiter,
                 policies: dict[str, PolicySet]) -> None:
        self.settings = settings
        self.keys = keystore
        self.limiter = limiter
        self.policies = policies
        self.default = policies.get("*")
        self.outputs = {id(ps): OutputGuard(ps.output) for ps in policies.values() if ps.output}

    async def stage(self, ctx: RequestContext, proto: Any) -> bool:
        if self.limiter.active:
            await self.limiter.check(ctx)
            if ctx.stream and not ctx.include_usage and "gov_reservation" in ctx.extra:
                ctx.extra["collect_stream"] = True  # no usage will come: estimate it from the text
        ps = self.policies.get(ctx.model, self.default)
        if ps is not None:
            await ps.run_input(ctx)
            if ps.output:
                ctx.extra["output_filter"] = self.outputs[id(ps)]
        return False

    async def after(self, ctx: RequestContext, response: bytes | None, tap: Any) -> None:
        for guard in ctx.extra.get("gov_guards", ()):
            if not guard.done():
                guard.cancel()
        self.limiter.settle(ctx, tap)


async def install(app: GatewayApp, rt: Runtime) -> None:
    settings = load_settings(rt.cfg)
    if not settings.enabled:
        return
    store = rt.store
    if store is None:  # no store plug-in in this build: open our own over the same settings
        from gateway.store import open_configured

        store = open_configured(rt.cfg.store)
        rt.on_close(store.close)
    counters: Counters | None = await open_counters(store, settings.window_s)
    keystore = KeyStore(store, settings.key_cache_ttl_s)
    activate(keystore)
    limiter = Limiter(settings, counters, keystore, PriceTable(settings.prices, rt.prices))
    if limiter.corrections is not None:
        rt.on_close(limiter.corrections.flush)  # before the store closes (closers run in reverse)
    http = None
    if any(p.kind == "http" for specs in settings.policies.values() for p in specs):
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        rt.on_close(http.close)
    stats: Counter[str] = Counter()
    route_names = {name: m.name for m in rt.cfg.models for name in (m.name, *m.aliases)}
    policies = compile_policies(settings.policies, route_names, http, stats)
    gov = Governance(settings, keystore, limiter, policies)
    rt.auth.virtual = keystore.lookup
    rt.before_stages.append(gov.stage)
    rt.after_hooks.append(gov.after)
    Admin(rt, keystore, limiter, stats).install(app)
    rt.on_close(lambda: activate(None))
    log.info("governance_installed", store=type(store).__name__, policy_routes=sorted(settings.policies),
             limits=bool(settings.keys or settings.teams))
