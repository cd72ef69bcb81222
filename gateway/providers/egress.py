"""How a provider's requests leave: through which forward proxy (if any), with which TLS trust and
client certificate. Decided once per provider when it is opened, so the request path never reads
the environment.

The proxy comes from the provider's `proxy:` (a URL, or `none` for a direct connection), else from
the environment like curl reads it: `HTTPS_PROXY` for https upstreams, `HTTP_PROXY` for http ones
(lower-case names win), skipped for hosts `NO_PROXY` names. Only http:// proxies: the tunnel (HTTP
CONNECT) is in the clear up to the proxy, the upstream's TLS runs inside it end to end.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

DIRECT = "none"


class EgressError(ValueError):
    """A proxy, CA or client certificate setting that cannot be used; `key` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    url: str = field(repr=False)  # may hold credentials: never logged (see `where`)
    authorization: str | None = field(default=None, repr=False)  # the Proxy-Authorization value

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Egress:
    """One provider's way out. `direct` when no proxy can apply to it (the common case)."""

    https_proxy: Proxy | None = None
    http_proxy: Proxy | None = None
    no_proxy: tuple[str, ...] = ()
    tls: ssl.SSLContext | None = None  # None: the system's default trust, created when first needed

    @property
    def direct(self) -> bool:
        return self.https_proxy is None and self.http_proxy is None

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self.https_proxy if scheme == "https" else self.http_proxy
        if proxy is None or bypassed(host, port, self.no_proxy):
            return None
        return proxy

    def ssl_context(self) -> ssl.SSLContext:
        return self.tls if self.tls is not None else ssl.create_default_context()


def parse_proxy(value: str, key: str) -> Proxy:
    """`http://[user:password@]host[:port]`; a bare `host:port` is taken as http:// (curl does)."""
    url = value.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme.startswith("socks"):
        # SOCKS would need a new dependency (aiohttp-socks / python-socks) and a second tunnel in
        # the lean transport; an HTTP CONNECT proxy chained to the SOCKS one does the same job.
        raise EgressError(key, f"only http:// proxies are supported: SOCKS ({parts.scheme}://) is not; put an HTTP"
                          " CONNECT proxy in front of it (for example privoxy or gost) or use proxy: none")
    if parts.scheme != "http":
        raise EgressError(key, f"only http:// proxies are supported (got {parts.scheme}://): the upstream's TLS"
                          " runs inside the CONNECT tunnel, not to the proxy")
    try:
        port = parts.port or 80
    except ValueError:
        raise EgressError(key, "the proxy's port is not a number") from None
    if not parts.hostname:
        raise EgressError(key, "the proxy URL has no host")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(parts.hostname, port, url, auth)


def bypassed(host: str, port: int, no_proxy: tuple[str, ...]) -> bool:
    """NO_PROXY as curl and Python read it: `*`, host names matching themselves and their
    subdomains (a leading dot optional), `host:port`, IP addresses and CIDR ranges."""
    host = host.lower().strip("[]")
    for entry in no_proxy:
        if entry == "*":
            return True
        name, want_port = entry, None
        if entry.count(":") == 1 and not entry.endswith("]"):
            name, _, p = entry.partition(":")
            want_port = int(p) if p.isdigit() else None
        name = name.strip("[]").lstrip(".")
        if want_port is not None and want_port != port:
            continue
        if "/" in name:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name.lower()) or environ.get(name.upper()) or ""


def _readable(path: str, key: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise EgressError(key, f"{path}: no such file")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise EgressError(key, f"{path}: cannot read ({exc.strerror})") from None
    return str(p)


def tls_context(ca_file: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext | None:
    """The provider's TLS settings, or None for the system default. `ca_file` replaces the system's
    trust (as curl's --cacert does): a corporate bundle should hold the public roots too."""
    if client_key and not client_cert:
        raise EgressError("client_key", "given without client_cert")
    if not (ca_file or client_cert):
        return None
    ca = _readable(ca_file, "ca_file") if ca_file else None
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise EgressError("ca_file", f"{ca_file}: not a PEM CA bundle ({_why(exc)})") from None
    if client_cert:
        cert = _readable(client_cert, "client_cert")
        key = _readable(client_key, "client_key") if client_key else None
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise EgressError("client_cert", f"{client_cert}: cannot load the certificate and its key"
                                             f" ({_why(exc)}; an encrypted key is not supported)") from None
    return ctx


def _why(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__


def build(proxy: str | None, ca_file: str | None, client_cert: str | None, client_key: str | None,
          environ: Mapping[str, str]) -> Egress:
    """A provider's `Egress` from its settings and the environment; EgressError names what is wrong."""
    tls = tls_context(ca_file, client_cert, client_key)
    if proxy is not None and proxy.strip().lower() == DIRECT:
        return Egress(tls=tls)
    if proxy:  # this provider's own proxy, for both schemes; the environment's NO_PROXY does not apply
        p = parse_proxy(proxy, "proxy")
        return Egress(https_proxy=p, http_proxy=p, tls=tls)
    https, http = _env(environ, "https_proxy"), _env(environ, "http_proxy")
    no_proxy = tuple(e.strip().lower() for e in _env(environ, "no_proxy").split(",") if e.strip())
    return Egress(https_proxy=parse_proxy(https, "HTTPS_PROXY") if https else None,
                  http_proxy=parse_proxy(http, "HTTP_PROXY") if http else None, no_proxy=no_proxy, tls=tls)
