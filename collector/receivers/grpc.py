"""OTLP/gRPC receiver (grpc.aio): MetricsService, LogsService and TraceService ``Export``."""

from __future__ import annotations

import functools
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from collector.errors import ExportError
from collector.pipeline import Pipeline
from collector.signals import LOGS, METRICS, SPANS, Signal
from collector.tables import TABLE_HEADER

__all__ = ["build_server"]

log = structlog.get_logger("collector.grpc")

_STATUS = {code.value[0]: code for code in grpc.StatusCode}
_METADATA_KEY = TABLE_HEADER.lower()  # gRPC metadata keys are lowercase


class _Export:
    def __init__(self, pipeline: Pipeline, signal: Signal) -> None:
        self.pipeline = pipeline
        self.signal = signal

    async def Export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        table = authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == _METADATA_KEY:
                table = value
            elif key == "authorization":
                authorization = value
        try:
            with self.pipeline.admission():
                principal = self.pipeline.authenticate(authorization)
                result = await self.pipeline.export(self.signal, table, request, principal)
        except ExportError as e:
            code = _STATUS[e.rpc_code]
            self.pipeline.metrics.inc(
                "otlp_delta_requests_total", signal=self.signal.name, outcome=code.name
            )
            log.info(
                "request refused",
                signal=self.signal.name,
                code=code.name,
                reason=e.message,
                peer=context.peer(),
            )
            await context.abort(code, e.message, _details(e))
        self.pipeline.metrics.inc(
            "otlp_delta_requests_total", signal=self.signal.name, outcome="OK"
        )
        return self.signal.response(result.rejected, result.error)


def _details(error: ExportError) -> tuple[tuple[str, bytes], ...]:
    """``grpc-status-details-bin`` carrying RetryInfo, which OTLP clients read as the delay."""
    if error.retry_after is None:
        return ()
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(error.retry_after * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=error.rpc_code, message=error.message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


def build_server(
    pipeline: Pipeline, max_request_bytes: int, reuse_port: bool = False
) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
        ]
    )
    server.add_generic_rpc_handlers([_service(pipeline, s) for s in (METRICS, LOGS, SPANS)])
    return server


def _service(pipeline: Pipeline, signal: Signal) -> grpc.GenericRpcHandler:
    """The signal's OTLP service, decoding requests as the HTTP receiver does (the native core,
    or the wire classes of collector.wire) rather than with the generated servicer's classes."""
    service = signal.response_type.DESCRIPTOR.file.services_by_name
    (name,) = service  # each OTLP collector .proto declares one service
    handler = grpc.unary_unary_rpc_method_handler(
        _Export(pipeline, signal).Export,
        request_deserializer=functools.partial(signal.decode_protobuf, limits=pipeline.limits),
        response_serializer=signal.response_type.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(service[name].full_name, {"Export": handler})
