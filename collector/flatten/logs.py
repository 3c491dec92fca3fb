"""ExportLogsServiceRequest → ``otel_logs`` rows: one row per LogRecord (mapping.md)."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.flatten.columns import Rows
from collector.flatten.common import Flattened, Origins, Rejections, finish
from collector.flatten.values import (
    DEFAULT_LIMITS,
    Converter,
    InvalidRecord,
    Limits,
    enum_names,
    hex_id,
)
from collector.schema import load_schema

__all__ = ["flatten_logs"]


def flatten_logs(request: ExportLogsServiceRequest, limits: Limits = DEFAULT_LIMITS) -> Flattened:
    schema = load_schema("otel_logs").arrow
    rows = Rows(schema)
    convert = Converter(limits)
    origins = Origins(schema, "log_schema_url", convert)
    rej = Rejections()
    event_name = rows["event_name"].append
    trace_id = rows["trace_id"].append
    span_id = rows["span_id"].append
    time = rows["time_unix_nano"].append
    observed = rows["observed_time_unix_nano"].append
    severity_number = rows["severity_number"].append
    severity_text = rows["severity_text"].append
    body = rows["body"].append
    attributes = rows["attributes"].append
    dropped = rows["dropped_attributes_count"].append
    flags = rows["flags"].append
    severities = enum_names("severity_number")

    for rl in request.resource_logs:
        r_i = origins.add_resource(rl.resource, rl.schema_url)
        for sl in rl.scope_logs:
            s_i = origins.add_scope(sl.scope, sl.schema_url)
            n = 0
            for record in sl.log_records:
                # Per-record work is the throughput: no call where a test of the value will do.
                raw_trace, raw_span = record.trace_id, record.span_id
                try:
                    trace = hex_id(raw_trace, 16, "trace_id") if raw_trace else None
                    span = hex_id(raw_span, 8, "span_id") if raw_span else None
                except InvalidRecord as e:
                    rej.add("log record", e)
                    continue
                event_name(record.event_name or None)
                trace_id(trace)
                span_id(span)
                time(record.time_unix_nano)
                observed(record.observed_time_unix_nano)
                number = record.severity_number
                severity_number(severities.get(number) or str(number))
                severity_text(record.severity_text)
                # An unset body and a body with no value (OTLP/JSON writes `"body": {}`) are NULL.
                value = record.body
                body(convert.body(value) if value.WhichOneof("value") else None)
                attrs, extra = convert.attributes(record.attributes)
                attributes(attrs)
                dropped(record.dropped_attributes_count + extra)
                flags(record.flags)
                n += 1
            origins.repeat(r_i, s_i, n)

    return finish(rows, origins, rej, convert)
