"""A lean HTTP/1.1 client transport: asyncio protocols over keep-alive connections, parsed by httptools
(llhttp, in C). It does only what a provider call needs: POST and GET with a body, a keep-alive pool
per provider, TLS (the provider's own CA and client certificate), a forward proxy (CONNECT tunnels
for https, absolute-form requests for http; chosen once per origin, see egress.py), chunked or
sized answers read whole or streamed, and closing a connection to cancel a call. Per request that
is a few Python calls around the C parser, where aiohttp's client runs a few hundred lines of
Python (measured in `make bench`: the transport row).

Errors map to the gateway's tree here, like `map_client_errors` does for aiohttp: refused or reset
before the answer -> UpstreamUnreachable; the caller's first-byte timeout -> UpstreamTimeout. A
reused keep-alive connection the server closed meanwhile is retried once on a new one, and only
when not a byte of the answer arrived (the request never reached the provider's application).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from gateway.providers.egress import Egress, Proxy


class _Conn(asyncio.Protocol):
    __slots__ = ("chunks", "deadline", "done", "headers", "keep_alive", "lost", "parser", "pool", "reused",
                 "started", "status", "transport", "waiter")

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.deadline: asyncio.TimerHandle | None = None  # the provider's total timeout for this call
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self.started = False  # a byte of the answer arrived
        self.done = False  # the whole answer arrived
        self.keep_alive = False
        self.lost: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None  # woken on headers, each chunk, the end, loss

    # -------------------------------------------------------------------------------- asyncio side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"The upstream provider {self.pool.who!r} sent a malformed answer: {exc}."))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        self.stop_clock()
        if not self.done:
            self._fail(UpstreamUnreachable(
                f"The upstream provider {self.pool.who!r} closed the connection"
                f"{' before answering' if not self.started else ' mid-answer'}."))

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ------------------------------------------------------------------------------- parser side

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        self._wake()

    def start_clock(self, limit_s: float | None, what: str) -> None:
        if limit_s:
            self.deadline = self.pool.loop.call_later(limit_s, self._expired, limit_s, what)

    def stop_clock(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expired(self, limit_s: float, what: str) -> None:
        self.deadline = None
        self._fail(UpstreamTimeout(f"The upstream provider {self.pool.who!r} did not {what} within {limit_s:g} s."))
        if self.transport is not None:
            self.transport.close()

    async def wait(self) -> None:
        self.waiter = self.pool.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class ProxyRefused(ConnectionError):
    pass


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT (a status line and headers, no body), nothing more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[int] = loop.create_future()
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                self.answer.set_exception(ProxyRefused("the proxy's answer to CONNECT has no end"))
            return
        status_line = self.buf.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        # A refusal may carry a body (ignored); a tunnel carries nothing before our TLS hello.
        if not status or (status == 200 and end + 4 != len(self.buf)):
            self.answer.set_exception(ProxyRefused("the proxy's answer to CONNECT is malformed"))
            return
        self.answer.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyRefused("the proxy closed the connection during CONNECT"))


class LeanResponse:
    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def read(self) -> bytes:
        c = self._conn
        while not c.done:
            if c.lost is not None:
                raise c.lost
            await c.wait()
        body = b"".join(c.chunks)
        c.chunks.clear()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        c = self._conn
        while True:
            while c.chunks:
                yield c.chunks.popleft()
            if c.done:
                return
            if c.lost is not None:
                raise c.lost
            await c.wait()

    def release(self) -> None:
        c = self._conn
        c.stop_clock()
        if c.done and c.keep_alive and c.lost is None:
            c.pool.put_back(c)
        else:
            self.close()

    def close(self) -> None:
        c = self._conn
        c.stop_clock()
        c.pool.forget(c)
        if c.transport is not None:
            c.transport.close()


class _Pool:
    """Keep-alive connections to one origin; at most `limit` open, idle ones reused newest first."""

    def __init__(self, who: str, host: str, port: int, tls: ssl.SSLContext | None, limit: int,
                 connect_s: float, via: Proxy | None = None) -> None:
        self.who = who
        self.host = host
        self.port = port
        self.tls = tls
        self.via = via  # a forward proxy: a CONNECT tunnel for TLS, else absolute-form requests to it
        self.limit = limit
        self.connect_s = connect_s
        self.loop = asyncio.get_event_loop()
        self.idle: list[_Conn] = []
        self.open: set[_Conn] = set()
        self._slots: deque[asyncio.Future[None]] = deque()

    async def get(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                return conn
            self.forget(conn)
        while len(self.open) >= self.limit:
            slot = self.loop.create_future()
            self._slots.append(slot)
            await slot  # a connection was closed or put back
            if self.idle:
                return await self.get()
        conn = _Conn(self)
        self.open.add(conn)
        try:
            async with asyncio.timeout(self.connect_s):
                if self.via is None:
                    await self.loop.create_connection(lambda: conn, self.host, self.port, ssl=self.tls,
                                                      server_hostname=self.host if self.tls else None)
                elif self.tls is None:
                    await self.loop.create_connection(lambda: conn, self.via.host, self.via.port)
                else:
                    await self._tunnel(conn, self.via, self.tls)
        except (OSError, TimeoutError) as exc:
            self.forget(conn)
            why = str(exc) if isinstance(exc, ProxyRefused) else type(exc).__name__
            if isinstance(exc, ssl.SSLError) and exc.reason:
                why += f" ({exc.reason})"
            raise UpstreamUnreachable(f"The upstream provider {self.who!r} is unreachable{self._via_text()}: {why}.") \
                from None
        except BaseException:
            self.forget(conn)
            raise
        return conn

    async def _tunnel(self, conn: _Conn, via: Proxy, tls: ssl.SSLContext) -> None:
        """HTTP CONNECT through the proxy, then the upstream's TLS inside the tunnel, end to end."""
        raw, tunnel = await self.loop.create_connection(lambda: _Tunnel(self.loop), via.host, via.port)
        try:
            authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            auth = f"proxy-authorization: {via.authorization}\r\n" if via.authorization else ""
            raw.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n{auth}\r\n".encode("latin-1"))
            status = await tunnel.answer
            if status != 200:
                hint = " (proxy authentication failed)" if status in (401, 407) else ""
                raise ProxyRefused(f"the proxy answered CONNECT with {status}{hint}")
            secure = await self.loop.start_tls(raw, conn, tls, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        assert secure is not None
        conn.connection_made(secure)

    def _via_text(self) -> str:
        return f" through the proxy {self.via.where}" if self.via is not None else ""

    def put_back(self, conn: _Conn) -> None:
        conn._reset()
        self.idle.append(conn)
        self._free()

    def forget(self, conn: _Conn) -> None:
        if conn in self.open:
            self.open.discard(conn)
            if conn in self.idle:
                self.idle.remove(conn)
            self._free()

    def _free(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def close(self) -> None:
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.close()
        self.open.clear()
        self.idle.clear()


class LeanTransport:
    """The `Transport` of a provider over `_Pool`s (one per origin it is asked for)."""

    def __init__(self, who: str, max_connections: int, connect_s: float, total_s: float | None = None,
                 egress: Egress | None = None) -> None:
        self.who = who
        self.egress = egress or Egress()
        self.total_s = total_s
        self.max_connections = max_connections
        self.connect_s = connect_s
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, tuple[_Pool, bytes]] = {}  # url -> (pool, request-line and host)
        self._tls: ssl.SSLContext | None = None

    def _target(self, url: str) -> tuple[_Pool, bytes]:
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            https = parts.scheme == "https"
            host = parts.hostname or "localhost"
            port = parts.port or (443 if https else 80)
            key = (parts.scheme, host, port)
            via = self.egress.proxy_for(parts.scheme, host, port)
            pool = self._pools.get(key)
            if pool is None:
                if https and self._tls is None:
                    self._tls = self.egress.ssl_context()
                pool = self._pools[key] = _Pool(self.who, host, port, self._tls if https else None,
                                                self.max_connections, self.connect_s, via)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default = (https and port == 443) or (not https and port == 80)
            authority = host if default else f"{host}:{port}"
            auth = ""
            if via is not None and not https:  # plain http through a proxy: the absolute form, to the proxy
                target = f"http://{authority}{target}"
                auth = f"proxy-authorization: {via.authorization}\r\n" if via.authorization else ""
            head = f"{{}} {target} HTTP/1.1\r\nhost: {authority}\r\n{auth}".encode("latin-1")
            found = self._targets[url] = (pool, head)
        return found

    async def _send(self, method: bytes, url: str, body: bytes, headers: dict[str, str],
                    first_byte_s: float) -> LeanResponse:
        pool, head = self._target(url)
        lines = [head.replace(b"{}", method, 1)]
        for name, value in headers.items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        request = b"".join(lines) + body
        for attempt in (0, 1):
            conn = await pool.get()
            assert conn.transport is not None
            conn.start_clock(first_byte_s, "start answering")
            conn.transport.write(request)
            try:
                while not conn.status:
                    if conn.lost is not None:
                        break
                    await conn.wait()
            except BaseException:  # the caller gave up (first-byte timeout, cancellation): so does the call
                conn.stop_clock()
                pool.forget(conn)
                conn.transport.close()
                raise
            conn.stop_clock()
            if conn.status:
                conn.start_clock(self.total_s, "finish answering")
                return LeanResponse(conn)
            # Lost before a byte of the answer: a stale keep-alive connection is retried once.
            stale = conn.reused and not conn.started and not isinstance(conn.lost, UpstreamTimeout)
            if not (stale and attempt == 0):
                assert conn.lost is not None
                raise conn.lost
        raise UpstreamUnreachable(f"The upstream provider {self.who!r} is unreachable.")

    async def post(self, url: str, body: bytes, headers: dict[str, str], first_byte_s: float) -> LeanResponse:
        return await self._send(b"POST", url, body, headers, first_byte_s)

    async def get(self, url: str, headers: dict[str, str], timeout_s: float) -> LeanResponse:
        return await self._send(b"GET", url, b"", headers, timeout_s)

    def pool_state(self) -> tuple[int, int]:
        idle = sum(len(p.idle) for p in self._pools.values())
        return sum(len(p.open) for p in self._pools.values()) - idle, idle

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
