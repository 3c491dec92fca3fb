"""Bad input is refused whole, with the OTLP status and a message that says what is wrong,
and nothing of it is written; other clients' data is unaffected."""

from __future__ import annotations

import gzip
import threading
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import zstandard
from deltalake import DeltaTable
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from collector.schema import load_schema
from tests.conftest import (
    CAPTURES,
    CollectorProcess,
    distinct_logs,
    undecodable_logs,
    wait_for_rows,
)
from tests.readers import read_both

LOGS = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
METRICS = (CAPTURES / "claude-code-2.1.197.metrics.pb").read_bytes()


def post(
    collector: CollectorProcess,
    path: str,
    body: bytes,
    table: str | None = None,
    content_type: str = "application/x-protobuf",
    method: str = "POST",
    **headers: str,
) -> tuple[int, dict[str, str], bytes]:
    h = {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if table is not None:
        h["X-Databricks-UC-Table-Name"] = table
    request = urllib.request.Request(collector.url(path), data=body, headers=h, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def status_of(body: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(body)


def assert_not_written(collector: CollectorProcess, table: str) -> None:
    assert not collector.table_path(table).exists()


def test_truncated_protobuf_is_400_with_a_status(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    status, headers, body = post(collector, "/v1/logs", LOGS[: len(LOGS) // 2], table)
    assert status == 400
    assert headers["Content-Type"] == "application/x-protobuf"
    s = status_of(body)
    assert s.code == code_pb2.INVALID_ARGUMENT
    assert s.message.startswith(
        "cannot decode the body as an OTLP ExportLogsServiceRequest (application/x-protobuf)"
    )
    assert_not_written(collector, table)


def test_wrong_content_type_is_415(collector: CollectorProcess, table_prefix: str) -> None:
    table = f"{table_prefix}_otel_logs"
    status, _, body = post(collector, "/v1/logs", LOGS, table, content_type="text/plain")
    assert status == 415
    assert "unsupported Content-Type 'text/plain'" in status_of(body).message
    assert_not_written(collector, table)


def test_content_type_parameters_are_accepted(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    ct = "application/x-protobuf; charset=utf-8"
    status, _, _ = post(collector, "/v1/logs", LOGS, table, content_type=ct)
    assert status == 200
    assert len(wait_for_rows(collector.table_path(table), 8)) == 8


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(collector: CollectorProcess, method: str) -> None:
    status, headers, _ = post(collector, "/api/2.0/otel/v1/logs", b"", method=method)
    assert status == 405
    assert headers["Allow"] == "POST"


def test_unknown_path_is_404(collector: CollectorProcess) -> None:
    status, _, _ = post(collector, "/v1/profiles", LOGS)
    assert status == 404


def test_metrics_to_a_logs_table_is_400(collector: CollectorProcess, table_prefix: str) -> None:
    table = f"{table_prefix}_otel_logs"
    status, _, body = post(collector, "/api/2.0/otel/v1/metrics", METRICS, table)
    assert status == 400
    assert status_of(body).message == (
        f"table {table} is a logs table: metrics must go to a table whose name ends in _otel_metrics"
    )
    assert_not_written(collector, table)


def test_table_without_a_signal_suffix_is_400(
    collector: CollectorProcess, table_prefix: str
) -> None:
    status, _, body = post(collector, "/v1/logs", LOGS, f"{table_prefix}_events")
    assert status == 400
    assert "is not an OpenTelemetry table" in status_of(body).message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("main.agents", "must have three parts, catalog.schema.table, found 2"),
        ("main.agents.cc.otel_logs", "must have three parts, catalog.schema.table, found 4"),
        ("main.ag-ents.cc_otel_logs", "'ag-ents' is not an identifier"),
        ("main..cc_otel_logs", "'' is not an identifier"),
        ("main.agents./cc_otel_logs", "'/cc_otel_logs' is not an identifier"),
        ("main.agénts.cc_otel_logs", "'agénts' is not an identifier"),
    ],
)
def test_malformed_table_names_are_400(
    collector: CollectorProcess, name: str, message: str
) -> None:
    status, _, body = post(collector, "/v1/logs", LOGS, name.encode("utf-8").decode("latin-1"))
    assert status == 400
    assert message in status_of(body).message


def test_table_names_are_case_folded(collector: CollectorProcess, table_prefix: str) -> None:
    table = f"{table_prefix}_otel_logs"
    status, _, _ = post(collector, "/v1/logs", LOGS, table.upper())
    assert status == 200
    assert len(wait_for_rows(collector.table_path(table), 8)) == 8


def test_existing_table_with_another_schema_is_never_written(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    path = collector.table_path(table)
    # The DDL's schema with `flags` missing, and one with `severity_number` of another type.
    fields = [f for f in load_schema("otel_logs").arrow if f.name != "flags"]
    DeltaTable.create(str(path), schema=pa.schema(fields))
    status, _, body = post(collector, "/v1/logs", LOGS, table)
    assert status == 400
    assert status_of(body).message == (
        f'Schema validation error: table {table}: Field "flags" found in the schema definition, '
        "but not in the table schema."
    )
    assert DeltaTable(str(path)).version() == 0

    other = f"{table_prefix}b_otel_logs"
    fields = [
        pa.field("severity_number", pa.int32()) if f.name == "severity_number" else f
        for f in load_schema("otel_logs").arrow
    ]
    DeltaTable.create(str(collector.table_path(other)), schema=pa.schema(fields))
    status, _, body = post(collector, "/v1/logs", LOGS, other)
    assert status == 400
    assert status_of(body).message == (
        f'Schema validation error: table {other}: Field "severity_number" has type INT in the '
        "table, expected STRING"
    )
    assert DeltaTable(str(collector.table_path(other))).version() == 0


def test_corrupt_gzip_is_400(collector: CollectorProcess, table_prefix: str) -> None:
    table = f"{table_prefix}_otel_logs"
    bad = gzip.compress(LOGS)[:-20]
    status, _, body = post(collector, "/v1/logs", bad, table, Content_Encoding="gzip")
    assert status == 400
    assert status_of(body).message == "the gzip body is truncated"
    assert_not_written(collector, table)


def test_unknown_content_encoding_is_400(collector: CollectorProcess, table_prefix: str) -> None:
    table = f"{table_prefix}_otel_logs"
    status, _, body = post(collector, "/v1/logs", LOGS, table, Content_Encoding="br")
    assert status == 400
    assert status_of(body).message.startswith("unsupported Content-Encoding 'br'")
    assert_not_written(collector, table)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("identity", bytes),
    ],
)
def test_compressed_bodies_are_accepted(
    collector: CollectorProcess, table_prefix: str, encoding: str, compress: Any
) -> None:
    table = f"{table_prefix}_otel_logs"
    status, _, _ = post(
        collector, "/v1/logs", compress(LOGS), table, Content_Encoding=encoding.upper()
    )
    assert status == 200
    assert len(wait_for_rows(collector.table_path(table), 8)) == 8


def test_empty_request_succeeds_and_creates_nothing(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    status, _, body = post(collector, "/v1/logs", b"", table)
    assert status == 200
    assert ExportLogsServiceResponse.FromString(body) == ExportLogsServiceResponse()
    assert_not_written(collector, table)


def test_points_without_value_are_rejected_alone(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_metrics"
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.gauge.data_points.add(time_unix_nano=1, as_int=7)
    metric.gauge.data_points.add(time_unix_nano=2)  # no value
    metric.gauge.data_points.add(time_unix_nano=3, as_double=1.5)
    status, _, body = post(collector, "/v1/metrics", request.SerializeToString(), table)
    assert status == 200
    answer = ExportMetricsServiceResponse.FromString(body)
    assert answer.partial_success.rejected_data_points == 1
    assert answer.partial_success.error_message == "metric 'm': number data point has no value"
    rows = read_both_when(collector.table_path(table), 2)
    assert [(r["gauge"]["time_unix_nano"], r["gauge"]["value"]) for r in rows] == [
        (1, 7.0),
        (3, 1.5),
    ]


def test_log_record_with_bad_trace_id_is_rejected_alone(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1, trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    records.add(time_unix_nano=2, trace_id=b"\x01" * 15)
    status, _, body = post(collector, "/v1/logs", request.SerializeToString(), table)
    assert status == 200
    answer = ExportLogsServiceResponse.FromString(body)
    assert answer.partial_success.rejected_log_records == 1
    assert answer.partial_success.error_message == "log record: trace_id must be 16 bytes, got 15"
    (row,) = read_both_when(collector.table_path(table), 1)
    assert (row["trace_id"], row["span_id"]) == ("01" * 16, "02" * 8)


@pytest.mark.parametrize(
    ("field", "what"),
    [
        ("attribute", "an attribute is not a valid OTLP KeyValue"),
        ("body", "a log body is not a valid OTLP AnyValue"),
    ],
)
@pytest.mark.parametrize("how", ["utf-8", "length"])
def test_undecodable_attribute_or_body_is_400_and_nothing_of_the_request_is_written(
    collector: CollectorProcess, table_prefix: str, field: str, what: str, how: str
) -> None:
    """The decoder leaves attributes and bodies as bytes until flattening (collector.wire):
    one that is not valid protobuf still rejects the whole request."""
    table = f"{table_prefix}_otel_logs"
    status, _, body = post(collector, "/v1/logs", undecodable_logs(field, how), table)
    assert status == 400
    assert status_of(body).message.startswith(
        f"cannot decode the body as an OTLP ExportLogsServiceRequest (protobuf): {what}: "
    )
    assert_not_written(collector, table)


def test_timestamp_beyond_long_is_400_and_not_written(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=2**64 - 1)
    status, _, body = post(collector, "/v1/logs", request.SerializeToString(), table)
    assert status == 400
    assert status_of(body).message.startswith("a value does not fit its column")
    assert_not_written(collector, table)


def test_bad_requests_do_not_disturb_other_clients(
    collector: CollectorProcess, table_prefix: str
) -> None:
    good = f"{table_prefix}_otel_logs"
    errors: list[int] = []

    def bad_client() -> None:
        for _ in range(20):
            errors.append(post(collector, "/v1/logs", LOGS[:-7], good)[0])

    threads = [threading.Thread(target=bad_client) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(10):
        assert post(collector, "/v1/logs", distinct_logs(LOGS, i), good)[0] == 200
    for t in threads:
        t.join()
    assert set(errors) == {400}
    assert len(read_both_when(collector.table_path(good), 80)) == 80


def test_body_over_the_cap_is_413(tmp_path: Path) -> None:
    small = CollectorProcess(tmp_path / "warehouse", "--max-request-bytes", "2000")
    try:
        table = "main.tests.cap_otel_logs"
        status, _, body = post(small, "/v1/logs", LOGS, table)
        assert status == 413
        assert status_of(body).message == "request body exceeds the limit of 2000 bytes"
        # 50 MB of zeros inflate from ~50 KB: refused after decompressing 2000 bytes.
        bomb = gzip.compress(b"\0" * 50_000_000)
        status, _, body = post(small, "/v1/logs", bomb, table, Content_Encoding="gzip")
        assert status == 413
        assert status_of(body).message == (
            "request body exceeds the limit of 2000 bytes after decompression"
        )
        assert not small.table_path(table).exists()
    finally:
        assert small.stop() == 0


def read_both_when(path: Path, count: int) -> list[dict]:
    wait_for_rows(path, count)
    return read_both(path, key=lambda r: str(r))


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"traceId": 5}, "traceId: expected a string, got int"),
        ({"spanId": {}}, "spanId: expected a string, got dict"),
        ({"traceId": "zz"}, "traceId: 'zz' is not a hex string"),
        ({"timeUnixNano": "soon"}, "timeUnixNano: expected an integer, got 'soon'"),
        ({"body": []}, "body: AnyValue must be a JSON object, got list"),
        ({"attributes": [None]}, "attributes[0]: null is not allowed in a list"),
    ],
)
def test_malformed_json_fields_are_400(
    collector: CollectorProcess, table_prefix: str, record: dict, reason: str
) -> None:
    import json

    table = f"{table_prefix}_otel_logs"
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()
    status, headers, answer = post(
        collector, "/v1/logs", body, table, content_type="application/json"
    )
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer)["message"] == (
        "cannot decode the body as an OTLP ExportLogsServiceRequest (JSON): "
        f"resourceLogs[0].scopeLogs[0].logRecords[0].{reason}"
    )
    assert_not_written(collector, table)
