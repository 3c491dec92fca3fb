"""The real OpenTelemetry JS SDK and its OTLP/HTTP JSON exporters (as Gemini CLI sends), end to end.

``tests/node/send.mjs`` sends a fixed set of logs, metrics and spans with
``@opentelemetry/exporter-{logs,metrics,trace}-otlp-http`` (JSON is those exporters' encoding) to
the collector, and prints one JSON object: each request it sent (path, headers, decoded JSON
body), each answer, and the exporters' result codes. The Node packages are pinned in
``tests/node/package-lock.json`` and installed here with ``npm ci`` when missing or stale.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import pytest

from tests.conftest import NODE_DIR, CollectorProcess, node_modules, wait_for_rows
from tests.readers import read_both

# The constants of send.mjs: change both together.
TRACE_ID = "5b8efff798038103d269b633813fc60c"
PARENT_SPAN_ID = "eee19b7ec3c1b174"
CHILD_SPAN_ID = "eee19b7ec3c1b173"
LOG_SPAN_ID = "00f067aa0ba902b7"
LINK_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
LINK_SPAN_ID = "53995c3f42cd8ad8"
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z in nanoseconds

RESOURCE_ROW = {
    "attributes": {
        "service.name": "gemini-cli",
        "service.version": "0.61.0",
        "session.id": "f3b1c2d4-0000-4000-8000-000000000001",
        "host.cpu.count": "8",
    },
    "dropped_attributes_count": 0,
}
RESOURCE_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
SCOPE_ROW = {
    "name": "gemini-cli",
    "version": "0.61.0",
    "attributes": {},
    "dropped_attributes_count": 0,
}
SCOPE_SCHEMA_URL = "https://opentelemetry.io/schemas/1.36.0"
NULL_TYPES = {
    "gauge": None,
    "sum": None,
    "histogram": None,
    "exponential_histogram": None,
    "summary": None,
}
# W3C sampled flag, plus the OTLP "has is_remote" bit (0x100) and "is remote" bit (0x200).
SAMPLED_LOCAL = 0x101
SAMPLED_REMOTE = 0x301


def _run(args: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except FileNotFoundError as e:
        pytest.fail(f"{args[0]} is not installed (CI has Node.js and npm): {e}")


@pytest.fixture(scope="module")
def node() -> str:
    return node_modules()


@pytest.fixture(scope="module")
def prefix() -> str:
    """A fresh ``catalog.schema.prefix`` for this module (one send serves all its tests)."""
    return f"main.tests.t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def sent(node: str, collector: CollectorProcess, prefix: str) -> dict[str, Any]:
    """Run send.mjs once against the collector; its report of what it sent and what came back."""
    # The exporters read OTEL_* variables (headers, endpoints, timeouts): none of the caller's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = _run(
        [node, str(NODE_DIR / "send.mjs"), "--url", collector.url(""), "--prefix", prefix],
        timeout=60,
        cwd=NODE_DIR,
        env=env,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"send.mjs exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    report["returncode"] = done.returncode
    report["stderr"] = done.stderr
    return report


def _request(sent: dict[str, Any], path: str) -> dict[str, Any]:
    (request,) = [r for r in sent["requests"] if r["path"] == path]
    return request


def test_exporters_succeed_and_collector_answers_json(
    sent: dict[str, Any], prefix: str, collector: CollectorProcess
) -> None:
    assert sent["problems"] == [], f"{sent['stderr']}\n{collector.logs()[-3000:]}"
    assert sent["ok"] is True
    assert sent["returncode"] == 0
    assert sent["results"] == {
        signal: [{"code": "SUCCESS", "error": None}] for signal in ("logs", "metrics", "traces")
    }
    user_agent = sent["requests"][0]["request_headers"]["user-agent"]
    assert user_agent.startswith("OTel-OTLP-Exporter-JavaScript/0.223.0")
    assert [(r["path"], r["request_headers"]) for r in sent["requests"]] == [
        (
            path,
            {
                "content-type": "application/json",
                "content-encoding": encoding,
                "x-databricks-uc-table-name": f"{prefix}_otel_{suffix}",
                "user-agent": user_agent,
            },
        )
        for path, encoding, suffix in [
            ("/v1/logs", None, "logs"),
            ("/api/2.0/otel/v1/metrics", "gzip", "metrics"),
            ("/v1/traces", None, "spans"),
        ]
    ]
    for r in sent["requests"]:
        assert r["status"] == 200, r
        # A JSON request gets a JSON answer: an empty ExportXServiceResponse (full success).
        assert r["response_content_type"].split(";")[0].strip() == "application/json", r
        assert r["response_json"] == {}, r


def test_request_bodies_use_the_otlp_json_forms(sent: dict[str, Any]) -> None:
    """What makes OTLP/JSON differ from proto3 JSON is in play: if the SDK changes, we notice."""
    logs = _request(sent, "/v1/logs")["request_body"]
    record = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert record["traceId"] == TRACE_ID  # hex, not base64
    assert record["spanId"] == LOG_SPAN_ID
    assert record["timeUnixNano"] == str(T0 + 123_456_789)  # uint64 as a string
    assert record["severityNumber"] == 13  # enums as integers
    assert {"key": "duration_ms", "value": {"intValue": 42}} in record["attributes"]  # a number
    assert {"key": "blob", "value": {"bytesValue": "3q2+7w=="}} in record["attributes"]
    no_body = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"][2]
    assert no_body["body"] == {}  # an unset body is still written, as an empty AnyValue
    assert "severityNumber" not in no_body
    spans = _request(sent, "/v1/traces")["request_body"]
    (child, parent) = spans["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert (child["kind"], child["status"]["code"], parent["status"]) == (3, 2, {"code": 0})
    assert "parentSpanId" not in parent
    metrics = _request(sent, "/api/2.0/otel/v1/metrics")["request_body"]
    (scope,) = metrics["resourceMetrics"][0]["scopeMetrics"]
    assert "attributes" not in scope["scope"]
    assert {m["name"]: m.get("sum", {}).get("aggregationTemporality") for m in scope["metrics"]}[
        "gemini_cli.token.usage"
    ] == 2


LOGS_COMMON = {
    "dropped_attributes_count": 0,
    "resource": RESOURCE_ROW,
    "resource_schema_url": RESOURCE_SCHEMA_URL,
    "instrumentation_scope": SCOPE_ROW,
    "log_schema_url": SCOPE_SCHEMA_URL,
}


def _log_rows(collector: CollectorProcess, prefix: str) -> list[dict[str, Any]]:
    path = collector.table_path(f"{prefix}_otel_logs")
    wait_for_rows(path, 3)
    rows = read_both(path, key=lambda r: r["time_unix_nano"])
    assert len(rows) == 3
    return rows


def test_logs_land_exactly(sent: dict[str, Any], collector: CollectorProcess, prefix: str) -> None:
    assert _log_rows(collector, prefix)[:2] == [
        {
            "event_name": "gemini_cli.tool_call",
            "trace_id": TRACE_ID,
            "span_id": LOG_SPAN_ID,
            "time_unix_nano": T0 + 123_456_789,
            "observed_time_unix_nano": T0 + 123_456_999,
            "severity_number": "SEVERITY_NUMBER_WARN",
            "severity_text": "WARN",
            "body": "Tool call: run_shell_command",
            "attributes": {
                "function_name": "run_shell_command",
                "duration_ms": "42",
                "ratio": "0.25",
                "success": "true",
                "mixed": '["a",1]',
                "blob": "3q2+7w==",
            },
            "flags": 1,
            **LOGS_COMMON,
        },
        {
            "event_name": None,
            "trace_id": None,
            "span_id": None,
            "time_unix_nano": T0 + 1_000_000_005,
            "observed_time_unix_nano": T0 + 1_000_000_006,
            "severity_number": "SEVERITY_NUMBER_INFO",
            "severity_text": "INFO",
            # kvlist → JSON object, keys sorted, nested values keep their JSON types.
            "body": '{"nested":{"ok":false,"tags":["x",2.5]},"prompt_length":12}',
            "attributes": {
                "event.name": "gemini_cli.user_prompt",
                "big": "9007199254740991",
                "neg": "-3.5e-7",  # ES6 / Go AsString exponent form, not Python's "e-07"
            },
            "flags": 0,
            **LOGS_COMMON,
        },
    ]


def test_log_without_body_has_null_body(
    sent: dict[str, Any], collector: CollectorProcess, prefix: str
) -> None:
    # The JS JSON exporter writes an unset body as `"body": {}`; it is NULL, as with protobuf.
    assert _log_rows(collector, prefix)[2] == {
        "event_name": "gemini_cli.session_end",
        "trace_id": None,
        "span_id": None,
        "time_unix_nano": T0 + 2_000_000_000,
        "observed_time_unix_nano": T0 + 2_000_000_001,
        "severity_number": "SEVERITY_NUMBER_UNSPECIFIED",
        "severity_text": "",
        "body": None,
        "attributes": {},
        "flags": 0,
        **LOGS_COMMON,
    }


def _points(sent: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The data points as sent, by metric name: for the times that the SDK chose."""
    body = _request(sent, "/api/2.0/otel/v1/metrics")["request_body"]
    points: dict[str, list[dict[str, Any]]] = {}
    for rm in body["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                data = next(
                    m[k] for k in ("sum", "gauge", "histogram", "exponentialHistogram") if k in m
                )
                points[m["name"]] = data["dataPoints"]
    return points


