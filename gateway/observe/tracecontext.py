"""W3C Trace Context (level 1): reading `traceparent` / `tracestate` from a client and writing them on."""

from __future__ import annotations

import re

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_TRACESTATE_MEMBERS = 32
_MAX_TRACESTATE_CHARS = 512
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def parse_traceparent(value: str | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) from a W3C `traceparent`, or None when it is not valid."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version = m.group(1)
    if version == "ff" or (version == "00" and m.group(5) is not None):
        return None  # ff is forbidden; version 00 has exactly four fields
    trace_id, parent_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, int(m.group(4), 16)


def valid_traceparent(value: str) -> bool:
    """Whether `value` is a W3C `traceparent` worth forwarding (parse_traceparent without the ints)."""
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return False
    version = m.group(1)
    return (version != "ff" and not (version == "00" and m.group(5) is not None)
            and m.group(2) != _ZERO_TRACE and m.group(3) != _ZERO_SPAN)


def clean_tracestate(value: str | None) -> str | None:
    """The client's `tracestate`, cut to 32 members and 512 characters (whole members only)."""
    if not value:
        return None
    if len(value) <= _MAX_TRACESTATE_CHARS and value.count(",") < _MAX_TRACESTATE_MEMBERS:
        return value.strip() or None  # the usual case: one or two members, forwarded as sent
    members = [m.strip() for m in value.split(",") if m.strip()][:_MAX_TRACESTATE_MEMBERS]
    while members and len(",".join(members)) > _MAX_TRACESTATE_CHARS:
        members.pop()
    return ",".join(members) or None


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
