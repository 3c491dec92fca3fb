"""The calls' spans sent on to an OTLP/HTTP traces endpoint (an MLflow tracking server's
``/v1/traces``, another collector), in batches, in the background.

A call never waits for it. Spans it cannot deliver, after retrying what the OTLP specification
calls retryable, are dropped, counted and logged: the spans table is the durable copy.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import structlog
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from yarl import URL

from collector.proxy.config import TraceExport
from collector.proxy.spans import as_own_trace, export_request
from collector.selfmetrics import SelfMetrics

__all__ = ["TraceExporter"]

log = structlog.get_logger("collector.proxy")

MAX_QUEUED = 10_000  # spans waiting; past that new ones are dropped, not memory used
MAX_BATCH = 512
BATCH_DELAY = 1.0  # seconds a first span waits for others to share its request
ATTEMPTS = 5
_RETRYABLE = frozenset({429, 502, 503, 504})  # OTLP/HTTP's retryable statuses
_CLOSE_WITHIN = 5.0  # seconds given to the last spans at shutdown


class TraceExporter:
    def __init__(self, export: TraceExport, metrics: SelfMetrics) -> None:
        self.export = export
        self.metrics = metrics
        self._queue: asyncio.Queue[Span | None] = asyncio.Queue(MAX_QUEUED)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._unsent = 0  # spans added and neither exported nor dropped yet

    def add(self, span: Span) -> None:
        if self.export.own_traces:
            span = as_own_trace(span)
        if self._task is None or self._task.done():  # (re)started: it never stops for long
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(span)
        except asyncio.QueueFull:
            self._dropped(1, "the export queue is full")
        else:
            self._unsent += 1

    async def close(self) -> None:
        """Send what is queued (for a few seconds at most), then stop."""
        if self._task is None:
            return
        self._closing = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._task, _CLOSE_WITHIN)
        except TimeoutError:  # a batch in flight may have arrived: it is counted as dropped
            self._dropped(self._unsent, "shutting down")

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.export.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            done = False
            while not done:
                first = await self._queue.get()
                if first is None:
                    return
                if not self._closing:
                    await asyncio.sleep(BATCH_DELAY)
                batch = [first]
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    span = self._queue.get_nowait()
                    if span is None:
                        done = True
                        break
                    batch.append(span)
                await self._send(session, batch)

    async def _send(self, session: aiohttp.ClientSession, spans: list[Span]) -> None:
        body = export_request(spans).SerializeToString()
        headers = self.export.headers | {"Content-Type": "application/x-protobuf"}
        why = ""
        for attempt in range(ATTEMPTS):
            delay = min(0.5 * 2**attempt, 8.0)
            try:
                async with session.post(self.export.url, data=body, headers=headers) as answer:
                    if answer.status < 300:
                        self._unsent -= len(spans)
                        self.metrics.inc("otlp_delta_proxy_spans_exported_total", len(spans))
                        return
                    why = f"HTTP {answer.status}"
                    if answer.status not in _RETRYABLE:
                        break
                    delay = _retry_after(answer.headers.get("Retry-After"), delay)
            except (aiohttp.ClientError, TimeoutError) as e:
                why = type(e).__name__
            if self._closing or attempt == ATTEMPTS - 1:
                break
            await asyncio.sleep(delay)
        self._unsent -= len(spans)
        self._dropped(len(spans), why)

    def _dropped(self, count: int, why: str) -> None:
        if count:
            self.metrics.inc("otlp_delta_proxy_spans_dropped_total", count)
            where = URL(self.export.url).with_user(None).with_query(None)  # no credentials
            log.warning("spans not exported", spans=count, reason=why, url=str(where))


def _retry_after(value: str | None, default: float) -> float:
    try:
        return min(max(float(value or ""), 0.0), 30.0)
    except ValueError:
        return default
