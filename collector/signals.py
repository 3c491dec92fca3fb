"""The three OTLP signals and everything that differs between them, in one table."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.flatten import Flattened, Limits, flatten_logs, flatten_metrics, flatten_spans
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
    flatten: Callable[[Any, Limits], Flattened]
    count: Callable[[Any], int]  # records in a request, counted without looking at them

    @functools.cached_property
    def decode_protobuf(self) -> Callable[[bytes], Message]:
        """Decodes a protobuf body for the flatteners (collector.wire); raises DecodeError."""
        return protobuf_decoder(self.request_type)

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
