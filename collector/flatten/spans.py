"""ExportTraceServiceRequest → ``otel_spans`` rows: one row per Span (mapping.md)."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.flatten.columns import Rows
from collector.flatten.common import Flattened, Origins, Rejections, finish
from collector.flatten.values import (
    DEFAULT_LIMITS,
    Converter,
    InvalidRecord,
    Limits,
    check_decodable,
    enum_name,
    hex_id,
)
from collector.schema import load_schema

__all__ = ["flatten_spans"]


def _links(span: Span) -> list[tuple[Any, ...]]:
    """Validate a span's links before anything of the span is appended."""
    out = []
    for link in span.links:
        trace = hex_id(link.trace_id, 16, "link trace_id")
        span_id = hex_id(link.span_id, 8, "link span_id")
        out.append(
            (
                trace,
                span_id,
                link.trace_state,
                link.attributes,
                link.dropped_attributes_count,
                link.flags,
            )
        )
    return out


def flatten_spans(request: ExportTraceServiceRequest, limits: Limits = DEFAULT_LIMITS) -> Flattened:
    schema = load_schema("otel_spans").arrow
    convert = Converter(limits)
    rows = Rows(schema, convert)
    origins = Origins(schema, "span_schema_url", convert)
    rej = Rejections()
    events = rows["events"]
    links = rows["links"]
    status = rows["status"]

    for rs in request.resource_spans:
        r_i = origins.add_resource(rs.resource, rs.schema_url)
        for ss in rs.scope_spans:
            s_i = origins.add_scope(ss.scope, ss.schema_url)
            n = 0
            for span in ss.spans:
                try:
                    trace = hex_id(span.trace_id, 16, "trace_id")
                    span_id = hex_id(span.span_id, 8, "span_id")
                    parent = hex_id(span.parent_span_id, 8, "parent_span_id")
                    span_links = _links(span)
                except InvalidRecord as e:
                    rej.add("span", e)
                    check_decodable(
                        span.attributes,
                        *(event.attributes for event in span.events),
                        *(link.attributes for link in span.links),
                    )
                    continue
                rows["trace_id"].append(trace)
                rows["span_id"].append(span_id)
                rows["trace_state"].append(span.trace_state)
                rows["parent_span_id"].append(parent)
                rows["flags"].append(span.flags)
                rows["name"].append(span.name)
                rows["kind"].append(enum_name("span_kind", span.kind))
                rows["start_time_unix_nano"].append(span.start_time_unix_nano)
                rows["end_time_unix_nano"].append(span.end_time_unix_nano)
                rows["attributes"].append(span.attributes)
                rows["dropped_attributes_count"].append(span.dropped_attributes_count)
                for event in span.events:
                    events.items["time_unix_nano"].append(event.time_unix_nano)
                    events.items["name"].append(event.name)
                    events.items["attributes"].append(event.attributes)
                    events.items["dropped_attributes_count"].append(event.dropped_attributes_count)
                events.end_row(len(span.events))
                rows["dropped_events_count"].append(span.dropped_events_count)
                for values in span_links:
                    for field, value in zip(_LINK_FIELDS, values, strict=True):
                        links.items[field].append(value)
                links.end_row(len(span_links))
                rows["dropped_links_count"].append(span.dropped_links_count)
                status["message"].append(span.status.message)
                status["code"].append(enum_name("status_code", span.status.code))
                n += 1
            origins.repeat(r_i, s_i, n)

    return finish(rows, origins, rej, convert)


_LINK_FIELDS = (
    "trace_id",
    "span_id",
    "trace_state",
    "attributes",
    "dropped_attributes_count",
    "flags",
)
