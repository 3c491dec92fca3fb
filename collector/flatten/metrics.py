"""ExportMetricsServiceRequest → ``otel_metrics`` rows: one row per data point (mapping.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar

from collector.flatten.columns import ListValues, Rows
from collector.flatten.common import Flattened, Origins, Rejections, finish
from collector.flatten.values import (
    DEFAULT_LIMITS,
    Converter,
    InvalidRecord,
    Limits,
    enum_name,
    hex_id,
)
from collector.schema import load_schema

__all__ = ["flatten_metrics"]

# Proto oneof name → (metric_type value, struct column). The order is the DDL's.
_TYPES = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_METRIC_COLUMNS = ("name", "description", "unit", "metric_type", "metadata")


def _exemplar_rows(exemplars: Iterable[Exemplar]) -> list[tuple[Any, ...]]:
    """Validate a point's exemplars before anything of the point is appended."""
    out = []
    for e in exemplars:
        kind = e.WhichOneof("value")
        value = (
            e.as_double if kind == "as_double" else float(e.as_int) if kind == "as_int" else None
        )
        out.append(
            (
                e.time_unix_nano,
                value,
                hex_id(e.span_id, 8, "exemplar span_id"),
                hex_id(e.trace_id, 16, "exemplar trace_id"),
                e.filtered_attributes,
            )
        )
    return out


class _PointRows:
    """The struct rows of one metric type, with the fields every data point type shares."""

    def __init__(self, type: pa.StructType, convert: Converter) -> None:
        self.rows = Rows(type, convert)
        names = {f.name for f in type}
        self.start = self.rows["start_time_unix_nano"].append
        self.time = self.rows["time_unix_nano"].append
        self.attributes = self.rows["attributes"].append
        self.flags = self.rows["flags"].append
        self.exemplars: ListValues | None = self.rows["exemplars"] if "exemplars" in names else None

    def common(self, dp: Any, exemplars: list[tuple[Any, ...]] | None) -> None:
        self.start(dp.start_time_unix_nano)
        self.time(dp.time_unix_nano)
        self.attributes(dp.attributes)
        self.flags(dp.flags)
        if self.exemplars is not None and exemplars is not None:
            items = self.exemplars.items
            for t, v, span, trace, attrs in exemplars:
                items["time_unix_nano"].append(t)
                items["value"].append(v)
                items["span_id"].append(span)
                items["trace_id"].append(trace)
                items["filtered_attributes"].append(attrs)
            self.exemplars.end_row(len(exemplars))

    def __len__(self) -> int:
        return len(self.rows["time_unix_nano"])


def _optional(dp: Any, field: str) -> float | None:
    return getattr(dp, field) if dp.HasField(field) else None


def _add_number_points(out: _PointRows, data: Any, kind: str, rej: Rejections, name: str) -> int:
    values = out.rows["value"].append
    n = 0
    for dp in data.data_points:
        which = dp.WhichOneof("value")
        if which is None:
            rej.add(f"metric {name!r}", "number data point has no value")
            continue
        try:
            exemplars = _exemplar_rows(dp.exemplars)
        except InvalidRecord as e:
            rej.add(f"metric {name!r}", e)
            continue
        out.common(dp, exemplars)
        values(dp.as_double if which == "as_double" else float(dp.as_int))
        n += 1
    if kind == "sum":
        out.rows["aggregation_temporality"].extend(
            [enum_name("aggregation_temporality", data.aggregation_temporality)] * n
        )
        out.rows["is_monotonic"].extend([data.is_monotonic] * n)
    return n


def _add_histogram_points(out: _PointRows, data: Any, rej: Rejections, name: str) -> int:
    r = out.rows
    n = 0
    for dp in data.data_points:
        try:
            exemplars = _exemplar_rows(dp.exemplars)
        except InvalidRecord as e:
            rej.add(f"metric {name!r}", e)
            continue
        out.common(dp, exemplars)
        r["count"].append(dp.count)
        r["sum"].append(_optional(dp, "sum"))
        r["bucket_counts"].extend(dp.bucket_counts)
        r["explicit_bounds"].extend(dp.explicit_bounds)
        r["min"].append(_optional(dp, "min"))
        r["max"].append(_optional(dp, "max"))
        n += 1
    r["aggregation_temporality"].extend(
        [enum_name("aggregation_temporality", data.aggregation_temporality)] * n
    )
    return n


