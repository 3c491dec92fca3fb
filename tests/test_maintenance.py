"""Maintenance on real tables: compaction, checkpoints, log clean-up, vacuum, retention, leases.

Tables are written by the collector's own sink from the captured agent payloads (Claude Code
logs carry their event time, Codex CLI logs only an observed time), made distinct per append,
and read back by polars and DuckDB.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from collector.flatten import flatten_logs, flatten_metrics
from collector.maintenance import Lease, Maintainer, MaintenancePolicy, row_times
from collector.schema import schema_for_table
from collector.sink import DeltaSink
from collector.storage import Files, Warehouse
from collector.tables import TableName
from tests.conftest import CAPTURES, ROOT, CollectorProcess
from tests.readers import read_both
from tests.test_durability import post, readyz, wait_until

LOGS = TableName("main", "agents", "cc_otel_logs")
METRICS = TableName("main", "agents", "codex_otel_metrics")
CLAUDE = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()  # 8 records, event times
CODEX = (CAPTURES / "codex-cli-0.169.0.logs.pb").read_bytes()  # time_unix_nano 0
CODEX_METRICS = (CAPTURES / "codex-cli-0.169.0.metrics.pb").read_bytes()
NOW = MaintenancePolicy(compact_min_age=0)  # maintain what was just written


def shifted_body(body: bytes, shift_ns: int) -> bytes:
    """A captured logs request with every time set in it moved by ``shift_ns``."""
    request = ExportLogsServiceRequest.FromString(body)
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                record.observed_time_unix_nano += shift_ns
                if record.time_unix_nano:
                    record.time_unix_nano += shift_ns
    return request.SerializeToString()


def shifted(body: bytes, shift_ns: int) -> pa.RecordBatch:
    return flatten_logs(ExportLogsServiceRequest.FromString(shifted_body(body, shift_ns))).batch


def logs_batch(n: int, shift_ns: int = 0) -> pa.RecordBatch:
    """Claude Code's logs for odd ``n``, Codex CLI's for even ones."""
    return shifted(CLAUDE if n % 2 else CODEX, shift_ns)


def metrics_batch(shift_ns: int) -> pa.RecordBatch:
    request = ExportMetricsServiceRequest.FromString(CODEX_METRICS)
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    point.time_unix_nano += shift_ns
    return flatten_metrics(request).batch


def canonical(rows: list[dict[str, Any]]) -> Counter[str]:
    """The row multiset, whole rows as the readers give them."""
    return Counter(json.dumps(r, sort_keys=True, default=str) for r in rows)


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What tells a log row from any other here, as read or as built (maps as dicts or pairs)."""
    attributes = json.dumps(sorted(dict(row["attributes"]).items()), default=str)
    return (row["observed_time_unix_nano"], row["time_unix_nano"], row["body"], attributes)


def appended(
    warehouse: Path, table: TableName, batches: list[pa.RecordBatch], app: str = "w"
) -> DeltaSink:
    sink = DeltaSink(warehouse, app_id=app)
    for i, batch in enumerate(batches):
        sink.append(table, [(i + 1, batch)])
    return sink


def times_in_file_order(location: Path, table: TableName) -> list[list[int]]:
    schema = schema_for_table(table.table)
    dt = DeltaTable(str(location))
    return [
        row_times(pq.read_table(location / p), schema.time_columns).to_pylist()
        for p in pa.table(dt.get_add_actions()).column("path").to_pylist()
    ]


def test_a_pass_leaves_exactly_the_same_rows_in_one_time_ordered_file(tmp_path: Path) -> None:
    # Appended out of time order, Claude Code and Codex CLI mixed, as several agents would.
    shifts = list(range(1000))  # an hour and a half of one table's flushes
    random.Random(3).shuffle(shifts)
    sink = appended(tmp_path, LOGS, [logs_batch(s, s * 10**9) for s in shifts])
    location = sink.location(LOGS)
    before = canonical(read_both(location))
    assert len(DeltaTable(str(location)).file_uris()) == 1000

    (report,) = Maintainer(tmp_path, NOW).run_once()
    assert report.error is None
    assert (report.files_before, report.files_after) == (1000, 1)
    assert report.compaction is not None and report.compaction.rows == sum(before.values())
    assert canonical(read_both(location)) == before  # the whole row multiset
    (times,) = times_in_file_order(location, LOGS)
    assert times == sorted(times)  # by event time, or observed time where the event has none
    dt = DeltaTable(str(location))
    checkpoint = json.loads((location / "_delta_log" / "_last_checkpoint").read_text())
    assert checkpoint["version"] == dt.version()
    # The DDL's properties, and tombstones kept for an hour (vacuum has its own ledger).
    assert dt.metadata().configuration == {
        "otel.schemaVersion": "v1",
        "delta.deletedFileRetentionDuration": "interval 1 hours",
    }
    # The sink goes on appending to the compacted table.
    sink.append(LOGS, [(10_000, logs_batch(1, 10**15))])
    assert sum(canonical(read_both(location)).values()) == sum(before.values()) + 8


