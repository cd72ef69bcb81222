"""Prometheus metrics: in-process counters and histograms per worker, summed across a pod's workers.

Why files: Granian workers are separate processes that share no memory. A request only bumps
dict entries in its own worker (no lock, no I/O, no syscall); every `dump_interval_s` each worker
writes a msgpack snapshot to `<dir>/<pid>.msgpack` (write + atomic rename), where `dir` is unique
to the gateway instance. `GET /metrics`, served by whichever worker gets it, sums its own live
values with every other worker's file. Counters of a worker that died stay in the sum (its file
remains), so pod totals never go backwards; gauges come from live workers only. A scrape is at
most one dump interval behind; Prometheus scrapes every 15 s or so.

Redis would give the same sums across pods, but Prometheus already aggregates pods; a per-pod
exposition keeps the hot path free of network calls and the scrape free of a store dependency.

Label values never come from what a client typed: a model label is a configured route (or one of
its deployments' model names), `*` for the wildcard route, or `unknown` (before auth, or a name no
route serves); every other label is drawn from a bounded set (`ModelLabels`, `Bounded`), so no
request can add series to every worker's metrics and snapshot files.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from gateway.observe.entry import AuditEntry
from gateway.providers.resilience import Breakers, RetryBudget
from gateway.providers.shedding import Admission

# Seconds. Fine at the low end: gateway overhead is measured in tens of microseconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

Labels = tuple[str, ...]
UNKNOWN = "unknown"


class Bounded:
    """A label's allowed values: the first `cap` distinct ones seen, then `overflow` for any other."""

    __slots__ = ("_cap", "_overflow", "_seen")

    def __init__(self, cap: int = 64, overflow: str = "other") -> None:
        self._cap, self._overflow = cap, overflow
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        seen = self._seen
        if value in seen:
            return value
        if len(seen) >= self._cap:
            return self._overflow
        seen.add(value)
        return value


class ModelLabels:
    """The model label values: a route's name from the configuration, its deployments' model names, or `unknown`.

    Built once from `cfg.models` (`ModelLabels.from_routes`). Without a configuration it falls back to
    a bounded set of the first names seen from authenticated requests.
    """

    def __init__(self, routes: Iterable[tuple[str, Iterable[str], Iterable[str]]] | None = None,
                 cap: int = 64) -> None:
        self._by_name: dict[str, str] | None = None
        self._deployments: frozenset[str] = frozenset()
        self._wildcard = False
        self._learned = Bounded(cap, UNKNOWN)
        if routes is None:
            return
        by_name: dict[str, str] = {}
        deployments: set[str] = set()
        for name, aliases, models in routes:
            if name == "*":
                self._wildcard = True
            by_name[name] = name
            for alias in aliases:
                by_name[alias] = name
            deployments.update(models)
        self._by_name = by_name
        self._deployments = frozenset(deployments)

    @classmethod
    def from_routes(cls, models: Iterable[Any]) -> ModelLabels:
        """From `Config.models` (each with `name`, `aliases` and `deployments[].model`)."""
        return cls([(m.name, m.aliases, [d.model for d in m.deployments if d.model]) for m in models])

    def route(self, requested: str, authenticated: bool) -> str:
        """The label for the model a client asked for: the route that serves it."""
        if not authenticated:
            return UNKNOWN
        if self._by_name is None:
            return self._learned(requested)
        route = self._by_name.get(requested)
        if route is not None:
            return route
        return "*" if self._wildcard else UNKNOWN

    def deployment(self, model: str, requested: str, authenticated: bool) -> str:
        """The label for the model a provider was sent (tokens, cost): a configured name, else the route's."""
        if authenticated and self._by_name is not None and model in self._deployments:
            return model
        return self.route(model if self._by_name is None else requested, authenticated)


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


class Counter:
    __slots__ = ("help", "labels", "name", "values")

    def __init__(self, name: str, help: str, labels: Labels) -> None:
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[Labels, float] = {}

    def inc(self, key: Labels, amount: float = 1.0) -> None:
        v = self.values
        v[key] = v.get(key, 0.0) + amount


class Gauge(Counter):
    __slots__ = ()

    def set(self, key: Labels, value: float) -> None:
        self.values[key] = value


