"""Redis clients from a URL: standalone, Sentinel or Cluster, with credentials and a CA from the URL or
the environment. Built once at start-up; the store and the audit sink share it.

    redis://[user:pass@]host:6379/0                    rediss:// for TLS
    redis+sentinel://[user:pass@]h1:26379,h2/<service>[/<db>]
    redis+cluster://[user:pass@]h1:6379,h2:6379[/0]    rediss+cluster:// for TLS (db 0 only)

Secrets never need to be in the URL: `GATEWAY_REDIS_USERNAME`, `GATEWAY_REDIS_PASSWORD` (or
`GATEWAY_REDIS_PASSWORD_FILE`, e.g. a mounted Kubernetes secret) fill in what the URL leaves out, and
`GATEWAY_REDIS_CA_CERTS` (or `?ssl_ca_certs=/path` in the URL) names the CA file for rediss.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

# Everything a Redis call can raise that means "the store is not usable now": the breaker's list.
# RedisClusterException is not a RedisError (a slot not covered during a failover, for one).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)
# redis-py 8.1's asyncio cluster client can write on a connection that a concurrent failure of the
# same node has just disconnected ("'NoneType' object has no attribute 'writelines'", seen when a
# master is killed under load): for a cluster client that is an outage too, not a crash.
CLUSTER_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, AttributeError)
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass
class RedisClient:
    """The command client, what must be closed with it, and whether keys are spread over slots."""

    client: Any  # redis.asyncio.Redis or RedisCluster (redis-py types every command as "T | Awaitable[T]")
    cluster: bool = False
    pool: Any = None
    extra: list[Any] = field(default_factory=list)  # Sentinel clients

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What the breaker in front of this client translates into StoreUnavailable."""
        return CLUSTER_ERRORS if self.cluster else REDIS_ERRORS

    @property
    def before_probe(self) -> Callable[[], Awaitable[object]] | None:
        """What the breaker runs before probing again after an outage (see `refresh`)."""
        return self.refresh if self.cluster else None

    async def refresh(self) -> None:
        """Re-read a Cluster's slot map. redis-py does so by itself after a single command failed
        on a node, but not after a failed pipeline: after a failover the vector-log sync and the
        cache's pipelines would keep going to the dead master, tripping the breaker again and again
        (seen: limits unchecked for 25 s after the replica was promoted)."""
        await self.client.nodes_manager.initialize()

    async def close(self) -> None:
        await self.client.aclose()
        if self.pool is not None:
            await self.pool.disconnect()  # a pool passed in explicitly is not closed by aclose()
        for client in self.extra:
            await client.aclose()


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    out = []
    for h in netloc.rsplit("@", 1)[-1].split(","):
        if h:
            host, _, port = h.rpartition(":") if ":" in h else (h, "", "")
            out.append((host, int(port) if port else default_port))
    return out


def _auth(url: str, environ: Mapping[str, str]) -> dict[str, Any]:
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    if password is None:
        password = environ.get("GATEWAY_REDIS_PASSWORD") or None
        pw_file = environ.get("GATEWAY_REDIS_PASSWORD_FILE")
        if password is None and pw_file:
            with open(pw_file, encoding="utf-8") as f:
                password = f.read().strip() or None
    if username is None:
        username = environ.get("GATEWAY_REDIS_USERNAME") or None
    out: dict[str, Any] = {}
    if password is not None:
        out["password"] = password
    if username is not None:
        out["username"] = username
    return out


def _tls(url: str, environ: Mapping[str, str]) -> dict[str, Any]:
    parts = urlsplit(url)
    if not parts.scheme.startswith("rediss"):
        return {}
    ca = parse_qs(parts.query).get("ssl_ca_certs", [environ.get("GATEWAY_REDIS_CA_CERTS", "")])[0]
    return {"ssl": True, **({"ssl_ca_certs": ca} if ca else {})}


def redis_client(url: str, *, max_connections: int, connect_s: float, op_s: float,
                 environ: Mapping[str, str] | None = None) -> RedisClient:
    """The client for `url` (see the module docstring). No retries inside redis-py: a retry loop
    would multiply the timeout on the request path; the caller's breaker decides when to try again.
    MOVED and ASK redirections are followed by the cluster client (they are not errors)."""
    env = os.environ if environ is None else environ
    common: dict[str, Any] = {"socket_connect_timeout": connect_s, "socket_timeout": op_s,
                              "retry": Retry(NoBackoff(), 0), "protocol": 2}
    parts = urlsplit(url)
    auth, tls = _auth(url, env), _tls(url, env)
    if parts.scheme in CLUSTER_SCHEMES:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = _hosts(parts.netloc, 6379)
        path = [p for p in parts.path.split("/") if p]
        if not nodes or (path and path != ["0"]):
            raise ValueError("a Cluster URL needs hosts and db 0 at most: redis+cluster://h1:6379,h2:6379/0")
        # require_full_coverage=False: while a failed master's slots wait for its replica, keys on the
        # other masters keep working (the missing slots fail fast through the breaker).
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], require_full_coverage=False,
                              max_connections=max_connections, **common, **auth, **tls)
        return RedisClient(client, cluster=True)
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        from redis.asyncio.sentinel import Sentinel

        hosts = _hosts(parts.netloc, 26379)
        path = [p for p in parts.path.split("/") if p]
        if not hosts or not path:
            raise ValueError("a Sentinel URL needs hosts and a service: redis+sentinel://h1:26379,h2/mymaster/0")
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(hosts, sentinel_kwargs={"socket_timeout": op_s}, **common, **auth, **tls)
        master = sentinel.master_for(path[0], db=db, max_connections=max_connections)
        return RedisClient(master, pool=master.connection_pool, extra=list(sentinel.sentinels))
    # hiredis is picked up automatically when installed (the cluster client uses it too).
    extra_kw = {k: v for k, v in {**auth, **tls}.items() if k != "ssl"}  # the scheme already says TLS
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=op_s,
                                                    **common, **extra_kw)
    return RedisClient(aioredis.Redis(connection_pool=pool), pool=pool)
