"""``make bench``: end-to-end ingest throughput, CPU per record, memory and latency, with the
reference ceilings measured on the same requests, printed as one table and saved as JSON.

    python -m benchmarks [--quick] [--workloads agent-logs,...] [--transports http,json,grpc]
                         [--workers 1,2] [--duration S] [--concurrency N]

End-to-end throughput counts from the first request to the moment the last acknowledged
record is committed in Delta (read back). The collector runs as real processes (`python -m
collector serve`, durability on) on loopback; the load generator runs in processes of its own.
Requests within a run are made distinct by timestamps; the collector runs with
--dedup-window 0 because the generator cycles through a fixed set of pre-encoded bodies.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from benchmarks import ceilings, loadgen
from benchmarks.workloads import WORKLOADS, Request, build
from collector.flatten import native

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
_TICK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """``serve`` on ``warehouse`` (a directory or a URI) with the benchmark's settings and
    ``extra`` arguments, logging to ``log``."""

    def __init__(
        self,
        workers: int,
        warehouse: Path | str,
        *extra: str,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self.warehouse = warehouse
        self.log_path = log or Path(warehouse).parent / "collector.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collector",
                "serve",
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--grpc",
                f"127.0.0.1:{self.grpc_port}",
                "--warehouse",
                str(warehouse),
                "--workers",
                str(workers),
                "--dedup-window",
                "0",
                "--log-format",
                "json",
                "--max-concurrent-requests",
                "1024",
                *extra,
                *(() if "--flush-interval" in extra else ("--flush-interval", "1")),
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.workers = workers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.log_path.read_text().count('"collector started"') >= workers:
                return
            time.sleep(0.1)
        raise RuntimeError("collector did not start")

    def pids(self) -> list[int]:
        pids = [self.proc.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(entry.name))
        return pids

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def peak_rss(self) -> int:
        """Largest peak RSS of one collector process (worker), bytes."""
        peaks = []
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) * 1024)
        return max(peaks)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def committed(warehouse: Path | str, tables: set[str]) -> int:
    """Records in the tables, by their add actions' statistics."""
    total = 0
    for table in tables:
        try:
            dt = DeltaTable(f"{warehouse}/{table.replace('.', '/')}")
        except TableNotFoundError:
            continue
        actions = pa.table(dt.get_add_actions(flatten=True))
        total += pc.sum(actions.column("num_records")).as_py() or 0
    return total


def load(jobs: list[loadgen.Job]) -> list[loadgen.Result]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(jobs)) as pool:
        return pool.map(loadgen.run, jobs)


@dataclass
class Row:
    workload: str
    transport: str
    workers: int
    records_per_s: float  # end to end, committed in Delta
    records_per_cpu_s: float
    cpu_s_per_million: float
    peak_rss_mib: float
    p50_ms: float
    p99_ms: float
    half_load_p50_ms: float
    half_load_p99_ms: float
    acknowledged: int
    errors: dict


