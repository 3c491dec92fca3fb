"""ExportLogsServiceRequest → ``otel_logs`` rows: one row per LogRecord (mapping.md)."""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.flatten.columns import Rows, transpose
from collector.flatten.common import Flattened, Origins, Rejections, finish
from collector.flatten.values import (
    DEFAULT_LIMITS,
    Converter,
    InvalidRecord,
    Limits,
    check_decodable,
    enum_names,
    hex_id,
)
from collector.schema import load_schema

__all__ = ["flatten_logs"]

# The LogRecord fields read for every record, in one C-level call per record: the per-record
# Python work is the throughput, so the loop over records is a ``map`` of this getter and each
# column is converted afterwards as a whole.
_FIELDS = (
    "event_name",
    "trace_id",
    "span_id",
    "time_unix_nano",
    "observed_time_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "attributes",
    "dropped_attributes_count",
    "flags",
)
_read = attrgetter(*_FIELDS)
_TRACE = _FIELDS.index("trace_id")
_SPAN = _FIELDS.index("span_id")
_ATTRIBUTES = _FIELDS.index("attributes")
_BODY = _FIELDS.index("body")
_trace_id = itemgetter(_TRACE)
_span_id = itemgetter(_SPAN)


def flatten_logs(request: ExportLogsServiceRequest, limits: Limits = DEFAULT_LIMITS) -> Flattened:
    schema = load_schema("otel_logs").arrow
    convert = Converter(limits)
    rows = Rows(schema, convert)
    origins = Origins(schema, "log_schema_url", convert)
    rej = Rejections()
    records: list[tuple[Any, ...]] = []

    for rl in request.resource_logs:
        r_i = origins.add_resource(rl.resource, rl.schema_url)
        for sl in rl.scope_logs:
            s_i = origins.add_scope(sl.scope, sl.schema_url)
            batch = list(map(_read, sl.log_records))
            if not _ids_fit(batch):
                batch = _valid(batch, rej)
            records.extend(batch)
            origins.repeat(r_i, s_i, len(batch))

    for name, values in zip(_FIELDS, transpose(records, len(_FIELDS)), strict=True):
        rows[name].extend(_convert(name, values, convert))
    return finish(rows, origins, rej, convert)


def _ids_fit(batch: list[tuple[Any, ...]]) -> bool:
    """Whether every trace and span id is unset or of its length (one C-level pass each)."""
    return set(map(len, map(_trace_id, batch))) <= {0, 16} and set(
        map(len, map(_span_id, batch))
    ) <= {0, 8}


def _valid(batch: list[tuple[Any, ...]], rej: Rejections) -> list[tuple[Any, ...]]:
    kept = []
    for record in batch:
        try:
            hex_id(record[_TRACE], 16, "trace_id")
            hex_id(record[_SPAN], 8, "span_id")
        except InvalidRecord as e:
            rej.add("log record", e)
            check_decodable(record[_ATTRIBUTES], body=record[_BODY])
        else:
            kept.append(record)
    return kept


_SEVERITIES = enum_names("severity_number")


def _convert(name: str, values: Any, convert: Converter) -> Any:
    """One column of record fields → the values its table column holds."""
    if name == "event_name":
        return [v or None for v in values]
    if name in ("trace_id", "span_id"):
        return [v.hex() if v else None for v in values] if any(values) else [None] * len(values)
    if name == "severity_number":
        return [_SEVERITIES.get(n) or str(n) for n in values]
    if name == "body":
        return convert.bodies(values)
    return values