def test_metrics_are_ordered_by_the_time_of_their_data_points(tmp_path: Path) -> None:
    shifts = [s * 10**9 for s in range(60)]
    random.Random(4).shuffle(shifts)
    sink = appended(tmp_path, METRICS, [metrics_batch(s) for s in shifts])
    before = canonical(read_both(sink.location(METRICS)))
    (report,) = Maintainer(tmp_path, NOW).run_once()
    assert report.files_after == 1 and report.error is None
    assert canonical(read_both(sink.location(METRICS))) == before
    (times,) = times_in_file_order(sink.location(METRICS), METRICS)
    assert times == sorted(times) and times[0] > 0


def test_files_become_several_near_the_target_size_and_young_files_wait(tmp_path: Path) -> None:
    sink = appended(tmp_path, LOGS, [shifted(CLAUDE, s * 10**12) for s in range(120)])
    sizes = [f.stat().st_size for f in sink.location(LOGS).glob("*.parquet")]
    target = sum(sizes) // 3 + 1  # inputs pack into three groups
    maintainer = Maintainer(
        tmp_path, MaintenancePolicy(compact_min_age=3600, target_file_size=target)
    )
    (report,) = maintainer.run_once()
    assert report.compaction is None and report.files_after == 120  # all younger than an hour
    maintainer.policy = MaintenancePolicy(compact_min_age=0, target_file_size=target)
    (report,) = maintainer.run_once()
    assert 2 <= report.files_after <= 4
    windows = [(min(t), max(t)) for t in times_in_file_order(sink.location(LOGS), LOGS)]
    for (_, high), (low, _) in itertools.pairwise(sorted(windows)):
        assert high <= low  # the files cover consecutive time ranges: readers skip by time


def test_appends_by_two_writers_during_compactions_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    appended(tmp_path, LOGS, [logs_batch(s, s * 10**9) for s in range(100)], app="seed")
    location = tmp_path.joinpath(*LOGS.parts())
    stop = threading.Event()
    errors: list[BaseException] = []
    written: Counter[tuple[Any, ...]] = Counter()

    def writer(app: str, base: int) -> None:
        sink = DeltaSink(tmp_path, app_id=app)
        n = 0
        while not stop.is_set():
            n += 1
            batch = logs_batch(n, (base + n) * 10**9)
            try:
                sink.append(LOGS, [(n, batch)])  # raises only when every retry failed
            except BaseException as e:
                errors.append(e)
                return
            written.update(key(r) for r in batch.to_pylist())

    threads = [
        threading.Thread(target=writer, args=(f"writer-{i}", 10**6 * (i + 1))) for i in range(2)
    ]
    for t in threads:
        t.start()
    maintainer = Maintainer(tmp_path, NOW)
    compactions = 0
    try:
        for _ in range(4):
            time.sleep(0.3)
            (report,) = maintainer.run_once()
            assert report.error is None, report.error
            compactions += report.compaction is not None
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert compactions >= 3
    seeded = Counter(key(r) for s in range(100) for r in logs_batch(s, s * 10**9).to_pylist())
    rows = Counter(key(r) for r in read_both(location))
    assert rows == seeded + written
    assert max(rows.values()) == 1