def measure(
    workload: str, transport: str, workers: int, requests: list[Request], args: argparse.Namespace
) -> Row:
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    bodies = [
        (
            r.signal,
            r.table,
            r.otlp_json() if transport == "json" else r.message.SerializeToString(),
            r.records,
        )
        for r in requests
    ]
    tables = {r.table for r in requests}
    collector = Collector(workers, tmp / "warehouse")
    try:

        def job(duration: float, rate: float | None) -> loadgen.Job:
            return loadgen.Job(
                transport=transport,
                http_url=f"http://127.0.0.1:{collector.http_port}",
                grpc_target=f"127.0.0.1:{collector.grpc_port}",
                bodies=bodies,
                concurrency=args.concurrency,
                duration=duration,
                rate=rate,
            )

        warm = load([job(1.0, None)])[0]
        while committed(collector.warehouse, tables) < warm.records:
            time.sleep(0.05)
        cpu0 = collector.cpu_seconds()
        results = load([job(args.duration, None) for _ in range(args.generators)])
        target = warm.records + sum(r.records for r in results)
        while committed(collector.warehouse, tables) < target:
            time.sleep(0.02)
        done = time.time()
        cpu = collector.cpu_seconds() - cpu0
        started = min(r.started for r in results)
        records = sum(r.records for r in results)
        latencies = sorted(x for r in results for x in r.latencies_ms)
        rate = sum(r.requests for r in results) / args.duration / 2  # half the saturating load
        half = load([job(max(args.duration / 2, 2.0), rate)])[0]
        while committed(collector.warehouse, tables) < target + half.records:
            time.sleep(0.05)
        half_lat = sorted(half.latencies_ms)
        errors: dict[str, int] = {}
        for r in [*results, half]:
            for k, v in r.errors.items():
                errors[k] = errors.get(k, 0) + v
        return Row(
            workload, transport, workers,
            records_per_s=records / (done - started),
            records_per_cpu_s=records / cpu if cpu else 0.0,
            cpu_s_per_million=cpu / records * 1e6 if records else 0.0,
            peak_rss_mib=collector.peak_rss() / 2**20,
            p50_ms=_pct(latencies, 50), p99_ms=_pct(latencies, 99),
            half_load_p50_ms=_pct(half_lat, 50), half_load_p99_ms=_pct(half_lat, 99),
            acknowledged=records,
            errors=errors,
        )  # fmt: skip
    finally:
        collector.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a run of under a minute")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--transports", default="http,json,grpc")
    parser.add_argument(
        "--workers", default=None, help="comma list, e.g. 1,2 (default: 1,2; quick: 1)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds of load per run")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight per generator"
    )
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 15.0
    workers = [int(w) for w in (args.workers or ("1" if args.quick else "1,2")).split(",")]
    workloads = args.workloads.split(",")
    transports = (
        ["http"]
        if args.quick and args.transports == "http,json,grpc"
        else args.transports.split(",")
    )
    ceiling_seconds = 0.5 if args.quick else 2.0

    rows: list[Row] = []
    references: dict[str, dict[str, float]] = {}
    for workload in workloads:
        requests = build(workload, 8 if workload != "mixed" else 40)
        references[workload] = {
            "parse_only": ceilings.parse_only(requests, ceiling_seconds),
            f"decode_flatten_{native.ENGINE}": ceilings.decode_flatten(requests, ceiling_seconds),
            "decode_flatten_python": ceilings.decode_flatten_python(requests, ceiling_seconds),
            f"json_decode_flatten_{native.ENGINE}": ceilings.json_decode_flatten(
                requests, ceiling_seconds
            ),
            "json_decode_flatten_python": ceilings.json_decode_flatten_python(
                requests, ceiling_seconds
            ),
            "parquet_write": ceilings.parquet_write(requests, ceiling_seconds),
            "naive_pipeline": ceilings.naive_pipeline(requests[:4], ceiling_seconds * 2),
        }
        for transport in transports:
            for w in workers:
                if args.quick and (workload != "agent-logs" and transport != "http"):
                    continue
                row = measure(workload, transport, w, requests, args)
                rows.append(row)
                print(f"  measured {workload} / {transport} / {w} worker(s): "
                      f"{row.records_per_s:,.0f} records/s", file=sys.stderr)  # fmt: skip

    print()
    header = (f"{'workload':<14} {'transport':<9} {'workers':>7} {'records/s':>11} {'per core':>10} "
              f"{'cpu s/M':>8} {'RSS MiB':>8} {'p50 ms':>7} {'p99 ms':>7} {'½ p99':>7} {'vs naive':>8}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in rows:
        naive = references[r.workload]["naive_pipeline"]
        print(f"{r.workload:<14} {r.transport:<9} {r.workers:>7} {r.records_per_s:>11,.0f} "
              f"{r.records_per_cpu_s:>10,.0f} {r.cpu_s_per_million:>8.1f} {r.peak_rss_mib:>8.0f} "
              f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.half_load_p99_ms:>7.1f} "
              f"{r.records_per_cpu_s / naive:>7.1f}x")  # fmt: skip
    print()
    print("reference rates, one core, same requests (records/s):")
    for workload, ref in references.items():
        print(f"  {workload:<14} " + "  ".join(f"{k} {v:,.0f}" for k, v in ref.items()))
    by_key = {(r.workload, r.transport, r.workers): r for r in rows}
    for (workload, transport, w), r in by_key.items():
        one = by_key.get((workload, transport, 1))
        if w > 1 and one:
            print(f"scaling {workload}/{transport}: 1 -> {w} workers: "
                  f"{r.records_per_s / one.records_per_s:.2f}x")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({
        "quick": args.quick, "duration": args.duration, "concurrency": args.concurrency,
        "cores": os.cpu_count(), "rows": [asdict(r) for r in rows], "references": references,
    }, indent=2) + "\n")  # fmt: skip
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0
