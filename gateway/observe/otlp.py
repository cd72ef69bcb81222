"""OTLP/HTTP export of finished span trees: protobuf `ExportTraceServiceRequest` to `/v1/traces`.

Requests only append to a bounded queue (gateway.observe.batcher); a background task encodes
(gateway.observe.otlp_wire) and posts a batch every `OTEL_BSP_SCHEDULE_DELAY`, or as soon as
`OTEL_BSP_MAX_EXPORT_BATCH_SIZE` requests wait. A full queue drops and counts; a collector that is
down or refuses costs one warning (`observe_sink_failed`, sink=otlp) until it answers again; no
request ever waits for it.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from typing import TYPE_CHECKING

import aiohttp

from gateway import __version__
from gateway.observe.batcher import Batcher
from gateway.observe.otlp_wire import RequestWriter
from gateway.observe.traceconf import TraceSettings
from gateway.observe.tracing import SCHEMA_URL

if TYPE_CHECKING:
    from gateway.observe.tracing import Trace


# Encoding runs on the worker's loop: a slice of requests at a time, so that a full batch never holds
# up the requests in flight for more than about a millisecond.
ENCODE_SLICE = 32


class ExportRefused(Exception):
    """The collector answered with a status other than 2xx."""


class OtlpExporter:
    """The worker's span queue and the task that posts it to the collector."""

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self.batcher: Batcher[Trace] = Batcher(
            "otlp", self._send, max_queue=settings.max_queue, batch_size=settings.max_batch,
            interval_s=settings.schedule_delay_s, write_timeout_s=settings.export_timeout_s)
        self.headers = {**settings.headers, "Content-Type": "application/x-protobuf"}
        if settings.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.writer = RequestWriter(settings.resource, "gateway", __version__, SCHEMA_URL)
        self._session: aiohttp.ClientSession | None = None
        self.put = self.batcher.put  # the one call a request makes

    def start(self) -> None:
        self.batcher.start()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx = ssl.create_default_context(cafile=self.settings.ca_file) if self.settings.ca_file else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                connector=aiohttp.TCPConnector(limit=2, ssl=ssl_ctx if ssl_ctx is not None else True))
        return self._session

    async def _send(self, batch: list[Trace]) -> None:
        parts: list[bytes] = []
        for i in range(0, len(batch), ENCODE_SLICE):
            parts.append(self.writer.spans(batch[i:i + ENCODE_SLICE]))
            await asyncio.sleep(0)
        body = self.writer.request(parts)
        if self.settings.gzip:
            body = await asyncio.to_thread(gzip.compress, body, 1)  # zlib lets go of the GIL
        async with self._client().post(self.settings.endpoint, data=body, headers=self.headers) as resp:
            await resp.read()
            if resp.status // 100 != 2:
                raise ExportRefused(f"collector answered {resp.status}")

    async def close(self) -> None:
        await self.batcher.close(timeout_s=min(self.settings.export_timeout_s, 5.0))  # bounded stop
        if self._session is not None:
            await self._session.close()
            self._session = None
