"""Flatten edge cases that the end-to-end tests do not reach."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.codec import PROTOBUF, decode_request
from collector.errors import InvalidArgument
from collector.flatten import Flattened, Limits, flatten_logs
from collector.pipeline import flatten_request
from collector.signals import LOGS, METRICS, SPANS, Signal


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
    wire = signal.wire_type.FromString(message.SerializeToString())
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
    wire = LOGS.wire_type.FromString(logs.SerializeToString())
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
