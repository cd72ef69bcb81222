"""Provider connection pools (one aiohttp session per provider per worker) and the aiohttp boundary.

`map_client_errors` is the only place aiohttp exceptions become gateway errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import aiohttp
import structlog

from gateway.config import BUILTIN_MOCK, ProviderConfig
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnreachable

log = structlog.get_logger("gateway.upstream")

Endpoint = Literal["chat", "completions", "embeddings", "responses", "models", "messages"]
_OPENAI_PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
    "models": "/models",
}
# Client headers a provider needs to see (everything else, auth included, stays at the gateway).
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "openai-organization", "openai-project",
                     "openai-beta", "idempotency-key")
# Provider response headers clients rely on.
PASSBACK_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "openai-", "x-request-id", "request-id",
                     "retry-after", "anthropic-organization-id")


@contextlib.contextmanager
def map_client_errors(provider: str) -> Iterator[None]:
    """Translate aiohttp/asyncio failures of one upstream exchange into the gateway's error tree."""
    try:
        yield
    except GatewayError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"The upstream provider {provider!r} did not answer in time.") from None
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
            ConnectionError) as exc:
        raise UpstreamUnreachable(f"The upstream provider {provider!r} is unreachable: {type(exc).__name__}.") \
            from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The upstream provider {provider!r} failed: {type(exc).__name__}.") from None


def _read_secret(cfg: ProviderConfig, name: str) -> str:
    if cfg.api_key_file:
        try:
            return Path(cfg.api_key_file).read_text().strip()
        except OSError as exc:
            log.warning("provider_key_file_unreadable", provider=name, path=cfg.api_key_file, error=exc.strerror)
            return ""
    if cfg.api_key_env:
        return os.environ.get(cfg.api_key_env, "")
    return ""


class Provider:
    """One configured provider: its URLs, its credentials, its pool."""

    def __init__(self, name: str, cfg: ProviderConfig, self_port: int) -> None:
        self.name = name
        self.cfg = cfg
        self.kind = cfg.kind
        base = cfg.base_url.rstrip("/")
        if base == BUILTIN_MOCK:
            base = f"http://127.0.0.1:{self_port}/_mock"
        self.root = base
        # OpenAI-style base URLs end in /v1 (what the SDK takes); a "compatible" root serves /v1/... itself.
        self.openai_base = base if (cfg.kind != "compatible" or base.endswith("/v1")) else base + "/v1"
        self.anthropic_root = base.removesuffix("/v1")
        self.protocols = {"openai": cfg.kind in ("openai", "azure", "compatible"),
                          "anthropic": cfg.kind in ("anthropic", "compatible")}
        self._key = _read_secret(cfg, name)  # read once; never logged
        self.timeout = aiohttp.ClientTimeout(total=cfg.timeouts.total_s, connect=cfg.timeouts.connect_s,
                                             sock_connect=cfg.timeouts.connect_s)
        self.first_byte_s = cfg.timeouts.first_byte_s
        self.session: aiohttp.ClientSession | None = None

    def speaks(self, protocol: str) -> bool:
        return self.protocols.get(protocol, False)

    def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.cfg.max_connections, keepalive_timeout=75,
                                         ttl_dns_cache=300, enable_cleanup_closed=False)
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=True,
                                             skip_auto_headers=("User-Agent",), trust_env=False)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def warm_up(self) -> None:
        """Open a few keep-alive connections now so the first requests don't pay the handshake."""
        session = self.session
        if session is None or self.cfg.warmup_connections <= 0:
            return
        url = self.openai_base + "/models" if self.speaks("openai") else self.anthropic_root + "/v1/models"

        async def one() -> None:
            with contextlib.suppress(Exception):
                async with session.get(url, headers=self.auth_headers(),
                                       timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    await resp.read()

        await asyncio.gather(*(one() for _ in range(self.cfg.warmup_connections)))

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.cfg.headers)
        if not self._key:
            return headers
        if self.kind == "azure":
            headers["api-key"] = self._key
        elif self.kind == "anthropic":
            headers["x-api-key"] = self._key
        else:
            headers["authorization"] = "Bearer " + self._key
            headers["x-api-key"] = self._key  # compatible roots may serve Anthropic routes too
        return headers

    def url(self, endpoint: Endpoint, model: str) -> str:
        if endpoint == "messages":
            return self.anthropic_root + "/v1/messages"
        if self.kind == "azure":
            return (f"{self.openai_base}/openai/deployments/{model}{_OPENAI_PATHS[endpoint]}"
                    f"?api-version={self.cfg.api_version}")
        return self.openai_base + _OPENAI_PATHS[endpoint]

    def request_headers(self, endpoint: Endpoint, client_headers: dict[str, str]) -> dict[str, str]:
        headers = self.auth_headers()
        headers["content-type"] = "application/json"
        for name in FORWARDED_HEADERS:
            value = client_headers.get(name)
            if value is not None:
                headers[name] = value
        if endpoint == "messages":
            headers.setdefault("anthropic-version", self.cfg.anthropic_version)
        return headers

    async def post(self, endpoint: Endpoint, model: str, body: bytes,
                   client_headers: dict[str, str]) -> aiohttp.ClientResponse:
        """Send the request; return once the response headers arrived (the first-byte timeout)."""
        assert self.session is not None, "provider pool not opened"
        with map_client_errors(self.name):
            async with asyncio.timeout(self.first_byte_s):
                return await self.session.post(self.url(endpoint, model), data=body,
                                               headers=self.request_headers(endpoint, client_headers))


def passback_headers(headers: aiohttp.typedefs.LooseHeaders) -> list[tuple[str, str]]:
    out = []
    for name, value in headers.items():  # type: ignore[union-attr]
        low = name.lower()
        if low.startswith(PASSBACK_PREFIXES):
            out.append((low, value))
    return out


def open_providers(configs: dict[str, ProviderConfig], self_port: int) -> dict[str, Provider]:
    providers = {name: Provider(name, cfg, self_port) for name, cfg in configs.items()}
    for p in providers.values():
        p.open()
    return providers
