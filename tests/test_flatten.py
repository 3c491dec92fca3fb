"""Flatten edge cases that the end-to-end tests do not reach."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.codec import JSON, PROTOBUF, decode_request, encode_message
from collector.errors import InvalidArgument
from collector.flatten import Flattened, Limits, flatten_logs
from collector.flatten.packed import came_unpacked
from collector.pipeline import flatten_request
from collector.signals import LOGS, METRICS, SPANS, Signal
from collector.tables import TableName
from collector.wal import WriteAheadLog
from tests.conftest import CAPTURES

TABLE = TableName("main", "agents", "otel_logs")


def test_uint32_fields_keep_their_bits_in_int_columns() -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(flags=0xFFFFFFFF, dropped_attributes_count=2**31)
    records.add(flags=1, dropped_attributes_count=0)
    (first, second) = flatten_logs(request).batch.to_pylist()
    assert (first["flags"], first["dropped_attributes_count"]) == (-1, -(2**31))
    assert (second["flags"], second["dropped_attributes_count"]) == (1, 0)


def test_empty_request_is_an_empty_batch_with_the_schema() -> None:
    flat = flatten_logs(ExportLogsServiceRequest())
    assert flat.batch.num_rows == 0
    assert flat.rejected == 0
    assert flat.error is None


# --- what the wire path (collector.wire) must keep from a full parse ----------------------------


def _malformed_key_value() -> bytes:
    """A KeyValue whose string value is not UTF-8, as protobuf bytes."""
    good = KeyValue(key="k", value=AnyValue(string_value="MARKER")).SerializeToString()
    return good.replace(b"MARKER", b"\xff" * 6)


def _with_malformed_attribute(
    signal: Signal, message: Message, holder: Callable[[Message], Message]
) -> bytes:
    """``message`` as protobuf with a malformed KeyValue among ``holder(message)``'s attributes.

    A placeholder attribute is added, the request parsed with the wire classes (whose attribute
    lists are bytes, so any bytes can go in), and the placeholder replaced."""
    holder(message).attributes.add(key="placeholder")
    wire = signal.decode_wire(message.SerializeToString())
    attributes = holder(wire).attributes
    attributes[list(attributes).index(KeyValue(key="placeholder").SerializeToString())] = (
        _malformed_key_value()
    )
    return wire.SerializeToString()


def _decoded(signal: Signal, body: bytes) -> Flattened:
    return flatten_request(signal, decode_request(signal, body, PROTOBUF))


def test_a_malformed_attribute_of_a_rejected_record_still_fails_the_request() -> None:
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1)
    records.add(time_unix_nano=2, trace_id=b"\x01" * 3)  # rejected: a 3-byte trace id
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.sum.data_points.add(as_int=1)
    metric.sum.data_points.add()  # rejected: no value
    spans = ExportTraceServiceRequest()
    ss = spans.resource_spans.add().scope_spans.add()
    ss.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="kept")
    rejected = ss.spans.add(trace_id=b"\x01" * 5, span_id=b"\x02" * 8, name="rejected")
    rejected.events.add(name="e")
    cases = [
        (LOGS, logs, lambda m: m.resource_logs[0].scope_logs[0].log_records[1]),
        (METRICS, metrics, lambda m: m.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[1]),
        (SPANS, spans, lambda m: m.resource_spans[0].scope_spans[0].spans[1].events[0]),
    ]  # fmt: skip
    for signal, message, holder in cases:
        assert _decoded(signal, message.SerializeToString()).rejected == 1
        with pytest.raises(InvalidArgument, match="an attribute is not a valid OTLP KeyValue"):
            _decoded(signal, _with_malformed_attribute(signal, message, holder))
    wire = LOGS.decode_wire(logs.SerializeToString())
    wire.resource_logs[0].scope_logs[0].log_records[1].body.append(b"\x0a\x02\xff\xff")
    with pytest.raises(InvalidArgument, match="a log body is not a valid OTLP AnyValue"):
        _decoded(LOGS, wire.SerializeToString())


def test_the_first_rejection_reason_is_the_first_in_the_request() -> None:
    """Points are read by type across the request; the message still names the first."""
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add().scope_metrics.add().metrics
    metrics.add(name="a_sum").sum.data_points.add()
    metrics.add(name="a_gauge").gauge.data_points.add()
    flat = _decoded(METRICS, request.SerializeToString())
    assert (flat.rejected, flat.error) == (2, "metric 'a_sum': number data point has no value")


def test_metadata_of_a_metric_without_rows_is_not_counted() -> None:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    for i in range(3):
        metric.metadata.add(key=f"k{i}").value.string_value = "v" * 100
    metric.gauge.data_points.add()  # no value: the metric has no row
    flat = flatten_request(
        METRICS, decode_request(METRICS, request.SerializeToString(), PROTOBUF), Limits(1, 50)
    )
    assert (flat.batch.num_rows, flat.dropped_attributes, flat.truncated_values) == (0, 0, 0)


def test_a_dropped_count_past_uint32_is_a_value_that_does_not_fit() -> None:
    request = ExportLogsServiceRequest()
    record = (
        request.resource_logs.add()
        .scope_logs.add()
        .log_records.add(dropped_attributes_count=2**32 - 1)
    )
    record.attributes.add(key="a")
    record.attributes.add(key="b")
    body = request.SerializeToString()
    decoded = decode_request(LOGS, body, PROTOBUF)
    with pytest.raises(InvalidArgument, match="does not fit its column"):
        flatten_request(LOGS, decoded, Limits(max_attributes=1))
    (row,) = flatten_request(LOGS, decode_request(LOGS, body, PROTOBUF)).batch.to_pylist()
    assert row["dropped_attributes_count"] == -1  # the uint32's bits, as before


# --- histogram buckets and bounds, packed runs taken as bytes (collector.flatten.packed) --------


def _histogram_request(**point: object) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="latency")
    metric.histogram.data_points.add(time_unix_nano=1, **point)
    return request


def _wire_point(request: Message) -> tuple[Message, Message]:
    """The request in the wire classes, and its first histogram point."""
    wire = METRICS.decode_wire(request.SerializeToString())
    return wire, wire.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]


def _buckets(body: bytes) -> tuple[list[int], list[float]]:
    (row,) = _decoded(METRICS, body).batch.to_pylist()
    return row["histogram"]["bucket_counts"], row["histogram"]["explicit_bounds"]


def test_real_exporters_histograms_take_the_packed_path() -> None:
    """The captures and protobuf's own encoding leave no field unread by the wire classes."""
    for name in ("codex-cli-0.169.0.metrics.pb", "claude-code-2.1.197.metrics.pb"):
        request = METRICS.decode_wire((CAPTURES / name).read_bytes())
        metrics = [
            m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        ]
        points = [p for m in metrics if m.HasField("histogram") for p in m.histogram.data_points]
        assert not came_unpacked(points)
        assert all(p.explicit_bounds for p in points) and all(p.bucket_counts for p in points)
    request = _histogram_request(count=6, bucket_counts=[1, 2, 3], explicit_bounds=[0.5, 2.5])
    _, point = _wire_point(request)
    assert list(point.explicit_bounds) == [struct.pack("<2d", 0.5, 2.5)]
    assert _buckets(request.SerializeToString()) == ([1, 2, 3], [0.5, 2.5])


