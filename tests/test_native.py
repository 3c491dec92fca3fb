"""The native core against the Python flatteners, which are its reference: for the same
protobuf bytes and limits, the same Arrow IPC bytes, the same partial-success counts and
message, and the same error, word for word.

Inputs: the captures, hypothesis-generated requests that reach the edge cases (empty and missing
fields, unknown fields, duplicate keys, huge and negative numbers, NaN and -0, deep nesting,
wrong id lengths, limits that cut), and byte-level mutations of both (truncations, flips,
splices: invalid UTF-8, corrupt varints, lengths past the end).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.errors import InvalidArgument
from collector.flatten import DEFAULT_LIMITS, Limits, native
from collector.pipeline import flatten_request
from collector.signals import LOGS, METRICS, SPANS, Signal
from tests.conftest import CAPTURES
from tests.test_fuzz import SEEDS, _mutate
from tests.test_json_equivalence import metric_requests, span_requests

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
NATIVE = [s for s in (LOGS, METRICS, SPANS) if s.name in native.NATIVE_SIGNALS]

pytestmark = pytest.mark.skipif(
    native.ENGINE != "native", reason=f"native core not loaded: {native.FALLBACK_REASON}"
)


def test_the_native_core_is_built_wherever_cargo_is() -> None:
    """make install builds it when a Rust toolchain is there (always on this project's
    machines and CI's): its absence there is a broken build, not a fallback."""
    if shutil.which("cargo") and not os.environ.get(native.PURE_PYTHON_ENV):
        assert native.ENGINE == "native", native.FALLBACK_REASON


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def outcome(
    signal: Signal,
    decode: Callable[[], Any],
    limits: Limits,
    undecodable: tuple[type[Exception], ...] = (DecodeError,),
) -> tuple[Any, ...]:
    """What the collector makes of a request that ``decode`` decodes: its rows as Arrow IPC
    and its counts, or the stage and message of its refusal."""
    try:
        request = decode()
    except undecodable as e:
        return ("undecodable", str(e))
    count = signal.count(request)
    try:
        flat = flatten_request(signal, request, limits)
    except InvalidArgument as e:
        return ("refused", count, e.message)
    if isinstance(request, native.Decoded):
        flat.batch.validate(full=True)
    return (
        "stored",
        count,
        _ipc(flat.batch),
        flat.rejected,
        flat.error,
        flat.truncated_values,
        flat.dropped_attributes,
    )


def _outcome(signal: Signal, body: bytes, limits: Limits, engine: str) -> tuple[Any, ...]:
    if engine == "native":
        return outcome(signal, lambda: signal.decode_protobuf(body, limits), limits)
    return outcome(signal, lambda: signal.decode_wire(body), limits)


def assert_same(signal: Signal, body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, ...]:
    python = _outcome(signal, body, limits, "python")
    ours = _outcome(signal, body, limits, "native")
    if ours != python and ours[0] == python[0] == "stored":
        a = pa.ipc.open_stream(ours[2]).read_next_batch()
        b = pa.ipc.open_stream(python[2]).read_next_batch()
        for name in a.schema.names:
            assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
        assert ours[3:] == python[3:]
        raise AssertionError("same values, different Arrow IPC bytes")
    assert ours == python
    return ours


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*.pb")), ids=lambda p: p.name)
def test_captures(path: Any) -> None:
    signal = next(s for s, b in SEEDS if b == path.read_bytes())
    if signal in NATIVE:
        outcome = assert_same(signal, path.read_bytes())
        assert outcome[0] == "stored" and outcome[1] > 0


LIMITS = st.sampled_from(
    [DEFAULT_LIMITS, Limits(2, 16), Limits(0, 0), Limits(1, 13), Limits(5, 40), Limits(128, 3)]
)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=24) | st.sampled_from(
    ["", "k", "k", "service.name", '\n\t"\\\x01', "é€😀", "x" * 70]
)
_U64 = st.sampled_from(
    [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1]
) | st.integers(0, 2**64 - 1)
_U32 = st.sampled_from([0, 1, 127, 2**31 - 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
_DOUBLES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e21, 1e-7, 1e-6, 0.00025, 123.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]
)


def _any_values() -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.just(AnyValue()),
        _TEXT.map(lambda s: AnyValue(string_value=s)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        _DOUBLES.map(lambda d: AnyValue(double_value=d)),
        st.binary(max_size=12).map(lambda b: AnyValue(bytes_value=b)),
        st.integers(-5, 5).map(lambda i: AnyValue(string_value_strindex=i)),
    )

    def nested(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
        def array(items: list[AnyValue]) -> AnyValue:
            v = AnyValue()
            v.array_value.values.extend(items)
            return v

        def kvlist(items: list[tuple[str, AnyValue]]) -> AnyValue:
            v = AnyValue()
            for k, item in items:
                v.kvlist_value.values.add(key=k, value=item)
            return v

        return st.lists(children, max_size=4).map(array) | st.lists(
            st.tuples(st.sampled_from(["a", "b", "é", "", "a"]), children), max_size=4
        ).map(kvlist)

    return st.recursive(scalars, nested, max_leaves=8)


def _deep(depth: int) -> AnyValue:
    v = AnyValue(string_value="bottom")
    for _ in range(depth):
        w = AnyValue()
        w.array_value.values.append(v)
        v = w
    return v


_ANY = _any_values() | st.sampled_from([20, 45]).map(_deep)
_KEYS = st.sampled_from(["a", "b", "session.id", "", "é", "k" * 40]) | _TEXT
_ATTRIBUTES = st.lists(st.tuples(_KEYS, _ANY), max_size=7)
_IDS = st.sampled_from([0, 0, 8, 16, 16, 3, 20]).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)
)


