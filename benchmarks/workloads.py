"""The requests a benchmark sends, pre-encoded: each workload is a list of (path, table, body).

- agent-logs: Claude Code's events as its 2.1.197 capture has them (api requests, responses,
  prompts, tool decisions and results; 9 to 18 attributes), 512 records per request from one
  session, with what varies per record in real batches varying: timestamps, sequence numbers,
  tokens, cost, durations, prompt and tool-use ids, sizes. Session, user, model, terminal and
  resource repeat within a request; 50 sessions of 25 users across requests.
- agent-logs-repeated: one api_request record 512 times, 13 attributes, only ``event.sequence``
  changing: the workload of earlier figures, for comparison. It flatters value caches.
- high-cardinality: agent-logs with every attribute value distinct, strings included.
- agent-metrics: Codex-like sums and histograms (15 to 35 bucket bounds), ~500 points a request,
  each point with its own value, counts and timestamps.
- mixed: the four real captures, replayed with fresh timestamps, each to its own table.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"
WORKLOADS = ("agent-logs", "agent-logs-repeated", "high-cardinality", "agent-metrics", "mixed")
RECORDS_PER_REQUEST = 512
_SESSIONS = 50


@dataclass(frozen=True)
class Request:
    signal: str  # logs | metrics
    table: str
    message: ExportLogsServiceRequest | ExportMetricsServiceRequest
    records: int

    def otlp_json(self) -> bytes:
        """The request as exporters write OTLP/JSON: camelCase, hex ids, int64 as strings."""
        tree = MessageToDict(self.message)

        def hexify(node: object) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("traceId", "spanId") and isinstance(v, str):
                        node[k] = base64.b64decode(v).hex()
                    else:
                        hexify(v)
            elif isinstance(node, list):
                for v in node:
                    hexify(v)

        hexify(tree)
        return json.dumps(tree, separators=(",", ":")).encode()


def _claude_capture() -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest.FromString(
        (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
    )


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


def _vary(record: LogRecord, rnd: random.Random, at: int, sequence: int, prompt: str) -> None:
    """What a real agent changes from one event to the next (performance-notes.md)."""
    record.time_unix_nano = record.observed_time_unix_nano = at
    for a in record.attributes:
        v = a.value
        match a.key:
            case "event.timestamp":
                v.string_value = _iso(at)
            case "event.sequence":
                v.int_value = sequence
            case "prompt.id":
                v.string_value = prompt
            case "input_tokens" | "cache_creation_tokens":
                v.int_value = rnd.randrange(1, 40_000)
            case "output_tokens" | "response_length":
                v.int_value = rnd.randrange(1, 8_000)
            case "cache_read_tokens":
                v.int_value = rnd.randrange(0, 200_000)
            case "cost_usd":
                micros = rnd.randrange(10, 900_000)
                v.double_value = micros / 1e6
            case "cost_usd_micros":
                v.int_value = rnd.randrange(10, 900_000)
            case "duration_ms":
                ms = rnd.randrange(5, 60_000)
                if v.HasField("string_value"):
                    v.string_value = str(ms)
                else:
                    v.int_value = ms
            case "tool_use_id":
                v.string_value = f"toolu_{rnd.getrandbits(96):024x}"
            case "prompt_length" | "tool_input_size_bytes" | "tool_result_size_bytes":
                v.string_value = str(rnd.randrange(1, 100_000))


def agent_logs(
    n_requests: int,
    distinct: bool = False,
    *,
    seed: int = 16,
    start_ns: int | None = None,
    step_ns: int = 7_000_000,
) -> list[Request]:
    """The agent-logs workload; ``seed`` draws other sessions and values (the 25 users stay),
    records ``step_ns`` apart from ``start_ns`` (now)."""
    capture = _claude_capture()
    rl0 = capture.resource_logs[0]
    templates = list(rl0.scope_logs[0].log_records)
    rnd = random.Random(16)
    users = [f"{rnd.getrandbits(256):064x}" for _ in range(_SESSIONS // 2)]
    rnd = random.Random(seed) if seed != 16 else rnd
    now = time.time_ns() if start_ns is None else start_ns
    out = []
    for r in range(n_requests):
        session = str(uuid.UUID(int=rnd.getrandbits(128)))
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.CopyFrom(rl0.resource)
        sl = rl.scope_logs.add()
        sl.scope.CopyFrom(rl0.scope_logs[0].scope)
        prompt = ""
        for i in range(RECORDS_PER_REQUEST):
            record = sl.log_records.add()
            record.CopyFrom(templates[i % len(templates)])
            if i % len(templates) == 0:
                prompt = str(uuid.UUID(int=rnd.getrandbits(128)))
            at = now + (r * RECORDS_PER_REQUEST + i) * step_ns + rnd.randrange(1_000_000)
            _vary(record, rnd, at, i, prompt)
            for a in record.attributes:
                if a.key == "session.id":
                    a.value.string_value = session
                elif a.key == "user.id":
                    a.value.string_value = users[r % len(users)]
                elif distinct and a.value.HasField("string_value"):
                    a.value.string_value = f"{a.value.string_value}-{rnd.getrandbits(48):012x}"
        table = "high_card" if distinct else "cc"
        out.append(Request("logs", f"main.bench.{table}_otel_logs", request, RECORDS_PER_REQUEST))
    return out


def _high_cardinality(n_requests: int) -> list[Request]:
    return agent_logs(n_requests, distinct=True)


def _repeated_logs(n_requests: int) -> list[Request]:
    capture = _claude_capture()
    template = capture.resource_logs[0].scope_logs[0].log_records[0]  # api_request
    del template.attributes[13:]
    now = time.time_ns()
    out = []
    for r in range(n_requests):
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.CopyFrom(capture.resource_logs[0].resource)
        sl = rl.scope_logs.add()
        sl.scope.CopyFrom(capture.resource_logs[0].scope_logs[0].scope)
        for i in range(RECORDS_PER_REQUEST):
            record = sl.log_records.add()
            record.CopyFrom(template)
            record.time_unix_nano = record.observed_time_unix_nano = now + r * 1000 + i
            record.attributes[1].value.string_value = f"session-{r % _SESSIONS:04d}"
            record.attributes[5].value.int_value = i  # event.sequence
        out.append(Request("logs", "main.bench.ccrep_otel_logs", request, RECORDS_PER_REQUEST))
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
    rnd = random.Random(17)
    now = time.time_ns()
    out = []
    for _ in range(n_requests):
        request = ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        rm.resource.CopyFrom(capture.resource_metrics[0].resource)
        target = rm.scope_metrics.add()
        target.scope.CopyFrom(sm.scope)
        points = 0
        while points < 500:
            for m in keep:
                metric = target.metrics.add()
                metric.CopyFrom(m)
                data = getattr(metric, metric.WhichOneof("data"))
                for p in data.data_points:
                    p.start_time_unix_nano = now - rnd.randrange(10**12)
                    p.time_unix_nano = now + points * 1_000_003 + rnd.randrange(10**6)
                    if metric.WhichOneof("data") == "sum":
                        if p.HasField("as_int"):
                            p.as_int = rnd.randrange(1, 10**6)
                        else:
                            p.as_double = rnd.random() * 1000
                    else:
                        counts = [rnd.randrange(0, 500) for _ in p.bucket_counts]
                        p.bucket_counts[:] = counts
                        p.count = sum(counts)
                        p.sum = rnd.random() * 10_000 * (p.count or 1)
                        if p.HasField("min"):
                            p.min = rnd.random()
                        if p.HasField("max"):
                            p.max = p.min + rnd.random() * 10_000
                    points += 1
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
    return {
        "agent-logs": agent_logs,
        "agent-logs-repeated": _repeated_logs,
        "high-cardinality": _high_cardinality,
        "agent-metrics": _codex_metrics,
        "mixed": _mixed,
    }[workload](n_requests)
