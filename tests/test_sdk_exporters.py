"""The real OpenTelemetry Python SDK and its OTLP exporters (HTTP/protobuf and gRPC, both
gzip-compressed), against a running collector: every signal lands as exact rows."""

from __future__ import annotations

import urllib.request
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as grpc_logs
from opentelemetry.exporter.otlp.proto.grpc import metric_exporter as grpc_metrics
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from tests.conftest import DEFAULT_BOUNDS, CollectorProcess, wait_for_rows
from tests.readers import read_both

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
RESOURCE = Resource({"service.name": "test-agent", "service.version": "9.9.9", "team": "platform"})
RESOURCE_ROW = {
    "attributes": {"service.name": "test-agent", "service.version": "9.9.9", "team": "platform"},
    "dropped_attributes_count": 0,
}
SCOPE_ROW = {
    "name": "tests.sdk",
    "version": "1.2.3",
    "attributes": {},
    "dropped_attributes_count": 0,
}
TRANSPORTS = ["http", "grpc"]


def exporter(signal: str, transport: str, collector: CollectorProcess, table: str) -> Any:
    """The SDK's own OTLP exporter for a signal and transport, gzip on, table in the header."""
    if transport == "grpc":
        cls = {"metrics": grpc_metrics.OTLPMetricExporter, "logs": grpc_logs.OTLPLogExporter,
               "traces": grpc_traces.OTLPSpanExporter}[signal]  # fmt: skip
        return cls(
            endpoint=f"127.0.0.1:{collector.grpc_port}",
            insecure=True,
            headers=(("x-databricks-uc-table-name", table),),
            compression=grpc.Compression.Gzip,
        )
    cls = {"metrics": http_metrics.OTLPMetricExporter, "logs": http_logs.OTLPLogExporter,
           "traces": http_traces.OTLPSpanExporter}[signal]  # fmt: skip
    return cls(
        endpoint=collector.url(f"/api/2.0/otel/v1/{signal}"),
        headers={"X-Databricks-UC-Table-Name": table},
        compression=Compression.Gzip,
    )


NULL_TYPES = {
    "gauge": None,
    "sum": None,
    "histogram": None,
    "exponential_histogram": None,
    "summary": None,
}


