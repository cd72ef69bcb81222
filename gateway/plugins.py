"""Wires the optional stages (limits, cache, transforms, accounting, observability) into a worker.

Each capability owns an `install(app, rt)` coroutine in its own module; this file only fixes their
order. `install` appends to `rt.before_stages` (run in order before routing; a stage may answer
the request itself), `rt.after_hooks` (run after the answer went out) and `app.routes` (extra
endpoints). A capability that fails to start is marked degraded and the gateway serves without it.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.plugins")

# Pipeline order: governance (keys, limits, budgets, policies) -> cache lookup -> transforms
# (compression, provider prompt-cache markers) -> accounting (cost, savings) -> observability.
PLUGINS = (
    ("store", "gateway.store_install"),
    ("governance", "gateway.governance.part"),
    ("cache", "gateway.cache.part"),
    ("transform", "gateway.transform.part"),
    ("ledger", "gateway.costs.part"),
    ("observe", "gateway.observe.part"),
)


async def install_plugins(app: GatewayApp, rt: Runtime) -> None:
    # GATEWAY_DISABLE=cache,governance turns capabilities off (benchmarks measure each one's cost).
    disabled = {p.strip() for p in os.environ.get("GATEWAY_DISABLE", "").split(",") if p.strip()}
    for name, module_name in PLUGINS:
        if name in disabled:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # capability not part of this build
            rt.degraded[name] = f"{type(exc).__name__}: {exc}"
            log.exception("plugin_import_failed", plugin=name)
            continue
        except Exception as exc:
            rt.degraded[name] = f"{type(exc).__name__}: {exc}"
            log.exception("plugin_import_failed", plugin=name)
            continue
        try:
            await module.install(app, rt)
        except Exception as exc:
            rt.degraded[name] = f"{type(exc).__name__}: {exc}"
            log.exception("plugin_failed", plugin=name)
