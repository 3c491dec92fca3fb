"""OTLP scalar values → the strings and names the tables hold (mapping.md, "Values").

AnyValue → STRING follows the OpenTelemetry Collector's ``AsString``: scalars as text, arrays and
kvlists as compact JSON, doubles as the shortest round-trip decimal in JSON/ES6 notation.
"""

from __future__ import annotations

import base64
import functools
import itertools
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "ALL",
    "DEFAULT_LIMITS",
    "TRUNCATED",
    "Converter",
    "InvalidRecord",
    "Limits",
    "MalformedValue",
    "MapColumns",
    "any_value_to_str",
    "check_decodable",
    "enum_name",
    "enum_names",
    "format_double",
    "hex_id",
]


class InvalidRecord(ValueError):
    """One record cannot be stored; the rest of its request can (OTLP partial success)."""


def format_double(x: float) -> str:
    """Shortest round-trip decimal as ES6 ``Number#toString`` / Go ``encoding/json`` write it.

    Positional notation for 1e-6 <= |x| < 1e21, exponent notation outside, so that
    ``0.00025``, ``123`` and ``1e+21`` come out as a JavaScript or Go exporter would print them.
    """
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:  # before the cache, which cannot tell 0.0 from -0.0
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    return _format_nonzero(x)


@functools.lru_cache(maxsize=8192)  # agents repeat their numbers (costs, durations)
def _format_nonzero(x: float) -> str:
    r = repr(x)  # shortest round-trip digits
    mantissa, _, exp_text = r.partition("e")
    exp = int(exp_text) if exp_text else 0
    sign = "-" if mantissa.startswith("-") else ""
    mantissa = mantissa.lstrip("-")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # Decimal exponent of the first significant digit.
    point = len(int_part) + exp  # position of the decimal point relative to int_part+frac_part
    leading_zeros = len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    point -= leading_zeros
    digits = digits.rstrip("0") or "0"
    a = abs(x)
    if 1e-6 <= a < 1e21:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return f"{sign}{digits}{'0' * (point - len(digits))}"
        return f"{sign}{digits[:point]}.{digits[point:]}"
    e = point - 1
    head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{head}e{'+' if e >= 0 else '-'}{abs(e)}"


