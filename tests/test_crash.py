"""Crash test: the collector the user started is SIGKILLed at random moments while real exporters
send to it, with one worker and with the default worker count of this machine's kind (two).

Every record an exporter saw acknowledged must end up in the table exactly once; a record never
acknowledged may be there at most once. A kill comes anywhere from 0 to 4 s after the start,
which itself takes about 1.5 s: while the supervisor loads, while its workers load, wait for
their WAL's lock or replay it, and while they serve, append to the WAL, fsync and commit to
Delta (they flush every 50 ms). The
exporters ride out the restarts with their own retries, so a request stored but not answered is
retried, often on the other worker: it must be acknowledged and not stored twice.

``CRASH_KILLS`` sets the number of kills for a longer run (the default keeps make test short).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from tests.conftest import CollectorProcess, free_port
from tests.readers import read_duckdb, read_polars

SENDERS = 3
RECORDS = 20  # per batch
TABLE = "main.crash.cc_otel_logs"
ARGS = ("--flush-interval", "0.05")


def _batch(sender: int, number: int) -> list:
    """A batch of Claude Code-like events with unique ids and values that vary per record."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(
        resource=Resource({"service.name": "claude-code", "host.arch": "amd64"})
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("com.anthropic.claude_code.events")
    for i in range(RECORDS):
        logger.emit(
            LogRecord(
                body="claude_code.api_request",
                attributes={
                    "rid": f"{sender}-{number}-{i}",
                    "session.id": f"session-{sender}",
                    "event.sequence": number * RECORDS + i,
                    "input_tokens": random.randint(1, 50_000),
                    "cost_usd": random.random(),
                    "duration_ms": random.randint(100, 30_000),
                },
            )
        )
    return list(memory.get_finished_logs())


def _kills(workers: int) -> int:
    default = 50 if workers > 1 else 20
    return int(os.environ.get("CRASH_KILLS", default))


class Ledger:
    """What the senders sent and what the collector acknowledged, by record id."""

    def __init__(self) -> None:
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.running = threading.Event()
        self.running.set()
        self._lock = threading.Lock()

    def send(self, url: str, table: str, sender: int) -> None:
        """Export batches to ``url`` with the real OTLP/HTTP exporter until told to stop."""
        exporter = OTLPLogExporter(
            endpoint=url,
            headers={"X-Databricks-UC-Table-Name": table},
            timeout=60,  # the exporter's own retries ride out the restarts
        )
        number = 0
        while self.running.is_set():
            batch = _batch(sender, number)
            number += 1
            rids = {r.log_record.attributes["rid"] for r in batch}
            with self._lock:
                self.sent.update(rids)
            if exporter.export(batch) is LogRecordExportResult.SUCCESS:
                with self._lock:
                    self.acked.update(rids)
            time.sleep(random.uniform(0, 0.02))
        exporter.shutdown()

    def check(self, rows: list[dict], what: str) -> None:
        """Every acknowledged record in ``rows`` exactly once, nothing that was not sent."""
        found = Counter(r["attributes"]["rid"] for r in rows)
        duplicated = {rid for rid, n in found.items() if n > 1}
        lost = self.acked - set(found)
        print(
            f"\n{what}: sent={len(self.sent)} acknowledged={len(self.acked)} "
            f"found={len(found)} lost={len(lost)} duplicated={len(duplicated)}"
        )
        assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:5]}"
        assert not duplicated, f"{len(duplicated)} stored twice, e.g. {sorted(duplicated)[:5]}"
        assert set(found) <= self.sent


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_loses_and_duplicates_no_acknowledged_record(tmp_path: Path, workers: int) -> None:
    ports = (free_port(), free_port())
    warehouse = tmp_path / "warehouse"
    args = (*ARGS, "--workers", str(workers))
    ledger = Ledger()
    url = f"http://127.0.0.1:{ports[0]}/v1/logs"
    threads = [threading.Thread(target=ledger.send, args=(url, TABLE, s)) for s in range(SENDERS)]
    for t in threads:
        t.start()
    rnd = random.Random(20261201 + workers)
    kills = _kills(workers)
    try:
        for _ in range(kills):
            # Not waiting for it to listen: some kills land while it is still starting.
            proc = CollectorProcess(warehouse, *args, ports=ports, wait=False)
            time.sleep(rnd.uniform(0.0, 4.0))
            proc.stop(signal.SIGKILL)
        proc = CollectorProcess(warehouse, *args, ports=ports)
        time.sleep(2)  # the exporters' retries land on the last run
    finally:
        ledger.running.clear()
        for t in threads:
            t.join(timeout=120)
    # A clean stop flushes what the last run holds; one more start replays anything left.
    stopped = proc.stop(timeout=60)
    final = CollectorProcess(warehouse, *args, ports=ports)
    assert final.stop(timeout=60) == 0
    assert stopped == 0, f"the last SIGTERM gave exit {stopped}:\n{proc.logs()[-3000:]}"

    # Two processes on one WAL commit under one app id, which delta-rs reports as a concurrent
    # transaction: with one owner per WAL it never happens.
    logs = final.logs()
    assert "Concurrent transaction" not in logs and "share one identity" not in logs
    assert '"flush failed"' not in logs

    path = warehouse / "main" / "crash" / "cc_otel_logs"
    rows = read_polars(path)
    assert sorted(r["attributes"]["rid"] for r in rows) == sorted(
        r["attributes"]["rid"] for r in read_duckdb(path)
    )
    ledger.check(rows, f"crash test, {workers} worker(s), kills={kills}")
    assert len(ledger.acked) > 1000  # the collector served between the kills
    # Each stored row is the one that was sent: its values, not only its id.
    by_rid = {r["attributes"]["rid"]: r for r in rows}
    sample = by_rid[min(ledger.acked)]
    assert sample["body"] == "claude_code.api_request"
    assert sample["attributes"]["session.id"] == f"session-{min(ledger.acked).split('-')[0]}"
