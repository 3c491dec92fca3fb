"""OTLP/JSON and OTLP/protobuf of the same data produce byte-for-byte the same rows.

Generated requests of every signal are encoded both ways; the JSON side varies as real
exporters do (camelCase or snake_case keys, int64 as strings or numbers, enums as names or
numbers, ids in either hex case, unknown fields). Both are decoded and flattened, and the
record batches are compared as serialized Arrow IPC.
"""

from __future__ import annotations

import base64
import json
import math
import random
import urllib.request
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.codec import JSON, PROTOBUF, decode_request
from collector.errors import InvalidArgument
from collector.flatten import Limits
from collector.pipeline import flatten_request
from collector.signals import LOGS, METRICS, SPANS, Signal
from tests.conftest import CAPTURES, CollectorProcess, wait_for_rows
from tests.readers import read_both

# --- an OTLP/JSON encoder with the freedoms real exporters take -----------------------------

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT64,
}
_ID_FIELDS = {"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"}


def _int64_names(descriptor: Descriptor, seen: set[str], names: set[str]) -> set[str]:
    if descriptor.full_name in seen:
        return names
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        if field.type in _INT64:
            names.update({field.name, field.json_name})
        if field.message_type is not None:
            _int64_names(field.message_type, seen, names)
    return names


def to_otlp_json(message: Message, rnd: random.Random) -> bytes:
    snake = rnd.random() < 0.5
    tree = json_format.MessageToDict(
        message,
        preserving_proto_field_name=snake,
        use_integers_for_enums=rnd.random() < 0.5,
    )
    int64 = _int64_names(message.DESCRIPTOR, set(), set())

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in _ID_FIELDS:
                    hexed = base64.b64decode(value).hex()
                    out[key] = hexed.upper() if rnd.random() < 0.3 else hexed
                elif key in int64 and rnd.random() < 0.5:
                    out[key] = [int(v) for v in value] if isinstance(value, list) else int(value)
                else:
                    out[key] = walk(value)
            if rnd.random() < 0.1:
                out["someFutureField"] = {"ignored": [1, 2]}
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return json.dumps(walk(tree)).encode()


def ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def assert_same_rows(signal: Signal, message: Message, rnd: random.Random) -> None:
    from_pb = signal.flatten(decode_request(signal, message.SerializeToString(), PROTOBUF))
    from_json = signal.flatten(decode_request(signal, to_otlp_json(message, rnd), JSON))
    assert (from_json.rejected, from_json.error) == (from_pb.rejected, from_pb.error)
    assert from_json.batch.num_rows == from_pb.batch.num_rows
    assert ipc(from_json.batch) == ipc(from_pb.batch)


# --- generated requests ----------------------------------------------------------------------

u64 = st.integers(0, 2**63 - 1)
u32 = st.integers(0, 2**32 - 1)
doubles = st.one_of(st.floats(allow_nan=False), st.just(math.nan))
finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=12)
trace_ids = st.one_of(st.just(b""), st.binary(min_size=16, max_size=16), st.binary(max_size=20))
span_ids = st.one_of(st.just(b""), st.binary(min_size=8, max_size=8), st.binary(max_size=10))


def any_values(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.builds(lambda v: AnyValue(string_value=v), text),
        st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
        st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
        st.builds(lambda v: AnyValue(double_value=v), doubles),
        st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=6)),
        st.just(AnyValue()),
    )
    if depth == 0:
        return scalars

    def array(values: list[AnyValue]) -> AnyValue:
        v = AnyValue()
        v.array_value.values.extend(values)
        return v

    def kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
        v = AnyValue()
        v.kvlist_value.values.extend(KeyValue(key=k, value=x) for k, x in pairs)
        return v

    nested = any_values(depth - 1)
    return st.one_of(
        scalars,
        st.builds(array, st.lists(nested, max_size=3)),
        st.builds(kvlist, st.lists(st.tuples(text, nested), max_size=3)),
    )


attributes = st.lists(st.tuples(text, any_values()), max_size=4).map(
    lambda pairs: [KeyValue(key=k, value=v) for k, v in pairs]
)


