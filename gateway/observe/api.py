"""HTTP endpoints of observability: /metrics, /api/vas/{logs,summary,archive,login,logout}, /dashboard.

The /api/vas/* data endpoints need the master key (`Authorization: Bearer`, `x-api-key`) or a
dashboard session cookie (gateway/observe/session.py). The /dashboard page itself holds no data:
it shows a login form, posts the key once to /api/vas/login (JSON) and from then on sends the
HttpOnly cookie. A key in the URL (`?key=`) is refused, never used: URLs land in access logs,
proxies and browser history. /metrics is open, like any Prometheus target scraped by a
ServiceMonitor: it carries counts, never request content.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec

from gateway.errors import BadRequest, MalformedBody, NotFound, PayloadTooLarge, ServiceUnavailable
from gateway.observe.archive import StoreUnavailable
from gateway.observe.audit_store import AuditQuery, Page
from gateway.observe.entry import AuditEntry
from gateway.observe.exposition import hit_ratios, render
from gateway.observe.session import Sessions, cookie_value
from gateway.observe.stats import parse_duration, summarize

if TYPE_CHECKING:
    from gateway.governance.auth import Authenticator
    from gateway.observe.observer import Observer

_enc = msgspec.json.Encoder()
JSON = [("content-type", "application/json"), ("cache-control", "no-store")]
PROM = [("content-type", "text/plain; version=0.0.4; charset=utf-8")]
MAX_LIMIT = 1000
Handler = Callable[[Any, Any, dict[str, str]], Awaitable[None] | None]


class _Login(msgspec.Struct):
    key: str


_login_decoder = msgspec.json.Decoder(_Login)


def _time(value: str, name: str) -> float:
    """Unix seconds, ISO 8601, or a duration ago ('15m', '1h')."""
    v = value.strip()
    try:
        return float(v)
    except ValueError:
        pass
    if v and v[-1] in "smhd" and v[:-1].replace(".", "", 1).isdigit():
        return time.time() - parse_duration(v)
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(f"{name}: expected unix seconds, ISO 8601 or a duration like 15m, got {value!r}",
                         param=name) from None


def _bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "hit"):
        return True
    if v in ("0", "false", "no", "miss"):
        return False
    raise BadRequest(f"{name}: expected true or false, got {value!r}", param=name)


def parse_query(qs: str) -> AuditQuery:
    params = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=False).items()}
    q = AuditQuery()
    if "from" in params or "since" in params:
        q.since = _time(params.get("from") or params["since"], "from")
    if "to" in params or "until" in params:
        q.until = _time(params.get("to") or params["until"], "to")
    if "last" in params:
        q.since = _time(params["last"], "last")
    q.model = params.get("model")
    q.key_id = params.get("key") or params.get("key_id")
    q.request_id = params.get("request_id")
    if "cache_hit" in params:
        q.cache_hit = _bool(params["cache_hit"], "cache_hit")
    if "status" in params:
        q.status = params["status"]
        try:
            q.status_range()
        except ValueError:
            raise BadRequest(f"status: expected a code or a class like 5xx, got {q.status!r}",
                             param="status") from None
    if "limit" in params:
        try:
            q.limit = max(1, min(MAX_LIMIT, int(params["limit"])))
        except ValueError:
            raise BadRequest("limit: expected an integer", param="limit") from None
    q.cursor = params.get("cursor")
    q.after = params.get("after")
    for name in ("cursor", "after"):
        value = getattr(q, name)
        if value is not None and not value.replace("-", "").isdigit():
            raise BadRequest(f"{name}: not a cursor returned by this API", param=name)
    return q


class ObserveAPI:
    def __init__(self, observer: Observer, auth: Authenticator, sessions: Sessions | None = None) -> None:
        self.obs = observer
        self.auth = auth
        self.sessions = sessions  # None: no login route (the page then sends the key as a header)
        self._page: bytes | None = None

    def routes(self) -> dict[tuple[str, str], Handler]:
        """The dashboard's routes: the page, its data, and the login that sets the session cookie."""
        return {("GET", "/dashboard"): self.dashboard, ("GET", "/api/vas/summary"): self.summary,
                ("POST", "/api/vas/login"): self.login, ("POST", "/api/vas/logout"): self.logout}

    def _admin(self, headers: dict[str, str]) -> None:
        if self.sessions is not None and self.sessions.valid(cookie_value(headers)):
            return
        self.auth.require_admin(headers)

    @staticmethod
    def _secure(scope: Any, headers: dict[str, str]) -> bool:
        return getattr(scope, "scheme", "") == "https" or headers.get("x-forwarded-proto", "") == "https"

    async def login(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        """POST {"key": "<master key>"} as JSON: a session cookie. A cross-site form cannot send JSON."""
        if not headers.get("content-type", "").startswith("application/json"):
            raise BadRequest("Send the key as a JSON body: {\"key\": \"...\"}.")
        body = await proto()
        if len(body) > 4096:
            raise PayloadTooLarge("The login body is too large.")
        try:
            key = _login_decoder.decode(body).key
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise MalformedBody("Send the key as a JSON body: {\"key\": \"...\"}.") from None
        self.auth.require_admin({"authorization": f"Bearer {key}"})
        if self.sessions is None:  # no master key: the page falls back to sending whatever key it has
            raise NotFound("Dashboard sessions need a master key (GATEWAY_MASTER_KEY).")
        cookie = self.sessions.set_cookie(self.sessions.issue(), self._secure(scope, headers))
        proto.response_bytes(200, [*JSON, ("set-cookie", cookie)], b'{"ok":true}')

    def logout(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        proto.response_bytes(200, [*JSON, ("set-cookie", Sessions.clear_cookie(self._secure(scope, headers)))],
                             b'{"ok":true}')

    async def _query(self, q: AuditQuery) -> Page:
        sink = self.obs.audit_sink
        if sink is None:
            raise NotFound("The audit log is off (observe.audit: false).")
        try:
            return await sink.query(q)
        except StoreUnavailable:
            raise ServiceUnavailable("The audit store is unavailable; try again shortly.") from None

    # ------------------------------------------------------------------ handlers

    def metrics(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        proto.response_bytes(200, PROM, render(self.obs.metrics, self.obs.pod_snapshot()))

    async def logs(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        self._admin(headers)
        q = parse_query(scope.query_string)
        page = await self._query(q)
        body = {"object": "list", "data": page.entries, "count": len(page.entries),
                "next_cursor": page.next_cursor, "head_cursor": page.head_cursor}
        proto.response_bytes(200, JSON, _enc.encode(body))

    async def summary(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        self._admin(headers)
        obs_cfg = self.obs.settings.observe
        params = {k: v[-1] for k, v in parse_qs(scope.query_string).items()}
        window = parse_duration(params["window"]) if "window" in params else obs_cfg.summary_window_s
        now = time.time()
        entries = await self.recent(now - window, obs_cfg.summary_max_entries)
        summary = summarize(entries, since=now - window, until=now)
        pod = self.obs.pod_snapshot()
        totals = {name: sum(v for _, v in series) for name, series in pod.counters.items()}
        body = {
            "window_s": window,
            "summary": summary,
            "latest": sorted(entries[:200], key=lambda e: e.ts, reverse=True)[:25],
            "pod": {
                "requests_total": totals.get("gateway_requests_total", 0.0),
                "dropped_total": totals.get("gateway_observe_dropped_total", 0.0),
                "hit_ratio": hit_ratios(pod),
                "workers": sum(v for _, v in pod.gauges.get("gateway_workers", [])),
            },
            "time": now,
        }
        proto.response_bytes(200, JSON, _enc.encode(body))

    async def recent(self, since: float, max_entries: int) -> list[AuditEntry]:
        """Newest first, down to `since` or `max_entries`."""
        out: list[AuditEntry] = []
        q = AuditQuery(since=since, limit=min(MAX_LIMIT, max_entries))
        while len(out) < max_entries:
            page = await self._query(q)
            out.extend(page.entries)
            if page.next_cursor is None:
                break
            q.cursor = page.next_cursor
        return out[:max_entries]

    async def archive(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        self._admin(headers)
        sink = self.obs.archive_sink
        if sink is None:
            raise NotFound("The archive is off (archive.enabled: false).")
        params = {k: v[-1] for k, v in parse_qs(scope.query_string).items()}
        try:
            if "request_id" in params:
                record = await sink.get(params["request_id"])
                if record is None:
                    raise NotFound(f"No archived request {params['request_id']!r}.")
                body = _enc.encode(record)
            else:
                before = _time(params["before"], "before") if "before" in params else None
                limit = max(1, min(MAX_LIMIT, int(params.get("limit", "20"))))
                body = _enc.encode({"object": "list", "data": await sink.recent(limit, before)})
        except StoreUnavailable:
            raise ServiceUnavailable("The archive is unavailable; try again shortly.") from None
        proto.response_bytes(200, JSON, body)

    def dashboard(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        """The page: no data in it (that comes from /api/vas/summary), so it needs no key."""
        if "key" in parse_qs(scope.query_string):
            raise BadRequest("The dashboard never takes the key in the URL (it lands in logs and history): "
                             "open /dashboard and log in.", param="key")
        if self._page is None:
            self._page = resources.files("gateway.observe").joinpath("static/dashboard.html").read_bytes()
        proto.response_bytes(200, [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"),
                                   ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer"),
                                   ("content-security-policy", "default-src 'self'; script-src 'unsafe-inline'; "
                                    "style-src 'unsafe-inline'; frame-ancestors 'none'")], self._page)
