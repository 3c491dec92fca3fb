"""Storage failures and floods: the collector stays up, loses nothing, and says what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from tests.conftest import CAPTURES, ROOT, CollectorProcess, distinct_logs, wait_for_rows
from tests.readers import read_both

LOGS = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
METRICS = (CAPTURES / "codex-cli-0.169.0.metrics.pb").read_bytes()
TABLE = "main.agents.cc_otel_logs"
MiB = 1024 * 1024


def post(proc: CollectorProcess, path: str, body: bytes, table: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        proc.url(path),
        data=body,
        headers={"Content-Type": "application/x-protobuf", "X-Databricks-UC-Table-Name": table},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def readyz(proc: CollectorProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(proc.url("/readyz"), timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m collector health``, as a container's HEALTHCHECK runs it."""
    return subprocess.run(
        [sys.executable, "-m", "collector", "health", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_health_endpoints(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path / "wh")
    try:
        with urllib.request.urlopen(proc.url("/healthz")) as answer:
            assert json.loads(answer.read()) == {"status": "alive"}
        status, body = readyz(proc)
        assert status == 200
        assert body["status"] == "ok"
        assert body["durability"] == "wal"
        assert body["problems"] == []
        # The health command finds the listener from serve's own settings: a flag, a variable.
        by_flag = health("--http", f"127.0.0.1:{proc.http_port}")
        assert (by_flag.returncode, by_flag.stdout) == (0, "ready: ok\n")
        by_env = health(env={"COLLECTOR_HTTP": f"0.0.0.0:{proc.http_port}"})
        assert (by_env.returncode, by_env.stdout) == (0, "ready: ok\n")
    finally:
        proc.stop()
    gone = health("--http", f"127.0.0.1:{proc.http_port}")
    assert gone.returncode == 1
    assert gone.stdout.startswith(f"no answer from http://127.0.0.1:{proc.http_port}/readyz")
    off = health("--http", "off")
    assert off.returncode == 2 and "the OTLP/HTTP listener is off" in off.stderr


def test_unwritable_storage_keeps_data_in_the_wal_until_it_recovers(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path / "wh", "--flush-interval", "0.1")
    table_dir = proc.table_path(TABLE)
    try:
        assert post(proc, "/v1/logs", distinct_logs(LOGS, 0), TABLE)[0] == 200
        wait_for_rows(table_dir, 8)
        # Root ignores permissions, so the table is made immutable instead: every write fails.
        locked = [str(table_dir), str(table_dir / "_delta_log")]
        subprocess.run(["chattr", "+i", *locked], check=True)
        try:
            for i in range(1, 6):
                assert post(proc, "/v1/logs", distinct_logs(LOGS, i), TABLE)[0] == 200

            def reports_trouble() -> bool:
                status, body = readyz(proc)
                t = body["tables"].get(TABLE, {})
                return status == 200 and body["status"] == "degraded" and t.get("failures", 0) > 0

            wait_until(reports_trouble)
            _, body = readyz(proc)
            assert body["problems"] == [f"flushes to {TABLE} are failing"]
            assert body["tables"][TABLE]["last_error"]
            assert body["tables"][TABLE]["buffered_rows"] == 40
            assert proc.proc.poll() is None  # still up
        finally:
            subprocess.run(["chattr", "-i", *locked], check=True)
        rows = wait_for_rows(table_dir, 48)
        wait_until(lambda: readyz(proc)[1]["status"] == "ok")
    finally:
        assert proc.stop() == 0
    rows = read_both(table_dir, key=lambda r: (r["observed_time_unix_nano"], r["body"]))
    # Six distinct requests of eight records: 48 rows, none twice.
    assert len(rows) == 48
    keys = Counter((r["observed_time_unix_nano"], json.dumps(r["attributes"])) for r in rows)
    assert len(keys) == 48


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_flood_gets_retryable_answers_and_memory_stays_bounded(tmp_path: Path) -> None:
    limit = 48 * MiB
    overhead = 96 * MiB  # decoding requests in flight, Arrow pools, the WAL's copy of a batch
    proc = CollectorProcess(
        tmp_path / "wh", "--max-buffer-bytes", str(limit), "--flush-interval", "3600"
    )
    table = "main.agents.codex_otel_metrics"
    answers: Counter[int] = Counter()
    retry_after: set[str] = set()
    lock = threading.Lock()
    try:
        # Warm up (imports, table creation) before taking the baseline.
        assert post(proc, "/v1/metrics", METRICS, table)[0] == 200
        baseline = _rss(proc.proc.pid)

        def flood(worker: int) -> None:
            from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                ExportMetricsServiceRequest,
            )

            request = ExportMetricsServiceRequest.FromString(METRICS)
            point = request.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
            for _ in range(150):
                point.time_unix_nano += 1 + worker * 1_000_000  # each request distinct
                status, headers = post(proc, "/v1/metrics", request.SerializeToString(), table)
                with lock:
                    answers[status] += 1
                    if status == 503:
                        retry_after.add(headers.get("Retry-After", ""))

        threads = [threading.Thread(target=flood, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _peak_rss(proc.proc.pid)
        _, body = readyz(proc)
    finally:
        assert proc.stop() == 0
    print(
        f"\nflood: answers={dict(answers)} baseline_rss={baseline / MiB:.0f} MiB "
        f"peak_rss={peak / MiB:.0f} MiB limit={limit / MiB:.0f} MiB"
    )
    assert set(answers) == {200, 503}
    assert answers[503] > 0
    assert retry_after == {"3600"}
    assert body["held_bytes"] >= limit
    assert peak <= baseline + limit + overhead
    # Everything acknowledged was stored at shutdown: one row per data point per request.
    rows = read_both(proc.table_path(table), key=lambda r: r["name"])
    assert len(rows) == (answers[200] + 1) * 183


def test_a_retry_after_restart_is_acknowledged_once(tmp_path: Path) -> None:
    """The retry of a request committed before a restart is recognised by its digest, even
    when it is the first request the new process sees for that table."""
    body = distinct_logs(LOGS, 42)
    proc = CollectorProcess(tmp_path / "wh", "--flush-interval", "0.1")
    try:
        assert post(proc, "/v1/logs", body, TABLE)[0] == 200
        wait_for_rows(proc.table_path(TABLE), 8)
    finally:
        assert proc.stop() == 0
    again = CollectorProcess(tmp_path / "wh", "--flush-interval", "0.1")
    try:
        assert post(again, "/v1/logs", body, TABLE)[0] == 200
        with urllib.request.urlopen(again.url("/metrics")) as answer:
            assert "otlp_delta_retries_deduplicated_total 1" in answer.read().decode()
        assert post(again, "/v1/logs", distinct_logs(LOGS, 43), TABLE)[0] == 200
        wait_for_rows(again.table_path(TABLE), 16)
    finally:
        assert again.stop() == 0
    assert len(read_both(again.table_path(TABLE))) == 16