@st.composite
def origin(draw: st.DrawFn, container: Any) -> None:
    """Fill the resource and scope of a ResourceX / ScopeX pair."""
    resource, scope_holder = container
    resource.resource.attributes.extend(draw(attributes))
    resource.resource.dropped_attributes_count = draw(u32)
    resource.schema_url = draw(text)
    scope_holder.scope.name = draw(text)
    scope_holder.scope.version = draw(text)
    scope_holder.scope.attributes.extend(draw(attributes))
    scope_holder.schema_url = draw(text)


@st.composite
def log_requests(draw: st.DrawFn) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rl = request.resource_logs.add()
        sl = rl.scope_logs.add()
        draw(origin((rl, sl)))
        for _ in range(draw(st.integers(0, 3))):
            r = sl.log_records.add(
                time_unix_nano=draw(u64),
                observed_time_unix_nano=draw(u64),
                severity_number=draw(st.integers(0, 26)),
                severity_text=draw(text),
                dropped_attributes_count=draw(u32),
                flags=draw(u32),
                trace_id=draw(trace_ids),
                span_id=draw(span_ids),
                event_name=draw(text),
            )
            r.attributes.extend(draw(attributes))
            if draw(st.booleans()):
                r.body.CopyFrom(draw(any_values()))
    return request


@st.composite
def exemplars(draw: st.DrawFn, point: Any) -> None:
    for _ in range(draw(st.integers(0, 2))):
        e = point.exemplars.add(
            time_unix_nano=draw(u64), span_id=draw(span_ids), trace_id=draw(trace_ids)
        )
        e.filtered_attributes.extend(draw(attributes))
        kind = draw(st.sampled_from(["as_int", "as_double", None]))
        if kind == "as_int":
            e.as_int = draw(st.integers(-(2**53), 2**53))
        elif kind == "as_double":
            e.as_double = draw(finite)


@st.composite
def metric_requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    sm = rm.scope_metrics.add()
    draw(origin((rm, sm)))
    for _ in range(draw(st.integers(1, 4))):
        m = sm.metrics.add(name=draw(text), description=draw(text), unit=draw(text))
        m.metadata.extend(draw(attributes))
        kind = draw(
            st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram", "summary"])
        )
        data = getattr(m, kind)
        if kind in ("sum", "histogram", "exponential_histogram"):
            data.aggregation_temporality = draw(st.integers(0, 2))
        if kind == "sum":
            data.is_monotonic = draw(st.booleans())
        for _ in range(draw(st.integers(0, 3))):
            p = data.data_points.add(
                start_time_unix_nano=draw(u64), time_unix_nano=draw(u64), flags=draw(u32)
            )
            p.attributes.extend(draw(attributes))
            if kind in ("gauge", "sum"):
                value = draw(st.sampled_from(["as_int", "as_double", None]))
                if value == "as_int":
                    p.as_int = draw(st.integers(-(2**53), 2**53))
                elif value == "as_double":
                    p.as_double = draw(finite)
            elif kind == "summary":
                p.count = draw(u64)
                p.sum = draw(finite)
                for _ in range(draw(st.integers(0, 3))):
                    p.quantile_values.add(quantile=draw(finite), value=draw(finite))
            else:
                p.count = draw(u64)
                for field in ("sum", "min", "max"):
                    if draw(st.booleans()):
                        setattr(p, field, draw(finite))
                if kind == "histogram":
                    p.bucket_counts.extend(draw(st.lists(u64, max_size=4)))
                    p.explicit_bounds.extend(draw(st.lists(finite, max_size=3)))
                else:
                    p.scale = draw(st.integers(-10, 20))
                    p.zero_count = draw(u64)
                    p.zero_threshold = draw(finite)
                    for side in (p.positive, p.negative):
                        side.offset = draw(st.integers(-(2**31), 2**31 - 1))
                        side.bucket_counts.extend(draw(st.lists(u64, max_size=4)))
            if kind != "summary":
                draw(exemplars(p))
    return request


