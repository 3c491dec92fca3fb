"""``make bench`` (second part): a table that lives for days, with maintenance on and off.

    python -m benchmarks.longtable [--quick] [--appends N] [--every K] [--modes on,off]

Each append is one flush as the collector makes it (the sink's own append, with its Delta
transaction): 100 Claude Code ``api_request`` events whose ids, sequence numbers, tokens, costs
and durations vary per record, 5 simulated seconds after the previous flush. 20,000 appends are
about 28 hours of one table's flushes, run as fast as the machine appends.

With maintenance on, the maintenance process runs beside the appends, started as ``serve``
starts it (``python -m collector maintain --background``, at nice 19). Its time-based settings are the defaults scaled by the same factor as the clock (the measured time
of one append over the 5 s between flushes): a 60 s pass interval becomes 12 appends, the
one-minute compaction age 12 appends, the 1 h log retention 720 appends.

Every K appends (2,000) it prints the median time of the last 200 appends, DuckDB's and polars'
``count(*)`` and DuckDB counting one simulated hour of rows (each the fastest of three), and
the table's data and log files.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from benchmarks.workloads import CAPTURES
from collector.config import Config
from collector.flatten import flatten_logs
from collector.maintenance.background import MaintenanceProcess
from collector.sink import DeltaSink
from collector.tables import TableName

RESULTS = Path(__file__).resolve().parent / "results"
TABLE = TableName("main", "bench", "cc_otel_logs")
FLUSH_SECONDS = 5.0
RECORDS = 100
HOUR_NS = 3600 * 10**9


class _Flushes:
    """The n-th flush's batch, made on demand (20,000 of them would not fit in memory)."""

    def __init__(self, start_ns: int) -> None:
        capture = ExportLogsServiceRequest.FromString(
            (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
        )
        self.start_ns = start_ns
        self.resource = capture.resource_logs[0].resource
        self.scope = capture.resource_logs[0].scope_logs[0].scope
        self.template = capture.resource_logs[0].scope_logs[0].log_records[0]  # api_request

    def batch(self, n: int) -> pa.RecordBatch:
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.CopyFrom(self.resource)
        sl = rl.scope_logs.add()
        sl.scope.CopyFrom(self.scope)
        at = self.start_ns + int(n * FLUSH_SECONDS * 1e9)
        for i in range(RECORDS):
            record = sl.log_records.add()
            record.CopyFrom(self.template)
            record.time_unix_nano = record.observed_time_unix_nano = at + i * 10**6
            k = n * RECORDS + i
            for kv in record.attributes:
                v = kv.value
                if kv.key == "event.sequence":
                    v.int_value = k
                elif kv.key == "event.timestamp":
                    v.string_value = f"{record.time_unix_nano}"
                elif kv.key in ("input_tokens", "output_tokens", "duration_ms", "cost_usd_micros"):
                    v.int_value = (k * 7919) % 50_000
                elif kv.key == "cost_usd":
                    v.double_value = ((k * 31) % 100_000) / 997
                elif kv.key == "session.id":
                    v.string_value = f"session-{n // 100}"
        return flatten_logs(request).batch


def _duckdb() -> duckdb.DuckDBPyConnection:
    site = sysconfig.get_paths()["purelib"]
    (extension,) = glob.glob(f"{site}/duckdb_extension_delta/extensions/*/delta.duckdb_extension")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension}'")
    return con