def _json_string(s: str) -> str:
    # json.dumps would do, but it escapes non-ASCII unless told not to, and we need the same
    # escaping rules everywhere a string is embedded in JSON.
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json_value(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return _json_string(v.string_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        d = v.double_value
        # JSON has no NaN or infinities: write them as the strings AsString gives for a scalar.
        return format_double(d) if math.isfinite(d) else _json_string(format_double(d))
    if kind == "bytes_value":
        return _json_string(base64.b64encode(v.bytes_value).decode("ascii"))
    if kind == "array_value":
        return "[" + ",".join(_json_value(x) for x in v.array_value.values) + "]"
    if kind == "kvlist_value":
        return _json_object(v.kvlist_value.values)
    return "null"


def _json_object(kvs: Iterable[KeyValue]) -> str:
    # Keys sorted, the last of duplicates kept: what AsString's json.Marshal of a Go map writes.
    merged: dict[str, AnyValue] = {}
    for kv in kvs:
        merged[kv.key] = kv.value
    return (
        "{" + ",".join(f"{_json_string(k)}:{_json_value(merged[k])}" for k in sorted(merged)) + "}"
    )


def any_value_to_str(v: AnyValue) -> str:
    """The STRING form of an AnyValue as it goes into a map value or a log body."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return format_double(v.double_value)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    if kind == "array_value":
        return "[" + ",".join(_json_value(x) for x in v.array_value.values) + "]"
    if kind == "kvlist_value":
        return _json_object(v.kvlist_value.values)
    return ""


_STRING = pa.string()
_BINARY = pa.binary()
_INT32 = pa.int32()
_INT64 = pa.int64()
_UINT64 = pa.uint64()
_UINT64_ZERO = pa.array([0], _UINT64)
_JOIN = b"".join
# ``ALL(container)`` is ``container[:]``: a protobuf repeated field hands over all its elements
# as a list in one call several times faster than its iterator, or ``bytes.join``, reads them.
ALL = operator.itemgetter(slice(None))
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)

TRUNCATED = "…[truncated]"
_TRUNCATED_BYTES = len(TRUNCATED.encode("utf-8"))


@dataclass(frozen=True)
class Limits:
    """What one record may hold; beyond it values are cut and attributes dropped, and counted."""

    max_attributes: int = 128
    max_value_bytes: int = 64 * 1024


DEFAULT_LIMITS = Limits()


class Converter:
    """KeyValue lists and bodies → strings under :class:`Limits`, counting what was cut."""

    __slots__ = ("_quick", "dropped", "max_attributes", "max_value_bytes", "truncated")

    def __init__(self, limits: Limits) -> None:
        self.max_attributes = limits.max_attributes
        self.max_value_bytes = limits.max_value_bytes
        self._quick = limits.max_value_bytes // 4  # no string this short is too long in UTF-8
        self.truncated = 0
        self.dropped = 0

    def clip(self, s: str) -> str:
        cut = self._cut(s)
        if cut is not s:
            self.truncated += 1
        return cut

    def _cut(self, s: str) -> str:
        """``s`` itself if it fits, else cut to the limit with the marker (uncounted)."""
        if len(s) <= self._quick:
            return s
        raw = s.encode("utf-8")
        if len(raw) <= self.max_value_bytes:
            return s
        keep = max(self.max_value_bytes - _TRUNCATED_BYTES, 0)
        return raw[:keep].decode("utf-8", "ignore") + TRUNCATED

    def _too_long(self, pairs: list[tuple[str, str]]) -> bool:
        """Whether some key or value may need cutting (one C-level pass)."""
        return max(map(len, itertools.chain.from_iterable(pairs)), default=0) > self._quick

    def _limited_map(
        self, pairs: list[tuple[str, str]], count: int, clip: bool
    ) -> tuple[dict[str, str], int]:
        # ``pairs`` are the first max_attributes of ``count`` attributes.
        extra = count - self.max_attributes
        if extra > 0:
            self.dropped += extra
        if clip:
            pairs = [(self.clip(k), self.clip(v)) for k, v in pairs]
        return dict(pairs), max(extra, 0)

    def maps(self, items: Sequence[Any], offsets: Sequence[int]) -> MapColumns:
        """Many rows' attribute lists as the columns of a MAP<STRING, STRING> array.

        ``items`` holds the KeyValues of every row (row i has ``items[offsets[i]:offsets[i+1]]``):
        messages, OTLP/JSON nodes, or the raw bytes collector.wire leaves them as. Raw bytes are
        decoded once per distinct value and laid out with ``take``, a few C-level steps per
        attribute; rows holding more attributes than the limit or a key twice, and messages
        and nodes (whose every attribute is converted anyway), are made into maps row by row.
        """
        if not items:  # e.g. metric metadata, which agents leave empty
            empty = pa.array([], _STRING)
            return MapColumns(pa.array(offsets, _INT32), empty, empty, None)
        if not isinstance(items[0], bytes):
            return self._row_maps(*_key_values(items, self._quick), offsets)
        lengths = list(map(operator.sub, offsets[1:], offsets))
        if max(lengths) <= self.max_attributes:
            encoded = pa.array(items, _BINARY).dictionary_encode()
            pairs = list(map(_decode_key_value, encoded.dictionary.to_pylist()))
            columns = self._columns(pairs, encoded.indices, offsets, lengths)
            if columns is not None:
                return columns
        pairs = list(map(_decode_key_value, items))
        return self._row_maps(pairs, self._too_long(pairs), offsets)

    def _columns(
        self,
        pairs: list[tuple[str, str]],
        indices: pa.Array,
        offsets: Sequence[int],
        lengths: list[int],
    ) -> MapColumns | None:
        """The map columns of distinct (key, value) ``pairs`` laid out by ``indices``, or None
        if a row holds a key twice."""
        clipped = None  # per pair: how many of its strings were cut
        if self._too_long(pairs):
            cut = [(self._cut(k), self._cut(v)) for k, v in pairs]
            clipped = [
                (ck is not k) + (cv is not v) for (k, v), (ck, cv) in zip(pairs, cut, strict=True)
            ]
            pairs = cut
        keys = list(map(_FIRST, pairs))
        key_ids: dict[str, int] = {}
        key_of = [key_ids.setdefault(k, len(key_ids)) for k in keys]
        offset_array = pa.array(offsets, _INT32)
        if _some_row_repeats(key_of, len(key_ids), indices, offset_array, lengths):
            return None
        if clipped and any(clipped):
            # Counted once per occurrence, not once per distinct pair.
            counts = pc.value_counts(indices)
            distinct = counts.field("values").to_pylist()
            for i, n in zip(distinct, counts.field("counts").to_pylist(), strict=True):
                self.truncated += clipped[i] * n
        return MapColumns(
            offset_array,
            pa.array(keys, _STRING).take(indices),
            pa.array(list(map(_SECOND, pairs)), _STRING).take(indices),
            None,
        )

    def _row_maps(
        self, pairs: list[tuple[str, str]], clip: bool, offsets: Sequence[int]
    ) -> MapColumns:
        keys: list[str] = []
        values: list[str] = []
        out_offsets = [0]
        extra = []
        limit = self.max_attributes
        for start, end in itertools.pairwise(offsets):
            mapping, dropped = self._limited_map(
                pairs[start : min(end, start + limit)], end - start, clip
            )
            keys.extend(mapping)
            values.extend(mapping.values())
            out_offsets.append(len(keys))
            extra.append(dropped)
        return MapColumns(
            pa.array(out_offsets, _INT32),
            pa.array(keys, _STRING),
            pa.array(values, _STRING),
            extra if any(extra) else None,
        )

    def bodies(self, values: Sequence[Any]) -> list[str | None]:
        """Log bodies as strings; an unset body and a body with no value (OTLP/JSON writes
        ``"body": {}``) are None. ``values`` are AnyValue messages or OTLP/JSON nodes, or per
        record the raw occurrences of the field that collector.wire leaves as bytes."""
        if not values or hasattr(values[0], "WhichOneof"):
            return [
                self.clip(any_value_to_str(v)) if v.WhichOneof("value") else None for v in values
            ]
        # Occurrences of a singular message field merge, as their concatenated bytes do. A
        # body almost always comes once: then the occurrences are the bodies.
        raw = list(itertools.chain.from_iterable(map(ALL, values)))
        if len(raw) != len(values) or not all(map(len, values)):
            raw = list(map(_JOIN, values))
        decoded = dict.fromkeys(raw)
        cut = set()
        for b in decoded:
            text = _decode_body(b)
            if text is not None:
                decoded[b] = self._cut(text)
                if decoded[b] is not text:
                    cut.add(b)
        if cut:
            self.truncated += sum(b in cut for b in raw)
        return list(map(decoded.__getitem__, raw))


def _some_row_repeats(
    key_of: list[int], n_keys: int, indices: pa.Array, offsets: pa.Array, lengths: list[int]
) -> bool:
    """Whether a row holds a key twice, given each distinct attribute's key id (``key_of``),
    each attribute's distinct index (``indices``) and the rows' offsets and lengths."""
    if n_keys <= 64:
        # A row's sum of 2**key has as many bits set as the row has attributes exactly when no
        # key repeats (two equal powers carry). Sums by row are differences of one cumulative
        # sum, which may wrap: uint64 arithmetic keeps the differences right.
        weights = pa.array([1 << k for k in key_of], _UINT64).take(indices)
        running = pa.concat_arrays([_UINT64_ZERO, pc.cumulative_sum(weights)])
        sums = pc.subtract(running.take(offsets[1:]), running.take(offsets[:-1]))
        return list(map(int.bit_count, sums.to_pylist())) != lengths
    rows = pa.ListArray.from_arrays(offsets, indices).value_parent_indices()
    # Scalars as Arrow scalars: a Python one makes pyarrow try to import pandas, every call.
    row_key = pc.add(
        pc.multiply(rows, pa.scalar(n_keys, _INT64)), pa.array(key_of, _INT64).take(indices)
    )
    return pc.count_distinct(row_key).as_py() < len(indices)


class MapColumns(NamedTuple):
    """What ``MapArray.from_arrays`` takes, and per row the attributes the limit dropped (None
    when no row lost any)."""

    offsets: pa.Array
    keys: pa.Array
    values: pa.Array
    extra: list[int] | None


class MalformedValue(ValueError):
    """A raw attribute or log body (collector.wire) is not valid protobuf: the request it came
    in cannot be decoded."""


def _key_values(kvs: Iterable[KeyValue], quick: int = 0) -> tuple[list[tuple[str, str]], bool]:
    """(key, value) strings of KeyValues, and whether a key or value is longer than ``quick``
    characters. One loop for all: a call per attribute would cost as much as converting it."""
    out = []
    append = out.append
    longest = 0
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")  # strings are most values: they skip the general case
        if kind == "string_value":
            s = v.string_value
        elif kind == "int_value":
            s = str(v.int_value)
        else:
            s = any_value_to_str(v)
        k = kv.key
        if len(s) > longest or len(k) > longest:
            longest = max(len(s), len(k))
        append((k, s))
    return out, longest > quick


# Attribute bytes → (key, value): agents send the same attributes on every record of every
# request, so most lookups hit. Bounded by entry count and by skipping long values.
_DECODED: dict[bytes, tuple[str, str]] = {}
_DECODED_MAX = 16384
_DECODED_ITEM_BYTES = 512


def check_decodable(*lists: Iterable[Any], body: Any = None) -> None:
    """Decode the raw attribute lists (and body) that collector.wire left undecoded in a record
    being rejected, for their errors only: a malformed one fails the whole request, rejected
    record or not, as a full parse would have."""
    for items in lists:
        for item in items:
            if isinstance(item, bytes):
                _decode_key_value(item)
    if body is not None and not hasattr(body, "WhichOneof"):
        _decode_body(_JOIN(body))


def _decode_body(raw: bytes) -> str | None:
    try:
        value = AnyValue.FromString(raw)
    except DecodeError as e:
        raise MalformedValue(f"a log body is not a valid OTLP AnyValue: {e}") from None
    return any_value_to_str(value) if value.WhichOneof("value") else None


def _decode_key_value(raw: bytes) -> tuple[str, str]:
    pair = _DECODED.get(raw)
    if pair is not None:
        return pair
    try:
        (pair,), _ = _key_values((KeyValue.FromString(raw),))
    except DecodeError as e:
        raise MalformedValue(f"an attribute is not a valid OTLP KeyValue: {e}") from None
    if len(raw) <= _DECODED_ITEM_BYTES:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[raw] = pair
    return pair


def hex_id(raw: bytes, length: int, what: str) -> str | None:
    """A trace or span id as lowercase hex; empty → None; any other length is invalid."""
    if not raw:
        return None
    if len(raw) != length:
        raise InvalidRecord(f"{what} must be {length} bytes, got {len(raw)}")
    return raw.hex()


def _enum_names(enum: Any) -> dict[int, str]:
    return {number: name for name, number in enum.items()}


_ENUMS: dict[str, dict[int, str]] = {
    "severity_number": _enum_names(logs_pb2.SeverityNumber),
    "aggregation_temporality": _enum_names(metrics_pb2.AggregationTemporality),
    "span_kind": _enum_names(trace_pb2.Span.SpanKind),
    "status_code": _enum_names(trace_pb2.Status.StatusCode),
}


def enum_names(enum: str) -> dict[int, str]:
    """Number → canonical name of an enum, for loops that look names up themselves."""
    return _ENUMS[enum]


def enum_name(enum: str, number: int) -> str:
    """The canonical protobuf name of an enum value; an unknown number as its decimal string."""
    return _ENUMS[enum].get(number) or str(number)
