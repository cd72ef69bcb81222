"""Where a Bedrock provider's SigV4 credentials come from, and when they are read again.

The order is the AWS SDKs' (their "default credential chain"), minus what needs an AWS call:
1. the environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (or the variables
   the provider names). A process's environment does not change, so these are read once.
2. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials), profile
   `aws_profile` (else AWS_PROFILE, else "default"); a configured `aws_profile` skips step 1, as an
   explicit profile does in the SDKs. Read again when the file changes (tools such as aws-vault or
   a secrets sidecar rewrite it), looked at no more than once a second.
3. container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (ECS, at 169.254.170.2) or
   AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod Identity, Greengrass), with the token of
   AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read at every fetch: EKS rotates it) or
   AWS_CONTAINER_AUTHORIZATION_TOKEN. Temporary: fetched again REFRESH_BEFORE_S before they expire;
   if that fails they serve until they do expire, with a new attempt at most every RETRY_S.
Not here: EC2 instance metadata (IMDS), web identity / AssumeRole (STS calls), SSO.
"""

from __future__ import annotations

import asyncio
import configparser
import datetime as dt
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import structlog

from gateway.config import ProviderConfig
from gateway.providers.sigv4 import Credentials

log = structlog.get_logger("gateway.upstream")

ECS_HOST = "http://169.254.170.2"
REFRESH_BEFORE_S = 300.0  # the SDKs refresh 10-15 min ahead; 5 min leaves room for a slow fetch
RETRY_S = 10.0  # after a failed refresh while the old credentials still serve
FETCH_TIMEOUT_S = 2.0
FILE_CHECK_S = 1.0
# Plain http is accepted only to the container agents' link-local addresses or loopback (as the SDKs do).
_HTTP_HOSTS = {ipaddress.ip_address(a) for a in ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")}

# (url, headers) -> (status, body); aiohttp by default, replaced in tests.
Fetch = Callable[[str, dict[str, str]], Awaitable[tuple[int, bytes]]]


class CredentialsUnavailable(Exception):
    """No credentials could be read (the message says from where); never holds a secret."""


async def _aiohttp_fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    # trust_env stays off: the container agent is local and never reached through HTTPS_PROXY.
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.read()


def _allowed_full_uri(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return False
    return ip.is_loopback or ip in _HTTP_HOSTS


class AwsCredentialSource:
    """One provider's credentials: `await get()` before each signature (cheap unless a refresh is due)."""

    def __init__(self, cfg: ProviderConfig, environ: Mapping[str, str], *, fetch: Fetch | None = None,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._mono = mono
        self._fetch = fetch or _aiohttp_fetch
        self._static: Credentials | None = None
        self._file: Path | None = None
        self._profile = cfg.aws_profile or environ.get("AWS_PROFILE") or "default"
        self._file_sig: tuple[int, int] | None = None
        self._file_checked = -1e18
        self._file_creds: Credentials | None = None
        self._container_url: str | None = None
        self._token = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")
        self._token_file = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "")
        self._temp: Credentials | None = None
        self._expires = 0.0  # wall-clock seconds
        self._retry_at = 0.0  # monotonic
        self._lock = asyncio.Lock()
        self.source = "none"  # where the credentials come from, for logs and errors (never the values)

        key = environ.get(cfg.aws_access_key_id_env, "")
        secret = environ.get(cfg.aws_secret_access_key_env, "")
        if key and secret and not cfg.aws_profile:
            self._static = Credentials(key, secret, environ.get(cfg.aws_session_token_env, ""))
            self.source = "environment"
            return
        path = Path(environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path(environ.get("HOME", "~")) / ".aws"
                    / "credentials").expanduser()
        if cfg.aws_profile or path.exists():
            self._file = path
            self.source = f"shared credentials file {path} [{self._profile}]"
            if cfg.aws_profile:  # named on purpose: no fallback past it
                return
            if self._read_file() is not None:
                return
            self._file = None
        relative = environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
        full = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
        if relative:
            self._container_url = ECS_HOST + relative
        elif full:
            if not _allowed_full_uri(full):
                log.warning("aws_container_credentials_refused", reason="AWS_CONTAINER_CREDENTIALS_FULL_URI must be"
                            " https, loopback or the container agent's link-local address")
            else:
                self._container_url = full
        if self._container_url is not None:
            self.source = "container credentials"

    @property
    def configured(self) -> bool:
        return self._static is not None or self._file is not None or self._container_url is not None

    async def get(self) -> Credentials:
        if self._static is not None:
            return self._static
        if self._file is not None:
            creds = self._read_file()
            if creds is None:
                raise CredentialsUnavailable(f"no aws_access_key_id / aws_secret_access_key in {self.source}")
            return creds
        if self._container_url is None:
            raise CredentialsUnavailable("none found (environment, shared credentials file, container credentials)")
        now = self._wall()
        if self._temp is not None and now < self._expires - REFRESH_BEFORE_S:
            return self._temp
        async with self._lock:  # one fetch for all the requests that found them due
            now = self._wall()
            if self._temp is not None and now < self._expires - REFRESH_BEFORE_S:
                return self._temp
            if self._temp is not None and now < self._expires and self._mono() < self._retry_at:
                return self._temp  # the last refresh failed moments ago: keep serving, try again soon
            try:
                self._temp, self._expires = await self._fetch_container()
            except CredentialsUnavailable as exc:
                if self._temp is not None and self._wall() < self._expires:
                    self._retry_at = self._mono() + RETRY_S
                    log.warning("aws_credentials_refresh_failed", error=str(exc),
                                expires_in_s=round(self._expires - self._wall()))
                    return self._temp
                raise
            return self._temp

    def _read_file(self) -> Credentials | None:
        assert self._file is not None
        now = self._mono()
        if now - self._file_checked < FILE_CHECK_S:
            return self._file_creds
        self._file_checked = now
        try:
            st = self._file.stat()
        except OSError:
            self._file_sig, self._file_creds = None, None
            return None
        sig = (st.st_mtime_ns, st.st_size)
        if sig == self._file_sig:
            return self._file_creds
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(self._file.read_text())
        except (OSError, configparser.Error) as exc:
            log.warning("aws_credentials_file_unreadable", path=str(self._file), error=type(exc).__name__)
            return self._file_creds  # a file caught mid-write: keep the last good credentials
        self._file_sig = sig
        section = parser[self._profile] if parser.has_section(self._profile) else {}
        key, secret = section.get("aws_access_key_id", ""), section.get("aws_secret_access_key", "")
        changed = self._file_creds is not None
        self._file_creds = Credentials(key.strip(), secret.strip(), section.get("aws_session_token", "").strip()) \
            if key and secret else None
        if changed:
            log.info("aws_credentials_reloaded", source=self.source)
        return self._file_creds

    def _read_token(self) -> str:
        if not self._token_file:
            return self._token
        try:  # a few hundred bytes, once per refresh
            return Path(self._token_file).read_text().strip()
        except OSError as exc:
            raise CredentialsUnavailable(f"container credentials: the token file cannot be read ({exc.strerror})")\
                from None

    async def _fetch_container(self) -> tuple[Credentials, float]:
        assert self._container_url is not None
        headers: dict[str, str] = {}
        token = self._read_token()
        if token:
            headers["authorization"] = token
        try:
            status, body = await self._fetch(self._container_url, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CredentialsUnavailable(f"container credentials: {type(exc).__name__}") from None
        if status != 200:
            raise CredentialsUnavailable(f"container credentials: HTTP {status}")
        try:
            doc = json.loads(body)
            creds = Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token", ""))
            expires = doc.get("Expiration")
            when = dt.datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() if expires \
                else self._wall() + 3600.0
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CredentialsUnavailable("container credentials: not the expected JSON") from None
        log.info("aws_credentials_fetched", source=self.source,
                 expires_at=dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds"))
        return creds, when