def _add_attributes(target: Any, pairs: list[tuple[str, AnyValue]]) -> None:
    for k, v in pairs:
        target.attributes.add(key=k, value=v)


@st.composite
def log_requests(draw: st.DrawFn) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rl = request.resource_logs.add(schema_url=draw(_TEXT))
        if draw(st.booleans()):
            _add_attributes(rl.resource, draw(_ATTRIBUTES))
            rl.resource.dropped_attributes_count = draw(_U32)
        for _ in range(draw(st.integers(0, 3))):
            sl = rl.scope_logs.add(schema_url=draw(_TEXT))
            if draw(st.booleans()):
                sl.scope.name, sl.scope.version = draw(_TEXT), draw(_TEXT)
                _add_attributes(sl.scope, draw(_ATTRIBUTES))
                sl.scope.dropped_attributes_count = draw(_U32)
            for _ in range(draw(st.integers(0, 5))):
                r = sl.log_records.add(
                    time_unix_nano=draw(_U64),
                    observed_time_unix_nano=draw(_U64),
                    severity_number=draw(st.integers(-3, 30)),
                    severity_text=draw(_TEXT),
                    dropped_attributes_count=draw(_U32),
                    flags=draw(_U32),
                    trace_id=draw(_IDS),
                    span_id=draw(_IDS),
                    event_name=draw(_TEXT),
                )
                if draw(st.booleans()):
                    r.body.CopyFrom(draw(_ANY))
                _add_attributes(r, draw(_ATTRIBUTES))
    return request


def _splice(body: bytes, rnd: random.Random) -> bytes:
    """Unknown fields, a repeated singular field, or bad UTF-8 where a string was."""
    data = bytearray(body)
    kind = rnd.choice(["unknown", "repeat", "utf8", "group", "none"])
    at = rnd.randint(0, len(data))
    if kind == "unknown":
        field = rnd.choice([b"\xf8\x07\x05", b"\xfa\x07\x02ab", b"\xfd\x07\x01\x02\x03\x04"])
        data[at:at] = field
    elif kind == "repeat" and data:
        start = rnd.randint(0, len(data) - 1)
        data[at:at] = data[start : start + rnd.randint(1, 40)]
    elif kind == "utf8" and data:
        data[rnd.randint(0, len(data) - 1)] = rnd.choice([0xFF, 0xC3, 0x80, 0xED])
    elif kind == "group":
        data[at:at] = b"\xfb\x07\x08\x01\xfc\x07"  # an unknown group holding a varint
    return bytes(data)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(log_requests(), LIMITS, st.randoms(use_true_random=False), st.integers(0, 3))
def test_generated_logs(
    request: ExportLogsServiceRequest, limits: Limits, rnd: random.Random, mutations: int
) -> None:
    if LOGS not in NATIVE:
        pytest.skip("logs are not decoded natively")
    body = request.SerializeToString()
    for _ in range(mutations):
        body = _splice(body, rnd) if rnd.random() < 0.5 else _mutate(body, rnd)
    assert_same(LOGS, body, limits)


def _unpacked(body: bytes, rnd: random.Random) -> bytes:
    """The request with values sent unpacked (one per tag) in a histogram point's buckets and
    bounds, beside its packed runs: the wire classes keep these as unknown fields."""
    try:
        wire = METRICS.decode_wire(body)
    except DecodeError:
        return body
    points = [
        p
        for rm in wire.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.HasField("histogram")
        for p in m.histogram.data_points
    ]
    if not points:
        return body
    point = rnd.choice(points)
    extra = b"".join(
        rnd.choice([b"\x31", b"\x39"]) + rnd.randbytes(8) for _ in range(rnd.randint(1, 3))
    )
    point.MergeFromString(extra + (b"\x30\x07" if rnd.random() < 0.3 else b""))
    return wire.SerializeToString()


@FUZZ
@given(metric_requests(), LIMITS, st.randoms(use_true_random=False), st.integers(0, 3))
def test_generated_metrics(
    request: Any, limits: Limits, rnd: random.Random, mutations: int
) -> None:
    if METRICS not in NATIVE:
        pytest.skip("metrics are not decoded natively")
    body = request.SerializeToString()
    if rnd.random() < 0.3:
        body = _unpacked(body, rnd)
    for _ in range(mutations):
        body = _splice(body, rnd) if rnd.random() < 0.5 else _mutate(body, rnd)
    assert_same(METRICS, body, limits)