def test_vacuum_keeps_what_time_travel_needs_and_removes_what_nothing_does(tmp_path: Path) -> None:
    sink = appended(tmp_path, LOGS, [logs_batch(s, s * 10**9) for s in range(20)])
    location = sink.location(LOGS)
    before_version = DeltaTable(str(location)).version()
    before = canonical(read_both(location))
    # The appends were written a month ago: their age says nothing of when they leave the table.
    month_ago = time.time() - 30 * 86400
    for path in DeltaTable(str(location)).file_uris():
        os.utime(path, (month_ago, month_ago))
    # A file a crashed writer left behind two hours ago, and one a writer is committing now.
    old_orphan = location / "part-00000-orphan-old.snappy.parquet"
    new_orphan = location / "part-00000-orphan-new.snappy.parquet"
    for orphan in (old_orphan, new_orphan):
        pq.write_table(pa.Table.from_batches([logs_batch(1)]), orphan)
    two_hours_ago = time.time() - 7200
    os.utime(old_orphan, (two_hours_ago, two_hours_ago))
    day = 86400.0
    policy = MaintenancePolicy(compact_min_age=0, vacuum_retention=day)

    def maintained(at: float) -> None:
        (report,) = Maintainer(tmp_path, policy, clock=lambda: at).run_once()
        assert report.error is None, report.error

    now = time.time()
    maintained(now)  # compacts the 20 files away
    dt = DeltaTable(str(location))
    assert len(dt.file_uris()) == 1
    # The compacted-away files left the table just now: time travel before the compaction reads.
    old = DeltaTable(str(location), version=before_version)
    assert len(old.file_uris()) == 20 and all(Path(u).exists() for u in old.file_uris())
    assert old.to_pyarrow_table().num_rows == sum(before.values())
    assert old_orphan.exists() and new_orphan.exists()

    maintained(now + day - 60)  # everything still within the retention of when it went
    assert all(Path(u).exists() for u in old.file_uris()) and old_orphan.exists()

    maintained(now + day + 1)
    assert not old_orphan.exists()
    assert not any(Path(u).exists() for u in old.file_uris())
    # Found out of the table only by the pass before: a writer might have been committing it.
    assert new_orphan.exists()
    assert all(Path(u).exists() for u in DeltaTable(str(location)).file_uris())
    assert canonical(read_both(location)) == before
    maintained(now + 2 * day)
    assert not new_orphan.exists()
    assert canonical(read_both(location)) == before


def test_retention_deletes_exactly_the_rows_older_than_the_limit(tmp_path: Path) -> None:
    day = 86400 * 10**9
    now_ns = time.time_ns()
    # Records from 100 days ago up to now; Codex's have only an observed time.
    base = now_ns - 100 * day - 1795531196388000000
    batches = [logs_batch(d, base + d * day) for d in range(0, 101, 5)]
    sink = appended(tmp_path, LOGS, batches)
    rows = read_both(sink.location(LOGS))
    # A log's time is its event time, or its observed time when the event time is 0. The
    # limit, 32 days, falls days away from any batch: the maintainer's clock runs a little later.
    cutoff = now_ns - 32 * day
    keep = canonical(
        [r for r in rows if (r["time_unix_nano"] or r["observed_time_unix_nano"]) >= cutoff]
    )
    assert 0 < sum(keep.values()) < len(rows)

    policy = MaintenancePolicy(compact_min_age=0, retention={"logs": 32 * 86400})
    (report,) = Maintainer(tmp_path, policy).run_once()
    assert report.error is None
    assert report.rows_deleted == len(rows) - sum(keep.values())
    assert canonical(read_both(sink.location(LOGS))) == keep


def test_expired_log_files_go_and_the_table_still_reads(tmp_path: Path) -> None:
    sink = appended(tmp_path, LOGS, [logs_batch(s, s * 10**9) for s in range(250)])
    location = sink.location(LOGS)
    log_dir = location / "_delta_log"
    old = time.time() - 7200
    for f in log_dir.glob("*.json"):
        os.utime(f, (old, old))  # as if written two hours ago
    before = canonical(read_both(location))
    (report,) = Maintainer(tmp_path, MaintenancePolicy(compact_min_age=0)).run_once()
    assert report.log_files_removed >= 200
    versions = sorted(int(f.name[:20]) for f in log_dir.glob("*.json"))
    # From the newest checkpoint that reads the first version written within the retention
    # (the maintainer's first, which sets the tombstone retention) on.
    first_recent = 251
    checkpoints = [int(f.name[:20]) for f in log_dir.glob("*.checkpoint.parquet")]
    assert versions[0] == max(c for c in checkpoints if c <= first_recent) >= 190
    assert canonical(read_both(location)) == before
    sink.append(LOGS, [(1000, logs_batch(1, 10**15))])
    assert sum(canonical(read_both(location)).values()) == sum(before.values()) + 8


def test_a_lease_has_one_holder_and_passes_on_when_it_expires(tmp_path: Path) -> None:
    leases = Files(Warehouse.parse(tmp_path), "leases")
    a = Lease(leases, "main.agents.t_otel_logs", "a", ttl=1.0)
    b = Lease(leases, "main.agents.t_otel_logs", "b", ttl=1.0)
    assert a.acquire()
    assert not b.acquire()
    assert a.acquire()  # its own: renewed
    time.sleep(1.2)
    assert b.acquire()  # a stopped renewing
    assert not a.renew()
    with pytest.raises(Exception, match="taken over"):
        a.check()
    b.release()
    assert a.acquire()  # released: at once


