"""How long a provider asks us to wait: `retry-after` (seconds or an HTTP date) and the rate-limit
reset headers of OpenAI (`x-ratelimit-reset-*`, durations like "6m0s") and Anthropic
(`anthropic-ratelimit-*-reset`, RFC 3339 times)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s") in seconds; None if not one."""
    text = text.strip()
    if not text:
        return None
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def _nonnegative(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _seconds_or_date(text: str, now: float) -> float | None:
    text = text.strip()
    if text[:1].isdigit() or text[:1] in "-+.":
        return _nonnegative(text)
    try:
        when = parsedate_to_datetime(text)  # HTTP-date (RFC 9110 IMF-fixdate and the obsolete forms)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _rfc3339_wait(text: str, now: float) -> float | None:
    """Anthropic's *-reset headers are RFC 3339 instants."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


_WAIT_STATUSES = (429, 503, 529)
_RESET = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", parse_duration),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", parse_duration),
)
_ANTHROPIC_RESET = ("requests", "tokens", "input-tokens", "output-tokens")


def retry_after_s(status: int, headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """How long the provider asks us to wait before trying it again, in seconds; None = no hint.

    Only for 429/503/529. `retry-after-ms` (OpenAI, Azure) wins over `retry-after` (seconds or an
    HTTP-date), which wins over the rate-limit reset headers. Of those, the ones whose `remaining`
    is 0 count; without `remaining`, the longest reset (a retry before it may well fail again).
    `now` is the wall clock in epoch seconds (for dates); injected for tests.
    """
    if status not in _WAIT_STATUSES:
        return None
    h = {k.lower(): v for k, v in headers.items()}
    wall = time.time() if now is None else now
    if (ms := _nonnegative(h.get("retry-after-ms", ""))) is not None:
        return ms / 1000.0
    if "retry-after" in h:
        value = _seconds_or_date(h["retry-after"], wall)
        if value is not None:
            return value
    if status != 429:
        return None
    exhausted: list[float] = []
    known: list[float] = []
    for remaining_key, reset_key, parse in _RESET:
        if reset_key in h and (wait := parse(h[reset_key])) is not None:
            known.append(wait)
            if h.get(remaining_key, "").strip() == "0":
                exhausted.append(wait)
    for kind in _ANTHROPIC_RESET:
        reset = h.get(f"anthropic-ratelimit-{kind}-reset")
        if reset and (wait := _rfc3339_wait(reset, wall)) is not None:
            known.append(wait)
            if h.get(f"anthropic-ratelimit-{kind}-remaining", "").strip() == "0":
                exhausted.append(wait)
    if exhausted:
        return max(exhausted)
    return max(known) if known else None
