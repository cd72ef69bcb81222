"""The shape of the extra HTTP routes parts contribute (admin, metrics, dashboard): path -> handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# handler(scope, proto, headers): answers through proto; raises GatewayError for an error answer.
Handler = Callable[[Any, Any, dict[str, str]], Awaitable[None] | None]
Routes = dict[tuple[str, str], Handler]
