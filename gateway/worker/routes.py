"""The shape of the extra HTTP routes parts contribute (admin, metrics, dashboard): path -> handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.errors import ServiceUnavailable
from gateway.store import StoreUnavailable

# handler(scope, proto, headers): answers through proto; raises GatewayError for an error answer.
Handler = Callable[[Any, Any, dict[str, str]], Awaitable[None] | None]
Routes = dict[tuple[str, str], Handler]


class _Admin(Protocol):
    def require_admin(self, headers: dict[str, str]) -> object: ...


def admin_only(auth: _Admin, handler: Callable[[Any, Any], Awaitable[None]]) -> Handler:
    """`handler(scope, proto)` behind the master key; a store outage answers 503 in the caller's shape."""

    async def run(scope: Any, proto: Any, headers: dict[str, str]) -> None:
        auth.require_admin(headers)
        try:
            await handler(scope, proto)
        except StoreUnavailable:
            raise ServiceUnavailable("The shared store is unavailable; try again shortly.") from None

    return run