def test_unpacked_buckets_and_bounds_are_read_as_a_full_parse_reads_them() -> None:
    """Protobuf lets a packed field arrive one value per tag; the bytes field cannot take that,
    so the wire class keeps such values as unknown fields, read from there."""
    request = _histogram_request(count=6)
    wire, point = _wire_point(request)
    unpacked = b"".join(
        [b"\x31" + struct.pack("<Q", n) for n in (1, 2, 3)]  # field 6, fixed64
        + [b"\x39" + struct.pack("<d", x) for x in (0.5, 2.5)]  # field 7, double
    )
    point.MergeFromString(unpacked)  # kept by the wire class as unknown fields
    body = wire.SerializeToString()
    assert _buckets(body) == ([1, 2, 3], [0.5, 2.5])
    standard = flatten_request(METRICS, METRICS.request_type.FromString(body))
    assert _decoded(METRICS, body).batch.equals(standard.batch)


def test_an_unpacked_point_with_a_malformed_attribute_is_refused_not_a_crash() -> None:
    """Packed and unpacked values mixed come as a full parse of the re-serialized point gives
    them (packed runs first), and the point's raw attributes keep their own errors: once, a
    re-decode of such histograms made a malformed attribute escape as a DecodeError (a 500)."""
    request = _histogram_request(count=6, bucket_counts=[7])
    request.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0].attributes.add(
        key="placeholder"
    )
    wire, point = _wire_point(request)
    point.MergeFromString(b"\x31" + struct.pack("<Q", 1) + b"\x30\x05")  # fixed64; a varint
    point.bucket_counts.append(struct.pack("<Q", 9))
    body = wire.SerializeToString()
    assert _buckets(body) == ([7, 9, 1], [])
    point.attributes[0] = _malformed_key_value()
    with pytest.raises(InvalidArgument, match="an attribute is not a valid OTLP KeyValue"):
        _decoded(METRICS, wire.SerializeToString())


def test_a_packed_field_in_several_runs_is_their_concatenation() -> None:
    wire, point = _wire_point(_histogram_request(count=6))
    point.bucket_counts.extend([struct.pack("<2Q", 1, 2), struct.pack("<Q", 3)])
    point.explicit_bounds.extend([struct.pack("<d", 0.5), b"", struct.pack("<d", 2.5)])
    body = wire.SerializeToString()
    standard = METRICS.request_type.FromString(body).resource_metrics[0].scope_metrics[0]
    assert list(standard.metrics[0].histogram.data_points[0].explicit_bounds) == [0.5, 2.5]
    assert _buckets(body) == ([1, 2, 3], [0.5, 2.5])


