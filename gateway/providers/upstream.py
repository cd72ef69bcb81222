"""Providers and their transport: pooled keep-alive connections, and the gateway's own response type.

No HTTP-client type leaves this module: a provider answers with an `UpstreamResponse` (status,
headers, body or chunks), and `map_client_errors` is the only place aiohttp exceptions become
gateway errors. The transport is replaceable: `Transport` is the interface, `AiohttpTransport` the
pooled default, and tests pass an in-memory one (see `gateway.providers.mock_transport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from gateway.config import BUILTIN_MOCK, ProviderConfig, egress_proxy
from gateway.errors import (
    BadRequest,
    GatewayError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
    Wire,
)
from gateway.providers.aws_credentials import AwsCredentialSource, CredentialsUnavailable
from gateway.providers.credentials import bedrock_region, default_base_url, read_secret
from gateway.providers.egress import Egress
from gateway.providers.egress import build as build_egress
from gateway.providers.lean import LeanTransport
from gateway.providers.sigv4 import Credentials, Signer

log = structlog.get_logger("gateway.upstream")

Endpoint = Literal["chat", "completions", "embeddings", "responses", "models", "messages",
                   "gemini_generate", "gemini_stream", "converse", "converse_stream"]
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
                     "retry-after", "anthropic-organization-id", "x-amzn-requestid", "x-amzn-bedrock-")


@contextlib.contextmanager
def map_client_errors(provider: str) -> Iterator[None]:
    """Translate aiohttp/asyncio failures of one upstream exchange into the gateway's error tree."""
    try:
        yield
    except GatewayError:
        raise
    except aiohttp.ClientHttpProxyError as exc:
        hint = " (proxy authentication failed)" if exc.status in (401, 407) else ""
        raise UpstreamUnreachable(f"The upstream provider {provider!r} is unreachable: the proxy answered "
                                  f"{exc.status}{hint}.") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"The upstream provider {provider!r} did not answer in time.") from None
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
            ConnectionError) as exc:
        raise UpstreamUnreachable(f"The upstream provider {provider!r} is unreachable: {type(exc).__name__}.") \
            from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The upstream provider {provider!r} failed: {type(exc).__name__}.") from None


class UpstreamResponse(Protocol):
    """A provider's answer once its headers arrived: read it whole, or chunk by chunk."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None:
        """Done with it: the connection goes back to the pool."""
        ...

    def close(self) -> None:
        """Abandon it: the connection is closed (this cancels the provider's work)."""
        ...


class Transport(Protocol):
    """Sends one request to a provider; built once per provider per worker."""

    async def post(self, url: str, body: bytes, headers: dict[str, str], first_byte_s: float) -> UpstreamResponse:
        """Send; return once the answer's headers arrived, or raise UpstreamTimeout after `first_byte_s`."""
        ...

    async def get(self, url: str, headers: dict[str, str], timeout_s: float) -> UpstreamResponse: ...

    def pool_state(self) -> tuple[int, int]:
        """(connections in use, idle) for the metrics."""
        ...

    async def close(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "_who", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, who: str) -> None:
        self._resp = resp
        self._who = who
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        with map_client_errors(self._who):
            return await self._resp.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        with map_client_errors(self._who):
            async for chunk in self._resp.content.iter_any():
                yield chunk

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        self._resp.close()


class AiohttpTransport:
    """One aiohttp session (keep-alive pool) per provider per worker."""

    def __init__(self, who: str, max_connections: int, total_s: float | None, connect_s: float,
                 egress: Egress | None = None, force_close: bool = False) -> None:
        self.who = who
        self.egress = egress or Egress()
        # The proxy per URL, decided once; None (the common case) keeps the call free of the lookup.
        self._via: dict[str, str | None] | None = None if self.egress.direct else {}
        keepalive: dict[str, float] = {} if force_close else {"keepalive_timeout": 75}
        connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300, **keepalive,  # type: ignore[arg-type]
                                         enable_cleanup_closed=False, force_close=force_close,
                                         ssl=self.egress.tls if self.egress.tls is not None else True)
        timeout = aiohttp.ClientTimeout(total=total_s, connect=connect_s, sock_connect=connect_s)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True,
                                             skip_auto_headers=("User-Agent",), trust_env=False)

    def _proxy(self, url: str) -> str | None:
        assert self._via is not None
        if url not in self._via:
            parts = urlsplit(url)
            https = parts.scheme == "https"
            via = self.egress.proxy_for(parts.scheme, parts.hostname or "", parts.port or (443 if https else 80))
            self._via[url] = via.url if via is not None else None
        return self._via[url]

    async def post(self, url: str, body: bytes, headers: dict[str, str], first_byte_s: float) -> UpstreamResponse:
        with map_client_errors(self.who):
            async with asyncio.timeout(first_byte_s):
                if self._via is None:
                    return _AiohttpResponse(await self.session.post(url, data=body, headers=headers), self.who)
                resp = await self.session.post(url, data=body, headers=headers, proxy=self._proxy(url))
                return _AiohttpResponse(resp, self.who)

    async def get(self, url: str, headers: dict[str, str], timeout_s: float) -> UpstreamResponse:
        with map_client_errors(self.who):
            resp = await self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                          proxy=self._proxy(url) if self._via is not None else None)
            return _AiohttpResponse(resp, self.who)

    def pool_state(self) -> tuple[int, int]:
        connector = self.session.connector
        # aiohttp keeps these private; read defensively, an upgrade that renames them shows zeros.
        in_use = len(getattr(connector, "_acquired", ()) or ())
        idle = sum(len(v) for v in (getattr(connector, "_conns", {}) or {}).values())
        return in_use, idle

    async def close(self) -> None:
        await self.session.close()


