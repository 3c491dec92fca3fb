"""Unit tests for collector/flatten/values.py: AnyValue → STRING and the other scalar mappings."""

from __future__ import annotations

import json
import math
import re
import sys
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from collector.flatten.values import (
    DEFAULT_LIMITS,
    TRUNCATED,
    Converter,
    InvalidRecord,
    Limits,
    any_value_to_str,
    enum_name,
    format_double,
    hex_id,
)

# --- AnyValue builders -----------------------------------------------------------------------


def s(v: str) -> AnyValue:
    return AnyValue(string_value=v)


def b(v: bool) -> AnyValue:
    return AnyValue(bool_value=v)


def i(v: int) -> AnyValue:
    return AnyValue(int_value=v)


def d(v: float) -> AnyValue:
    return AnyValue(double_value=v)


def raw(v: bytes) -> AnyValue:
    return AnyValue(bytes_value=v)


def arr(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def kv(key: str, value: AnyValue | None = None) -> KeyValue:
    return KeyValue(key=key) if value is None else KeyValue(key=key, value=value)


def kvl(*pairs: KeyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=list(pairs)))


UNSET = AnyValue()


# --- format_double ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.00025, "0.00025"),
        (123.0, "123"),
        (1.0, "1"),
        (-1.0, "-1"),
        (100.0, "100"),
        (0.1, "0.1"),
        (12345.678, "12345.678"),
        (1e16, "10000000000000000"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (math.nextafter(1e21, 0), "999999999999999900000"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (-1.5e300, "-1.5e+300"),
        (1e-6, "0.000001"),
        (2.5e-5, "0.000025"),
        (math.nextafter(1e-6, 0), "9.999999999999997e-7"),
        (1.5e-7, "1.5e-7"),
        (1e-7, "1e-7"),
        (-1e-7, "-1e-7"),
        (-0.5, "-0.5"),
        (5e-324, "5e-324"),
        (sys.float_info.min, "2.2250738585072014e-308"),
        (sys.float_info.max, "1.7976931348623157e+308"),
        (0.1 + 0.2, "0.30000000000000004"),
        (float(2**53), "9007199254740992"),
        (0.0, "0"),
        # Go's strconv/AsString keep the sign of negative zero.
        (-0.0, "-0"),
    ],
)
def test_format_double(x: float, expected: str) -> None:
    assert format_double(x) == expected


@pytest.mark.parametrize(
    ("x", "expected"),
    [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")],
)
def test_format_double_non_finite(x: float, expected: str) -> None:
    assert format_double(x) == expected


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?(e[+-][0-9]+)?")


def _es6_number_to_string(x: float) -> str:
    """ECMAScript Number::toString, written from the spec's k/n/s formulation (x finite, != 0)."""
    sign, digit_tuple, exponent = Decimal(repr(x)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = exponent + k  # type: ignore[operator]
    minus = "-" if sign else ""
    if k <= n <= 21:
        return minus + digits + "0" * (n - k)
    if 0 < n <= 21:
        return minus + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return minus + "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{minus}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(5e-324)
@example(sys.float_info.max)
@example(-0.0)
def test_format_double_round_trips(x: float) -> None:
    text = format_double(x)
    assert float(text) == x
    assert math.copysign(1.0, float(text)) == math.copysign(1.0, x)
    assert _JSON_NUMBER.fullmatch(text), text


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != 0))
@example(1e21)
@example(1e-6)
@example(math.nextafter(1e-6, 0))
@example(math.nextafter(1e21, 0))
def test_format_double_matches_es6(x: float) -> None:
    assert format_double(x) == _es6_number_to_string(x)


# --- any_value_to_str: scalars ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (s("hello"), "hello"),
        (s(""), ""),
        (s('a "quoted" \\ line\nbreak'), 'a "quoted" \\ line\nbreak'),
        (s("héllo ✓ 😀"), "héllo ✓ 😀"),
        (b(True), "true"),
        (b(False), "false"),
        (i(0), "0"),
        (i(2330), "2330"),
        (i(-7), "-7"),
        (i(2**63 - 1), "9223372036854775807"),
        (i(-(2**63)), "-9223372036854775808"),
        (d(1.5), "1.5"),
        (d(0.00025), "0.00025"),
        (d(3.0), "3"),
        (d(1e21), "1e+21"),
        (d(-0.5), "-0.5"),
        (d(math.nan), "NaN"),
        (d(math.inf), "Infinity"),
        (d(-math.inf), "-Infinity"),
        (raw(b"hi"), "aGk="),
        (raw(b"\x00\xff\xfe"), "AP/+"),
        (raw(b"\xfb\xff"), "+/8="),
        (raw(b""), ""),
        (UNSET, ""),
    ],
)
def test_any_value_to_str_scalars(value: AnyValue, expected: str) -> None:
    assert any_value_to_str(value) == expected


