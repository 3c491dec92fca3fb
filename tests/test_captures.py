"""The real agent payloads in shared/captures, posted as the agents post them, land as exact rows."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from tests.conftest import CAPTURES, DEFAULT_BOUNDS, CollectorProcess, wait_for_rows
from tests.readers import read_both

CLAUDE_USER = "8319f760183789d02d857aabd5d1e34347960d8dadbeb73d3622c19fc0cf3911"
CLAUDE_SESSION = "e8c993be-edd9-4402-9401-923b832856d0"
CLAUDE_RESOURCE = {
    "attributes": {
        "host.arch": "amd64",
        "os.type": "linux",
        "os.version": "6.18.44-fc-v657",
        "service.name": "claude-code",
        "service.version": "2.1.197",
    },
    "dropped_attributes_count": 0,
}


def post_chunked(
    collector: CollectorProcess, path: str, body: bytes, table: str
) -> tuple[int, bytes]:
    """POST the way Claude Code's exporter does: chunked, no Content-Length."""

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    conn = http.client.HTTPConnection("127.0.0.1", collector.http_port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=chunks(),
            headers={
                "Content-Type": "application/x-protobuf",
                "Authorization": "Bearer dapi-not-a-real-token",
                "X-Databricks-UC-Table-Name": table,
                "User-Agent": "OTel-OTLP-Exporter-JavaScript/0.208.0",
            },
            encode_chunked=True,
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _count(path: Path) -> int:
    body = path.read_bytes()
    if path.name.endswith(".metrics.pb"):
        m = ExportMetricsServiceRequest.FromString(body)
        return sum(
            len(getattr(metric, metric.WhichOneof("data")).data_points)
            for rm in m.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        )
    logs = ExportLogsServiceRequest.FromString(body)
    return sum(len(sl.log_records) for rl in logs.resource_logs for sl in rl.scope_logs)


def _land(collector: CollectorProcess, table_prefix: str, capture: str) -> list[dict]:
    signal = "metrics" if capture.endswith(".metrics.pb") else "logs"
    table = f"{table_prefix}_otel_{signal}"
    body = (CAPTURES / capture).read_bytes()
    status, answer = post_chunked(collector, f"/api/2.0/otel/v1/{signal}", body, table)
    assert status == 200
    assert answer == b""  # an Export…ServiceResponse with nothing set: full success
    expected = _count(CAPTURES / capture)
    path = collector.table_path(table)
    wait_for_rows(path, expected)
    rows = read_both(path)  # one request, one flush, one file: the request's order
    assert len(rows) == expected
    return rows


def test_claude_code_logs(collector: CollectorProcess, table_prefix: str) -> None:
    rows = _land(collector, table_prefix, "claude-code-2.1.197.logs.pb")
    assert len(rows) == 8
    assert rows[0] == {
        "event_name": None,  # Claude Code leaves LogRecord.event_name empty
        "trace_id": None,
        "span_id": None,
        "time_unix_nano": 1795531196388000000,
        "observed_time_unix_nano": 1795531196388000000,
        "severity_number": "SEVERITY_NUMBER_UNSPECIFIED",
        "severity_text": "",
        "body": "claude_code.api_request",
        "attributes": {
            "user.id": CLAUDE_USER,
            "session.id": CLAUDE_SESSION,
            "terminal.type": "xterm",
            "event.name": "api_request",
            "event.timestamp": "2026-11-24T14:39:56.387Z",
            "event.sequence": "0",
            "model": "databricks-claude-opus-4-6",
            "input_tokens": "25",
            "output_tokens": "5",
            "cache_read_tokens": "0",
            "cache_creation_tokens": "0",
            "cost_usd": "0.00025",
            "cost_usd_micros": "250",
            "duration_ms": "51",
            "speed": "normal",
            "query_source": "generate_session_title",
            "effort": "high",
        },
        "dropped_attributes_count": 0,
        "flags": 0,
        "resource": CLAUDE_RESOURCE,
        "resource_schema_url": "",
        "instrumentation_scope": {
            "name": "com.anthropic.claude_code.events",
            "version": "2.1.197",
            "attributes": {},
            "dropped_attributes_count": 0,
        },
        "log_schema_url": "",
    }
    assert [r["body"] for r in rows] == [
        "claude_code.api_request",
        "claude_code.assistant_response",
        "claude_code.user_prompt",
        "claude_code.api_request",
        "claude_code.tool_decision",
        "claude_code.tool_result",
        "claude_code.api_request",
        "claude_code.assistant_response",
    ]
    assert [r["attributes"]["event.name"] for r in rows] == [
        b.removeprefix("claude_code.") for b in (r["body"] for r in rows)
    ]
    assert all(r["resource"] == CLAUDE_RESOURCE for r in rows)


def test_codex_logs(collector: CollectorProcess, table_prefix: str) -> None:
    rows = _land(collector, table_prefix, "codex-cli-0.169.0.logs.pb")
    assert len(rows) == 15
    first = rows[0]
    assert first["event_name"] == "event otel/src/events/session_telemetry.rs:703"
    assert first["body"] is None  # Codex sends no body
    assert first["severity_number"] == "SEVERITY_NUMBER_INFO"
    assert first["severity_text"] == "INFO"
    assert first["time_unix_nano"] == 0
    assert first["observed_time_unix_nano"] == 1795529073053651771
    attrs = first["attributes"]
    assert attrs["event.name"] == "codex.conversation_starts"
    # Bool attributes become "true" / "false"; an empty string stays empty.
    assert attrs["auth.env_openai_api_key_present"] == "false"
    assert attrs["auth.env_codex_api_key_enabled"] == "true"
    assert attrs["mcp_servers"] == ""
    assert len(attrs) == 20
    assert first["resource"]["attributes"]["service.name"] == "codex_exec"
    assert first["instrumentation_scope"] == {
        "name": "codex_otel.log_only",
        "version": "",
        "attributes": {},
        "dropped_attributes_count": 0,
    }
    startup = rows[1]
    assert startup["attributes"]["event.name"] == "codex.startup_phase"
    assert startup["attributes"]["duration_ms"] == "22"
    last = rows[-1]
    assert last["severity_number"] == "SEVERITY_NUMBER_DEBUG"
    assert last["body"] == "flushing OTEL metrics"


def test_claude_code_metrics(collector: CollectorProcess, table_prefix: str) -> None:
    rows = _land(collector, table_prefix, "claude-code-2.1.197.metrics.pb")
    assert len(rows) == 15
    assert {r["metric_type"] for r in rows} == {"sum"}
    for r in rows:
        assert r["gauge"] is r["histogram"] is r["exponential_histogram"] is r["summary"] is None
        assert r["sum"]["aggregation_temporality"] == "AGGREGATION_TEMPORALITY_DELTA"
        assert r["resource"] == CLAUDE_RESOURCE
        assert r["instrumentation_scope"]["name"] == "com.anthropic.claude_code"
        assert r["metadata"] == {}
    assert rows[0] == {
        "name": "claude_code.session.count",
        "description": "Count of CLI sessions started",
        "unit": "",
        "metric_type": "sum",
        "gauge": None,
        "sum": {
            "start_time_unix_nano": 1795531196312000000,
            "time_unix_nano": 1795531196495000000,
            "value": 1.0,
            "exemplars": [],
            "attributes": {
                "user.id": CLAUDE_USER,
                "session.id": CLAUDE_SESSION,
                "terminal.type": "xterm",
                "start_type": "fresh",
            },
            "flags": 0,
            "aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA",
            "is_monotonic": True,
        },
        "histogram": None,
        "exponential_histogram": None,
        "summary": None,
        "metadata": {},
        "resource": CLAUDE_RESOURCE,
        "resource_schema_url": "",
        "instrumentation_scope": {
            "name": "com.anthropic.claude_code",
            "version": "2.1.197",
            "attributes": {},
            "dropped_attributes_count": 0,
        },
        "metric_schema_url": "",
    }
    tokens = [
        (r["sum"]["attributes"]["type"], r["sum"]["value"])
        for r in rows
        if r["name"] == "claude_code.token.usage"
    ]
    assert tokens == [
        ("input", 25.0),
        ("output", 5.0),
        ("cacheRead", 0.0),
        ("cacheCreation", 0.0),
        ("input", 50.0),
        ("output", 45.0),
        ("cacheRead", 0.0),
        ("cacheCreation", 0.0),
    ]
    cost = [r for r in rows if r["name"] == "claude_code.cost.usage"]
    assert [r["unit"] for r in cost] == ["USD", "USD"]
    assert [r["sum"]["value"] for r in cost] == [0.00025, 0.0013750000000000001]


def test_codex_metrics(collector: CollectorProcess, table_prefix: str) -> None:
    rows = _land(collector, table_prefix, "codex-cli-0.169.0.metrics.pb")
    assert len(rows) == 183
    assert sum(r["metric_type"] == "histogram" for r in rows) == 125
    assert sum(r["metric_type"] == "sum" for r in rows) == 58
    assert len({r["name"] for r in rows}) == 52
    usage = next(r for r in rows if r["name"] == "codex.turn.token_usage")
    assert usage["sum"] is None
    assert usage["histogram"] == {
        "start_time_unix_nano": 1795529073142068723,
        "time_unix_nano": 1795529073154621435,
        "count": 1,
        "sum": 30.0,
        "bucket_counts": [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "explicit_bounds": DEFAULT_BOUNDS,
        "exemplars": [],
        "attributes": {
            "app.version": "0.169.0",
            "model": "databricks-gpt-5-2",
            "originator": "codex_exec",
            "session_source": "exec",
            "tmp_mem_enabled": "false",
            "token_type": "input",
        },
        "flags": 0,
        "min": 30.0,
        "max": 30.0,
        "aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA",
    }
    widest = max(rows, key=lambda r: len((r["histogram"] or {}).get("explicit_bounds", [])))
    assert len(widest["histogram"]["explicit_bounds"]) == 513
    assert len(widest["histogram"]["bucket_counts"]) == 514
    assert widest["resource"]["attributes"]["service.name"] == "codex_exec"
    assert widest["instrumentation_scope"]["name"] == "codex"


@pytest.mark.parametrize("prefix", ["", "/api/2.0/otel"])
def test_both_path_families_accept_the_capture(
    collector: CollectorProcess, table_prefix: str, prefix: str
) -> None:
    body = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
    table = f"{table_prefix}_otel_logs"
    status, _ = post_chunked(collector, f"{prefix}/v1/logs", body, table)
    assert status == 200
    assert len(wait_for_rows(collector.table_path(table), 8)) == 8
