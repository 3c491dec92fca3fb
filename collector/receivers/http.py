"""OTLP/HTTP receiver (aiohttp): ``/v1/{metrics,logs,traces}`` and the Databricks paths.

Its job is the transport: method, content type, body (chunked, compressed, capped), the table
header, and turning the pipeline's result or error into the answer the OTLP spec prescribes.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from collector.codec import PROTOBUF, decode_request, encode_message, media_type, status_message
from collector.compression import BodyReader
from collector.errors import ExportError, RequestTimeout, Unauthenticated
from collector.pipeline import Pipeline
from collector.signals import SIGNALS, Signal
from collector.tables import TABLE_HEADER

__all__ = ["PATH_PREFIXES", "build_app", "read_body"]

log = structlog.get_logger("collector.http")

# OTLP's own paths, and the ones Databricks serves, which agents set up for Databricks use.
PATH_PREFIXES = ("", "/api/2.0/otel")


def _error(error: ExportError, media: str) -> web.Response:
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return web.Response(
        status=error.http_status,
        body=encode_message(status_message(error), media),
        content_type=media,
        headers=headers,
    )


async def read_body(request: web.Request, limit: int, timeout: float) -> bytearray:
    """The request body, decoded per Content-Encoding, at most ``limit`` bytes once inflated,
    and all of it within ``timeout`` seconds (a trickling client holds no place forever)."""
    reader = BodyReader(request.headers.get("Content-Encoding"), limit)
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                reader.feed(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body was not received within {timeout:g} s") from None
    return reader.finish()


class _Handler:
    def __init__(
        self, pipeline: Pipeline, signal: Signal, max_request_bytes: int, read_timeout: float
    ) -> None:
        self.pipeline = pipeline
        self.signal = signal
        self.max_request_bytes = max_request_bytes
        self.read_timeout = read_timeout

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        media = PROTOBUF  # the answer to a request whose media type we cannot read
        try:
            media = media_type(request.headers.get("Content-Type"))
            with self.pipeline.admission():
                principal = self.pipeline.authenticate(request.headers.get("Authorization"))
                # Neither the body nor the decoded request is kept in this frame: export drops
                # the request once flattened, before it waits for the WAL with the others in
                # flight, which is most of the memory a request costs.
                result = await self.pipeline.export(
                    self.signal,
                    request.headers.get(TABLE_HEADER),
                    decode_request(
                        self.signal,
                        await read_body(request, self.max_request_bytes, self.read_timeout),
                        media,
                        self.pipeline.limits,
                    ),
                    principal,
                )
        except ExportError as e:
            self.pipeline.metrics.inc(
                "otlp_delta_requests_total", signal=self.signal.name, outcome=str(e.http_status)
            )
            # The reason is ours, never the client's headers or payload (tokens, prompts).
            log.info(
                "request refused",
                path=request.path,
                status=e.http_status,
                reason=e.message,
                peer=request.remote,
            )
            response = _error(e, media)
            if isinstance(e, Unauthenticated):
                response.headers["WWW-Authenticate"] = 'Bearer realm="otlp"'
            return response
        self.pipeline.metrics.inc(
            "otlp_delta_requests_total", signal=self.signal.name, outcome="200"
        )
        response = self.signal.response(result.rejected, result.error)
        return web.Response(body=encode_message(response, media), content_type=media)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


def _readyz(pipeline: Pipeline) -> web.RequestHandler:
    async def readyz(request: web.Request) -> web.Response:
        ready, body = pipeline.health()
        return web.json_response(body, status=200 if ready else 503)

    return readyz


def _metrics(pipeline: Pipeline) -> web.RequestHandler:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=pipeline.render_metrics(), content_type="text/plain")

    return metrics


def build_app(
    pipeline: Pipeline, max_request_bytes: int, read_timeout: float = 30.0
) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz(pipeline))
    app.router.add_get("/metrics", _metrics(pipeline))
    for signal in SIGNALS:
        handler = _Handler(pipeline, signal, max_request_bytes, read_timeout)
        for prefix in PATH_PREFIXES:
            path = f"{prefix}/v1/{signal.name}"
            # aiohttp answers any other method on the path with 405 and `Allow: POST`.
            app.router.add_post(path, handler)
    return app