def _sdk_metrics():
    """Record one of each instrument the SDK has, exemplars on, inside a known span context."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        resource=RESOURCE,
        exemplar_filter=AlwaysOnExemplarFilter(),
        views=[
            View(
                instrument_name="tool.latency", aggregation=ExponentialBucketHistogramAggregation()
            )
        ],
    )
    meter = provider.get_meter("tests.sdk", "1.2.3")
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, False, TraceFlags(TraceFlags.SAMPLED)))
    with trace.use_span(span):
        meter.create_counter("agent.tokens", unit="{token}", description="Tokens used").add(
            42, {"model": "opus", "type": "input"}
        )
        meter.create_gauge("agent.context.fill", unit="1").set(0.75, {"session": "s1"})
        meter.create_histogram("api.latency", unit="ms").record(12.5, {"route": "/v1/messages"})
        latency = meter.create_histogram("tool.latency", unit="s")
        latency.record(2.0)
        latency.record(4.0)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def _points(data):
    return {
        m.name: m.data.data_points[0]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def _exemplar(point, value: float) -> list[dict]:
    (e,) = point.exemplars
    return [
        {
            "time_unix_nano": e.time_unix_nano,
            "value": value,
            "span_id": f"{SPAN_ID:016x}",
            "trace_id": f"{TRACE_ID:032x}",
            "filtered_attributes": {},
        }
    ]


def _row(name: str, description: str, unit: str, metric_type: str, value: dict) -> dict:
    return {
        "name": name,
        "description": description,
        "unit": unit,
        "metric_type": metric_type,
        **NULL_TYPES,
        metric_type: value,
        "metadata": {},
        "resource": RESOURCE_ROW,
        "resource_schema_url": "",
        "instrumentation_scope": SCOPE_ROW,
        "metric_schema_url": "",
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_metrics_of_every_type_land_exactly(
    collector: CollectorProcess, table_prefix: str, transport: str
) -> None:
    table = f"{table_prefix}_otel_metrics"
    data = _sdk_metrics()
    metrics_exporter = exporter("metrics", transport, collector, table)
    assert metrics_exporter.export(data) is MetricExportResult.SUCCESS
    metrics_exporter.shutdown()

    # The SDK has no summary instrument: send one as a hand-built request on the same table.
    summary = ExportMetricsServiceRequest()
    metric = (
        summary.resource_metrics.add()
        .scope_metrics.add()
        .metrics.add(name="rpc.duration", unit="ms")
    )
    dp = metric.summary.data_points.add(
        start_time_unix_nano=1, time_unix_nano=2, count=3, sum=60.5, flags=1
    )
    dp.quantile_values.add(quantile=0.5, value=20.0)
    dp.quantile_values.add(quantile=0.99, value=30.25)
    dp.attributes.append(KeyValue(key="method", value=AnyValue(string_value="Export")))
    request = urllib.request.Request(
        collector.url("/v1/metrics"),
        data=summary.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "X-Databricks-UC-Table-Name": table},
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/x-protobuf"
        assert (
            ExportMetricsServiceResponse.FromString(answer.read()) == ExportMetricsServiceResponse()
        )

    path = collector.table_path(table)
    wait_for_rows(path, 5)
    rows = {r["name"]: r for r in read_both(path, key=lambda r: r["name"])}
    p = _points(data)

    counter = p["agent.tokens"]
    assert rows["agent.tokens"] == _row(
        "agent.tokens",
        "Tokens used",
        "{token}",
        "sum",
        {
            "start_time_unix_nano": counter.start_time_unix_nano,
            "time_unix_nano": counter.time_unix_nano,
            "value": 42.0,
            "exemplars": _exemplar(counter, 42.0),
            "attributes": {"model": "opus", "type": "input"},
            "flags": 0,
            "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
            "is_monotonic": True,
        },
    )
    gauge = p["agent.context.fill"]
    assert rows["agent.context.fill"] == _row(
        "agent.context.fill",
        "",
        "1",
        "gauge",
        {
            "start_time_unix_nano": gauge.start_time_unix_nano or 0,
            "time_unix_nano": gauge.time_unix_nano,
            "value": 0.75,
            "exemplars": _exemplar(gauge, 0.75),
            "attributes": {"session": "s1"},
            "flags": 0,
        },
    )
    hist = p["api.latency"]
    assert rows["api.latency"] == _row(
        "api.latency",
        "",
        "ms",
        "histogram",
        {
            "start_time_unix_nano": hist.start_time_unix_nano,
            "time_unix_nano": hist.time_unix_nano,
            "count": 1,
            "sum": 12.5,
            "bucket_counts": [0, 0, 0, 1] + [0] * 12,
            "explicit_bounds": DEFAULT_BOUNDS,
            "exemplars": _exemplar(hist, 12.5),
            "attributes": {"route": "/v1/messages"},
            "flags": 0,
            "min": 12.5,
            "max": 12.5,
            "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
        },
    )
    exp = p["tool.latency"]
    assert [e.value for e in exp.exemplars] == [2.0, 4.0]
    assert rows["tool.latency"] == _row(
        "tool.latency",
        "",
        "s",
        "exponential_histogram",
        {
            "attributes": {},
            "start_time_unix_nano": exp.start_time_unix_nano,
            "time_unix_nano": exp.time_unix_nano,
            "count": 2,
            "sum": 6.0,
            "scale": exp.scale,
            "zero_count": 0,
            "positive_bucket": {
                "offset": exp.positive.offset,
                "bucket_counts": list(exp.positive.bucket_counts),
            },
            "negative_bucket": {
                "offset": exp.negative.offset,
                "bucket_counts": list(exp.negative.bucket_counts),
            },
            "flags": 0,
            "exemplars": [
                {
                    "time_unix_nano": e.time_unix_nano,
                    "value": e.value,
                    "span_id": f"{SPAN_ID:016x}",
                    "trace_id": f"{TRACE_ID:032x}",
                    "filtered_attributes": {},
                }
                for e in exp.exemplars
            ],
            "min": 2.0,
            "max": 4.0,
            "zero_threshold": 0.0,
            "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
        },
    )
    assert sum(exp.positive.bucket_counts) == 2
    assert rows["rpc.duration"] == {
        "name": "rpc.duration",
        "description": "",
        "unit": "ms",
        "metric_type": "summary",
        **NULL_TYPES,
        "summary": {
            "start_time_unix_nano": 1,
            "time_unix_nano": 2,
            "count": 3,
            "sum": 60.5,
            "quantile_values": [
                {"quantile": 0.5, "value": 20.0},
                {"quantile": 0.99, "value": 30.25},
            ],
            "attributes": {"method": "Export"},
            "flags": 1,
        },
        "metadata": {},
        "resource": {"attributes": {}, "dropped_attributes_count": 0},
        "resource_schema_url": "",
        "instrumentation_scope": {
            "name": "",
            "version": "",
            "attributes": {},
            "dropped_attributes_count": 0,
        },
        "metric_schema_url": "",
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_logs_land_exactly(
    collector: CollectorProcess, table_prefix: str, transport: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(exporter("logs", transport, collector, table))
    )
    logger = provider.get_logger("tests.sdk", "1.2.3")
    logger.emit(
        LogRecord(
            timestamp=1_700_000_000_000_000_001,
            observed_timestamp=1_700_000_000_000_000_002,
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            severity_text="WARN",
            severity_number=SeverityNumber.WARN,
            body="tool denied",
            attributes={
                "tool": "Bash",
                "duration_ms": 2330,
                "success": True,
                "cost_usd": 0.00025,
                "args": ["ls", "-la"],
            },
            event_name="claude_code.tool_decision",
        )
    )
    logger.emit(
        LogRecord(
            timestamp=1_700_000_000_000_000_003,
            observed_timestamp=1_700_000_000_000_000_004,
            severity_number=SeverityNumber.INFO,
            body={"prompt_length": 12, "nested": {"ok": False}},
        )
    )
    provider.shutdown()

    path = collector.table_path(table)
    wait_for_rows(path, 2)
    rows = read_both(path, key=lambda r: r["time_unix_nano"])
    common = {
        "dropped_attributes_count": 0,
        "resource": RESOURCE_ROW,
        "resource_schema_url": "",
        "instrumentation_scope": SCOPE_ROW,
        "log_schema_url": "",
    }
    assert rows == [
        {
            "event_name": "claude_code.tool_decision",
            "trace_id": f"{TRACE_ID:032x}",
            "span_id": f"{SPAN_ID:016x}",
            "time_unix_nano": 1_700_000_000_000_000_001,
            "observed_time_unix_nano": 1_700_000_000_000_000_002,
            "severity_number": "SEVERITY_NUMBER_WARN",
            "severity_text": "WARN",
            "body": "tool denied",
            "attributes": {
                "tool": "Bash",
                "duration_ms": "2330",
                "success": "true",
                "cost_usd": "0.00025",
                "args": '["ls","-la"]',
            },
            "flags": 1,
            **common,
        },
        {
            "event_name": None,
            "trace_id": None,
            "span_id": None,
            "time_unix_nano": 1_700_000_000_000_000_003,
            "observed_time_unix_nano": 1_700_000_000_000_000_004,
            "severity_number": "SEVERITY_NUMBER_INFO",
            "severity_text": "",
            "body": '{"nested":{"ok":false},"prompt_length":12}',  # keys sorted
            "attributes": {},
            "flags": 0,
            **common,
        },
    ]


class _FixedIds(IdGenerator):
    """Known ids, so that the rows can be asserted exactly."""

    def __init__(self) -> None:
        self._spans = iter([0x1111111111111111, 0x2222222222222222])

    def generate_span_id(self) -> int:
        return next(self._spans)

    def generate_trace_id(self) -> int:
        return TRACE_ID


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_spans_land_exactly(
    collector: CollectorProcess, table_prefix: str, transport: str
) -> None:
    table = f"{table_prefix}_otel_spans"
    seen = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, id_generator=_FixedIds())
    provider.add_span_processor(
        SimpleSpanProcessor(exporter("traces", transport, collector, table))
    )
    provider.add_span_processor(SimpleSpanProcessor(seen))
    tracer = provider.get_tracer("tests.sdk", "1.2.3")
    linked = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED))
    with tracer.start_as_current_span(
        "agent.turn",
        kind=SpanKind.CLIENT,
        attributes={"gen_ai.request.model": "opus", "turn": 3},
        links=[Link(linked, {"reason": "retry"})],
    ) as parent:
        parent.add_event("first_token", {"ttft_ms": 412.5}, timestamp=1_700_000_000_000_000_500)
        with tracer.start_as_current_span("tool.call", attributes={"tool": "Bash"}):
            pass
        parent.set_status(Status(StatusCode.ERROR, "upstream 529"))
    provider.shutdown()

    path = collector.table_path(table)
    wait_for_rows(path, 2)
    rows = {r["name"]: r for r in read_both(path, key=lambda r: r["name"])}
    times = {s.name: (s.start_time, s.end_time) for s in seen.get_finished_spans()}
    common = {
        "trace_id": f"{TRACE_ID:032x}",
        "trace_state": "",
        "flags": 0x100,  # the Python SDK sends only SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
        "dropped_attributes_count": 0,
        "dropped_events_count": 0,
        "dropped_links_count": 0,
        "resource": RESOURCE_ROW,
        "resource_schema_url": "",
        "instrumentation_scope": SCOPE_ROW,
        "span_schema_url": "",
    }
    assert rows["agent.turn"] == {
        **common,
        "span_id": "1111111111111111",
        "parent_span_id": None,
        "name": "agent.turn",
        "kind": "SPAN_KIND_CLIENT",
        "start_time_unix_nano": times["agent.turn"][0],
        "end_time_unix_nano": times["agent.turn"][1],
        "attributes": {"gen_ai.request.model": "opus", "turn": "3"},
        "events": [
            {
                "time_unix_nano": 1_700_000_000_000_000_500,
                "name": "first_token",
                "attributes": {"ttft_ms": "412.5"},
                "dropped_attributes_count": 0,
            }
        ],
        "links": [
            {
                "trace_id": f"{0xABC:032x}",
                "span_id": f"{0xDEF:016x}",
                "trace_state": "",
                "attributes": {"reason": "retry"},
                "dropped_attributes_count": 0,
                "flags": 0x100,
            }
        ],
        "status": {"message": "upstream 529", "code": "STATUS_CODE_ERROR"},
    }
    assert rows["tool.call"] == {
        **common,
        "span_id": "2222222222222222",
        "parent_span_id": "1111111111111111",
        "name": "tool.call",
        "kind": "SPAN_KIND_INTERNAL",
        "start_time_unix_nano": times["tool.call"][0],
        "end_time_unix_nano": times["tool.call"][1],
        "attributes": {"tool": "Bash"},
        "events": [],
        "links": [],
        "status": {"message": "", "code": "STATUS_CODE_UNSET"},
    }
