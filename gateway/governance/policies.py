"""Policy sets per route, compiled once per worker: redaction before the call, local block/flag
checks inline (they take microseconds: a task would cost more than the check), remote checks (the
`http` kind) beside the upstream call as `ctx.guards`, and each policy's timeout with its fail-open
or fail-closed rule.

An input policy that blocks raises `PolicyViolation` (400, `content_policy_violation`); a policy
that could not answer in time follows its `fail` rule: "open" lets the request through (counted),
"closed" refuses it with 503. Flags are logged (never the matched text) and kept on
`ctx.policy_flags` for the audit log.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import structlog

from gateway.errors import PolicyViolation, ServiceUnavailable
from gateway.governance.content import input_texts
from gateway.governance.detect import Deny, Detector, Injection, MaxPrompt, Pii
from gateway.governance.settings import PolicySpec
from gateway.pipeline.context import PolicyFlag

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext

log = structlog.get_logger("gateway.governance.policies")
_dec = msgspec.json.Decoder()


class Policy:
    __slots__ = ("action", "detector", "fail_closed", "http", "kind", "name", "remote", "stats", "timeout", "url",
                 "when")

    def __init__(self, spec: PolicySpec, http: aiohttp.ClientSession | None, stats: Counter[str]) -> None:
        self.name = spec.name
        self.kind = spec.kind
        self.action = spec.action
        self.when = spec.when
        self.timeout = spec.timeout_ms / 1000.0
        self.fail_closed = spec.fail == "closed"
        self.url = spec.url
        self.http = http
        self.stats = stats
        self.detector: Detector | None = None
        if spec.kind == "pii":
            self.detector = Pii(spec.entities)
        elif spec.kind == "deny":
            self.detector = Deny(spec.patterns, spec.ignore_case)
        elif spec.kind == "max_prompt":
            self.detector = MaxPrompt(spec.max_chars, spec.max_tokens)
        elif spec.kind == "injection":
            self.detector = Injection(spec.threshold)
        self.remote = self.detector is None  # waits on a remote service (the `http` kind)

    async def _ask(self, ctx: RequestContext, text: str, direction: str) -> tuple[str, str] | None:
        assert self.http is not None and self.url is not None
        body = {"direction": direction, "text": text, "model": ctx.model,
                "key": ctx.key.id if ctx.key else None, "request_id": ctx.request_id}
        async with self.http.post(self.url, json=body) as resp:
            resp.raise_for_status()
            answer = _dec.decode(await resp.read())
        verdict = answer.get("action", "allow") if isinstance(answer, dict) else "allow"
        if verdict not in ("block", "flag"):
            return None
        reason = str(answer.get("reason") or "compliance_check")
        return reason, ("flag" if verdict == "flag" or self.action == "flag" else "block")

    def local(self, text: str) -> tuple[str, str] | None:
        """A local detector's verdict, without a coroutine: (reason, action), or None when it passes."""
        assert self.detector is not None
        reason = self.detector.find(text)
        return (reason, self.action) if reason is not None else None

    async def evaluate(self, ctx: RequestContext, text: str, direction: str) -> tuple[str, str] | None:
        """(reason, action) when the policy triggers, None when it passes."""
        if self.detector is not None:
            return self.local(text)
        try:
            return await asyncio.wait_for(self._ask(ctx, text, direction), self.timeout)
        except (TimeoutError, aiohttp.ClientError, msgspec.DecodeError, OSError) as exc:
            failure = "timeout" if isinstance(exc, TimeoutError) else "error"
            self.stats[f"{self.name}:{failure}"] += 1
            log.warning("policy_unavailable", policy=self.name, failure=failure, request_id=ctx.request_id,
                        rule="fail-closed" if self.fail_closed else "fail-open")
            if self.fail_closed:
                raise ServiceUnavailable(f"The policy {self.name!r} could not be evaluated ({failure}); "
                                         "the request was refused (fail-closed).") from None
            return None