# --- any_value_to_str: arrays and kvlists ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (arr(i(1), s("a"), b(True), d(1.5), UNSET), '[1,"a",true,1.5,null]'),
        (arr(), "[]"),
        (
            arr(b(False), i(-(2**63)), i(2**63 - 1)),
            "[false,-9223372036854775808,9223372036854775807]",
        ),
        (arr(d(3.0), d(0.00025), d(1e21), d(1.5e-7)), "[3,0.00025,1e+21,1.5e-7]"),
        (arr(raw(b"\x00\xff\xfe"), raw(b"")), '["AP/+",""]'),
        (arr(arr(i(1), i(2)), arr(), kvl(kv("a", arr()))), '[[1,2],[],{"a":[]}]'),
        (kvl(kv("k", s("v")), kv("n", i(1))), '{"k":"v","n":1}'),
        (kvl(), "{}"),
        (kvl(kv("k")), '{"k":null}'),
        (
            kvl(
                kv("outer", kvl(kv("inner", arr(b(True), b(False))))),
                kv("list", arr(kvl(kv("x", d(0.5))), s("y"))),
                kv("z", d(1e21)),
            ),
            '{"list":[{"x":0.5},"y"],"outer":{"inner":[true,false]},"z":1e+21}',  # keys sorted
        ),
        # Duplicate keys inside a kvlist: the last value wins.
        (kvl(kv("a", i(1)), kv("b", i(2)), kv("a", i(3))), '{"a":3,"b":2}'),
        # JSON has no NaN or infinities: they are written as the strings a scalar gives.
        (arr(d(math.nan), d(math.inf), d(-math.inf)), '["NaN","Infinity","-Infinity"]'),
    ],
)
def test_any_value_to_str_json(value: AnyValue, expected: str) -> None:
    result = any_value_to_str(value)
    assert result == expected
    json.loads(result)  # always valid JSON


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("line\nbreak", r'"line\nbreak"'),
        ("cr\rtab\t", r'"cr\rtab\t"'),
        ("nul\x00", r'"nul\u0000"'),
        ("\x01", r'"\u0001"'),
        ("\x1f", r'"\u001f"'),
        ("del\x7f", '"del\x7f"'),
        ("héllo ✓ 😀", '"héllo ✓ 😀"'),
        ("<a href='x'>&amp;</a>", "\"<a href='x'>&amp;</a>\""),
        ("/slash", '"/slash"'),
    ],
)
def test_json_string_escaping(text: str, encoded: str) -> None:
    as_array = any_value_to_str(arr(s(text)))
    assert as_array == f"[{encoded}]"
    assert json.loads(as_array) == [text]
    as_object = any_value_to_str(kvl(kv(text, s(text))))
    assert as_object == f"{{{encoded}:{encoded}}}"
    assert json.loads(as_object) == {text: text}


@pytest.mark.parametrize("text", ["\b", "\f", "\x0b", "\x1b[0m", "\u2028\u2029", "\ufeff"])
def test_json_string_escaping_round_trips(text: str) -> None:
    result = any_value_to_str(arr(s(text), kvl(kv(text, s(text)))))
    assert json.loads(result) == [text, {text: text}]
    assert all(ord(ch) >= 0x20 for ch in result)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_value_json_round_trips(value: object) -> None:
    def to_any(v: object) -> AnyValue:
        if v is None:
            return AnyValue()
        if isinstance(v, bool):
            return b(v)
        if isinstance(v, int):
            return i(v)
        if isinstance(v, str):
            return s(v)
        if isinstance(v, list):
            return arr(*(to_any(x) for x in v))
        assert isinstance(v, dict)
        return kvl(*(kv(k, to_any(x)) for k, x in v.items()))

    wrapped = [value]
    assert json.loads(any_value_to_str(to_any(wrapped))) == wrapped


# --- Converter (attribute lists) -------------------------------------------------------------------------


def one_row(convert: Converter, kvs: list[KeyValue]) -> tuple[dict[str, str], int]:
    """The map ``Converter.maps`` makes of one row's KeyValues, and the attributes it dropped."""
    columns = convert.maps(kvs, [0, len(kvs)])
    mapping = dict(zip(columns.keys.to_pylist(), columns.values.to_pylist(), strict=True))
    return mapping, columns.extra[0] if columns.extra else 0


def test_attributes_dict() -> None:
    kvs = [
        kv("duration_ms", i(2330)),
        kv("success", b(True)),
        kv("cost_usd", d(0.00025)),
        kv("name", s("Bash")),
        kv("tags", arr(s("a"), i(1))),
        kv("blob", raw(b"hi")),
        kv("empty"),
    ]
    assert one_row(Converter(DEFAULT_LIMITS), kvs)[0] == {
        "duration_ms": "2330",
        "success": "true",
        "cost_usd": "0.00025",
        "name": "Bash",
        "tags": '["a",1]',
        "blob": "aGk=",
        "empty": "",
    }


