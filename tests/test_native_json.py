"""OTLP/JSON through the native core against the Python reading (collector.otlpjson), its
reference: for the same body and limits, the same Arrow IPC bytes and counts, or the same
error, word for word (the core leaves every body it does not vouch for to the reference, which
names the JSON path of the fault).

Inputs: the Gemini CLI captures; generated requests of every signal written as exporters write
them (camelCase or snake_case, int64 as strings or numbers, enums as names or numbers, ids in
either hex case, unknown fields, escaped or raw non-ASCII), which the core must read itself;
and those with values swapped for the forms the rules allow or refuse (integers as floats or
padded strings, NaN, lone surrogates, duplicate keys, two oneof members, bad base64 and hex,
deep nesting) and with their text cut, spliced and re-encoded.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from collector.flatten import DEFAULT_LIMITS, Limits, native
from collector.signals import LOGS, METRICS, SIGNALS, SPANS, Signal
from tests.conftest import CAPTURES
from tests.test_json_equivalence import metric_requests, span_requests, to_otlp_json
from tests.test_native import FUZZ, LIMITS, log_requests, outcome

pytestmark = pytest.mark.skipif(
    native.ENGINE != "native", reason=f"native core not loaded: {native.FALLBACK_REASON}"
)


def _outcome(signal: Signal, body: bytes, limits: Limits, native_core: bool) -> tuple[Any, ...]:
    return outcome(
        signal,
        lambda: signal.decode_json(body, limits, native=native_core),
        limits,
        (ValueError, TypeError, RecursionError),  # what codec turns into a 400
    )


def assert_same(signal: Signal, body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, ...]:
    reference = _outcome(signal, body, limits, native_core=False)
    ours = _outcome(signal, body, limits, native_core=True)
    assert ours == reference
    return ours


def test_lone_surrogates_are_refused_with_their_path() -> None:
    """json.loads keeps "\\ud800" in a str, which no UTF-8 column stores (it was a 500)."""
    for where, record in [
        ("body.stringValue", {"body": {"stringValue": "x\udc00"}}),
        ("attributes[0].key", {"attributes": [{"key": "\ud800", "value": {}}]}),
        ("eventName", {"eventName": "\ud83d no pair"}),
    ]:
        request = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
        outcome = assert_same(LOGS, json.dumps(request).encode())
        path = f"resourceLogs[0].scopeLogs[0].logRecords[0].{where}"
        assert outcome[0] == "undecodable" and outcome[1].startswith(path), outcome


def test_an_integer_past_the_double_range_is_refused_with_its_path() -> None:
    point = {"asDouble": 10**400, "timeUnixNano": "1"}
    metric = {"name": "m", "gauge": {"dataPoints": [point]}}
    request = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}
    outcome = assert_same(METRICS, json.dumps(request).encode())
    path = "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].asDouble"
    assert outcome[0] == "undecodable" and outcome[1].startswith(path), outcome
    assert "out of range for a double" in outcome[1]


def test_the_signal_table_is_the_native_modules() -> None:
    for signal in SIGNALS:
        assert native._SIGNALS[signal.name] == (signal.schema_name, signal.request_type)


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*.json")), ids=lambda p: p.name)
def test_captures_are_read_by_the_core(path: Any) -> None:
    signal = next(s for s in SIGNALS if f".{s.name}." in path.name)
    body = path.read_bytes()
    assert native.transcode_json(signal.name, body) is not None
    outcome = assert_same(signal, body)
    assert outcome[0] == "stored" and outcome[1] > 0


def _exporter_json(message: Message, rnd: random.Random) -> bytes:
    """As exporters write it: to_otlp_json's freedoms, non-ASCII raw or escaped, spacing."""
    tree = json.loads(to_otlp_json(message, rnd))
    indent = rnd.choice([None, None, 1, "\t"])
    return json.dumps(tree, ensure_ascii=rnd.random() < 0.5, indent=indent).encode()


def _check_generated(signal: Signal, message: Message, limits: Limits, rnd: random.Random) -> None:
    body = _exporter_json(message, rnd)
    assert native.transcode_json(signal.name, body) is not None, "the core should read this"
    assert_same(signal, body, limits)
    assert_same(signal, _mutated(body, rnd), limits)


@FUZZ
@given(log_requests(), LIMITS, st.randoms(use_true_random=False))
def test_generated_logs(request: Message, limits: Limits, rnd: random.Random) -> None:
    _check_generated(LOGS, request, limits, rnd)


@FUZZ
@given(metric_requests(), LIMITS, st.randoms(use_true_random=False))
def test_generated_metrics(request: Message, limits: Limits, rnd: random.Random) -> None:
    _check_generated(METRICS, request, limits, rnd)


@FUZZ
@given(span_requests(), LIMITS, st.randoms(use_true_random=False))
def test_generated_spans(request: Message, limits: Limits, rnd: random.Random) -> None:
    _check_generated(SPANS, request, limits, rnd)