def apply(ctx: RequestContext, policy: Policy, found: tuple[str, str] | None, direction: str) -> None:
    """Act on one policy's verdict: raise on block, record a flag."""
    if found is None:
        return
    reason, action = found
    if action == "block":
        policy.stats[f"{policy.name}:blocked"] += 1
        log.info("policy_blocked", policy=policy.name, reason=reason, direction=direction,
                 request_id=ctx.request_id)
        what = "request" if direction == "input" else "answer"
        raise PolicyViolation(f"The {what} was blocked by the policy {policy.name!r} ({reason}).")
    policy.stats[f"{policy.name}:flagged"] += 1
    ctx.policy_flags.append(PolicyFlag(policy=policy.name, reason=reason, direction=direction))
    log.info("policy_flagged", policy=policy.name, reason=reason, direction=direction, request_id=ctx.request_id)


def redact_slots(policies: list[Policy], slots: list[tuple[Any, Any, str]]) -> int:
    """Redact texts in place; the number of replacements."""
    total = 0
    for container, key, text in slots:
        new = text
        for p in policies:
            assert p.detector is not None
            new, n = p.detector.redact(new)
            if n:
                p.stats[f"{p.name}:redacted"] += n
                total += n
        if new is not text:
            container[key] = new
    return total


class PolicySet:
    """The ordered policies of one route, split by where they run."""

    def __init__(self, policies: list[Policy], on: dict[str, str]) -> None:
        inputs = [p for p in policies if on[p.name] in ("input", "both")]
        self.redact_in = [p for p in inputs if p.action == "redact"]
        checks = [p for p in inputs if p.action != "redact"]
        # "beside" pays off only for a check that waits on something: local detectors run inline.
        self.beside_in = [p for p in checks if p.when == "beside" and p.remote]
        self.before_in = [p for p in checks if p not in self.beside_in]
        self.output = [p for p in policies if on[p.name] in ("output", "both")]
        self.has_input = bool(self.redact_in or self.before_in or self.beside_in)

    async def run_input(self, ctx: RequestContext) -> None:
        if not self.has_input:
            return
        data = ctx.json()
        slots = input_texts(data, ctx.endpoint.name)
        if self.redact_in and redact_slots(self.redact_in, slots):
            ctx.changed = True
            slots = input_texts(data, ctx.endpoint.name)
        if not (self.before_in or self.beside_in):
            return
        text = "\n".join(s for _, _, s in slots)
        for p in self.before_in:
            found = p.local(text) if not p.remote else await p.evaluate(ctx, text, "input")
            apply(ctx, p, found, "input")
        if self.beside_in:
            guard = asyncio.ensure_future(self._beside(ctx, text))
            guard.add_done_callback(_retrieve)
            ctx.guards.append(guard)

    async def _beside(self, ctx: RequestContext, text: str) -> None:
        t = time.perf_counter()
        for p in self.beside_in:
            apply(ctx, p, await p.evaluate(ctx, text, "input"), "input")
        ctx.policy_beside_ms = (time.perf_counter() - t) * 1000.0


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A guard nobody awaited (the request ended before the upstream call): its outcome is moot.
    if not task.cancelled():
        task.exception()


def compile_policies(specs: dict[str, list[PolicySpec]], route_names: dict[str, str],
                     http: aiohttp.ClientSession | None, stats: Counter[str]) -> dict[str, PolicySet]:
    """Model name or alias -> its route's PolicySet ("*" for names without a route of their own)."""
    compiled: dict[str, PolicySet] = {}
    for route, items in specs.items():
        policies = [Policy(s, http if s.kind == "http" else None, stats) for s in items]
        compiled[route] = PolicySet(policies, {s.name: s.on for s in items})
    out: dict[str, PolicySet] = {}
    default = compiled.get("*")
    for name, route in route_names.items():
        chosen = compiled.get(route, default)
        if chosen is not None:
            out[name] = chosen
    if default is not None:
        out["*"] = default
    return out