def test_two_maintainers_never_work_on_one_table_at_once(tmp_path: Path) -> None:
    tables = [TableName("main", "agents", f"t{i}_otel_logs") for i in range(3)]
    for table in tables:
        appended(tmp_path, table, [logs_batch(s, s * 10**9) for s in range(30)])
    reports: list[tuple[str, Any]] = []
    stop = threading.Event()

    def maintaining(name: str) -> None:
        m = Maintainer(tmp_path, NOW, owner=name)
        while not stop.is_set():
            reports.extend((name, r) for r in m.run_once(tables))

    threads = [threading.Thread(target=maintaining, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join()
    assert {name for name, _ in reports} == {"a", "b"}
    for table in tables:
        spans = sorted(
            (r.at, r.at + r.ms / 1000, name) for name, r in reports if r.table == str(table)
        )
        for (_, end, who), (start, _, other) in itertools.pairwise(spans):
            assert who == other or end <= start, f"{table}: {who} and {other} overlapped"


def test_a_maintainer_that_dies_loses_its_lease_to_another(tmp_path: Path) -> None:
    appended(tmp_path, LOGS, [logs_batch(s, s * 10**9) for s in range(10)])
    script = (
        "import sys, time; from collector.maintenance import Lease\n"
        "from collector.storage import Files, Warehouse\n"
        "leases = Files(Warehouse.parse(sys.argv[1]), '_maintenance', 'leases')\n"
        "lease = Lease(leases, 'main.agents.cc_otel_logs', 'dying', ttl=2.0)\n"
        "assert lease.acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    other = Maintainer(tmp_path, NOW, owner="other")
    assert other.run_once() == []  # the lease has not expired yet
    time.sleep(2.2)
    (report,) = other.run_once()
    assert report.files_after == 1


def test_serve_maintains_its_tables_in_the_background(tmp_path: Path) -> None:
    proc = CollectorProcess(
        tmp_path / "wh",
        "--flush-interval", "0.05",
        "--maintenance-interval", "1",
        "--compact-min-age", "0",
    )  # fmt: skip
    table = "main.agents.cc_otel_logs"
    try:
        for i in range(40):  # about one flush, so one file, each
            assert post(proc, "/v1/logs", shifted_body(CLAUDE, i * 10**9), table)[0] == 200
            time.sleep(0.06)

        # Flushes come faster than the passes, so a tier of 8 files fills up; a pass may
        # already have merged some of them, which is why appends are counted, not files.
        history = DeltaTable(str(proc.table_path(table))).history()
        assert sum(entry["operation"] == "WRITE" for entry in history) >= 8

        def compacted() -> bool:
            # Fewer than 8 files of a size tier wait for more: what is left is under 8 files.
            body = readyz(proc)[1]
            done = body.get("maintenance", {}).get(table, {})
            return (
                done.get("files_after", 99) < 8
                and len(DeltaTable(str(proc.table_path(table))).file_uris()) < 8
            )

        wait_until(compacted)
        status, body = readyz(proc)
        assert status == 200 and body["maintenance"][table]["error"] is None
        with urllib.request.urlopen(proc.url("/metrics")) as answer:
            metrics = answer.read().decode()
        assert "# TYPE otlp_delta_maintenance_files_compacted_total counter" in metrics
        compacted_total = re.search(
            r"^otlp_delta_maintenance_files_compacted_total (\d+)", metrics, re.M
        )
        assert compacted_total and int(compacted_total[1]) >= 8  # a tier at least
        assert '"maintenance: compacted"' in proc.logs()
    finally:
        assert proc.stop() == 0
    assert len(read_both(proc.table_path(table))) == 320


def test_maintain_command_runs_a_pass_and_prints_what_it_did(tmp_path: Path) -> None:
    appended(tmp_path, LOGS, [logs_batch(s, s * 10**9) for s in range(30)])
    other = TableName("main", "agents", "codex_otel_metrics")
    appended(tmp_path, other, [metrics_batch(s * 10**9) for s in range(10)])
    result = subprocess.run(
        [sys.executable, "-m", "collector", "maintain", "--once", "--warehouse", str(tmp_path),
         "--compact-min-age", "0", "--log-format", "json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[0].startswith("main.agents.cc_otel_logs: files 30 → 1,")
    assert lines[1].startswith("main.agents.codex_otel_metrics: files 10 → 1,")
    assert lines[2].startswith("maintained 2 tables: files 40 → 2,")
    assert '"maintenance: compacted"' in result.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "collector", "maintain", "--once", "--warehouse", str(tmp_path),
         "--vacuum-retention", "30m"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--vacuum-retention under one hour is refused" in refused.stderr