def _times(point: dict[str, Any]) -> dict[str, int]:
    return {
        "start_time_unix_nano": int(point["startTimeUnixNano"]),
        "time_unix_nano": int(point["timeUnixNano"]),
    }


def _metric_row(name: str, description: str, unit: str, metric_type: str, value: dict) -> dict:
    return {
        "name": name,
        "description": description,
        "unit": unit,
        "metric_type": metric_type,
        **NULL_TYPES,
        metric_type: value,
        "metadata": {},
        "resource": RESOURCE_ROW,
        "resource_schema_url": RESOURCE_SCHEMA_URL,
        "instrumentation_scope": SCOPE_ROW,
        "metric_schema_url": SCOPE_SCHEMA_URL,
    }


def test_metrics_land_exactly(
    sent: dict[str, Any], collector: CollectorProcess, prefix: str
) -> None:
    path = collector.table_path(f"{prefix}_otel_metrics")
    wait_for_rows(path, 5)
    rows = read_both(
        path,
        key=lambda r: (r["name"], json.dumps(r["sum"] and r["sum"]["attributes"], sort_keys=True)),
    )
    p = _points(sent)
    exp = p["gemini_cli.tool.call.latency"][0]
    assert (exp["scale"], exp["positive"]["offset"]) == (7, 127)  # 2 and 4 at the SDK's scale
    assert rows == [
        _metric_row(
            "gemini_cli.api.request.latency",
            "Latency of API requests in milliseconds.",
            "ms",
            "histogram",
            {
                **_times(p["gemini_cli.api.request.latency"][0]),
                "count": 4,
                "sum": 5555.0,
                "bucket_counts": [1, 1, 1, 1],
                "explicit_bounds": [10.0, 100.0, 1000.0],
                "exemplars": [],
                "attributes": {"model": "gemini-2.5-pro", "status_code": "200"},
                "flags": 0,
                "min": 5.0,
                "max": 5000.0,
                "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
            },
        ),
        _metric_row(
            "gemini_cli.context.fill",
            "",
            "1",
            "gauge",
            {
                **_times(p["gemini_cli.context.fill"][0]),
                "value": 0.25,
                "exemplars": [],
                "attributes": {"session.id": "s1", "streaming": "false"},
                "flags": 0,
            },
        ),
        *(
            _metric_row(
                "gemini_cli.token.usage",
                "Counts the total number of tokens used.",
                "{token}",
                "sum",
                {
                    **_times(point),
                    "value": value,
                    "exemplars": [],
                    "attributes": {"model": "gemini-2.5-pro", "type": kind},
                    "flags": 0,
                    "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                    "is_monotonic": True,
                },
            )
            for point, kind, value in zip(
                p["gemini_cli.token.usage"], ("input", "output"), (42.0, 7.0), strict=True
            )
        ),
        _metric_row(
            "gemini_cli.tool.call.latency",
            "",
            "s",
            "exponential_histogram",
            {
                "attributes": {},
                **_times(exp),
                "count": 2,
                "sum": 6.0,
                "scale": 7,
                "zero_count": 0,
                "positive_bucket": {"offset": 127, "bucket_counts": [1] + [0] * 127 + [1]},
                "negative_bucket": {"offset": 0, "bucket_counts": []},
                "flags": 0,
                "exemplars": [],
                "min": 2.0,
                "max": 4.0,
                "zero_threshold": 0.0,
                "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
            },
        ),
    ]


