"""The three OTLP signals and everything that differs between them, in one table."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.flatten import (
    DEFAULT_LIMITS,
    Flattened,
    Limits,
    flatten_logs,
    flatten_metrics,
    flatten_spans,
)
from collector.flatten.native import NATIVE_SIGNALS, Decoded, flatten_native, transcode_json
from collector.otlpjson import Node, from_json
from collector.schema import TableSchema, load_schema
from collector.wire import protobuf_decoder

__all__ = ["LOGS", "METRICS", "SIGNALS", "SPANS", "Signal"]


@dataclass(frozen=True)
class Signal:
    name: str  # as in the OTLP paths: metrics, logs, traces
    schema_name: str  # schemas/<schema_name>.sql
    request_type: type[Message]  # the standard class; OTLP/JSON decodes by its descriptor
    response_type: type[Message]
    rejected_field: str  # the partial_success counter of the response
    flattener: Callable[[Any, Limits], Flattened]  # of a message or an OTLP/JSON tree
    counter: Callable[[Any], int]  # records in a message, counted without looking at them

    @functools.cached_property
    def decode_wire(self) -> Callable[[bytes | bytearray], Message]:
        """Decodes a protobuf body into the wire classes (collector.wire) for the Python
        flatteners; raises DecodeError."""
        return protobuf_decoder(self.request_type)

    def decode_protobuf(
        self, body: bytes | bytearray, limits: Limits = DEFAULT_LIMITS
    ) -> Message | Decoded:
        """A protobuf body decoded for :meth:`flatten`: by the native core, which flattens it
        in the same pass under ``limits``, or else into the wire classes (collector.wire).
        Raises DecodeError with the parser's reason."""
        if self.name not in NATIVE_SIGNALS:
            return self.decode_wire(body)
        try:
            return flatten_native(self.name, body, limits, self.schema.arrow)
        except ValueError as e:
            name = self.request_type.DESCRIPTOR.full_name
            raise DecodeError(f"Error parsing message with type '{name}': {e}") from None

    def decode_json(
        self, body: bytes | bytearray, limits: Limits = DEFAULT_LIMITS, *, native: bool = True
    ) -> Node | Decoded:
        """An OTLP/JSON body decoded for :meth:`flatten`: read by the native core into protobuf
        bytes and decoded as those are, or else (no core, ``native=False``, or a body the core
        leaves to it) into :class:`Node` objects by collector.otlpjson, the reference. Raises
        ValueError (JsonError naming the JSON path, or JSONDecodeError), TypeError or
        RecursionError."""
        if native and self.name in NATIVE_SIGNALS:
            transcoded = transcode_json(self.name, body)
            if transcoded is not None:
                try:
                    return self.decode_protobuf(transcoded, limits)
                except DecodeError:  # not expected (the core nests below the parser's limit)
                    pass
        return from_json(json.loads(body), self.request_type.DESCRIPTOR)

    def count(self, request: Message | Decoded) -> int:
        """The records of a decoded request (--max-request-records)."""
        return request.records if isinstance(request, Decoded) else self.counter(request)

    def flatten(self, request: Message | Decoded, limits: Limits = DEFAULT_LIMITS) -> Flattened:
        if isinstance(request, Decoded):
            return request.flatten(limits)
        return self.flattener(request, limits)

    @property
    def schema(self) -> TableSchema:
        return load_schema(self.schema_name)

    @property
    def table_suffix(self) -> str:
        return self.schema.suffix

    def response(self, rejected: int = 0, message: str | None = None) -> Message:
        response = self.response_type()
        if rejected or message:
            setattr(response.partial_success, self.rejected_field, rejected)
            response.partial_success.error_message = message or ""
        return response


METRICS = Signal(
    "metrics",
    "otel_metrics",
    metrics_service_pb2.ExportMetricsServiceRequest,
    metrics_service_pb2.ExportMetricsServiceResponse,
    "rejected_data_points",
    flatten_metrics,
    lambda r: sum(
        len(getattr(m, m.WhichOneof("data")).data_points) if m.WhichOneof("data") else 0
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    ),
)
LOGS = Signal(
    "logs",
    "otel_logs",
    logs_service_pb2.ExportLogsServiceRequest,
    logs_service_pb2.ExportLogsServiceResponse,
    "rejected_log_records",
    flatten_logs,
    lambda r: sum(len(sl.log_records) for rl in r.resource_logs for sl in rl.scope_logs),
)
SPANS = Signal(
    "traces",
    "otel_spans",
    trace_service_pb2.ExportTraceServiceRequest,
    trace_service_pb2.ExportTraceServiceResponse,
    "rejected_spans",
    flatten_spans,
    lambda r: sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans),
)
SIGNALS: tuple[Signal, ...] = (METRICS, LOGS, SPANS)