@st.composite
def span_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    ss = rs.scope_spans.add()
    draw(origin((rs, ss)))
    for _ in range(draw(st.integers(0, 3))):
        s = ss.spans.add(
            trace_id=draw(trace_ids),
            span_id=draw(span_ids),
            parent_span_id=draw(span_ids),
            trace_state=draw(text),
            flags=draw(u32),
            name=draw(text),
            kind=draw(st.integers(0, 5)),
            start_time_unix_nano=draw(u64),
            end_time_unix_nano=draw(u64),
            dropped_attributes_count=draw(u32),
            dropped_events_count=draw(u32),
            dropped_links_count=draw(u32),
        )
        s.attributes.extend(draw(attributes))
        for _ in range(draw(st.integers(0, 2))):
            e = s.events.add(time_unix_nano=draw(u64), name=draw(text))
            e.attributes.extend(draw(attributes))
        for _ in range(draw(st.integers(0, 2))):
            link = s.links.add(
                trace_id=draw(trace_ids), span_id=draw(span_ids), trace_state=draw(text),
                flags=draw(u32),
            )  # fmt: skip
            link.attributes.extend(draw(attributes))
        s.status.code = draw(st.integers(0, 2))
        s.status.message = draw(text)
    return request


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(log_requests(), st.randoms(use_true_random=False))
def test_logs_json_equals_protobuf(request: ExportLogsServiceRequest, rnd: random.Random) -> None:
    assert_same_rows(LOGS, request, rnd)


@SETTINGS
@given(metric_requests(), st.randoms(use_true_random=False))
def test_metrics_json_equals_protobuf(
    request: ExportMetricsServiceRequest, rnd: random.Random
) -> None:
    assert_same_rows(METRICS, request, rnd)


@SETTINGS
@given(span_requests(), st.randoms(use_true_random=False))
def test_spans_json_equals_protobuf(request: ExportTraceServiceRequest, rnd: random.Random) -> None:
    assert_same_rows(SPANS, request, rnd)


limits = st.builds(Limits, st.integers(0, 5), st.integers(0, 40))


@SETTINGS
@given(
    st.one_of(
        st.tuples(st.just(LOGS), log_requests()),
        st.tuples(st.just(METRICS), metric_requests()),
        st.tuples(st.just(SPANS), span_requests()),
    ),
    limits,
    st.randoms(use_true_random=False),
)
def test_every_decoding_applies_limits_alike(
    case: tuple[Signal, Message], limit: Limits, rnd: random.Random
) -> None:
    """Tight limits (a few attributes, values of a few bytes) cut and count the same whether
    attributes arrive as raw bytes (collector.wire), as messages, or as OTLP/JSON."""
    signal, message = case
    body = message.SerializeToString()
    decodings = (
        lambda: decode_request(signal, body, PROTOBUF),
        lambda: signal.request_type.FromString(body),
        lambda: decode_request(signal, to_otlp_json(message, rnd), JSON),
    )
    outcomes = set()
    for decode in decodings:
        try:
            r = flatten_request(signal, decode(), limit)
        except InvalidArgument as e:  # e.g. a dropped count pushed past uint32 by the limit
            outcomes.add(("400", e.message))
        else:
            outcomes.add(
                (r.rejected, r.error, r.truncated_values, r.dropped_attributes, ipc(r.batch))
            )
    assert len(outcomes) == 1


def test_captures_land_identically_as_json_and_protobuf(
    collector: CollectorProcess, table_prefix: str
) -> None:
    """End to end: each capture, as sent and re-encoded as OTLP/JSON, gives the same table."""
    rnd = random.Random(7)
    for i, name in enumerate(sorted(p.name for p in CAPTURES.glob("*.pb"))):
        signal = METRICS if ".metrics." in name else LOGS
        body = (CAPTURES / name).read_bytes()
        message = signal.request_type.FromString(body)
        tables = []
        for media, payload in ((PROTOBUF, body), (JSON, to_otlp_json(message, rnd))):
            table = f"{table_prefix}_{i}_{media.split('/')[1].replace('-', '_')}_otel_{signal.name}"
            request = urllib.request.Request(
                collector.url(f"/v1/{signal.name}"),
                data=payload,
                headers={"Content-Type": media, "X-Databricks-UC-Table-Name": table},
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 200
                assert answer.headers["Content-Type"] == media
            tables.append(table)
        expected = signal.flatten(message).batch.num_rows
        paths = [collector.table_path(t) for t in tables]
        for path in paths:
            wait_for_rows(path, expected)
        assert read_both(paths[0]) == read_both(paths[1])
