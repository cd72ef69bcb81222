"""AWS Signature Version 4 for one request (header signing), as Bedrock wants it. Pure: no I/O.

Why our own: the standard signers on PyPI are botocore (a 14 MB closure with its own HTTP stack) or
wrappers around `requests`; SigV4 for a JSON POST is a page of hashing. It is checked against the
published test suite (tests/data/sigv4, from awslabs/aws-c-auth) and follows its rules for
services other than S3: the path normalised and URI-encoded once more than it travels (so a model
id's "%3A" is signed as "%253A"), the query sorted by encoded key then value, header values
trimmed with inner runs of spaces collapsed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
_UNRESERVED = "-_.~"


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str = ""  # a session token (STS, SSO) when the credentials are temporary

    def __repr__(self) -> str:  # never the secret, wherever a struct gets printed
        return f"Credentials(access_key={self.access_key!r}, secret_key='***', token={'***' if self.token else ''!r})"


def _normalize_path(path: str) -> str:
    """Dot segments removed and runs of slashes collapsed (RFC 3986 5.2.4, as the suite does)."""
    segments: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    out = "/" + "/".join(segments)
    if path.endswith("/") and out != "/":
        out += "/"
    return out


def canonical_uri(path: str) -> str:
    return quote(_normalize_path(path or "/"), safe="/" + _UNRESERVED)


def canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((quote(unquote(key), safe=_UNRESERVED), quote(unquote(value), safe=_UNRESERVED)))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _header_value(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """(the canonical header block, the signed header list); names lower-cased, one line each."""
    merged: dict[str, list[str]] = {}
    for name, value in headers.items():
        merged.setdefault(name.strip().lower(), []).append(_header_value(value))
    names = sorted(merged)
    block = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    return block, ";".join(names)


def canonical_request(method: str, url: str, headers: Mapping[str, str], payload_hash: str) -> tuple[str, str]:
    """(the canonical request, its signed header list)."""
    parts = urlsplit(url)
    block, signed = canonical_headers(headers)
    text = "\n".join([method.upper(), canonical_uri(parts.path), canonical_query(parts.query), block, signed,
                      payload_hash])
    return text, signed


def scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, credential_scope: str, creq: str) -> str:
    return "\n".join([ALGORITHM, amz_date, credential_scope, hashlib.sha256(creq.encode()).hexdigest()])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class Signer:
    """Signs requests for one service in one region; the day's signing key is derived once."""

    def __init__(self, region: str, service: str) -> None:
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] | None = None  # (secret's access key, date, key)

    def _signing_key(self, creds: Credentials, date: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == creds.access_key and cached[1] == date:
            return cached[2]
        key = signing_key(creds.secret_key, date, self.region, self.service)
        self._key = (creds.access_key, date, key)
        return key

    def sign(self, method: str, url: str, headers: Mapping[str, str], body: bytes, creds: Credentials,
             now: dt.datetime | None = None, *, content_sha256: bool = False) -> dict[str, str]:
        """The headers to add to this request: x-amz-date, x-amz-security-token (temporary
        credentials), x-amz-content-sha256 (when asked) and authorization. `headers` must hold
        every header that will be sent and signed (host included)."""
        when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        payload_hash = hashlib.sha256(body).hexdigest()
        added = {"x-amz-date": amz_date}
        if creds.token:
            added["x-amz-security-token"] = creds.token
        if content_sha256:
            added["x-amz-content-sha256"] = payload_hash
        creq, signed = canonical_request(method, url, {**headers, **added}, payload_hash)
        credential_scope = scope(date, self.region, self.service)
        sts = string_to_sign(amz_date, credential_scope, creq)
        signature = hmac.new(self._signing_key(creds, date), sts.encode(), hashlib.sha256).hexdigest()
        added["authorization"] = (f"{ALGORITHM} Credential={creds.access_key}/{credential_scope}, "
                                  f"SignedHeaders={signed}, Signature={signature}")
        return added
