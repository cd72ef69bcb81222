"""The cache admin API (master key only), the same as `gateway cache stats|clear`:

    GET  /admin/cache/stats   entries in the store, hit rate per phase (this pod's workers), the
                              wrong-rate bound in force, store memory and this pod's vector mirror
    POST /admin/cache/clear   {"model": M, "key": K} (both optional; none: everything) -> the scopes
                              cleared; every worker and pod stops serving them within a second
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from gateway.cache import ops
from gateway.cache.metacache import MetaCache
from gateway.errors import BadRequest
from gateway.governance.auth import Authenticator
from gateway.worker.routes import Routes, admin_only

JSON = [("content-type", "application/json")]
_enc = msgspec.json.Encoder()
_clear_dec = msgspec.json.Decoder(ops.ClearRequest)


class CacheAdmin:
    def __init__(self, auth: Authenticator, cache: MetaCache, cache_cfg: Any, routes: Iterable[Any],
                 pod_metrics: Callable[[], ops.MetricsView] | None = None) -> None:
        self.auth = auth
        self.cache = cache
        self.cache_cfg = cache_cfg
        self.model_routes = list(routes)
        self.pod_metrics = pod_metrics  # None when metrics are off: this worker's counters only

    def routes(self) -> Routes:
        handlers: dict[tuple[str, str], Callable[[Any, Any], Awaitable[None]]] = {
            ("GET", "/admin/cache/stats"): self.stats,
            ("POST", "/admin/cache/clear"): self.clear,
        }
        return {route: admin_only(self.auth, h) for route, h in handlers.items()}

    async def stats(self, scope: Any, proto: Any) -> None:
        vectors: tuple[int, int] | None = (len(self.cache.index), self.cache.index.nbytes)
        if self.pod_metrics is not None:
            snap = self.pod_metrics()
            rates = ops.rates_from_metrics(snap, ops.workers_of(snap))
            vectors = ops.vectors_from_metrics(snap) or vectors
        else:
            rates = ops.rates_from_stats(self.cache.stats)
        report = await ops.stats(self.cache, self.cache_cfg, self.cache.verifier, rates, vectors)
        proto.response_bytes(200, JSON, _enc.encode(report))

    async def clear(self, scope: Any, proto: Any) -> None:
        try:
            req = _clear_dec.decode(await proto() or b"{}")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadRequest(f"Invalid request: {str(exc).replace('$.', '')}") from None
        problem = ops.check(req)
        if problem is not None:
            raise BadRequest(problem)
        report = await ops.clear(self.cache, req, self.model_routes)
        proto.response_bytes(200, JSON, _enc.encode(report))