class Provider:
    """One configured provider: its URLs, its credentials, its transport."""

    def __init__(self, name: str, cfg: ProviderConfig, self_port: int, transport: Transport | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.kind = cfg.kind
        base = (cfg.base_url or default_base_url(cfg)).rstrip("/")
        if base == BUILTIN_MOCK:
            base = f"http://127.0.0.1:{self_port}/_mock"
        self.root = base
        parts = urlsplit(base)
        self.host = parts.hostname or ""  # server.address / server.port of its spans
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        # OpenAI-style base URLs end in /v1 (what the SDK takes); a "compatible" root serves /v1/... itself.
        self.openai_base = base if (cfg.kind != "compatible" or base.endswith("/v1")) else base + "/v1"
        self.anthropic_root = base.removesuffix("/v1")
        self.protocols = {"openai": cfg.kind in ("openai", "azure", "compatible"),
                          "anthropic": cfg.kind in ("anthropic", "compatible")}
        self._key = read_secret(cfg, name)  # read once; never logged
        self.first_byte_s = cfg.timeouts.first_byte_s
        # Bedrock: SigV4 with AWS credentials, unless a Bedrock API key (a bearer token) is configured.
        self._signer: Signer | None = None
        self._aws: AwsCredentialSource | None = None
        if cfg.kind == "bedrock" and not self._key:
            self._signer = Signer(bedrock_region(cfg), "bedrock")
            self._aws = AwsCredentialSource(cfg, os.environ)
        self._auth = self._auth_headers()
        self.transport: Transport | None = transport
        # Checked by load_config already; read the environment once more for this process.
        self.egress = build_egress(egress_proxy(cfg), cfg.ca_file, cfg.client_cert, cfg.client_key, os.environ)

    def speaks(self, protocol: str) -> bool:
        return self.protocols.get(protocol, False)

    def open(self) -> None:
        if self.transport is None:
            t = self.cfg.timeouts
            scheme = urlsplit(self.root).scheme
            via = self.egress.proxy_for(scheme, self.host, self.port)
            if self.cfg.transport == "lean":
                self.transport = LeanTransport(self.name, self.cfg.max_connections, t.connect_s, t.total_s,
                                               self.egress)
            else:
                # Proxies may close a plain-http connection after each answer without saying so
                # (tinyproxy does); aiohttp would then write a POST on it and fail, not retry.
                self.transport = AiohttpTransport(self.name, self.cfg.max_connections, t.total_s, t.connect_s,
                                                  self.egress, force_close=via is not None and scheme == "http")
            if via is not None:  # where, never who: proxy credentials stay out of the log
                log.info("provider_via_proxy", provider=self.name, proxy=via.where)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
            self.transport = None

    async def warm_up(self) -> None:
        """Open a few keep-alive connections now so the first requests don't pay the handshake."""
        if self._aws is not None and self._aws.configured:
            # Temporary credentials fetched now, not by the first request (a failure is logged there).
            with contextlib.suppress(CredentialsUnavailable):
                await self._aws.get()
        transport = self.transport
        if transport is None or self.cfg.warmup_connections <= 0:
            return
        if self.kind == "gemini":
            url = self.root + "/v1beta/models"
        elif self.kind == "bedrock":
            url = self.root + "/ping"  # unsigned: only opens the connection
        else:
            url = self.openai_base + "/models" if self.speaks("openai") else self.anthropic_root + "/v1/models"

        async def one() -> None:
            with contextlib.suppress(Exception):
                resp = await transport.get(url, dict(self._auth), 5.0)
                await resp.read()
                resp.release()

        await asyncio.gather(*(one() for _ in range(self.cfg.warmup_connections)))

    def _auth_headers(self) -> dict[str, str]:
        headers = dict(self.cfg.headers)
        if not self._key:
            return headers
        if self.kind == "azure":
            headers["api-key"] = self._key
        elif self.kind == "gemini":
            headers["x-goog-api-key"] = self._key
        elif self.kind == "bedrock":
            headers["authorization"] = "Bearer " + self._key
        elif self.kind == "anthropic":
            headers["x-api-key"] = self._key
        else:
            headers["authorization"] = "Bearer " + self._key
            headers["x-api-key"] = self._key  # compatible roots may serve Anthropic routes too
        return headers

    def url(self, endpoint: Endpoint, model: str) -> str:
        if endpoint in ("gemini_generate", "gemini_stream"):
            name = quote(model.removeprefix("models/"), safe="")
            if endpoint == "gemini_stream":
                return f"{self.root}/v1beta/models/{name}:streamGenerateContent?alt=sse"
            return f"{self.root}/v1beta/models/{name}:generateContent"
        if endpoint in ("converse", "converse_stream"):
            operation = "converse-stream" if endpoint == "converse_stream" else "converse"
            return f"{self.root}/model/{quote(model, safe='')}/{operation}"
        if endpoint == "messages":
            return self.anthropic_root + "/v1/messages"
        if self.kind == "azure":
            return (f"{self.openai_base}/openai/deployments/{model}{_OPENAI_PATHS[endpoint]}"
                    f"?api-version={self.cfg.api_version}")
        return self.openai_base + _OPENAI_PATHS[endpoint]

    def request_headers(self, endpoint: Endpoint, client_headers: Mapping[str, str],
                        extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(self._auth)
        if extra:
            headers.update(extra)  # trace context for this call
        headers["content-type"] = "application/json"
        if self.kind in ("gemini", "bedrock"):
            if endpoint == "converse_stream":
                headers["accept"] = "application/vnd.amazon.eventstream"
            return headers  # the client's anthropic-*/openai-* headers mean nothing to these providers
        for name in FORWARDED_HEADERS:
            value = client_headers.get(name)
            if value is not None:
                headers[name] = value
        if endpoint == "messages":
            headers.setdefault("anthropic-version", self.cfg.anthropic_version)
        return headers

    async def send(self, endpoint: Endpoint, model: str, body: bytes, client_headers: Mapping[str, str],
                   extra_headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        """Send the request; return once the response headers arrived (the first-byte timeout).
        An error status is read and raised as `UpstreamStatus` in the provider's own wire shape."""
        assert self.transport is not None, "provider pool not opened"
        url = self.url(endpoint, model)
        headers = self.request_headers(endpoint, client_headers, extra_headers)
        if self._signer is not None:
            headers.update(self._sign(url, headers, body, await self._credentials()))
        resp = await self.transport.post(url, body, headers, self.first_byte_s)
        if resp.status >= 400:
            try:
                error_body = await resp.read()
            finally:
                resp.release()
            wire: Wire = _WIRES.get(endpoint, "openai")
            raise UpstreamStatus(resp.status, error_body, protocol=wire, provider=self.name,
                                 headers=dict(passback_headers(resp.headers)))
        return resp


    async def _credentials(self) -> Credentials:
        assert self._aws is not None
        if not self._aws.configured:
            raise BadRequest(f"The provider {self.name!r} has no AWS credentials (AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY or the variables its configuration names, a shared "
                             "credentials file, or container credentials).")
        try:
            return await self._aws.get()
        except CredentialsUnavailable as exc:
            # Retryable: another deployment (or a fallback) may still be reachable.
            raise UpstreamUnreachable(f"The provider {self.name!r} has no usable AWS credentials: {exc}") from None

    def _sign(self, url: str, headers: dict[str, str], body: bytes, creds: Credentials) -> dict[str, str]:
        """SigV4 headers for this request; the host is signed as the transport will send it."""
        assert self._signer is not None
        https = urlsplit(url).scheme == "https"
        default = self.port == (443 if https else 80)
        host = self.host if default else f"{self.host}:{self.port}"
        return self._signer.sign("POST", url, {"host": host, **headers}, body, creds)


_WIRES: dict[str, Wire] = {"messages": "anthropic", "gemini_generate": "gemini", "gemini_stream": "gemini",
                           "converse": "bedrock", "converse_stream": "bedrock"}


def passback_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers.items():
        low = name.lower()
        if low.startswith(PASSBACK_PREFIXES):
            out.append((low, value))
    return out


def open_providers(configs: dict[str, ProviderConfig], self_port: int,
                   transports: Mapping[str, Transport] | None = None) -> dict[str, Provider]:
    """Every configured provider, its pool opened (`transports` replaces the network, in tests)."""
    transports = transports or {}
    providers = {name: Provider(name, cfg, self_port, transports.get(name)) for name, cfg in configs.items()}
    for p in providers.values():
        p.open()
    return providers
