"""Tokens, grants, the secure default, table names that try to escape, TLS, limits, and
secrets kept out of the logs, on HTTP and gRPC."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from tests.conftest import CAPTURES, ROOT, CollectorProcess, distinct_logs, wait_for_rows
from tests.readers import read_both
from tests.test_durability import health

LOGS = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
METRICS = (CAPTURES / "claude-code-2.1.197.metrics.pb").read_bytes()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def add_token(tokens: Path, name: str, *grants: str) -> str:
    args = ["tokens", "add", name, "--tokens-file", str(tokens)]
    for g in grants:
        args += ["--grant", g]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("odc_") and len(token) > 40
    return token


def post(
    proc: CollectorProcess,
    path: str,
    body: bytes,
    table: str | None,
    token: str | None = None,
    **headers: str,
) -> tuple[int, dict[str, str], bytes]:
    h = {"Content-Type": "application/x-protobuf", **headers}
    if table is not None:
        h["X-Databricks-UC-Table-Name"] = table
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(proc.url(path), data=body, headers=h)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def message(body: bytes) -> str:
    return status_pb2.Status.FromString(body).message


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, dict]]:
    root = tmp_path_factory.mktemp("secured")
    tokens_file = root / "tokens.toml"
    tokens = {
        "alice": add_token(tokens_file, "alice", "main.agents.*"),
        "logs_only": add_token(tokens_file, "logs_only", "main.agents.*:logs"),
        "ops": add_token(tokens_file, "ops", "ops.*.*", "main.default.*"),
    }
    proc = CollectorProcess(root / "wh", "--tokens-file", str(tokens_file))
    yield proc, tokens
    proc.stop()


def test_tokens_file_stores_hashes_not_tokens(tmp_path: Path) -> None:
    for name in ("tokens.toml", "tokens.json"):
        path = tmp_path / name
        token = add_token(path, "bob", "main.agents.*", "ops.*.*:logs,metrics")
        text = path.read_text()
        assert token not in text
        assert path.stat().st_mode & 0o077 == 0  # readable by its owner only
        if name.endswith(".json"):
            (entry,) = json.loads(text)["tokens"]
            assert entry["name"] == "bob"
            assert entry["grants"] == ["main.agents.*", "ops.*.*:logs,metrics"]
        else:
            assert 'name = "bob"' in text
            assert 'grants = ["main.agents.*", "ops.*.*:logs,metrics"]' in text
        again = cli("tokens", "add", "bob", "--grant", "x.y.z", "--tokens-file", str(path))
        assert again.returncode == 2
        assert "already" in again.stderr


def test_bad_grant_is_refused(tmp_path: Path) -> None:
    result = cli(
        "tokens", "add", "x", "--grant", "main.*", "--tokens-file", str(tmp_path / "t.toml")
    )
    assert result.returncode == 2
    assert "expected catalog.schema.table" in result.stderr


def test_http_missing_or_unknown_token_is_401(secured: tuple[CollectorProcess, dict]) -> None:
    proc, _ = secured
    for token in (None, "odc_not-a-token"):
        status, headers, body = post(proc, "/v1/logs", LOGS, "main.agents.cc_otel_logs", token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        s = status_pb2.Status.FromString(body)
        assert s.code == code_pb2.UNAUTHENTICATED
    status, _, body = post(proc, "/v1/logs", LOGS, "main.agents.cc_otel_logs", None,
                           Authorization="Basic YWxpY2U6eA==")  # fmt: skip
    assert status == 401
    assert message(body) == "missing bearer token: send 'Authorization: Bearer <token>'"


def test_http_grants(secured: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = secured
    ok = "main.agents.alice_otel_logs"
    assert post(proc, "/v1/logs", LOGS, ok, tokens["alice"])[0] == 200
    assert len(wait_for_rows(proc.table_path(ok), 8)) == 8

    status, _, body = post(proc, "/v1/logs", LOGS, "main.private.x_otel_logs", tokens["alice"])
    assert status == 403
    assert status_pb2.Status.FromString(body).code == code_pb2.PERMISSION_DENIED
    assert message(body) == "token 'alice' may not write logs to table main.private.x_otel_logs"
    assert not proc.table_path("main.private.x_otel_logs").exists()

    # A grant limited to logs lets logs in and keeps metrics out.
    assert post(proc, "/v1/logs", LOGS, "main.agents.l_otel_logs", tokens["logs_only"])[0] == 200
    status, _, body = post(
        proc, "/v1/metrics", METRICS, "main.agents.l_otel_metrics", tokens["logs_only"]
    )
    assert status == 403
    assert "may not write metrics to table main.agents.l_otel_metrics" in message(body)

    # The default table is a table like any other.
    status, _, body = post(proc, "/v1/logs", LOGS, None, tokens["alice"])
    assert status == 403
    assert "main.default.agents_otel_logs" in message(body)
    assert post(proc, "/v1/logs", LOGS, None, tokens["ops"])[0] == 200


def test_grpc_auth_and_grants(secured: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = secured
    stub = logs_service_pb2_grpc.LogsServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}")
    )
    request = ExportLogsServiceRequest.FromString(distinct_logs(LOGS, 77))
    table = ("x-databricks-uc-table-name", "main.agents.grpc_otel_logs")

    with pytest.raises(grpc.RpcError) as info:
        stub.Export(request, metadata=(table,))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.RpcError) as info:
        stub.Export(request, metadata=(table, ("authorization", "Bearer odc_wrong")))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == "unknown bearer token"

    with pytest.raises(grpc.RpcError) as info:
        stub.Export(
            request,
            metadata=(
                ("x-databricks-uc-table-name", "ops.x.y_otel_logs"),
                ("authorization", f"Bearer {tokens['alice']}"),
            ),
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "token 'alice' may not write logs to table ops.x.y_otel_logs"

    stub.Export(request, metadata=(table, ("authorization", f"Bearer {tokens['alice']}")))
    assert len(wait_for_rows(proc.table_path("main.agents.grpc_otel_logs"), 8)) == 8


ESCAPES = [
    "../../etc.passwd.x_otel_logs",
    "main.agents.../x_otel_logs",
    "%2e%2e.%2e%2e.x_otel_logs",
    "/etc/passwd",
    "main./tmp.x_otel_logs",
    "main.agents.x_otel_logs\\..\\..",
    "main.agents." + "a" * 300 + "_otel_logs",
    "\uff4dain.agents.x_otel_logs",  # fullwidth m
    "main.agents.x_otel_logs\u200b",  # zero-width space
    "_wal.agents.x_otel_logs",  # the WAL's own directory
]


@pytest.mark.parametrize("name", ESCAPES)
def test_table_names_cannot_leave_the_warehouse(
    secured: tuple[CollectorProcess, dict], name: str
) -> None:
    proc, tokens = secured
    # urllib sends headers as latin-1: encode the name's UTF-8 bytes that way.
    header = name.encode("utf-8").decode("latin-1")
    status, _, body = post(proc, "/v1/logs", LOGS, header, tokens["ops"])
    assert status == 400
    assert status_pb2.Status.FromString(body).code == code_pb2.INVALID_ARGUMENT
    if not name.isascii():
        return  # gRPC metadata is ASCII: the client library itself refuses to send this
    stub = logs_service_pb2_grpc.LogsServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}")
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Export(
            ExportLogsServiceRequest.FromString(LOGS),
            metadata=(
                ("x-databricks-uc-table-name", name),
                ("authorization", f"Bearer {tokens['ops']}"),
            ),
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    outside = [p for p in proc.warehouse.parent.rglob("*") if "passwd" in p.name or "tmp" == p.name]
    assert outside == []
    assert sorted(p.name for p in proc.warehouse.iterdir()) <= ["_wal", "main", "ops"]


def test_no_token_reaches_the_logs(secured: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = secured
    # Refused and accepted requests alike, with every token, on both transports.
    for token in [*tokens.values(), "odc_not-a-token"]:
        post(proc, "/v1/logs", distinct_logs(LOGS, 5), "main.agents.t_otel_logs", token)
        post(proc, "/v1/logs", LOGS, "nope", token)
    logs = proc.logs()
    assert "request refused" in logs
    for token in [*tokens.values(), "odc_not-a-token"]:
        assert token not in logs
    assert "Bearer odc_" not in logs


def test_secure_default_refuses_an_exposed_listener_without_tokens(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "serve",
            "--http",
            "0.0.0.0:0",
            "--grpc",
            "off",
            "--warehouse",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0:0 without authentication" in result.stderr
    assert "--tokens-file" in result.stderr
    assert "--allow-unauthenticated" in result.stderr


def test_allow_unauthenticated_is_loud(tmp_path: Path) -> None:
    exposed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "serve",
            "--http",
            "0.0.0.0:0",
            "--grpc",
            "off",
            "--warehouse",
            str(tmp_path / "wh2"),
            "--allow-unauthenticated",
            "--workers",
            "1",
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = exposed.stderr.readline()  # type: ignore[union-attr]
            lines.append(line)
            if "collector started" in line:
                break
        text = "".join(lines)
        assert "AUTHENTICATION IS OFF" in text
        assert '"level": "warning"' in text
    finally:
        exposed.terminate()
        exposed.wait(30)


# --- TLS ---------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_with_the_sdk_exporters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these variables override a session's own CA file (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
        OTLPLogExporter as GrpcLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    ca, cert, key = _certificates(tmp_path)
    tokens_file = tmp_path / "tokens.toml"
    token = add_token(tokens_file, "tls", "main.tls.*")
    proc = CollectorProcess(
        tmp_path / "wh", "--tls-cert", str(cert), "--tls-key", str(key),
        "--tokens-file", str(tokens_file),
    )  # fmt: skip
    try:
        exporters = [
            HttpLogExporter(
                endpoint=f"https://localhost:{proc.http_port}/v1/logs",
                certificate_file=str(ca),
                headers={
                    "X-Databricks-UC-Table-Name": "main.tls.https_otel_logs",
                    "Authorization": f"Bearer {token}",
                },
            ),
            GrpcLogExporter(
                endpoint=f"localhost:{proc.grpc_port}",
                credentials=grpc.ssl_channel_credentials(ca.read_bytes()),
                headers=(
                    ("x-databricks-uc-table-name", "main.tls.grpcs_otel_logs"),
                    ("authorization", f"Bearer {token}"),
                ),
            ),
        ]
        from opentelemetry._logs import LogRecord

        for i, exporter in enumerate(exporters):
            provider = LoggerProvider()
            provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
            provider.get_logger("tls").emit(LogRecord(body=f"over tls {i}", timestamp=i + 1))
            provider.shutdown()
        for table, body in (("main.tls.https_otel_logs", "over tls 0"),
                            ("main.tls.grpcs_otel_logs", "over tls 1")):  # fmt: skip
            wait_for_rows(proc.table_path(table), 1)
            assert [r["body"] for r in read_both(proc.table_path(table))] == [body]
        # Plain HTTP to the TLS port does not get in.
        with pytest.raises((urllib.error.URLError, ConnectionError, http_exceptions())):
            urllib.request.urlopen(proc.url("/healthz"), timeout=5)
        # The health command speaks TLS to its own listener when serve's settings say so.
        checked = health(env={
            "COLLECTOR_HTTP": f"0.0.0.0:{proc.http_port}", "COLLECTOR_TLS_CERT": str(cert),
            "COLLECTOR_TLS_KEY": str(key),
        })  # fmt: skip
        assert (checked.returncode, checked.stdout) == (0, "ready: ok\n"), checked.stderr
    finally:
        proc.stop()


def http_exceptions() -> type[Exception]:
    import http.client

    return http.client.HTTPException


# --- limits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(
        tmp_path_factory.mktemp("limited") / "wh",
        "--max-attributes", "4", "--max-value-bytes", "64", "--max-records", "10",
        "--max-concurrent-requests", "1", "--read-timeout", "1", "--max-header-bytes", "4KiB",
    )  # fmt: skip
    yield proc
    proc.stop()


def test_attribute_and_value_limits(limited: CollectorProcess) -> None:
    request = ExportLogsServiceRequest()
    sl = request.resource_logs.add().scope_logs.add()
    record = sl.log_records.add(time_unix_nano=1, dropped_attributes_count=2)
    record.body.string_value = "b" * 100
    for i in range(6):
        kv = record.attributes.add(key=f"k{i}")
        kv.value.string_value = "v" * (10 * i)
    table = "main.limits.a_otel_logs"
    assert post(limited, "/v1/logs", request.SerializeToString(), table)[0] == 200
    (row,) = wait_for_rows(limited.table_path(table), 1)
    assert row["body"] == "b" * 50 + "…[truncated]"  # 64 bytes with the 14-byte marker
    assert row["attributes"] == {"k0": "", "k1": "v" * 10, "k2": "v" * 20, "k3": "v" * 30}
    assert row["dropped_attributes_count"] == 4  # 2 dropped by the sender, 2 by the limit
    with urllib.request.urlopen(limited.url("/metrics")) as answer:
        metrics = answer.read().decode()
    assert "otlp_delta_values_truncated_total 1" in metrics
    assert "otlp_delta_attributes_dropped_total 2" in metrics


def test_too_many_records_is_400(limited: CollectorProcess) -> None:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    for i in range(11):
        metric.gauge.data_points.add(time_unix_nano=i, as_int=i)
    status, _, body = post(limited, "/v1/metrics", request.SerializeToString(),
                           "main.limits.r_otel_metrics")  # fmt: skip
    assert status == 400
    assert message(body) == (
        "the request holds 11 records, more than the limit of 10: send smaller batches"
    )


def _slow_client(proc: CollectorProcess) -> socket.socket:
    """A client that sends its headers and one byte of a 1000-byte body, then nothing."""
    s = socket.create_connection(("127.0.0.1", proc.http_port))
    s.sendall(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 1000\r\n\r\n\n"
    )
    return s


def test_slow_clients_time_out_and_concurrency_is_capped(limited: CollectorProcess) -> None:
    slow = _slow_client(limited)
    try:
        time.sleep(0.3)  # the slow request holds the only place
        status, headers, body = post(limited, "/v1/logs", LOGS, "main.limits.c_otel_logs")
        assert status == 503
        assert message(body) == "too many requests in progress; retry shortly"
        assert headers["Retry-After"] == "1"
        slow.settimeout(10)
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408")
    finally:
        slow.close()
    # Once the slow client is gone, others get in again.
    assert post(limited, "/v1/logs", LOGS, "main.limits.c_otel_logs")[0] == 200


def test_oversized_headers_are_refused(limited: CollectorProcess) -> None:
    status, _, _ = post(limited, "/v1/logs", LOGS, "main.limits.h_otel_logs", X_Big="x" * 5000)
    assert status == 400
    assert post(limited, "/v1/logs", LOGS, "main.limits.h_otel_logs")[0] == 200


def test_log_redaction() -> None:
    from collector.log import redact

    event = {
        "event": "x",
        "authorization": "Bearer odc_secret",
        "reason": "upstream said: Bearer odc_secret2 is bad; send 'Authorization: Bearer <token>'",
        "Token": "abc",
        "count": 3,
    }
    assert redact(None, "info", event) == {
        "event": "x",
        "authorization": "[redacted]",
        "reason": "upstream said: Bearer [redacted] is bad; send 'Authorization: Bearer <token>'",
        "Token": "[redacted]",
        "count": 3,
    }
