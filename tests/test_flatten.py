"""Flatten edge cases that the end-to-end tests do not reach."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.flatten import flatten_logs


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
