"""OTLP/HTTP receiver (aiohttp): ``/v1/{metrics,logs,traces}`` and the Databricks paths.

Its job is the transport: method, content type, body (chunked, compressed, capped), the table
header, and turning the pipeline's result or error into the answer the OTLP spec prescribes.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from collector.codec import PROTOBUF, decode_request, encode_message, media_type, status_message
from collector.compression import BodyReader
from collector.errors import ExportError
from collector.pipeline import Pipeline
from collector.signals import SIGNALS, Signal
from collector.tables import TABLE_HEADER

__all__ = ["PATH_PREFIXES", "build_app"]

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


class _Handler:
    def __init__(self, pipeline: Pipeline, signal: Signal, max_request_bytes: int) -> None:
        self.pipeline = pipeline
        self.signal = signal
        self.max_request_bytes = max_request_bytes

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        media = PROTOBUF  # the answer to a request whose media type we cannot read
        try:
            media = media_type(request.headers.get("Content-Type"))
            self.pipeline.admit()
            reader = BodyReader(request.headers.get("Content-Encoding"), self.max_request_bytes)
            async for chunk in request.content.iter_any():
                reader.feed(chunk)
            body = reader.finish()
            message = decode_request(self.signal, body, media)
            result = await self.pipeline.export(
                self.signal, request.headers.get(TABLE_HEADER), message
            )
        except ExportError as e:
            log.info(
                "request refused",
                path=request.path,
                status=e.http_status,
                reason=e.message,
                peer=request.remote,
            )
            return _error(e, media)
        response = self.signal.response(result.rejected, result.error)
        return web.Response(body=encode_message(response, media), content_type=media)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


def _readyz(pipeline: Pipeline) -> web.RequestHandler:
    async def readyz(request: web.Request) -> web.Response:
        ready, body = pipeline.health()
        return web.json_response(body, status=200 if ready else 503)

    return readyz


def build_app(pipeline: Pipeline, max_request_bytes: int) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz(pipeline))
    for signal in SIGNALS:
        handler = _Handler(pipeline, signal, max_request_bytes)
        for prefix in PATH_PREFIXES:
            path = f"{prefix}/v1/{signal.name}"
            # aiohttp answers any other method on the path with 405 and `Allow: POST`.
            app.router.add_post(path, handler)
    return app
