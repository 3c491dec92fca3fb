"""Crash test: the collector is SIGKILLed at random moments while real exporters send to it.

Every record the exporter saw acknowledged must end up in the table exactly once; a record
never acknowledged may be there at most once. The kills land during receive, WAL append and
fsync, and Delta commits alike, since the collector flushes every 50 ms under steady load.
"""

from __future__ import annotations

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
BATCHES = 60  # per sender
RECORDS = 20  # per batch
KILLS = 22
TABLE = "main.crash.cc_otel_logs"


def _records(sender: int) -> list[list]:
    """Readable log records with unique ids, made by the SDK, in batches for the exporter."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource({"service.name": "crash-test"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("crash")
    for b in range(BATCHES):
        for i in range(RECORDS):
            logger.emit(LogRecord(body="tool_result", attributes={"rid": f"{sender}-{b}-{i}"}))
    records = list(memory.get_finished_logs())
    return [records[i : i + RECORDS] for i in range(0, len(records), RECORDS)]


@pytest.mark.slow
def test_sigkill_loses_and_duplicates_no_acknowledged_record(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    warehouse = tmp_path / "warehouse"
    args = ("--flush-interval", "0.05")
    proc = CollectorProcess(warehouse, *args, ports=ports)
    batches = {s: _records(s) for s in range(SENDERS)}
    acked: set[str] = set()
    sent: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()

    def sender(s: int) -> None:
        exporter = OTLPLogExporter(
            endpoint=f"http://127.0.0.1:{ports[0]}/v1/logs",
            headers={"X-Databricks-UC-Table-Name": TABLE},
            timeout=60,  # the exporter's own retries ride out the restarts
        )
        for batch in batches[s]:
            rids = {r.log_record.attributes["rid"] for r in batch}
            with lock:
                sent.update(rids)
            if exporter.export(batch) is LogRecordExportResult.SUCCESS:
                with lock:
                    acked.update(rids)
            time.sleep(random.uniform(0, 0.02))
        exporter.shutdown()

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(SENDERS)]
    for t in threads:
        t.start()
    rnd = random.Random(20261126)
    kills = 0
    try:
        while kills < KILLS:
            time.sleep(rnd.uniform(0.1, 0.6))
            proc.stop(signal.SIGKILL)
            kills += 1
            proc = CollectorProcess(warehouse, *args, ports=ports)
        for t in threads:
            t.join(timeout=300)
        done.set()
    finally:
        # A clean stop flushes what the last run holds; one more start replays anything left.
        assert proc.stop() == 0
        final = CollectorProcess(warehouse, *args, ports=ports)
        assert final.stop() == 0

    path = warehouse / "main" / "crash" / "cc_otel_logs"
    rows = read_polars(path)
    assert sorted(r["attributes"]["rid"] for r in rows) == sorted(
        r["attributes"]["rid"] for r in read_duckdb(path)
    )
    found = Counter(r["attributes"]["rid"] for r in rows)
    duplicated = {rid for rid, n in found.items() if n > 1}
    lost = acked - set(found)
    print(
        f"\ncrash test: kills={kills} sent={len(sent)} acknowledged={len(acked)} "
        f"found={len(found)} lost={len(lost)} duplicated={len(duplicated)}"
    )
    assert kills >= 20
    assert len(sent) == SENDERS * BATCHES * RECORDS
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"{len(duplicated)} records stored twice, e.g. {sorted(duplicated)[:5]}"
    assert set(found) <= sent
    assert len(acked) > 0