@FUZZ
@given(st.sampled_from(sorted(CAPTURES.glob("*.json"))), st.randoms(use_true_random=False))
def test_mutated_captures(path: Any, rnd: random.Random) -> None:
    signal = next(s for s in SIGNALS if f".{s.name}." in path.name)
    assert_same(signal, _mutated(path.read_bytes(), rnd))


# --- mutations --------------------------------------------------------------------------------


class Pairs(list):  # type: ignore[type-arg]
    """An object written with its keys as listed, a key given twice included."""


def _dump(node: Any, ensure_ascii: bool) -> str:
    if isinstance(node, Pairs):
        items = (f"{json.dumps(k)}:{_dump(v, ensure_ascii)}" for k, v in node)
        return "{" + ",".join(items) + "}"
    if isinstance(node, dict):
        return _dump(Pairs(node.items()), ensure_ascii)
    if isinstance(node, list):
        return "[" + ",".join(_dump(v, ensure_ascii) for v in node) + "]"
    return json.dumps(node, ensure_ascii=ensure_ascii)


# What the OTLP/JSON rules take or refuse in some field: integers as floats and strings of
# every shape int() reads, the special doubles, bools as strings, enum names, hex and base64
# edge cases, lone surrogates, nulls.
_VALUES: list[Any] = [
    None, 0, -0.0, 1.0, 1.5, 1e2, 3e-5, 2**64, 2**64 - 1, 2**63, -(2**63), -(2**63) - 1,
    2**31, -(2**31) - 1, 10**400, "12", " 12", "1_0", "+5", "-0", "007", "1e2", "1.0", "١٢",
    "NaN", "Infinity", "-Infinity", "nan", "inf", "-0.0", ".5", True, False, "true", "false",
    [], [None], [1, "2", 3.0], ["a"], {}, "", "zz", "0A0b", "0a0", "YQ", "YQ=", "YQ==",
    "YR", "Y===", "YW=J", "a+/_-", "a b", "\ud800", "\udc00x", "é€😀", "\x00\x1f",
    "SEVERITY_NUMBER_INFO", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", "NOT_A_NAME",
    "AGGREGATION_TEMPORALITY_DELTA", {"stringValue": "x"}, {"intValue": "5"},
]  # fmt: skip
_ONEOF_MEMBERS = ["stringValue", "intValue", "doubleValue", "boolValue", "asInt", "asDouble"]


def _mutate_tree(tree: Any, rnd: random.Random) -> Any:
    places: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                places.append((node, k))
                collect(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                places.append((node, i))
                collect(v)

    collect(tree)
    for _ in range(rnd.randint(1, 4)):
        if not places:
            break
        parent, key = rnd.choice(places)
        kind = rnd.random()
        if kind < 0.6 or not isinstance(parent, dict):
            parent[key] = rnd.choice(_VALUES)
        elif kind < 0.75:
            parent[rnd.choice(_ONEOF_MEMBERS)] = rnd.choice(_VALUES)  # maybe a second member
        elif kind < 0.85:
            # the same field again, by the same name or its other spelling
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in str(key))
            twin = rnd.choice([key, snake, key])
            pairs = Pairs(parent.items())
            pairs.append((twin, rnd.choice([parent[key], None, rnd.choice(_VALUES)])))
            parent.clear()
            parent["__pairs__"] = pairs
        else:
            deep: Any = {"stringValue": "bottom"}
            for _ in range(rnd.choice([30, 47, 60])):
                deep = {"arrayValue": {"values": [deep]}}
            parent[key] = deep

    def expand(node: Any) -> Any:
        if isinstance(node, dict):
            if "__pairs__" in node:
                return Pairs((k, expand(v)) for k, v in node["__pairs__"])
            return {k: expand(v) for k, v in node.items()}
        if isinstance(node, list):
            return [expand(v) for v in node]
        return node

    return expand(tree)


def _mutated(body: bytes, rnd: random.Random) -> bytes:
    """The body with values swapped (see _VALUES) or its text damaged."""
    if rnd.random() < 0.7:
        tree = _mutate_tree(json.loads(body), rnd)
        return _dump(tree, ensure_ascii=rnd.random() < 0.5).encode("utf-8", "surrogatepass")
    text = bytearray(body)
    kind = rnd.choice(["cut", "insert", "flip", "nan", "bom", "utf16", "comma", "trailing"])
    at = rnd.randint(0, max(len(text) - 1, 0))
    if kind == "cut":
        del text[at:]
    elif kind == "insert":
        text[at:at] = rnd.choice([b"\\", b'"', b",", b"}", b"\xff", b"\xed\xa0\x80", b" "])
    elif kind == "flip" and text:
        text[at] ^= 1 << rnd.randint(0, 7)
    elif kind == "nan":
        return bytes(text).replace(b'"NaN"', b"NaN").replace(b"1.5", b"Infinity", 1)
    elif kind == "bom":
        return b"\xef\xbb\xbf" + bytes(text)
    elif kind == "utf16":
        return bytes(text).decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    elif kind == "comma":
        return bytes(text).replace(b"}", b",}", 1)
    else:
        return bytes(text) + rnd.choice([b" ", b"\n", b"x", b"{}", b"\x00"])
    return bytes(text)