def test_attributes_dict_duplicate_keys_last_wins() -> None:
    kvs = [kv("a", s("first")), kv("b", i(1)), kv("a", s("second")), kv("a", b(False))]
    assert one_row(Converter(DEFAULT_LIMITS), kvs)[0] == {"a": "false", "b": "1"}


def test_attributes_dict_empty() -> None:
    assert one_row(Converter(DEFAULT_LIMITS), [])[0] == {}


# --- hex_id ----------------------------------------------------------------------------------


def test_hex_id_empty_is_none() -> None:
    assert hex_id(b"", 16, "trace_id") is None
    assert hex_id(b"", 8, "span_id") is None


def test_hex_id_trace_id() -> None:
    raw_id = bytes(range(16))
    assert hex_id(raw_id, 16, "trace_id") == "000102030405060708090a0b0c0d0e0f"


def test_hex_id_span_id_is_lowercase() -> None:
    assert hex_id(b"\xab\xcd\xef\x01\x23\x45\x67\x89", 8, "span_id") == "abcdef0123456789"


@pytest.mark.parametrize(
    ("raw_id", "length", "what", "message"),
    [
        (b"\x01" * 15, 16, "trace_id", "trace_id must be 16 bytes, got 15"),
        (b"\x01" * 17, 16, "trace_id", "trace_id must be 16 bytes, got 17"),
        (b"\x01" * 16, 8, "span_id", "span_id must be 8 bytes, got 16"),
        (b"\x01", 8, "parent_span_id", "parent_span_id must be 8 bytes, got 1"),
    ],
)
def test_hex_id_wrong_length(raw_id: bytes, length: int, what: str, message: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        hex_id(raw_id, length, what)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


# --- enum_name -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum", "number", "expected"),
    [
        ("severity_number", 0, "SEVERITY_NUMBER_UNSPECIFIED"),
        ("severity_number", 1, "SEVERITY_NUMBER_TRACE"),
        ("severity_number", 9, "SEVERITY_NUMBER_INFO"),
        ("severity_number", 13, "SEVERITY_NUMBER_WARN"),
        ("severity_number", 17, "SEVERITY_NUMBER_ERROR"),
        ("severity_number", 24, "SEVERITY_NUMBER_FATAL4"),
        ("severity_number", 25, "25"),
        ("severity_number", 99, "99"),
        ("severity_number", -1, "-1"),
        ("aggregation_temporality", 0, "AGGREGATION_TEMPORALITY_UNSPECIFIED"),
        ("aggregation_temporality", 1, "AGGREGATION_TEMPORALITY_DELTA"),
        ("aggregation_temporality", 2, "AGGREGATION_TEMPORALITY_CUMULATIVE"),
        ("aggregation_temporality", 3, "3"),
        ("span_kind", 0, "SPAN_KIND_UNSPECIFIED"),
        ("span_kind", 1, "SPAN_KIND_INTERNAL"),
        ("span_kind", 2, "SPAN_KIND_SERVER"),
        ("span_kind", 3, "SPAN_KIND_CLIENT"),
        ("span_kind", 4, "SPAN_KIND_PRODUCER"),
        ("span_kind", 5, "SPAN_KIND_CONSUMER"),
        ("span_kind", 6, "6"),
        ("status_code", 0, "STATUS_CODE_UNSET"),
        ("status_code", 1, "STATUS_CODE_OK"),
        ("status_code", 2, "STATUS_CODE_ERROR"),
        ("status_code", 7, "7"),
    ],
)
def test_enum_name(enum: str, number: int, expected: str) -> None:
    assert enum_name(enum, number) == expected


def test_converter_cuts_long_values_and_counts_them() -> None:
    convert = Converter(Limits(max_attributes=128, max_value_bytes=20))
    kvs = [
        KeyValue(key="short", value=AnyValue(string_value="x" * 20)),
        KeyValue(key="long", value=AnyValue(string_value="é" * 30)),  # 60 bytes in UTF-8
    ]
    attributes, dropped = one_row(convert, kvs)
    assert attributes["short"] == "x" * 20
    # 20 bytes at most, the marker included, never cutting a character in half.
    assert attributes["long"] == "é" * 3 + TRUNCATED  # 6 bytes + the 14-byte marker
    assert len(attributes["long"].encode()) <= 20
    assert (dropped, convert.truncated, convert.dropped) == (0, 1, 0)


def test_converter_drops_attributes_beyond_the_limit_and_counts_them() -> None:
    convert = Converter(Limits(max_attributes=2, max_value_bytes=1024))
    kvs = [KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(5)]
    attributes, dropped = one_row(convert, kvs)
    assert attributes == {"k0": "0", "k1": "1"}
    assert (dropped, convert.dropped) == (3, 3)
