"""Column-wise accumulators that turn appended Python values into Arrow arrays in one call each.

The flatteners walk the protobuf once and append plain values to lists; nested types are kept as
flat child lists plus offsets (maps as the KeyValues of all rows plus offsets, converted in one
go when built), so that building the batch is a handful of ``pa.array`` / ``from_arrays`` calls
per column instead of per-row Arrow work. Every type here comes from the DDL-derived Arrow
schema: a flattener names columns, never types.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from collector.flatten.packed import Wire, packed_values
from collector.flatten.values import ALL, Converter

__all__ = ["ListValues", "MapValues", "Rows", "repeat_each", "transpose"]

_OFFSETS = pa.int32()
_INT = pa.int32()
_LONG = pa.int64()
_DROPPED = "dropped_attributes_count"


class MapValues:
    """A MAP<STRING, STRING> column fed OTLP attribute lists (KeyValue messages, OTLP/JSON nodes
    or raw KeyValue bytes), converted under the :class:`Converter`'s limits when built."""

    __slots__ = ("convert", "extra", "items", "offsets", "type")

    def __init__(self, type: pa.MapType, convert: Converter) -> None:
        self.type = type
        self.convert = convert
        self.offsets: list[int] = [0]
        self.items: list[Any] = []
        self.extra: list[int] | None = None  # per row, attributes the limit dropped; once built

    def append(self, kvs: Iterable[Any]) -> None:
        self.items.extend(kvs)
        self.offsets.append(len(self.items))

    def extend(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append many rows' lists, without a Python step per row."""
        _extend_rows(self.items, self.offsets, rows)

    def build(self) -> pa.Array:
        columns = self.convert.maps(self.items, self.offsets)
        self.extra = columns.extra
        return pa.MapArray.from_arrays(
            columns.offsets, columns.keys, columns.values, type=self.type
        )


class ListValues:
    """An ARRAY<…> column: the flattened elements of all rows and each row's end offset.

    ``items`` is a plain list for primitive elements and a :class:`Rows` for struct elements;
    the caller appends a row's elements to it, then calls :meth:`end_row` with their number.
    Rows of packed numbers (collector.wire) arrive as Arrow arrays instead, kept in ``chunks``.
    """

    __slots__ = ("chunks", "items", "offsets", "type")

    def __init__(self, type: pa.ListType, convert: Converter) -> None:
        self.type = type
        self.offsets: list[int] = [0]
        self.items: Any = _accumulator(type.value_type, convert)
        self.chunks: list[pa.Array] = []  # elements before ``items``, converted when built

    def append(self, values: Iterable[Any]) -> None:
        """Append one row whose elements are primitive values."""
        self.items.extend(values)
        self.offsets.append(len(self.items))

    def extend(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append many rows of primitive elements, without a Python step per row."""
        _extend_rows(self.items, self.offsets, rows)

    def extend_packed(self, rows: Sequence[Sequence[bytes]], wire: Wire) -> None:
        """Append many rows given as raw packed runs of ``wire`` numbers (collector.flatten.packed)
        without making a Python number of them."""
        if self.items:
            self.chunks.append(_build(self.items, self.type.value_type))
            self.items = []
        counts, values = packed_values(rows, wire)
        self.chunks.append(values)
        _extend_ends(self.offsets, counts)

    def extend_empty(self, count: int) -> None:
        self.offsets.extend([self.offsets[-1]] * count)

    def end_row(self, count: int) -> None:
        self.offsets.append(self.offsets[-1] + count)

    def build(self) -> pa.Array:
        values = _build(self.items, self.type.value_type)
        if self.chunks:
            # Cast here, in column order as every value is converted, so that of two columns
            # with a value out of range the same one fails however the request was decoded.
            chunks = [c.cast(values.type) for c in self.chunks]
            values = (
                pa.concat_arrays([*chunks, values]) if len(values) else pa.concat_arrays(chunks)
            )
        return pa.ListArray.from_arrays(pa.array(self.offsets, _OFFSETS), values, type=self.type)


class Rows:
    """The columns of a STRUCT (or of a whole table), appended to one field at a time.

    ``rows[name]`` is the accumulator of a field: a list for a primitive, :class:`MapValues`,
    :class:`ListValues` or a nested :class:`Rows`. A field may instead be given a finished
    Arrow array with :meth:`set` (e.g. a struct repeated on many rows, built once and taken).

    Where OTLP puts a ``dropped_attributes_count`` beside ``attributes``, the built count
    includes the attributes the limits dropped.
    """

    __slots__ = ("_convert", "_types", "columns", "type")

    def __init__(self, type: pa.StructType | pa.Schema, convert: Converter) -> None:
        self.type = type
        self._convert = convert
        self._types = {f.name: f.type for f in type}
        # Made on first use: the metrics schema is a tree of some 200 accumulators, and a
        # request of one data point touches a few of them.
        self.columns: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = _accumulator(self._types[name], self._convert)
        return column

    def __len__(self) -> int:
        for field in self.type:
            col = self[field.name]
            if isinstance(col, list):
                return len(col)
            if isinstance(col, (MapValues, ListValues)):
                return len(col.offsets) - 1
            if isinstance(col, pa.Array):
                return len(col)
        raise TypeError("Rows needs a primitive, map, list or finished column to count rows")

    def set(self, name: str, array: pa.Array) -> None:
        if name not in self._types:
            raise KeyError(name)
        self.columns[name] = array

    def arrays(self) -> list[pa.Array]:
        built = {}
        attributes = self.columns.get("attributes")
        if (
            isinstance(attributes, MapValues)
            and _DROPPED in self._types
            and isinstance(self[_DROPPED], list)
        ):
            # The map first: what the limit dropped is known once it is built. Added as Python
            # ints, so a total past the uint32 range fails as any out-of-range value does.
            built["attributes"] = attributes.build()
            if attributes.extra:
                dropped = self.columns[_DROPPED]
                self.columns[_DROPPED] = list(map(operator.add, dropped, attributes.extra))
        return [
            built[f.name] if f.name in built else _build(self[f.name], f.type) for f in self.type
        ]

    def build_struct(self) -> pa.StructArray:
        return pa.StructArray.from_arrays(self.arrays(), fields=list(self.type))

    def build_batch(self) -> pa.RecordBatch:
        assert isinstance(self.type, pa.Schema)
        return pa.RecordBatch.from_arrays(self.arrays(), schema=self.type)


def transpose(rows: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """Per-record tuples of ``width`` fields → one tuple per field (C-level zip)."""
    return list(zip(*rows, strict=True)) or [()] * width


def repeat_each(values: Iterable[Any], counts: Iterable[int]) -> list[Any]:
    """Each value ``counts[i]`` times, in order: per-group values spread over the group's rows."""
    return list(itertools.chain.from_iterable(map(itertools.repeat, values, counts)))


def _extend_rows(items: list[Any], offsets: list[int], rows: Sequence[Sequence[Any]]) -> None:
    _extend_ends(offsets, map(len, rows))
    items.extend(itertools.chain.from_iterable(map(ALL, rows)))


def _extend_ends(offsets: list[int], counts: Iterable[int]) -> None:
    """End offsets of rows of ``counts`` elements after those already in ``offsets``."""
    ends = itertools.accumulate(counts, initial=offsets[-1])
    next(ends)  # the initial value: the end of the rows already there
    offsets.extend(ends)


def _accumulator(type: pa.DataType, convert: Converter) -> Any:
    if isinstance(type, pa.MapType):
        return MapValues(type, convert)
    if isinstance(type, pa.ListType):
        return ListValues(type, convert)
    if isinstance(type, pa.StructType):
        return Rows(type, convert)
    return []


def _build(col: Any, type: pa.DataType) -> pa.Array:
    if isinstance(col, pa.Array):
        return col
    if isinstance(col, list):
        try:
            return pa.array(col, type)
        except pa.ArrowInvalid:
            if type != _INT:
                raise
            # An INT column fed from a proto uint32 (flags, dropped_*_count) keeps the bits:
            # values of 2^31 and up read as negative, as any uint32 in a signed INT would.
            return pa.array(col, pa.uint32()).view(_INT)
        except OverflowError:
            if type != _LONG:
                raise
            # A LONG column fed from a proto uint64 past its range: failed as Arrow fails the
            # cast of packed uint64s (ListValues.extend_packed), naming the value.
            return pa.array(col, pa.uint64()).cast(type)
    if isinstance(col, Rows):
        return col.build_struct()
    return col.build()
