"""Delta ``add`` statistics of a data file, computed from the Arrow data written to it.

Readers use them to skip files (``WHERE time_unix_nano > …``), so every bound given must hold:
a column whose bounds cannot be written exactly (NaN or infinite doubles, a maximum string
longer than the truncation length) gets a null count but no bounds. Shape as in the Delta
protocol: ``numRecords``, and ``minValues`` / ``maxValues`` / ``nullCount`` nested like the
schema's structs, for primitive columns (maps and arrays have none), in schema order up to
the table's ``delta.dataSkippingNumIndexedCols`` (default 32) leaf columns.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["INDEXED_COLUMNS_PROPERTY", "file_stats", "merge_stats", "primitive_columns"]

INDEXED_COLUMNS_PROPERTY = "delta.dataSkippingNumIndexedCols"
_DEFAULT_INDEXED = 32
_STRING_PREFIX = 32  # characters kept of a minimum string; longer maxima get no bound


def file_stats(table: pa.Table, indexed_columns: int = _DEFAULT_INDEXED) -> str:
    """The ``stats`` JSON string of an ``add`` action for a file holding exactly ``table``."""
    stats: dict[str, Any] = {"numRecords": table.num_rows}
    mins: dict[str, Any] = {}
    maxes: dict[str, Any] = {}
    nulls: dict[str, Any] = {}
    budget = [indexed_columns if indexed_columns >= 0 else math.inf]
    for field, column in zip(table.schema, table.columns, strict=True):
        _visit(field.name, field.type, column.chunks, mins, maxes, nulls, budget)
    stats.update(minValues=mins, maxValues=maxes, nullCount=nulls)
    return json.dumps(stats, separators=(",", ":"), allow_nan=False)


def merge_stats(parts: list[str]) -> str:
    """The ``stats`` of a file written as the concatenation of the parts ``file_stats`` gave
    (a file written chunk by chunk): counts add up; a bound holds only if every part that has
    values in the column gave one."""
    loaded = [json.loads(p) for p in parts]
    mins: dict[str, Any] = {}
    maxes: dict[str, Any] = {}
    nulls: dict[str, Any] = {}
    _merge(loaded, [p["numRecords"] for p in loaded], (), mins, maxes, nulls)
    stats = {"numRecords": sum(p["numRecords"] for p in loaded)}
    stats.update(minValues=mins, maxValues=maxes, nullCount=nulls)
    return json.dumps(stats, separators=(",", ":"), allow_nan=False)


def _merge(
    parts: list[dict[str, Any]],
    rows: list[int],
    path: tuple[str, ...],
    mins: dict[str, Any],
    maxes: dict[str, Any],
    nulls: dict[str, Any],
) -> None:
    def at(part: dict[str, Any], key: str) -> Any:
        node: Any = part.get(key, {})
        for name in path:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        return node

    for name, first in at(parts[0], "nullCount").items():
        node_nulls = [at(p, "nullCount").get(name) for p in parts]
        if isinstance(first, dict):
            inner: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {})
            _merge(parts, rows, (*path, name), *inner)
            for into, values in zip((mins, maxes, nulls), inner, strict=True):
                if values:
                    into[name] = values
            continue
        nulls[name] = sum(n or 0 for n in node_nulls)
        # Parts whose column is all null give no bound and need none.
        valued = [p for p, n, r in zip(parts, node_nulls, rows, strict=True) if (n or 0) < r]
        for key, into, pick in (("minValues", mins, min), ("maxValues", maxes, max)):
            bounds = [at(p, key).get(name) for p in valued]
            if valued and all(b is not None for b in bounds):
                into[name] = pick(bounds)


@functools.lru_cache(maxsize=16)
def primitive_columns(schema: pa.Schema) -> list[str]:
    """Dotted paths of the primitive columns outside maps and arrays: those statistics can
    describe. Also the columns the Parquet files get statistics for: min/max over every
    attribute key or histogram bound of a file would cost a third of the write and skip
    nothing."""
    return list(_primitive_paths(list(schema), ""))


def _primitive_paths(fields: list[pa.Field], prefix: str) -> Iterator[str]:
    for f in fields:
        if pa.types.is_struct(f.type):
            yield from _primitive_paths(list(f.type), f"{prefix}{f.name}.")
        elif not (pa.types.is_map(f.type) or pa.types.is_list(f.type)):
            yield prefix + f.name


def _visit(
    name: str,
    type: pa.DataType,
    chunks: list[pa.Array],
    mins: dict[str, Any],
    maxes: dict[str, Any],
    nulls: dict[str, Any],
    budget: list[float],
) -> None:
    if budget[0] <= 0:
        return
    if pa.types.is_struct(type):
        # flatten() gives the children with the struct's own nulls applied, which is what a
        # nested column holds for a reader.
        children = [chunk.flatten() for chunk in chunks]
        inner: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {})
        for i, child in enumerate(type):
            _visit(child.name, child.type, [c[i] for c in children], *inner, budget)
        for into, values in zip((mins, maxes, nulls), inner, strict=True):
            if values:
                into[name] = values
        return
    budget[0] -= 1
    if pa.types.is_map(type) or pa.types.is_list(type):
        return
    column = pa.chunked_array(chunks, type)
    nulls[name] = column.null_count
    if column.null_count == len(column):
        return
    low, high = _bounds(column)
    if low is not None:
        mins[name] = low
    if high is not None:
        maxes[name] = high


def _bounds(column: pa.ChunkedArray) -> tuple[Any, Any]:
    bounds = pc.min_max(column)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if pa.types.is_floating(column.type):
        # min_max passes over NaN; a reader comparing with NaN (greater than all in Spark)
        # must not skip this file, and JSON has no infinities: no bounds then.
        if pc.any(pc.is_nan(column)).as_py() or not (math.isfinite(low) and math.isfinite(high)):
            return None, None
    elif pa.types.is_string(column.type):
        low = low[:_STRING_PREFIX]  # a prefix is still a lower bound
        if len(high) > _STRING_PREFIX:
            high = None  # a cut maximum would not be an upper bound
    return low, high
