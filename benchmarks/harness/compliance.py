"""A stand-in external compliance service for the `http` policy: answers "pass" after a fixed delay.

The policy POSTs `{"direction", "text", "model", "key", "request_id"}` and lets the request through
on any answer whose `action` is neither "block" nor "flag" (gateway/governance/policies.py). GET
returns how many checks were answered, so the harness can show the checks really ran.

    granian --interface rsgi benchmarks.harness.compliance:app   (env COMPLIANCE_LATENCY_MS, default 20)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

_JSON = [("content-type", "application/json")]


class Compliance:
    def __init__(self) -> None:
        self.delay = float(os.environ.get("COMPLIANCE_LATENCY_MS", "20")) / 1000
        self.checks = 0

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await proto()
        if scope.method == "GET":
            proto.response_bytes(200, _JSON, b'{"checks":%d}' % self.checks)
            return
        await asyncio.sleep(self.delay)
        self.checks += 1
        proto.response_bytes(200, _JSON, b'{"action":"pass"}')


app = Compliance()
