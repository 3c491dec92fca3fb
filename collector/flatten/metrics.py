"""ExportMetricsServiceRequest → ``otel_metrics`` rows: one row per data point (mapping.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain
from operator import add, attrgetter, methodcaller
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar

from collector.flatten.columns import ListValues, Rows, repeat_each, transpose
from collector.flatten.common import Flattened, Origins, Rejections, finish
from collector.flatten.packed import (
    DOUBLE,
    FIXED64,
    came_unpacked,
    is_packed,
    point_values,
    unpack,
)
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

__all__ = ["flatten_metrics"]

# Proto oneof name → (metric_type value, struct column). The order is the DDL's.
_TYPES = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_METRIC_COLUMNS = ("name", "description", "unit", "metric_type", "metadata")
_NO_POSITION = pa.scalar(None, pa.int32())
_TYPE_IDS = {t: i for i, t in enumerate(_TYPES)}
_read_metric = attrgetter("name", "description", "unit", "metadata")


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


_read_common = attrgetter("start_time_unix_nano", "time_unix_nano", "attributes", "flags")
_exemplars = attrgetter("exemplars")
_which_value = methodcaller("WhichOneof", "value")
_data_points = attrgetter("data_points")
_read_number = attrgetter("as_double", "as_int")
_read_histogram = attrgetter("count", "bucket_counts", "explicit_bounds", "sum", "min", "max")
_has = {f: methodcaller("HasField", f) for f in ("sum", "min", "max")}
# Histogram fields that collector.wire may leave as packed runs: field number and wire type.
_PACKED = {"bucket_counts": (6, FIXED64), "explicit_bounds": (7, DOUBLE)}


class _PointRows:
    """The struct rows of one metric type, with the fields every data point type shares.

    Points come a metric at a time. The common case (no exemplars) is read column-wise: one
    C-level getter call per point and a list per field; points with exemplars, whose ids must be
    checked first, go one by one.
    """

    def __init__(self, type: pa.StructType, convert: Converter) -> None:
        self.rows = Rows(type, convert)
        names = {f.name for f in type}
        self.exemplars: ListValues | None = self.rows["exemplars"] if "exemplars" in names else None

    def common(self, dp: Any, exemplars: list[tuple[Any, ...]] | None) -> None:
        """The shared fields of one point, with its checked exemplars."""
        r = self.rows
        r["start_time_unix_nano"].append(dp.start_time_unix_nano)
        r["time_unix_nano"].append(dp.time_unix_nano)
        r["attributes"].append(dp.attributes)
        r["flags"].append(dp.flags)
        if self.exemplars is not None and exemplars is not None:
            items = self.exemplars.items
            for t, v, span, trace, attrs in exemplars:
                items["time_unix_nano"].append(t)
                items["value"].append(v)
                items["span_id"].append(span)
                items["trace_id"].append(trace)
                items["filtered_attributes"].append(attrs)
            self.exemplars.end_row(len(exemplars))

    def common_columns(self, points: list[Any]) -> None:
        """The shared fields of points that have no exemplars, column by column."""
        r = self.rows
        start, time, attributes, flags = transpose(map(_read_common, points), 4)
        r["start_time_unix_nano"].extend(start)
        r["time_unix_nano"].extend(time)
        r["attributes"].extend(attributes)
        r["flags"].extend(flags)
        if self.exemplars is not None:
            self.exemplars.extend_empty(len(points))

    def __len__(self) -> int:
        return len(self.rows["time_unix_nano"])


def _without_exemplars(points: list[Any]) -> bool:
    return not any(map(len, map(_exemplars, points)))


def _optional(dp: Any, field: str) -> float | None:
    return getattr(dp, field) if dp.HasField(field) else None


def _present(values: tuple[Any, ...], points: list[Any], field: str) -> list[Any]:
    """``values`` of a proto3 optional field, None where the point does not set it."""
    return [v if has else None for v, has in zip(values, map(_has[field], points), strict=True)]


def _add_number_points(
    out: _PointRows, datas: list[Any], rej: Rejections, labels: list[tuple[int, str]]
) -> list[int]:
    """The points of the gauges or sums ``datas`` (one per metric); how many each one kept."""
    lengths = list(map(len, map(_data_points, datas)))
    points = list(chain.from_iterable(map(_data_points, datas)))
    kinds = list(map(_which_value, points))
    if None in kinds or not _without_exemplars(points):
        return _one_by_one(out, datas, rej, labels, _add_number, _number_problem)
    out.common_columns(points)
    doubles, ints = transpose(map(_read_number, points), 2)
    out.rows["value"].extend(
        [d if k == "as_double" else float(i) for k, d, i in zip(kinds, doubles, ints, strict=True)]
    )
    return lengths


def _number_problem(dp: Any) -> str | None:
    return None if dp.WhichOneof("value") else "number data point has no value"


def _add_number(r: Rows, dp: Any) -> None:
    r["value"].append(dp.as_double if dp.WhichOneof("value") == "as_double" else float(dp.as_int))


def _add_histogram_points(
    out: _PointRows, datas: list[Any], rej: Rejections, labels: list[tuple[int, str]]
) -> list[int]:
    r = out.rows
    lengths = list(map(len, map(_data_points, datas)))
    points = list(chain.from_iterable(map(_data_points, datas)))
    if not _without_exemplars(points):
        return _one_by_one(out, datas, rej, labels, _add_histogram)
    out.common_columns(points)
    count, bucket_counts, explicit_bounds, sums, mins, maxes = transpose(
        map(_read_histogram, points), 6
    )
    r["count"].extend(count)
    r["sum"].extend(_present(sums, points, "sum"))
    unpacked = came_unpacked(points)
    for column, values in (("bucket_counts", bucket_counts), ("explicit_bounds", explicit_bounds)):
        number, wire = _PACKED[column]
        if unpacked:
            r[column].extend([point_values(p, column, number, wire) for p in points])
        elif is_packed(values):
            r[column].extend_packed(values, wire)
        else:
            r[column].extend(values)
    r["min"].extend(_present(mins, points, "min"))
    r["max"].extend(_present(maxes, points, "max"))
    return lengths


def _add_histogram(r: Rows, dp: Any) -> None:
    r["count"].append(dp.count)
    r["sum"].append(_optional(dp, "sum"))
    for column, (number, wire) in _PACKED.items():
        r[column].append(point_values(dp, column, number, wire))
    r["min"].append(_optional(dp, "min"))
    r["max"].append(_optional(dp, "max"))


def _one_by_one(
    out: _PointRows,
    datas: list[Any],
    rej: Rejections,
    labels: list[tuple[int, str]],
    add: Callable[[Rows, Any], None],
    problem: Callable[[Any], str | None] = lambda dp: None,
) -> list[int]:
    """Points checked and added one at a time (a ``problem`` of the type, then exemplar ids),
    for requests the column-wise path cannot take; how many points each metric kept."""
    kept = []
    for data, label in zip(datas, labels, strict=True):
        n = 0
        for dp in data.data_points:
            reason = problem(dp)
            if reason is None:
                try:
                    exemplars = _exemplar_rows(dp.exemplars)
                except InvalidRecord as e:
                    reason = str(e)
            if reason is not None:
                _reject(rej, label, dp, reason)
                continue
            out.common(dp, exemplars)
            add(out.rows, dp)
            n += 1
        kept.append(n)
    return kept


def _reject(rej: Rejections, label: tuple[int, str], dp: Any, reason: object) -> None:
    """Count a point that cannot be stored; the first in request order (the metric's index in
    ``label``) gives the message. Its undecoded attributes must decode all the same."""
    at, name = label
    rej.add(f"metric {name!r}", reason, at)
    check_decodable(dp.attributes, *(e.filtered_attributes for e in dp.exemplars))
    for field, (_, wire) in _PACKED.items():
        unpack(getattr(dp, field, ()), wire)


def _repeat_per_metric(out: _PointRows, kind: str, datas: list[Any], counts: list[int]) -> None:
    for column in _PER_METRIC.get(kind, ()):
        if column == "aggregation_temporality":
            values = [enum_name(column, d.aggregation_temporality) for d in datas]
        else:
            values = [d.is_monotonic for d in datas]
        out.rows[column].extend(repeat_each(values, counts))


def _add_exponential_points(
    out: _PointRows, datas: list[Any], rej: Rejections, labels: list[tuple[int, str]]
) -> list[int]:
    return _one_by_one(out, datas, rej, labels, _add_exponential)


def _add_exponential(r: Rows, dp: Any) -> None:
    r["count"].append(dp.count)
    r["sum"].append(_optional(dp, "sum"))
    r["scale"].append(dp.scale)
    r["zero_count"].append(dp.zero_count)
    for column, buckets in (("positive_bucket", dp.positive), ("negative_bucket", dp.negative)):
        r[column]["offset"].append(buckets.offset)
        r[column]["bucket_counts"].append(buckets.bucket_counts)
    r["min"].append(_optional(dp, "min"))
    r["max"].append(_optional(dp, "max"))
    r["zero_threshold"].append(dp.zero_threshold)


def _add_summary_points(
    out: _PointRows, datas: list[Any], rej: Rejections, labels: list[tuple[int, str]]
) -> list[int]:
    r = out.rows
    quantiles = r["quantile_values"]
    for data in datas:
        for dp in data.data_points:
            out.common(dp, None)
            r["count"].append(dp.count)
            r["sum"].append(dp.sum)
            for q in dp.quantile_values:
                quantiles.items["quantile"].append(q.quantile)
                quantiles.items["value"].append(q.value)
            quantiles.end_row(len(dp.quantile_values))
    return [len(data.data_points) for data in datas]


_ADD = {
    "gauge": _add_number_points,
    "sum": _add_number_points,
    "histogram": _add_histogram_points,
    "exponential_histogram": _add_exponential_points,
    "summary": _add_summary_points,
}
# Columns that repeat a field of the metric's data (not of the point) on each of its rows.
_PER_METRIC = {
    "sum": ("aggregation_temporality", "is_monotonic"),
    "histogram": ("aggregation_temporality",),
    "exponential_histogram": ("aggregation_temporality",),
}


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

    # Metrics carry a few points each, so points are gathered by type across the request and
    # read in one go per type; rows are then laid out metric by metric.
    metrics: list[Any] = []  # the metrics that have data, in request order
    kind_ids: list[int] = []  # per metric: index into _TYPES
    resources: list[int] = []  # per metric: index of its resource in origins, and of its scope
    scopes: list[int] = []
    by_type: dict[str, tuple[list[int], list[Any]]] = {t: ([], []) for t in _TYPES}
    for rm in request.resource_metrics:
        r_i = origins.add_resource(rm.resource, rm.schema_url)
        for sm in rm.scope_metrics:
            s_i = origins.add_scope(sm.scope, sm.schema_url)
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue  # a metric with no data has no data points, hence no rows
                members, datas = by_type[kind]
                members.append(len(metrics))
                datas.append(getattr(metric, kind))
                metrics.append(metric)
                kind_ids.append(_TYPE_IDS[kind])
                resources.append(r_i)
                scopes.append(s_i)
    names, descriptions, units, metadata = transpose(map(_read_metric, metrics), 4)

    counts = [0] * len(metrics)  # per metric: the points kept, hence its rows
    firsts = [0] * len(metrics)  # per metric: its first row among its type's struct rows
    for t, (members, datas) in by_type.items():
        if not members:
            continue
        kept = _ADD[t](per_type[t], datas, rej, [(i, names[i]) for i in members])
        _repeat_per_metric(per_type[t], t, datas, kept)
        position = 0
        for i, n in zip(members, kept, strict=True):
            counts[i], firsts[i] = n, position
            position += n

    per_metric["name"].extend(names)
    per_metric["description"].extend(descriptions)
    per_metric["unit"].extend(units)
    per_metric["metric_type"].extend([_TYPES[k] for k in kind_ids])
    # Only metrics with rows: the limits count what they cut of stored metadata.
    per_metric["metadata"].extend([m if n else () for m, n in zip(metadata, counts, strict=True)])
    metric_index = repeat_each(range(len(metrics)), counts)
    kinds = repeat_each(kind_ids, counts)
    positions = list(chain.from_iterable(map(range, firsts, map(add, firsts, counts))))
    origins.repeat_each(resources, scopes, counts)

    take = pa.array(metric_index, pa.int32())
    for column, array in zip(_METRIC_COLUMNS, per_metric.arrays(), strict=True):
        rows.set(column, array.take(take))
    kind_array = pa.array(kinds, pa.int8())
    position_array = pa.array(positions, pa.int32())
    for t_i, t in enumerate(_TYPES):
        # Rows of other types take a null index and so get a null struct: exactly one of the
        # five struct columns is set on each row. (Arrow scalars: a Python one makes pyarrow
        # try to import pandas on every call.)
        if not len(per_type[t]):
            rows.set(t, pa.nulls(len(kinds), schema.field(t).type))
            continue
        is_t = pc.equal(kind_array, pa.scalar(t_i, pa.int8()))
        index = pc.if_else(is_t, position_array, _NO_POSITION)
        rows.set(t, per_type[t].rows.build_struct().take(index))
    return finish(rows, origins, rej, convert)
