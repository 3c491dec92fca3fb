"""The requests a benchmark sends, pre-encoded: each workload is a list of (path, table, body).

- agent-logs: Claude-Code-like log records, 13 attributes each, 512 records per request.
- agent-metrics: Codex-like sums and histograms (15 to 35 bucket bounds), ~500 points a request.
- mixed: the four real captures, replayed with fresh timestamps, each to its own table.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"
WORKLOADS = ("agent-logs", "agent-metrics", "mixed")


@dataclass(frozen=True)
class Request:
    signal: str  # logs | metrics
    table: str
    message: ExportLogsServiceRequest | ExportMetricsServiceRequest
    records: int


def _claude_logs(n_requests: int) -> list[Request]:
    capture = ExportLogsServiceRequest.FromString(
        (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
    )
    template = capture.resource_logs[0].scope_logs[0].log_records[0]  # api_request
    del template.attributes[13:]  # 13 attributes, as the reference workload
    now = time.time_ns()
    out = []
    for r in range(n_requests):
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.CopyFrom(capture.resource_logs[0].resource)
        sl = rl.scope_logs.add()
        sl.scope.CopyFrom(capture.resource_logs[0].scope_logs[0].scope)
        for i in range(512):
            record = sl.log_records.add()
            record.CopyFrom(template)
            record.time_unix_nano = record.observed_time_unix_nano = now + r * 1000 + i
            record.attributes[1].value.string_value = f"session-{r % 50:04d}"
            record.attributes[5].value.int_value = i  # event.sequence
        out.append(Request("logs", "main.bench.cc_otel_logs", request, 512))
    return out


def _codex_metrics(n_requests: int) -> list[Request]:
    capture = ExportMetricsServiceRequest.FromString(
        (CAPTURES / "codex-cli-0.169.0.metrics.pb").read_bytes()
    )
    sm = capture.resource_metrics[0].scope_metrics[0]
    keep = [
        m
        for m in sm.metrics
        if m.WhichOneof("data") == "sum"
        or (
            m.WhichOneof("data") == "histogram"
            and 15 <= len(m.histogram.data_points[0].explicit_bounds) <= 35
        )
    ]
    out = []
    for r in range(n_requests):
        request = ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        rm.resource.CopyFrom(capture.resource_metrics[0].resource)
        target = rm.scope_metrics.add()
        target.scope.CopyFrom(sm.scope)
        points = 0
        copy_no = 0
        while points < 500:
            for m in keep:
                metric = target.metrics.add()
                metric.CopyFrom(m)
                data = getattr(metric, metric.WhichOneof("data"))
                for p in data.data_points:
                    p.time_unix_nano += r * 1_000_000 + copy_no
                points += len(data.data_points)
            copy_no += 1
        out.append(Request("metrics", "main.bench.codex_otel_metrics", request, points))
    return out


def _mixed(n_requests: int) -> list[Request]:
    out = []
    paths = sorted(CAPTURES.glob("*.pb"))
    for r in range(n_requests):
        path = paths[r % len(paths)]
        signal = "metrics" if ".metrics." in path.name else "logs"
        cls = ExportMetricsServiceRequest if signal == "metrics" else ExportLogsServiceRequest
        message = cls.FromString(path.read_bytes())
        records = 0
        shift = r * 1000
        if signal == "logs":
            for rl in message.resource_logs:
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        record.observed_time_unix_nano += shift
                        records += 1
        else:
            for rm in message.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        for p in getattr(metric, metric.WhichOneof("data")).data_points:
                            p.time_unix_nano += shift
                            records += 1
        agent = path.name.split("-")[0]
        out.append(
            Request(signal, f"main.bench.{agent}_mixed_otel_{signal}", copy.copy(message), records)
        )
    return out


def build(workload: str, n_requests: int) -> list[Request]:
    return {"agent-logs": _claude_logs, "agent-metrics": _codex_metrics, "mixed": _mixed}[workload](
        n_requests
    )