def test_a_packed_run_that_is_not_whole_values_fails_the_request() -> None:
    """As in a full parse, also when the point is rejected for another reason (its exemplar's
    span id) and so goes the one-by-one way."""
    bad_exemplar = {"exemplars": [{"span_id": b"\x01" * 3, "as_int": 1}]}
    for point in ({}, bad_exemplar):
        wire, wire_point = _wire_point(_histogram_request(count=1, **point))
        wire_point.explicit_bounds.append(b"\x00" * 12)
        body = wire.SerializeToString()
        with pytest.raises(DecodeError):
            METRICS.request_type.FromString(body)
        with pytest.raises(InvalidArgument, match="not a whole number of 8-byte values"):
            _decoded(METRICS, body)


def test_a_bucket_count_past_long_fails_alike_however_decoded() -> None:
    """The message names the value, and of two values out of range the one in the first column
    fails, whether the counts came packed, as numbers, or as OTLP/JSON."""
    for point in ({"count": 1}, {"count": 2**64 - 1}):
        request = _histogram_request(bucket_counts=[2**64 - 2], **point)
        body = request.SerializeToString()
        first = point["count"] if point["count"] > 2**63 else 2**64 - 2
        messages = set()
        for decoded in (
            decode_request(METRICS, body, PROTOBUF),
            METRICS.request_type.FromString(body),
            decode_request(METRICS, encode_message(request, JSON), JSON),
        ):
            with pytest.raises(InvalidArgument, match="does not fit its column") as e:
                flatten_request(METRICS, decoded)
            messages.add(e.value.message)
        (message,) = messages
        assert str(first) in message


def test_origin_columns_reused_across_requests_are_those_of_a_fresh_build(tmp_path: Path) -> None:
    """In the Python flattener (the native core needs no cache), requests of as many rows from
    one resource and scope reuse the columns made for an earlier one; rows, counts of cut values and the Arrow IPC (which the WAL tells retries by)
    are those of a fresh build, i.e. of the OTLP/JSON decoding, which is never reused."""
    limits = Limits(max_attributes=2, max_value_bytes=16)

    def request(host: str, records: int) -> ExportLogsServiceRequest:
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add(schema_url="https://opentelemetry.io/schemas/1.26")
        for key, value in (("service.name", "claude-code-agent"), ("host.name", host), ("x", "")):
            rl.resource.attributes.add(key=key).value.string_value = value
        sl = rl.scope_logs.add()
        sl.scope.name, sl.scope.version = "cc", "2.1.197"
        for i in range(records):
            sl.log_records.add(time_unix_nano=i + 1).body.string_value = f"event {i}"
        return request

    wal = WriteAheadLog(tmp_path)
    list(wal.recover())
    made_at: dict[tuple[str, int], list[int]] = {}  # where a request's resource column is
    for host, records in [("a", 3), ("a", 5), ("a", 3), ("b", 3), ("a", 5), ("a", 0)]:
        message = request(host, records)
        flat = flatten_logs(LOGS.decode_wire(message.SerializeToString()), limits)
        fresh = flatten_request(
            LOGS, decode_request(LOGS, encode_message(message, JSON), JSON), limits
        )
        # The WAL takes the fresh rows for a retry of the reused ones: their Arrow IPC is equal.
        wal.write(TABLE, flat.batch)
        assert wal.write(TABLE, fresh.batch)[1]
        counts = (flat.truncated_values, flat.dropped_attributes)
        assert counts == (fresh.truncated_values, fresh.dropped_attributes) == (1, 1)
        rows = flat.batch.select(["resource", "log_schema_url", "body"]).to_pylist()
        assert rows == [
            {
                "resource": {
                    "attributes": [("service.name", "cl…[truncated]"), ("host.name", host)],
                    "dropped_attributes_count": 1,
                },
                "log_schema_url": "",
                "body": f"event {i}",
            }
            for i in range(records)
        ]
        address = flat.batch.column("resource").buffers()[-1].address
        made_at.setdefault((host, records), []).append(address)
    assert made_at["a", 3][0] == made_at["a", 3][1]  # the same columns
    assert made_at["a", 5][0] == made_at["a", 5][1]
    assert len({made_at["a", 3][0], made_at["a", 5][0], made_at["b", 3][0]}) == 3
    wal.close()


def test_a_body_sent_in_several_occurrences_merges_as_a_full_parse_merges_it() -> None:
    """A singular message field may occur more than once; the occurrences merge (a oneof keeps
    the last). Records with no body, one, and two occurrences in the same request."""
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1)
    records.add(time_unix_nano=2).body.string_value = "once"
    records.add(time_unix_nano=3).body.string_value = "first"
    wire = LOGS.decode_wire(request.SerializeToString())
    wire.resource_logs[0].scope_logs[0].log_records[2].body.append(
        AnyValue(int_value=5).SerializeToString()
    )
    body = wire.SerializeToString()
    standard = flatten_logs(LOGS.request_type.FromString(body))
    flat = _decoded(LOGS, body)
    assert flat.batch.column("body").to_pylist() == [None, "once", "5"]
    assert flat.batch.equals(standard.batch)
