"""``make bench``, object-store part: ingest into a warehouse on moto's S3 and on Azurite, by one
replica and by three, and the commits per second one table takes from three replicas.

    python -m benchmarks.objectstore [--quick] [--stores s3,azure] [--duration S]

Each replica is a ``serve`` process (one worker, WAL on, maintenance off) with its own WAL and
instance id, fed by a load generator of its own (the agent-logs workload over OTLP/HTTP). The
rate counts from the first request until the last acknowledged record is committed (read back
from the table). CPU is the collectors' (supervisors and workers), per record; the emulator's
own CPU is given beside it, since moto (Python, served one request at a time here, as the
tests do) is the slowest part of the path. The commit rate is measured apart, with a short
flush interval, so that commits rather than records are what the replicas produce.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deltalake import DeltaTable

from benchmarks import loadgen
from benchmarks.run import RESULTS, ROOT, Collector, committed, load, process_cpu_seconds
from benchmarks.workloads import build
from tests.emulators import Store, emulator, environment


@dataclass
class Row:
    store: str
    replicas: int
    records_per_s: float
    collector_cpu_s_per_million: float
    emulator_cpu_s_per_million: float
    commits: int
    commits_per_s: float
    flush_ms_p50: float  # upload, commit and refresh, as the replicas log it
    acknowledged: int
    errors: dict


def _replicas(store: Store, n: int, tmp: Path, *extra: str) -> list[Collector]:
    warehouse = store.warehouse()

    def replica(i: int) -> Collector:
        return Collector(
            1, warehouse, "--wal-dir", str(tmp / f"wal-{i}"), "--instance-id", f"bench-{i}",
            "--maintenance", "off", *extra, log=tmp / f"replica-{i}.log", env=store.env,
        )  # fmt: skip

    return [replica(i) for i in range(n)]


def _jobs(
    replicas: list[Collector], bodies: list, duration: float, rate: float | None = None
) -> list[loadgen.Job]:
    """A generator per replica: closed loop, or ``rate`` requests per second each."""
    return [
        loadgen.Job(
            transport="http",
            http_url=f"http://127.0.0.1:{r.http_port}",
            grpc_target=f"127.0.0.1:{r.grpc_port}",
            bodies=bodies,
            concurrency=16,
            duration=duration,
            rate=rate,
        )
        for r in replicas
    ]


def measure(store: Store, n: int, duration: float, flush_interval: str) -> Row:
    requests = build("agent-logs", 8)
    bodies = [(r.signal, r.table, r.message.SerializeToString(), r.records) for r in requests]
    tables = {r.table for r in requests}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        tmp = Path(directory)
        replicas = _replicas(store, n, tmp, "--flush-interval", flush_interval)
        warehouse = replicas[0].warehouse
        table_uri = f"{warehouse}/{next(iter(tables)).replace('.', '/')}"
        try:
            warm = load(_jobs(replicas, bodies, 1.0, 10))
            while committed(warehouse, tables) < sum(w.records for w in warm):
                time.sleep(0.1)
            version0 = DeltaTable(table_uri).version()
            cpu0 = sum(r.cpu_seconds() for r in replicas)
            emulator0 = process_cpu_seconds(store.pid)
            # Commits are measured with small ones: a request or two of 512 records each.
            rate = None if flush_interval == "1" else 40
            results = load(_jobs(replicas, bodies, duration, rate))
            target = sum(w.records for w in warm) + sum(r.records for r in results)
            while committed(warehouse, tables) < target:
                time.sleep(0.05)
            done = time.time()
            cpu = sum(r.cpu_seconds() for r in replicas) - cpu0
            emulator_cpu = process_cpu_seconds(store.pid) - emulator0
            commits = DeltaTable(table_uri).version() - version0
        finally:
            for r in replicas:
                r.stop()
        flush_ms = sorted(
            event["ms"]
            for r in replicas
            for event in map(json.loads, r.log_path.read_text().splitlines())
            if event.get("event") == "flushed"
        )
    started = min(r.started for r in results)
    records = sum(r.records for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    return Row(
        store.kind, n,
        records_per_s=records / (done - started),
        collector_cpu_s_per_million=cpu / records * 1e6 if records else 0.0,
        emulator_cpu_s_per_million=emulator_cpu / records * 1e6 if records else 0.0,
        commits=commits, commits_per_s=commits / (done - started),
        flush_ms_p50=flush_ms[len(flush_ms) // 2] if flush_ms else float("nan"),
        acknowledged=records, errors=errors,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.objectstore")
    parser.add_argument("--quick", action="store_true", help="a run of about a minute")
    parser.add_argument("--stores", default="s3,azure")
    parser.add_argument("--duration", type=float, default=None, help="seconds of load per run")
    args, _ = parser.parse_known_args(argv)  # make bench passes the ingest benchmark's flags too
    duration = args.duration or (3.0 if args.quick else 15.0)
    rows: dict[str, list[Row]] = {"ingest": [], "commits": []}
    for kind in args.stores.split(","):
        with emulator(kind) as store, environment(store.env):
            for n in (1, 3):
                rows["ingest"].append(measure(store, n, duration, "1"))
                print(f"  measured {kind} / {n} replica(s)", file=sys.stderr)
            rows["commits"].append(measure(store, 3, duration, "0.05"))
    print()
    header = (f"{'store':<6} {'replicas':>8} {'records/s':>10} {'collector cpu s/M':>18} "
              f"{'emulator cpu s/M':>17} {'commits/s':>10} {'flush ms':>9}")  # fmt: skip
    print("ingest (flush every 1 s):")
    print(header)
    print("-" * len(header))
    for r in rows["ingest"]:
        print(f"{r.store:<6} {r.replicas:>8} {r.records_per_s:>10,.0f} "
              f"{r.collector_cpu_s_per_million:>18.1f} {r.emulator_cpu_s_per_million:>17.1f} "
              f"{r.commits_per_s:>10.1f} {r.flush_ms_p50:>9.0f}")  # fmt: skip
    print("\ncommits one table takes from 3 replicas (flush every 50 ms, 40 requests/s each):")
    for r in rows["commits"]:
        print(f"  {r.store:<6} {r.commits_per_s:.1f} commits/s ({r.commits} in the run, "
              f"{r.records_per_s:,.0f} records/s, a flush {r.flush_ms_p50:.0f} ms median)")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"objectstore-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps({k: [asdict(r) for r in v] for k, v in rows.items()}, indent=2) + "\n"
    )
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