def _add_exponential_points(out: _PointRows, data: Any, rej: Rejections, name: str) -> int:
    r = out.rows
    n = 0
    for dp in data.data_points:
        try:
            exemplars = _exemplar_rows(dp.exemplars)
        except InvalidRecord as e:
            rej.add(f"metric {name!r}", e)
            continue
        out.common(dp, exemplars)
        r["count"].append(dp.count)
        r["sum"].append(_optional(dp, "sum"))
        r["scale"].append(dp.scale)
        r["zero_count"].append(dp.zero_count)
        for column, buckets in (("positive_bucket", dp.positive), ("negative_bucket", dp.negative)):
            r[column]["offset"].append(buckets.offset)
            r[column]["bucket_counts"].extend(buckets.bucket_counts)
        r["min"].append(_optional(dp, "min"))
        r["max"].append(_optional(dp, "max"))
        r["zero_threshold"].append(dp.zero_threshold)
        n += 1
    r["aggregation_temporality"].extend(
        [enum_name("aggregation_temporality", data.aggregation_temporality)] * n
    )
    return n


def _add_summary_points(out: _PointRows, data: Any) -> int:
    r = out.rows
    quantiles = r["quantile_values"]
    for dp in data.data_points:
        out.common(dp, None)
        r["count"].append(dp.count)
        r["sum"].append(dp.sum)
        for q in dp.quantile_values:
            quantiles.items["quantile"].append(q.quantile)
            quantiles.items["value"].append(q.value)
        quantiles.end_row(len(dp.quantile_values))
    return len(data.data_points)


def flatten_metrics(
    request: ExportMetricsServiceRequest, limits: Limits = DEFAULT_LIMITS
) -> Flattened:
    schema = load_schema("otel_metrics").arrow
    convert = Converter(limits)
    rows = Rows(schema, convert)
    origins = Origins(schema, "metric_schema_url", convert)
    rej = Rejections()
    per_type = {t: _PointRows(schema.field(t).type, convert) for t in _TYPES}
    per_metric = Rows(pa.schema([schema.field(c) for c in _METRIC_COLUMNS]), convert)
    metric_index: list[int] = []
    kinds: list[int] = []  # per row: index into _TYPES
    positions: list[int] = []  # per row: position in that type's struct rows

    for rm in request.resource_metrics:
        r_i = origins.add_resource(rm.resource, rm.schema_url)
        for sm in rm.scope_metrics:
            s_i = origins.add_scope(sm.scope, sm.schema_url)
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue  # a metric with no data has no data points, hence no rows
                data = getattr(metric, kind)
                out = per_type[kind]
                first = len(out)
                if kind in ("gauge", "sum"):
                    n = _add_number_points(out, data, kind, rej, metric.name)
                elif kind == "histogram":
                    n = _add_histogram_points(out, data, rej, metric.name)
                elif kind == "exponential_histogram":
                    n = _add_exponential_points(out, data, rej, metric.name)
                else:
                    n = _add_summary_points(out, data)
                if not n:
                    continue
                m_i = len(per_metric["name"])
                per_metric["name"].append(metric.name)
                per_metric["description"].append(metric.description)
                per_metric["unit"].append(metric.unit)
                per_metric["metric_type"].append(kind)
                per_metric["metadata"].append(metric.metadata)
                metric_index.extend([m_i] * n)
                kinds.extend([_TYPES.index(kind)] * n)
                positions.extend(range(first, first + n))
                origins.repeat(r_i, s_i, n)

    take = pa.array(metric_index, pa.int32())
    for column, array in zip(_METRIC_COLUMNS, per_metric.arrays(), strict=True):
        rows.set(column, array.take(take))
    kind_array = pa.array(kinds, pa.int8())
    position_array = pa.array(positions, pa.int32())
    for t_i, t in enumerate(_TYPES):
        # Rows of other types take a null index and so get a null struct: exactly one of the
        # five struct columns is set on each row.
        index = pc.if_else(pc.equal(kind_array, t_i), position_array, None)
        rows.set(t, per_type[t].rows.build_struct().take(index))
    return finish(rows, origins, rej, convert)
