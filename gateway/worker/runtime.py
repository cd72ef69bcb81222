"""Per-worker state, built once in `__rsgi_init__` and closed in `__rsgi_del__`.

`Runtime.start` builds every part of the pipeline exactly once, in the order they depend on each
other (store -> auth and governance -> cache -> transform -> costs -> observe -> pipeline), with a
null part for each capability that is off, so no request ever parses configuration, builds a
client or checks whether a capability exists. `GATEWAY_DISABLE=cache,governance,...` switches
capabilities off (the benchmarks measure each one's cost). A capability that fails to start is
listed in `degraded` (shown by /readyz) and the worker serves with its null part.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from gateway.cache.admin import CacheAdmin
from gateway.cache.classifier import LearnedVerifier
from gateway.cache.cross import CROSS_MODEL, CrossVerifier, cross_sidecar
from gateway.cache.generations import Generations
from gateway.cache.metacache import MetaCache
from gateway.cache.part import CachePart, NullCache
from gateway.cache.shared_flight import SharedFlight
from gateway.cache.shed import ShedWatch
from gateway.cache.singleflight import SingleFlight
from gateway.cache.types import Verifier
from gateway.cache.verify import verify
from gateway.config import CacheConfig, Config
from gateway.costs.part import Costs, NullCosts
from gateway.costs.prices import PriceTable, load_pricing
from gateway.governance.auth import Authenticator
from gateway.governance.part import Governance, NullLimits, NullPolicies, build_governance
from gateway.observe.observer import Observer, Sources
from gateway.observe.part import NullObserver, build_observer
from gateway.observe.tracing import build_tracer
from gateway.pipeline.after import AfterWork
from gateway.pipeline.parts import Cache, Limits, Observe, Policies
from gateway.pipeline.parts import Costs as CostsPart
from gateway.pipeline.parts import Transform as TransformPart
from gateway.pipeline.respond import Responder
from gateway.pipeline.stages import Pipeline
from gateway.providers.resilience import Resilience
from gateway.providers.routing import Router
from gateway.providers.shedding import Admission
from gateway.providers.upstream import Provider, Transport, open_providers
from gateway.store import Store, StoreUnavailable, open_configured
from gateway.transform.part import NullTransform, Transform
from gateway.worker.lifecycle import bounded, stop_task
from gateway.worker.loadmon import LoopMonitor
from gateway.worker.routes import Routes

if TYPE_CHECKING:
    from gateway.embed.session import Embedder

log = structlog.get_logger("gateway.runtime")
CAPABILITIES = ("governance", "cache", "transform", "ledger", "observe")
# Each closer (flushes, the store, provider pools) gets this long at shutdown, so one that hangs can
# neither keep the worker alive nor starve the closers after it (the store closes last).
CLOSE_TIMEOUT_S = 5.0


def disabled_capabilities(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    env = os.environ if environ is None else environ
    names = {p.strip() for p in env.get("GATEWAY_DISABLE", "").split(",") if p.strip()}
    unknown = names - set(CAPABILITIES)
    if unknown:
        log.warning("gateway_disable_unknown", names=sorted(unknown), known=list(CAPABILITIES))
    return frozenset(names)


class Runtime:
    def __init__(self, cfg: Config, transports: Mapping[str, Transport] | None = None,
                 disabled: frozenset[str] | None = None) -> None:
        self.cfg = cfg
        self.transports = transports  # tests replace the network here
        self.disabled = disabled_capabilities() if disabled is None else disabled
        self.providers: dict[str, Provider] = {}
        self.auth = Authenticator(cfg.auth)
        self.loop_monitor = LoopMonitor()
        self.tracer = build_tracer()  # OTEL_* variables; a null tracer unless OTLP export is configured
        self.resilience = Resilience(cfg.resilience, cfg.providers)  # retry budgets, breakers
        # Concurrency limit on the loop's lag, a bounded wait, past it a fast 503 (providers/shedding.py).
        self.admission = Admission(cfg.resilience.admission)
        self.loop_monitor.on_sample = self.admission.tick
        self.per_client = cfg.resilience.admission.max_per_client > 0
        self.degraded: dict[str, str] = {}  # optional parts that are degraded, with the reason (/readyz)
        self.routes: Routes = {}  # extra HTTP routes the parts serve (admin, metrics, dashboard)
        self.ready = False
        self.store: Store | None = None
        self.metacache: MetaCache | None = None
        self.shed_watch: ShedWatch | None = None  # phase 4 shed too often: /readyz says so
        self.governance: Governance | None = None
        self.observer: Observer | NullObserver = NullObserver()
        self.pipeline: Pipeline | None = None
        self._closers: list[Callable[[], Awaitable[None] | None]] = []
        self._warmup: asyncio.Future[Any] | None = None

    async def start(self) -> Pipeline:
        cfg = self.cfg
        self.providers = open_providers(cfg.providers, cfg.server.port, self.transports)
        router = Router(cfg, self.providers)
        prices = load_pricing(cfg.pricing)  # one price table for the ledger and budgets
        store = self.store = open_configured(cfg.store)
        self._closers.append(store.close)
        if not await store.ping():
            # Not fatal: the store reconnects by itself; until then its users degrade (see /readyz).
            log.warning("store_unreachable_at_start", backend="redis" if cfg.store.redis_url else "embedded")

        limits, policies = await self._governance(store, prices)
        cache = await self._cache(store)
        transform = await self._transform(store)
        costs = self._costs(store, prices)
        observer = self._observe()
        self._cache_admin()
        self.pipeline = Pipeline(
            max_body=cfg.server.max_body_bytes, body_timeout_s=cfg.server.body_timeout_s, retries=cfg.retries,
            auth=self.auth, router=router,
            limits=limits, policies=policies, cache=cache, transform=transform, respond=Responder(prices),
            after=AfterWork(limits, policies, transform, costs, observer),
            tracer=self.tracer, resilience=self.resilience, collect_streams=observer.wants_events,
        )
        self.ready = True
        return self.pipeline

    # ------------------------------------------------------------------ one builder per capability

    def _on(self, name: str) -> bool:
        return name not in self.disabled

    def _failed(self, name: str, exc: BaseException) -> None:
        self.degraded[name] = f"{type(exc).__name__}: {exc}"
        log.exception("capability_failed", capability=name)

    async def _governance(self, store: Store, prices: PriceTable) -> tuple[Limits, Policies]:
        if not self._on("governance"):
            return NullLimits(), NullPolicies()
        try:
            gov = await build_governance(self.cfg, store, self.auth, prices)
        except Exception as exc:
            self._failed("governance", exc)
            return NullLimits(), NullPolicies()
        if gov is None:
            return NullLimits(), NullPolicies()
        self.governance = gov
        self.routes.update(gov.routes)
        self._closers.append(gov.policies.close)
        self._closers.append(gov.limits.close)  # corrections flushed before the store closes
        return gov.limits, gov.policies

    def _verifier(self, cfg: CacheConfig, embedder: Embedder | None) -> Verifier | None:
        """The pair classifier at the error bound: `auto` takes the one whose validation recall at
        that bound is higher; the next one down when it won't load (cross-encoder, MLP, the rules),
        said in /readyz."""
        if not cfg.verifier:
            return None
        learned = LearnedVerifier.load_or_none(cfg.max_wrong_rate)
        cross = None
        if cfg.verifier_model in ("cross", "auto"):
            own = cfg.verifier_path
            cross = CrossVerifier.load_or_none(
                cfg.max_wrong_rate, model_path=own or CROSS_MODEL, meta_path=cross_sidecar(own or CROSS_MODEL),
                budget_ms=cfg.verify_budget_ms, executor=embedder.executor if embedder is not None else None)
            if cross is None:
                self.degraded["verifier"] = "cross-encoder unavailable: phases 2 and 4 use the MLP verifier"
        if cross is not None and learned is not None and cfg.verifier_model == "auto":
            r_cross, r_mlp = cross.expected_recall()["full"], learned.expected_recall()["full"]
            log.info("verifier_chosen", bound=cfg.max_wrong_rate, cross_recall=round(r_cross, 4),
                     mlp_recall=round(r_mlp, 4), chosen="cross" if r_cross > r_mlp else "mlp")
            if r_cross <= r_mlp:  # at this bound the cheaper verifier serves as much on validation
                cross.close()
                cross = None
        if cross is not None:
            return cross
        if learned is None:
            self.degraded["verifier"] = "learned pair verifiers unavailable: phases 2 and 4 use the rules"
        return learned

    async def _cache(self, store: Store) -> Cache:
        cfg = self.cfg.cache
        if not cfg.enabled or not self._on("cache"):
            return NullCache()
        try:
            embedder = None
            if cfg.semantic:
                from gateway.embed.session import Embedder

                embedder = Embedder.load_or_none(cfg.embed_model_path or None, thread_nice=cfg.embed_nice)
                if embedder is None:
                    self.degraded["embedding"] = "model unavailable: semantic cache (phase 4) off"
                else:
                    self._closers.append(embedder.close)
            self.loop_monitor.busy_ms = cfg.busy_lag_ms
            overloaded = self.loop_monitor.busy if cfg.busy_lag_ms > 0 else None
            learned = self._verifier(cfg, embedder)
            generations = Generations(store)
            with contextlib.suppress(StoreUnavailable):  # until it is read, this worker serves no old entry
                await generations.refresh()
            metacache = MetaCache(store, cfg, embedder, verifier=learned or verify, overloaded=overloaded,
                                  generations=generations)
        except Exception as exc:
            self._failed("cache", exc)
            return NullCache()
        generations.start()  # a clear anywhere reaches this worker within a second
        self._closers.append(generations.close)
        self.metacache = metacache
        self.shed_watch = ShedWatch(metacache.stats) if embedder is not None else None
        self._closers.append(metacache.drain)
        shared = SharedFlight(store, metacache, wait_s=cfg.flight_wait_s) if cfg.flight_wait_s > 0 else None
        return CachePart(metacache, SingleFlight(), shared)

    async def _transform(self, store: Store) -> TransformPart:
        if not self._on("transform"):
            return NullTransform()
        part = Transform(store)
        try:
            await part.warm()
        except Exception as exc:
            self._failed("transform", exc)
            return NullTransform()
        return part

    def _costs(self, store: Store, prices: PriceTable) -> CostsPart:
        if not self._on("ledger"):
            return NullCosts()
        part = Costs(prices, store, self.auth)
        part.start()
        self.routes.update(part.routes())
        self._closers.append(part.close)  # flushed before the store closes: closers run in reverse
        return part

    def _observe(self) -> Observe:
        if not self._on("observe"):
            return self.observer
        sources = Sources(self.providers, self.store, self.metacache, lambda: self.loop_monitor.lag_ms,
                          self.resilience, self.admission)
        try:
            observer, routes = build_observer(self.cfg, sources, self.auth)
        except Exception as exc:
            self._failed("observe", exc)
            return self.observer
        observer.start()
        self.observer = observer
        self.routes.update(routes)
        self._closers.append(observer.close)
        return observer

    def _cache_admin(self) -> None:
        if self.metacache is None:
            return
        observer = self.observer
        pod = observer.pod_snapshot if isinstance(observer, Observer) and observer.settings.observe.metrics else None
        admin = CacheAdmin(self.auth, self.metacache, self.cfg.cache, self.cfg.models, pod)
        self.routes.update(admin.routes())

    def degraded_now(self) -> dict[str, str]:
        """The optional parts that are degraded, with the reason (what /readyz lists)."""
        out = dict(self.degraded)
        if self.shed_watch is not None:
            shed = self.shed_watch.check()
            if shed is not None:
                out["semantic_cache"] = shed
        for name, state in self.resilience.breakers.states().items():
            if state.state != "closed":
                out[f"deployment {name}"] = f"{state.state}: ejected after failing, probed again shortly"
        return out

    # ------------------------------------------------------------------ lifecycle

    def start_warmup(self) -> None:
        self.loop_monitor.start()
        self.tracer.start()
        self._closers.append(self.tracer.close)  # first closed of the parts: spans of the drain go out
        # Background: a provider that is down must not hold up the worker's start.
        self._warmup = asyncio.ensure_future(
            asyncio.gather(*(p.warm_up() for p in self.providers.values()), return_exceptions=True)
        )

    async def close(self) -> None:
        self.ready = False
        if self.pipeline is not None:
            await self.pipeline.after.drain(self.cfg.server.drain_timeout_s)
        await stop_task(self._warmup)
        await self.loop_monitor.stop()
        for closer in reversed(self._closers):
            await bounded(closer, CLOSE_TIMEOUT_S)
        for p in self.providers.values():
            await bounded(p.close, CLOSE_TIMEOUT_S)

