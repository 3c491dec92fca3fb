"""``make bench`` (second part): a table that lives for days, with maintenance on and off.

    python -m benchmarks.longtable [--quick] [--appends N] [--every K] [--modes on,off]

Each append is one flush as the collector makes it (the sink's own append, with its Delta
transaction): 100 Claude Code ``api_request`` events whose ids, sequence numbers, tokens, costs
and durations vary per record, 5 simulated seconds after the previous flush. 20,000 appends are
about 28 hours of one table's flushes, run as fast as the machine appends.

With maintenance on, a maintenance pass runs every 6 appends (the 30 s pass interval), between
two appends: on the compressed clock a pass in a process of its own would get a five-hundredth
of the time it has in real life, while the table it is to keep small grows as fast as the
machine appends. The time-based settings are the defaults scaled by the same factor as the
clock (the real time so far over the simulated time): the 30 s compaction age becomes 6
appends, the 30 min log retention 360 appends, the hour a tombstone is kept and the hour
between vacuums 720 appends.

Every K appends (2,000) it prints the median time of the last 200 appends, DuckDB's and polars'
``count(*)`` and DuckDB counting one simulated hour of rows (each the fastest of three), and
the table's data and log files; and the same for a table of 10 appends made there and then,
with the ratios: this machine's speed drifts by more than the effects measured, and a ratio of
two figures taken in one moment does not.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from collector.flatten import flatten_logs
from collector.log import configure_logging
from collector.maintenance import Maintainer, MaintenancePolicy
from collector.maintenance.vacuum import TOMBSTONE_PROPERTY
from collector.sink import DeltaSink
from collector.tables import TableName

RESULTS = Path(__file__).resolve().parent / "results"
TABLE = TableName("main", "bench", "cc_otel_logs")
FLUSH_SECONDS = 5.0
RECORDS = 100
HOUR_NS = 3600 * 10**9
DEFAULTS = MaintenancePolicy()
PASS_EVERY = round(DEFAULTS.interval / FLUSH_SECONDS)  # appends between maintenance passes


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


def _reference(flushes: _Flushes, directory: Path) -> tuple[Path, float]:
    """A table of 10 appends, made now in ``directory``: what the long table is compared with,
    in the same moment, so that the machine's own ups and downs cancel out of the ratios. Its
    location, and the median time of its appends."""
    sink = DeltaSink(directory, app_id="reference")
    sink.append(TABLE, [(1, flushes.batch(1))])  # creates the table: not an append's cost
    times = []
    for n in range(2, 11):
        batch = flushes.batch(n)
        times.append(_timed(lambda n=n, batch=batch: sink.append(TABLE, [(n, batch)]))[0])
    return sink.location(TABLE), statistics.median(times)


def _measure(
    location: Path, appends: list[float], flushes: _Flushes, done: int
) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="longtable-reference-"))
    con = _duckdb()
    try:
        reference, reference_append = _reference(flushes, directory)
        # One simulated hour in the middle of what is there.
        low = flushes.start_ns + int(done * FLUSH_SECONDS * 1e9 / 2)
        queries = {
            "duckdb_count_ms": lambda at: con.execute(
                "SELECT count(*) FROM delta_scan(?)", [str(at)]
            ).fetchone()[0],
            "polars_count_ms": lambda at: pl.scan_delta(str(at)).select(pl.len()).collect().item(),
            "duckdb_hour_ms": lambda at: con.execute(
                "SELECT count(*) FROM delta_scan(?) WHERE time_unix_nano BETWEEN ? AND ?",
                [str(at), low, low + HOUR_NS],
            ).fetchone()[0],
        }
        best: dict[str, float] = {}
        counts: dict[str, int] = {}
        # The fastest of three, the long table and the reference taken in turn: a moment when
        # the machine is slow slows both.
        for _ in range(3):
            for name, query in queries.items():
                for prefix, at in (("", location), ("reference_", reference)):
                    ms, value = _timed(lambda q=query, at=at: q(at))
                    best[prefix + name] = min(ms, best.get(prefix + name, float("inf")))
                    counts[prefix + name] = value
    finally:
        con.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert counts["duckdb_count_ms"] == counts["polars_count_ms"] == done * RECORDS, counts
    reference_figures = {
        "append_ms": reference_append,
        "duckdb_count_ms": best.pop("reference_duckdb_count_ms"),
        "polars_count_ms": best.pop("reference_polars_count_ms"),
    }
    best.pop("reference_duckdb_hour_ms")
    duck_ms, polars_ms, hour_ms = (best[k] for k in queries)
    return {
        "appends": done,
        "append_ms": statistics.median(appends[-200:]),
        "duckdb_count_ms": duck_ms,
        "polars_count_ms": polars_ms,
        "duckdb_hour_ms": hour_ms,
        "data_files": len(DeltaTable(str(location)).file_uris()),
        "log_files": len(list((location / "_delta_log").iterdir())),
        **{f"reference_{k}": v for k, v in reference_figures.items()},
    }


def run(mode: str, total: int, every: int, flushes: _Flushes) -> list[dict]:
    warehouse = Path(tempfile.mkdtemp(prefix=f"longtable-{mode}-"))
    sink = DeltaSink(warehouse, app_id="bench")
    location = sink.location(TABLE)
    appends: list[float] = []
    passes: list[float] = []
    rows = []
    maintainer: Maintainer | None = None
    began = time.perf_counter()
    try:
        for n in range(1, total + 1):
            batch = flushes.batch(n)
            ms, _ = _timed(lambda n=n, batch=batch: sink.append(TABLE, [(n, batch)]))
            appends.append(ms)
            if mode == "on" and n >= 50 and n % PASS_EVERY == 0:
                # Real seconds per simulated second so far, passes included.
                scale = (time.perf_counter() - began) / (n * FLUSH_SECONDS)
                if maintainer is None:
                    # Tombstones expire by the table's clock, which is real time: scaled too.
                    DeltaTable(str(location)).alter.set_table_properties(
                        {TOMBSTONE_PROPERTY: f"interval {max(1, round(3600 * scale))} seconds"}
                    )
                    maintainer = Maintainer(warehouse, MaintenancePolicy())
                maintainer.policy = dataclasses.replace(
                    DEFAULTS,
                    compact_min_age=DEFAULTS.compact_min_age * scale,
                    log_retention=DEFAULTS.log_retention * scale,
                    hourly=DEFAULTS.hourly * scale,
                )
                pass_ms, (report,) = _timed(lambda m=maintainer: m.run_once([TABLE]))
                assert report.error is None, report.error
                passes.append(pass_ms)
            if n == 10 or n % every == 0:
                row = {"mode": mode, **_measure(location, appends, flushes, n)}
                if passes:
                    row["pass_ms_median"] = statistics.median(passes[-200:])
                    row["pass_ms_max"] = max(passes[-200:])
                rows.append(row)
                print(
                    f"{mode:>3} {row['appends']:>6} appends: append {row['append_ms']:6.1f} ms, "
                    f"count(*) duckdb {row['duckdb_count_ms']:6.1f} ms polars "
                    f"{row['polars_count_ms']:6.1f} ms, 1 h query {row['duckdb_hour_ms']:6.1f} ms, "
                    f"{row['data_files']:>6} data files, {row['log_files']:>6} log files; "
                    f"vs a 10-append table now: append {_ratio(row, 'append_ms')}, duckdb "
                    f"{_ratio(row, 'duckdb_count_ms')}, polars {_ratio(row, 'polars_count_ms')}"
                    + (
                        f", maintenance pass {row['pass_ms_median']:.0f} ms "
                        f"(max {row['pass_ms_max']:.0f})"
                        if passes
                        else ""
                    ),
                    flush=True,
                )
    finally:
        shutil.rmtree(warehouse, ignore_errors=True)
    return rows


def _ratio(row: dict, key: str) -> str:
    return f"{row[key] / row[f'reference_{key}']:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.longtable")
    parser.add_argument("--quick", action="store_true", help="2,000 appends")
    parser.add_argument("--appends", type=int, default=None)
    parser.add_argument("--every", type=int, default=None)
    parser.add_argument("--modes", default="on,off")
    args, _ = parser.parse_known_args(argv)  # make bench passes the ingest benchmark's flags too
    configure_logging(level="warning")  # the maintainer's line per action, thousands of them
    total = args.appends or (2_000 if args.quick else 20_000)
    every = args.every or (500 if args.quick else 2_000)
    flushes = _Flushes(time.time_ns() - int(total * FLUSH_SECONDS * 1e9))
    results = {}
    for mode in args.modes.split(","):
        rows = run(mode, total, every, flushes)
        last = rows[-1]
        print(
            f"{mode}: after {last['appends']} appends, vs a table of 10 appends measured in the "
            f"same moment: append {_ratio(last, 'append_ms')}, count(*) duckdb "
            f"{_ratio(last, 'duckdb_count_ms')}, polars {_ratio(last, 'polars_count_ms')}",
            flush=True,
        )
        results[mode] = rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"longtable-{int(time.time())}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
