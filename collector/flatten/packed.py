"""Packed repeated numbers that collector.wire leaves as bytes → Arrow list columns.

A histogram point's ``explicit_bounds`` (double) and ``bucket_counts`` (fixed64) are packed
on the wire: one length-delimited run of little-endian 8-byte values, exactly Arrow's layout
of a float64 / uint64 array. Taken as bytes, a request's runs join into one buffer that Arrow
reads in place, instead of some fifty Python numbers made and converted per point.
"""

from __future__ import annotations

import itertools
import operator
import sys
from array import array
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from collector.flatten.values import ALL, MalformedValue

__all__ = [
    "DOUBLE",
    "FIXED64",
    "Wire",
    "came_unpacked",
    "is_packed",
    "packed_values",
    "point_values",
    "unpack",
]

_JOIN = b"".join


class Wire:
    """A fixed-width protobuf scalar type: its Arrow type, its ``array`` typecode and its wire
    type when a value comes unpacked."""

    __slots__ = ("arrow", "name", "typecode", "width", "wire_type")

    def __init__(self, name: str, arrow: pa.DataType, typecode: str, wire_type: int) -> None:
        self.name = name
        self.arrow = arrow
        self.typecode = typecode
        self.width = arrow.bit_width // 8
        self.wire_type = wire_type


DOUBLE = Wire("double", pa.float64(), "d", 1)
FIXED64 = Wire("fixed64", pa.uint64(), "Q", 1)


def came_unpacked(points: Sequence[Any]) -> bool:
    """Whether a point decoded by collector.wire holds fields it could not take: an unpacked
    run of numbers is one (and a field this protobuf version does not know). Their values are
    read one by one (:func:`point_values`); such points are rare, as exporters write packed
    runs."""
    return (
        bool(points)
        and isinstance(points[0], Message)
        and any(map(len, map(UnknownFieldSet, points)))
    )


def is_packed(rows: Sequence[Sequence[object]]) -> bool:
    """Whether ``rows`` (per point, the field's values) hold raw packed runs, not numbers."""
    first = next(filter(None, rows), None)
    return first is not None and isinstance(first[0], bytes)


def packed_values(rows: Sequence[Sequence[bytes]], wire: Wire) -> tuple[list[int], pa.Array]:
    """Per row its number of values, and the values of all rows as one array of the wire type
    (uint64 for fixed64, which the caller casts to the column's type). Each row holds the raw
    runs of one point's field: a field may come in several runs, which concatenate."""
    runs = list(itertools.chain.from_iterable(map(ALL, rows)))
    sizes = list(map(len, runs))
    if any(map(wire.width.__rmod__, sizes)):
        raise MalformedValue(_not_whole(wire))
    data = _JOIN(runs)
    values = pa.Array.from_buffers(
        wire.arrow, len(data) // wire.width, [None, pa.py_buffer(_native(data, wire))]
    )
    # A row's count: the values of its runs, i.e. the differences of the runs' ends at row ends.
    run_ends = list(itertools.accumulate(map(wire.width.__rfloordiv__, sizes), initial=0))
    row_ends = list(map(run_ends.__getitem__, itertools.accumulate(map(len, rows), initial=0)))
    return list(map(operator.sub, row_ends[1:], row_ends)), values


def unpack(values: Sequence[object], wire: Wire) -> Sequence[object]:
    """One point's values as numbers: its raw runs unpacked, or ``values`` if they are numbers
    already (a standard message or OTLP/JSON)."""
    if not values or not isinstance(values[0], bytes):
        return values
    if any(len(run) % wire.width for run in values):  # type: ignore[arg-type]
        raise MalformedValue(_not_whole(wire))
    return array(wire.typecode, _native(_JOIN(values), wire)).tolist()  # type: ignore[arg-type]


def point_values(point: Message, field: str, number: int, wire: Wire) -> list[Any]:
    """A point's values of a packed-or-unpacked field: those of its packed runs, then those it
    holds unpacked (unknown fields of the wire classes), each in wire order: the order a full
    parse of the point as re-serialized by protobuf (known fields first) gives them."""
    values = list(unpack(getattr(point, field), wire))
    if not isinstance(point, Message):  # an OTLP/JSON node: its numbers are all there
        return values
    unpacked = [
        f.data  # the 8 bytes as an unsigned int
        for f in UnknownFieldSet(point)
        if f.field_number == number and f.wire_type == wire.wire_type
    ]
    if unpacked:
        values.extend(array(wire.typecode, array("Q", unpacked).tobytes()).tolist())
    return values


def _native(data: bytes, wire: Wire) -> bytes:
    """Values as the wire has them (little-endian) in this machine's byte order."""
    if sys.byteorder == "little":
        return data
    swapped = array(wire.typecode, data)
    swapped.byteswap()
    return swapped.tobytes()


def _not_whole(wire: Wire) -> str:
    return f"a packed {wire.name} field is not a whole number of {wire.width}-byte values"