@FUZZ
@given(span_requests(), LIMITS, st.randoms(use_true_random=False), st.integers(0, 3))
def test_generated_spans(request: Any, limits: Limits, rnd: random.Random, mutations: int) -> None:
    if SPANS not in NATIVE:
        pytest.skip("spans are not decoded natively")
    body = request.SerializeToString()
    for _ in range(mutations):
        body = _splice(body, rnd) if rnd.random() < 0.5 else _mutate(body, rnd)
    assert_same(SPANS, body, limits)


@FUZZ
@given(
    st.sampled_from([(s, b) for s, b in SEEDS if s in NATIVE]), st.randoms(use_true_random=False)
)
def test_mutated_captures(seed: tuple[Signal, bytes], rnd: random.Random) -> None:
    signal, body = seed
    assert_same(signal, _mutate(body, rnd))


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (numbers below 16, payloads below 2 MiB)."""
    size, length = len(payload), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            return bytes([number << 3 | 2]) + length + payload


def _deep_bytes(depth: int) -> bytes:
    """An AnyValue nested ``depth`` arrays deep, as bytes (protobuf's classes cannot even hold
    one past the limit)."""
    v = AnyValue(string_value="bottom").SerializeToString()
    for _ in range(depth):
        v = _field(5, _field(1, v))
    return v


def test_nesting_at_the_parsers_depth_limit() -> None:
    """upb allows 100 submessage levels below the message it parses, and so does the core: in
    a record's attributes and body (parsed on their own) and in the resource's attributes
    (parsed with the request)."""
    outcomes = []
    for depth in (46, 47, 48, 49, 50):
        deep_kv = _field(1, b"deep") + _field(2, _deep_bytes(depth))
        record = _field(6, deep_kv) + _field(5, _deep_bytes(depth))
        for resource in (b"", _field(1, deep_kv)):
            rl = _field(1, resource) + _field(2, _field(2, record))
            outcomes.append(assert_same(LOGS, _field(1, rl))[0])
    # A record's attribute counts from its KeyValue (1 + 2 per array), the resource's from the
    # request (4 + 2 per array): 100 levels hold 49 arrays in the one, 48 in the other.
    assert outcomes == ["stored"] * 7 + ["undecodable", "refused", "undecodable"]


def test_each_error_of_the_flattener_is_the_native_cores() -> None:
    """One request per error the Python flattener raises after decoding, in each place."""
    bad_kv = KeyValue(key="k", value=AnyValue(string_value="MARK")).SerializeToString()
    bad_kv = bad_kv.replace(b"MARK", b"\xff\xfe\xfd\xfc")
    cases = []
    for where in ("attribute", "body", "rejected"):
        request = ExportLogsServiceRequest()
        records = request.resource_logs.add().scope_logs.add().log_records
        records.add(time_unix_nano=1)
        r = records.add(time_unix_nano=2, trace_id=b"x" * (3 if where == "rejected" else 16))
        r.attributes.add(key="placeholder")
        wire = LOGS.decode_wire(request.SerializeToString())
        target = wire.resource_logs[0].scope_logs[0].log_records[1]
        if where == "body":
            target.body.append(bad_kv[2:])
        else:
            target.attributes[0] = bad_kv
        cases.append(wire.SerializeToString())
    for field in ("time_unix_nano", "observed_time_unix_nano"):
        request = ExportLogsServiceRequest()
        request.resource_logs.add().scope_logs.add().log_records.add(**{field: 2**63 + 7})
        cases.append(request.SerializeToString())
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.dropped_attributes_count = 2**32 - 1
    rl.resource.attributes.add(key="a")
    rl.resource.attributes.add(key="b")
    rl.scope_logs.add().log_records.add()
    cases.append(request.SerializeToString())
    outcomes = [assert_same(LOGS, body, Limits(max_attributes=1)) for body in cases]
    assert [o[0] for o in outcomes] == ["refused"] * 6
    assert "does not fit its column: Integer value 9223372036854775815" in outcomes[3][2]


def test_a_request_whose_rows_would_outgrow_arrow_is_refused_not_a_crash() -> None:
    """A resource's attributes repeat on each of its rows: 7 MiB of them on 320 records would be
    over 2 GiB in one column, past Arrow's 32-bit offsets. The core stops copying there and the
    request is refused whole (the Python path would build the 2 GiB, so this one is ours)."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    for i in range(120):
        rl.resource.attributes.add(key=f"k{i}").value.string_value = "v" * 60_000
    records = rl.scope_logs.add().log_records
    for i in range(320):
        records.add(time_unix_nano=i + 1)
    decoded = LOGS.decode_protobuf(request.SerializeToString())
    with pytest.raises(InvalidArgument, match="more than 2 GiB of strings"):
        flatten_request(LOGS, decoded)
    del decoded
    # The same resource on fewer rows is stored, and the next request is unaffected.
    del records[100:]
    flat = flatten_request(LOGS, LOGS.decode_protobuf(request.SerializeToString()))
    assert flat.batch.num_rows == 100
