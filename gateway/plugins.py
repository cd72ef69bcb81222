"""Wires the optional stages (limits, cache, transforms, observability) into a worker's runtime.

Each capability adds itself here, once per worker, from configuration resolved at start-up. A part
that fails to start is marked degraded on the runtime and the gateway serves without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from .app import GatewayApp
    from .runtime import Runtime

log = structlog.get_logger("gateway.plugins")


async def install_plugins(app: GatewayApp, rt: Runtime) -> None:
    """Build the optional stages in pipeline order: limits, cache lookup, transforms; then after-hooks."""
    return None