def test_spans_land_exactly(sent: dict[str, Any], collector: CollectorProcess, prefix: str) -> None:
    path = collector.table_path(f"{prefix}_otel_spans")
    wait_for_rows(path, 2)
    rows = read_both(path, key=lambda r: r["start_time_unix_nano"])
    common = {
        "trace_id": TRACE_ID,
        "trace_state": "",
        "flags": SAMPLED_LOCAL,
        "dropped_attributes_count": 0,
        "dropped_events_count": 0,
        "dropped_links_count": 0,
        "resource": RESOURCE_ROW,
        "resource_schema_url": RESOURCE_SCHEMA_URL,
        "instrumentation_scope": SCOPE_ROW,
        "span_schema_url": SCOPE_SCHEMA_URL,
    }
    assert rows == [
        {
            "span_id": PARENT_SPAN_ID,
            "parent_span_id": None,
            "name": "gemini_cli.agent.turn",
            "kind": "SPAN_KIND_INTERNAL",
            "start_time_unix_nano": T0,
            "end_time_unix_nano": T0 + 4_000_000,
            "attributes": {"turn.index": "3", "interactive": "true"},
            "events": [],
            "links": [],
            "status": {"message": "", "code": "STATUS_CODE_UNSET"},
            **common,
        },
        {
            "span_id": CHILD_SPAN_ID,
            "parent_span_id": PARENT_SPAN_ID,
            "name": "POST /v1beta/models/gemini-2.5-pro:generateContent",
            "kind": "SPAN_KIND_CLIENT",
            "start_time_unix_nano": T0 + 1_000_000,
            "end_time_unix_nano": T0 + 3_000_000,
            "attributes": {
                "http.request.method": "POST",
                "http.response.status_code": "429",
                "retry.ratio": "0.5",
                "gen_ai.request.model": "gemini-2.5-pro",
            },
            "events": [
                {
                    "time_unix_nano": T0 + 2_000_000,
                    "name": "retry",
                    "attributes": {"attempt": "2", "backoff.ms": "1.5"},
                    "dropped_attributes_count": 0,
                }
            ],
            "links": [
                {
                    "trace_id": LINK_TRACE_ID,
                    "span_id": LINK_SPAN_ID,
                    "trace_state": "vendor=opaque",
                    "attributes": {"link.kind": "previous_turn"},
                    "dropped_attributes_count": 0,
                    "flags": SAMPLED_REMOTE,
                }
            ],
            "status": {
                "message": "RESOURCE_EXHAUSTED: quota exceeded",
                "code": "STATUS_CODE_ERROR",
            },
            **common,
        },
    ]