class Histogram:
    __slots__ = ("bounds", "help", "labels", "name", "series")

    def __init__(self, name: str, help: str, labels: Labels, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.labels, self.bounds = name, help, labels, bounds
        # labels -> [per-bucket counts (last = +Inf), sum]
        self.series: dict[Labels, list[Any]] = {}

    def observe(self, key: Labels, value: float) -> None:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = [[0] * (len(self.bounds) + 1), 0.0]
        s[0][bisect_left(self.bounds, value)] += 1
        s[1] += value


class Snapshot(msgspec.Struct):
    """One worker's values: name -> [[labels, value]] and name -> [[labels, counts, sum]]."""

    counters: dict[str, list[tuple[Labels, float]]] = {}
    gauges: dict[str, list[tuple[Labels, float]]] = {}
    histograms: dict[str, list[tuple[Labels, list[int], float]]] = {}


_snap_enc = msgspec.msgpack.Encoder()
_snap_dec = msgspec.msgpack.Decoder(Snapshot)


class Metrics:
    """The registry of one worker, fed one audit entry per request."""

    def __init__(self, models: ModelLabels | None = None) -> None:
        self.models = models or ModelLabels()
        self._reasons = Bounded(64)
        self._providers = Bounded(64)
        c, h = Counter, Histogram
        self.requests = c("gateway_requests_total", "Requests by endpoint, model, status and cache phase.",
                          ("endpoint", "model", "status", "cache_phase"))
        self.routing = c("gateway_routing_total", "Requests by routing strategy.", ("strategy",))
        self.rejections = c("gateway_rejections_total", "Requests refused before any provider call.",
                            ("reason",))
        self.upstream_errors = c("gateway_upstream_errors_total", "Requests that failed at a provider.",
                                 ("provider", "status"))
        self.tokens = c("gateway_tokens_total", "Tokens: input, output, cached (provider), saved by the "
                        "cache, removed by compression.", ("kind", "model"))
        self.cost = c("gateway_cost_usd_total", "Provider cost in US dollars.", ("model",))
        self.savings = c("gateway_savings_usd_total", "Dollars saved, per layer.", ("layer",))
        self.latency = h("gateway_request_duration_seconds", "Total request time, streams included.",
                         ("endpoint",))
        self.upstream = h("gateway_upstream_duration_seconds", "Provider time to response headers.",
                          ("provider",))
        self.overhead = h("gateway_overhead_seconds", "The gateway's own time before the first byte.",
                          ("endpoint",))
        self.ttfb = h("gateway_ttfb_seconds", "Request start to the first byte sent.", ("endpoint",))
        self.gauges: dict[str, Gauge] = {}
        self.extra_counters: dict[str, Counter] = {}
        from gateway.observe.genai_metrics import GenAIMetrics  # it imports Histogram from here

        self.genai = GenAIMetrics()  # the OpenTelemetry GenAI names, fed by `genai.observe(...)`

    def observe(self, e: AuditEntry) -> None:
        mc = e.metacache
        phase = (mc.tier or "hit") if mc.hit else "miss"
        authenticated = e.key_id is not None  # before auth, nothing the client sent becomes a label
        status = status_label(e.status)
        self.requests.inc((e.endpoint, self.models.route(e.requested_model, authenticated), status, phase))
        self.routing.inc((e.routing_strategy,))
        provider = self._providers(e.provider) if e.provider is not None else None
        if e.routing_strategy == "rejected":
            self.rejections.inc((self._reasons(e.error or status),))
        elif e.status >= 400 and provider is not None:
            self.upstream_errors.inc((provider, status))
        self.latency.observe((e.endpoint,), e.latency_ms / 1000.0)
        self.overhead.observe((e.endpoint,), e.overhead_ms / 1000.0)
        if e.ttfb_ms is not None:
            self.ttfb.observe((e.endpoint,), e.ttfb_ms / 1000.0)
        if e.upstream_ms is not None and provider is not None:
            self.upstream.observe((provider,), e.upstream_ms / 1000.0)
        model = self.models.deployment(e.model, e.requested_model, authenticated)
        tok = self.tokens
        if e.tokens_in:
            tok.inc(("input", model), e.tokens_in)
        if e.tokens_out:
            tok.inc(("output", model), e.tokens_out)
        if e.tokens_cached:
            tok.inc(("cached", model), e.tokens_cached)
        if mc.tokens_saved:
            tok.inc(("saved_cache", model), mc.tokens_saved)
        if e.tokens_compressed:
            tok.inc(("saved_compression", model), e.tokens_compressed)
        if e.tokens_compacted:
            tok.inc(("saved_compaction", model), e.tokens_compacted)
        if e.cost_usd:
            self.cost.inc((model,), e.cost_usd)
        if e.saved_usd:
            sv = self.savings
            sv.inc(("cache",), e.saved_cache_usd)
            sv.inc(("compression",), e.saved_compression_usd)
            sv.inc(("provider_cache",), e.saved_provider_cache_usd)
            sv.inc(("compaction",), e.saved_compaction_usd)
        self.genai.observe_entry(e)

    def gauge(self, name: str, help: str, labels: Labels) -> Gauge:
        g = self.gauges.get(name)
        if g is None:
            g = self.gauges[name] = Gauge(name, help, labels)
        return g

    def counter(self, name: str, help: str, labels: Labels) -> Counter:
        """Counters kept by other parts (sink drops, cache stats), set from their values at dump time."""
        c = self.extra_counters.get(name)
        if c is None:
            c = self.extra_counters[name] = Counter(name, help, labels)
        return c

    def all_counters(self) -> list[Counter]:
        return [self.requests, self.routing, self.rejections, self.upstream_errors, self.tokens, self.cost,
                self.savings, *self.extra_counters.values()]

    def all_histograms(self) -> list[Histogram]:
        return [self.latency, self.upstream, self.overhead, self.ttfb, *self.genai.histograms()]

    def snapshot(self) -> Snapshot:
        return Snapshot(
            counters={c.name: list(c.values.items()) for c in self.all_counters()},
            gauges={g.name: list(g.values.items()) for g in self.gauges.values()},
            histograms={h.name: [(k, list(s[0]), s[1]) for k, s in h.series.items()]
                        for h in self.all_histograms()},
        )


_BREAKER_STATE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def observe_resilience(reg: Metrics, breakers: Breakers | None, admission: Admission | None,
                       budgets: Mapping[str, RetryBudget]) -> None:
    """Breaker states, in-flight and shed counts, retry budget refusals: set before each dump.

    Deployments and providers are configured names, so these labels are bounded too.
    """
    if breakers is not None:
        state = reg.gauge("gateway_deployment_state", "Breaker per deployment: 0 closed, 1 half-open (probing), "
                          "2 open (ejected).", ("deployment",))
        ejections = reg.counter("gateway_deployment_ejections_total", "Times a deployment was ejected.",
                                ("deployment",))
        for name, b in breakers.items():
            state.set((name,), _BREAKER_STATE[b.state().state])
            ejections.values[(name,)] = float(b.total_ejections)
    if admission is not None:
        reg.gauge("gateway_in_flight", "Requests in flight on the worker (worked on + waiting for a slot).",
                  ()).set((), float(admission.in_flight))
        reg.gauge("gateway_admission_queued", "Requests waiting for a slot on the worker.",
                  ()).set((), float(admission.queued))
        reg.gauge("gateway_concurrency_limit", "Requests the worker works on at once (follows the loop's lag).",
                  ()).set((), float(admission.limit))
        shed = reg.counter("gateway_shed_total", "Requests refused with 503: the worker or the client was at its "
                           "in-flight bound, or the wait for a slot would be (or was) past max_queue_ms.",
                           ("reason",))
        shed.values[("worker",)] = float(admission.refused)
        shed.values[("client",)] = float(admission.refused_client)
        shed.values[("queue",)] = float(admission.refused_queue)
    refused = reg.counter("gateway_retry_budget_refused_total", "Retries the retry budget refused, per provider.",
                          ("provider",))
    for provider, budget in budgets.items():
        refused.values[(provider,)] = float(budget.refused)


# ------------------------------------------------------------------------------- across workers


def dump(snapshot: Snapshot, directory: str, pid: int) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{pid}.msgpack")
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(_snap_enc.encode(snapshot))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_others(directory: str, own_pid: int) -> list[tuple[Snapshot, bool]]:
    """Every other worker's last snapshot, with whether that worker is still alive."""
    out: list[tuple[Snapshot, bool]] = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            stem, _, ext = name.partition(".")
            if ext != "msgpack" or not stem.isdigit() or int(stem) == own_pid:
                continue
            try:
                with open(os.path.join(directory, name), "rb") as fh:
                    out.append((_snap_dec.decode(fh.read()), _alive(int(stem))))
            except (OSError, msgspec.DecodeError):
                continue
    return out


def prune_stale(directory: str) -> None:
    """Remove sibling per-instance directories (`<prefix>-<pid>`) whose server process is gone."""
    base, name = os.path.split(directory.rstrip("/"))
    prefix, _, _ = name.rpartition("-")
    if not prefix:
        return
    with contextlib.suppress(OSError):
        for other in os.listdir(base or "."):
            head, _, pid = other.rpartition("-")
            if head != prefix or not pid.isdigit() or other == name or _alive(int(pid)):
                continue
            path = os.path.join(base, other)
            with contextlib.suppress(OSError):
                for f in os.listdir(path):
                    os.unlink(os.path.join(path, f))
                os.rmdir(path)


def merge(parts: Iterable[tuple[Snapshot, bool]]) -> Snapshot:
    counters: dict[str, dict[Labels, float]] = {}
    gauges: dict[str, dict[Labels, float]] = {}
    hists: dict[str, dict[Labels, list[Any]]] = {}
    for snap, alive in parts:
        for name, series in snap.counters.items():
            acc = counters.setdefault(name, {})
            for labels, v in series:
                acc[tuple(labels)] = acc.get(tuple(labels), 0.0) + v
        if alive:
            for name, series in snap.gauges.items():
                acc = gauges.setdefault(name, {})
                for labels, v in series:
                    acc[tuple(labels)] = acc.get(tuple(labels), 0.0) + v
        for name, hseries in snap.histograms.items():
            hacc = hists.setdefault(name, {})
            for labels, counts, total in hseries:
                cur = hacc.get(tuple(labels))
                if cur is None:
                    hacc[tuple(labels)] = [list(counts), total]
                else:
                    cur[0] = [a + b for a, b in zip(cur[0], counts, strict=False)]
                    cur[1] += total
    return Snapshot(
        counters={n: list(v.items()) for n, v in counters.items()},
        gauges={n: list(v.items()) for n, v in gauges.items()},
        histograms={n: [(k, c, s) for k, (c, s) in v.items()] for n, v in hists.items()},
    )