def _timed(f, runs: int = 1) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """The fastest of ``runs`` calls (ms) and the value: a query's cost without the noise of
    whatever else the two cores do at that moment (the maintenance thread, say)."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        value = f()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best, value


def _measure(location: Path, appends: list[float], start_ns: int, done: int) -> dict[str, float]:
    con = _duckdb()
    try:
        duck_ms, duck_n = _timed(
            lambda: con.execute("SELECT count(*) FROM delta_scan(?)", [str(location)]).fetchone(),
            runs=3,
        )
        # One simulated hour in the middle of what is there.
        low = start_ns + int(done * FLUSH_SECONDS * 1e9 / 2)
        hour_ms, _ = _timed(
            lambda: con.execute(
                "SELECT count(*) FROM delta_scan(?) WHERE time_unix_nano BETWEEN ? AND ?",
                [str(location), low, low + HOUR_NS],
            ).fetchone(),
            runs=3,
        )
    finally:
        con.close()
    polars_ms, polars_n = _timed(
        lambda: pl.scan_delta(str(location)).select(pl.len()).collect().item(), runs=3
    )
    assert duck_n[0] == polars_n == done * RECORDS, (duck_n, polars_n)  # type: ignore[index]
    return {
        "appends": done,
        "append_ms": statistics.median(appends[-200:]),
        "duckdb_count_ms": duck_ms,
        "polars_count_ms": polars_ms,
        "duckdb_hour_ms": hour_ms,
        "data_files": len(DeltaTable(str(location)).file_uris()),
        "log_files": len(list((location / "_delta_log").iterdir())),
    }


def run(mode: str, total: int, every: int, flushes: _Flushes) -> list[dict]:
    warehouse = Path(tempfile.mkdtemp(prefix=f"longtable-{mode}-"))
    sink = DeltaSink(warehouse, app_id="bench")
    location = sink.location(TABLE)
    appends: list[float] = []
    rows = []
    maintenance: MaintenanceProcess | None = None
    try:
        for n in range(1, total + 1):
            batch = flushes.batch(n)
            ms, _ = _timed(lambda n=n, batch=batch: sink.append(TABLE, [(n, batch)]))
            appends.append(ms)
            if n == 50 and mode == "on":
                scale = statistics.median(appends) / 1000 / FLUSH_SECONDS
                config = Config(
                    warehouse=warehouse,
                    compact_min_age=60 * scale,
                    log_retention=3600 * scale,
                    maintenance_interval=60 * scale,
                    log_format="json",
                    log_level="warning",
                )
                maintenance = MaintenanceProcess(config)
                maintenance.start()
            if n == 10 or n % every == 0:
                row = {"mode": mode, **_measure(location, appends, flushes.start_ns, n)}
                rows.append(row)
                print(
                    f"{mode:>3} {row['appends']:>6} appends: append {row['append_ms']:6.1f} ms, "
                    f"count(*) duckdb {row['duckdb_count_ms']:6.1f} ms polars "
                    f"{row['polars_count_ms']:6.1f} ms, 1 h query {row['duckdb_hour_ms']:6.1f} ms, "
                    f"{row['data_files']:>6} data files, {row['log_files']:>6} log files",
                    flush=True,
                )
    finally:
        if maintenance is not None:
            maintenance.stop()
        shutil.rmtree(warehouse, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.longtable")
    parser.add_argument("--quick", action="store_true", help="2,000 appends")
    parser.add_argument("--appends", type=int, default=None)
    parser.add_argument("--every", type=int, default=None)
    parser.add_argument("--modes", default="on,off")
    args, _ = parser.parse_known_args(argv)  # make bench passes the ingest benchmark's flags too
    total = args.appends or (2_000 if args.quick else 20_000)
    every = args.every or (500 if args.quick else 2_000)
    flushes = _Flushes(time.time_ns() - int(total * FLUSH_SECONDS * 1e9))
    results = {}
    for mode in args.modes.split(","):
        rows = run(mode, total, every, flushes)
        first, last = rows[0], rows[-1]
        print(
            f"{mode}: after {last['appends']} appends vs 10: append "
            f"{last['append_ms'] / first['append_ms']:.2f}x, count(*) duckdb "
            f"{last['duckdb_count_ms'] / first['duckdb_count_ms']:.2f}x, polars "
            f"{last['polars_count_ms'] / first['polars_count_ms']:.2f}x",
            flush=True,
        )
        results[mode] = rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"longtable-{int(time.time())}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
