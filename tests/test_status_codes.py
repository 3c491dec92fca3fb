"""Every error the collector can answer, on HTTP and on gRPC, with its status and body."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from tests.conftest import CAPTURES, CollectorProcess, undecodable_logs, wait_for_rows

LOGS = ExportLogsServiceRequest.FromString((CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes())


def grpc_logs(collector: CollectorProcess) -> logs_service_pb2_grpc.LogsServiceStub:
    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    return logs_service_pb2_grpc.LogsServiceStub(channel)


def grpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def retry_delay(error: grpc.RpcError) -> float | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.ToNanoseconds() / 1e9
    return None


def http_post(
    collector: CollectorProcess, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(collector.url(path), data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --- INVALID_ARGUMENT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("main.agents", "table name 'main.agents' must have three parts"),
        ("main.agents.cc_otel_metrics", "is a metrics table: logs must go to a table whose name"),
        ("main.a/b.cc_otel_logs", "'a/b' is not an identifier"),
    ],
)
def test_grpc_invalid_argument(collector: CollectorProcess, table: str, message: str) -> None:
    stub = grpc_logs(collector)
    error = grpc_error(lambda: stub.Export(LOGS, metadata=(("x-databricks-uc-table-name", table),)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert retry_delay(error) is None  # a permanent error carries no retry advice


def test_grpc_undecodable_attribute_is_invalid_argument(
    collector: CollectorProcess, table_prefix: str
) -> None:
    table = f"{table_prefix}_otel_logs"
    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    export = channel.unary_unary(  # raw bytes: a generated stub could not send them
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        request_serializer=lambda body: body,
        response_deserializer=ExportLogsServiceResponse.FromString,
    )
    body = undecodable_logs("attribute", "utf-8")
    error = grpc_error(lambda: export(body, metadata=(("x-databricks-uc-table-name", table),)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "an attribute is not a valid OTLP KeyValue" in error.details()
    assert not collector.table_path(table).exists()


def test_grpc_partial_success(collector: CollectorProcess, table_prefix: str) -> None:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.sum.data_points.add(time_unix_nano=5, as_int=1)
    metric.sum.data_points.add(time_unix_nano=6)
    stub = metrics_service_pb2_grpc.MetricsServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    )
    table = f"{table_prefix}_otel_metrics"
    answer = stub.Export(request, metadata=(("x-databricks-uc-table-name", table),))
    assert answer.partial_success.rejected_data_points == 1
    assert answer.partial_success.error_message == "metric 'm': number data point has no value"
    assert len(wait_for_rows(collector.table_path(table), 1)) == 1


def test_grpc_without_table_uses_the_default_prefix(collector: CollectorProcess) -> None:
    answer = grpc_logs(collector).Export(LOGS)
    assert answer == ExportLogsServiceResponse()
    rows = wait_for_rows(collector.table_path("main.default.agents_otel_logs"), 8)
    assert len(rows) >= 8


# --- RESOURCE_EXHAUSTED / 413 --------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path_factory.mktemp("small") / "wh", "--max-request-bytes", "3000")
    yield proc
    proc.stop()


def test_grpc_oversize_is_resource_exhausted(small: CollectorProcess) -> None:
    error = grpc_error(lambda: grpc_logs(small).Export(LOGS))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in error.details()


def test_grpc_oversize_after_decompression_is_resource_exhausted(small: CollectorProcess) -> None:
    # ~4.3 KB of protobuf that gzip squeezes under the 3000-byte cap: the cap is on the inflated size.
    stub = grpc_logs(small)
    error = grpc_error(lambda: stub.Export(LOGS, compression=grpc.Compression.Gzip))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_http_oversize_json_body_is_413_in_json(small: CollectorProcess) -> None:
    body = json.dumps({"resourceLogs": [{"x": "y" * 5000}]}).encode()
    status, headers, answer = http_post(
        small, "/v1/logs", gzip.compress(body),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )  # fmt: skip
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer) == {
        "code": code_pb2.RESOURCE_EXHAUSTED,
        "message": "request body exceeds the limit of 3000 bytes after decompression",
    }


# --- UNAVAILABLE / 503: backpressure --------------------------------------------------------


def test_backpressure_is_retryable_on_both_transports(tmp_path: Path) -> None:
    # Buffers hold at most 1 byte and flush hourly: the first request fills them.
    proc = CollectorProcess(tmp_path / "wh", "--max-buffer-bytes", "1", "--flush-interval", "3600")
    try:
        table = "main.agents.cc_otel_logs"
        body = LOGS.SerializeToString()
        headers = {"Content-Type": "application/x-protobuf", "X-Databricks-UC-Table-Name": table}
        assert http_post(proc, "/v1/logs", body, headers)[0] == 200
        status, answer_headers, answer = http_post(proc, "/v1/logs", body, headers)
        assert status == 503
        assert answer_headers["Retry-After"] == "3600"
        s = status_pb2.Status.FromString(answer)
        assert s.code == code_pb2.UNAVAILABLE
        assert s.message == "the collector is at its buffer limit; retry later"

        error = grpc_error(
            lambda: grpc_logs(proc).Export(LOGS, metadata=(("x-databricks-uc-table-name", table),))
        )
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert retry_delay(error) == 3600.0
    finally:
        assert proc.stop() == 0
    # What was accepted is stored at shutdown; what was pushed back is not.
    assert len(wait_for_rows(proc.table_path("main.agents.cc_otel_logs"), 8)) == 8


# --- UNAVAILABLE / 503: storage -------------------------------------------------------------


def test_unwritable_warehouse_is_retryable(collector: CollectorProcess, table_prefix: str) -> None:
    catalog, schema, prefix = table_prefix.split(".")
    # A file where the schema directory should be: the table can be neither read nor created.
    blocked = collector.warehouse / catalog / f"{schema}_blocked"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a directory")
    table = f"{catalog}.{schema}_blocked.{prefix}_otel_logs"
    status, headers, answer = http_post(
        collector, "/v1/logs", LOGS.SerializeToString(),
        {"Content-Type": "application/x-protobuf", "X-Databricks-UC-Table-Name": table},
    )  # fmt: skip
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    s = status_pb2.Status.FromString(answer)
    assert s.code == code_pb2.UNAVAILABLE
    assert s.message.startswith(f"storage unavailable for table {table}: ")

    error = grpc_error(
        lambda: grpc_logs(collector).Export(LOGS, metadata=(("x-databricks-uc-table-name", table),))
    )
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert retry_delay(error) is not None
