"""``make bench`` (fourth part): the dashboard's page over a warehouse of a million rows a table.

    python -m benchmarks.dashboard [--quick] [--rows N]

The warehouse holds a month of one team's use, each table ``--rows`` rows (1,000,000; quick:
100,000) appended in flushes of 10,000 rows as the collector commits them:

- ``cc_otel_logs``: Claude Code's events (the agent-logs workload: its capture's event mix, 25
  users, tokens, costs, durations and ids varying per record);
- ``cc_otel_metrics``: Claude Code's six sums from its capture (sessions, lines of code, cost,
  tokens, edit decisions, active time), delta points whose values, users, sessions and models
  vary per point;
- ``proxy_usage``: the proxy's usage rows, 20 token names over 6 endpoints, statuses with 429s
  and 5xx among them, tokens and latencies varying per call.

Against ``python -m collector dashboard`` on it, the page's requests (its access check, then
its ten API requests and the all-time options together, as the page sends them), timed:

- cold: just after start, every table read from its files;
- warm: the same again, nothing changed (median of 5);
- filtered: agent and user set, warm (median of 5);
- after an append: one flush appended to each table, then the page (median of 5): what a page
  costs while a collector writes;
- in Chromium, when Debian's chromium is installed: from navigation until the page has drawn
  every chart (``body[data-state=ready]``), warm and after an append (median of 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from benchmarks.run import RESULTS, ROOT, _free_port
from benchmarks.workloads import CAPTURES, RECORDS_PER_REQUEST, agent_logs
from collector.schema import load_schema
from collector.signals import LOGS, METRICS
from collector.sink import DeltaSink
from collector.tables import TableName

LOGS_TABLE = TableName("main", "bench", "cc_otel_logs")
METRICS_TABLE = TableName("main", "bench", "cc_otel_metrics")
USAGE_TABLE = TableName("main", "bench", "proxy_usage")
FLUSH_ROWS = 10_000
MONTH_NS = 30 * 86_400 * 10**9
_USERS = [f"{random.Random(u).getrandbits(256):064x}" for u in range(25)]
_MODELS = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-opus-4-1-20250805")


def _logs_flush(n: int, flushes: int, start_ns: int) -> pa.RecordBatch:
    requests = -(-FLUSH_ROWS // RECORDS_PER_REQUEST)
    step = MONTH_NS // (flushes * requests * RECORDS_PER_REQUEST)
    made = agent_logs(requests, seed=1000 + n, start_ns=start_ns + n * MONTH_NS // flushes,
                      step_ns=step)  # fmt: skip
    batches = [LOGS.flatten(LOGS.decode_protobuf(r.message.SerializeToString())).batch
               for r in made]  # fmt: skip
    return pa.Table.from_batches(batches).slice(0, FLUSH_ROWS).combine_chunks().to_batches()[0]


class _Metrics:
    """Flushes of Claude Code's metric points: its capture's sums, each point re-drawn."""

    def __init__(self) -> None:
        capture = ExportMetricsServiceRequest.FromString(
            (CAPTURES / "claude-code-2.1.197.metrics.pb").read_bytes()
        )
        self.resource_metrics = capture.resource_metrics[0]

    def flush(self, n: int, flushes: int, start_ns: int) -> pa.RecordBatch:
        rnd = random.Random(2000 + n)
        at = start_ns + n * MONTH_NS // flushes
        step = MONTH_NS // (flushes * FLUSH_ROWS)
        request = ExportMetricsServiceRequest()
        points = 0
        while points < FLUSH_ROWS:
            rm = request.resource_metrics.add()
            rm.CopyFrom(self.resource_metrics)
            user, session = rnd.choice(_USERS), str(uuid.UUID(int=rnd.getrandbits(128)))
            model = rnd.choice(_MODELS)
            for metric in rm.scope_metrics[0].metrics:
                for p in metric.sum.data_points:
                    p.time_unix_nano = at + points * step
                    p.start_time_unix_nano = p.time_unix_nano - 60 * 10**9
                    if p.HasField("as_int"):
                        p.as_int = rnd.randrange(1, 400)
                    else:
                        p.as_double = rnd.random() * 20
                    for a in p.attributes:
                        if a.key == "user.id":
                            a.value.string_value = user
                        elif a.key == "session.id":
                            a.value.string_value = session
                        elif a.key == "model":
                            a.value.string_value = model
                        elif a.key == "decision":
                            a.value.string_value = rnd.choice(("accept", "accept", "reject"))
                        elif a.key == "language":
                            a.value.string_value = rnd.choice(("Python", "TypeScript", "Rust"))
                    points += 1
        flat = METRICS.flatten(METRICS.decode_protobuf(request.SerializeToString())).batch
        return flat.slice(0, FLUSH_ROWS)


_ENDPOINTS = (  # endpoint, route, operation, upstream model
    ("claude-sonnet", "anthropic", "messages", "claude-sonnet-4-5-20250929"),
    ("claude-haiku", "anthropic", "messages", "claude-haiku-4-5-20251001"),
    ("gpt-5", "openai", "responses", "gpt-5"),
    ("gpt-5-mini", "openai", "responses", "gpt-5-mini"),
    ("gemini-pro", "gemini", "generateContent", "gemini-2.5-pro"),
    ("internal-llama", "openai", "chat/completions", "llama-internal"),
)
_AGENT_OF_ROUTE = {"anthropic": "claude-code", "openai": "codex", "gemini": "gemini-cli"}


def _usage_flush(n: int, flushes: int, start_ns: int) -> pa.RecordBatch:
    rnd = random.Random(3000 + n)
    at = start_ns + n * MONTH_NS // flushes
    step = MONTH_NS // (flushes * FLUSH_ROWS)
    rows = []
    for i in range(FLUSH_ROWS):
        endpoint, route, operation, model = rnd.choice(_ENDPOINTS)
        status = rnd.choices((200, 429, 500, 529, 400), (940, 30, 10, 10, 10))[0]
        ok = status == 200
        streamed = rnd.random() < 0.8
        latency = rnd.uniform(200, 60_000)
        rows.append({
            "request_id": str(uuid.UUID(int=rnd.getrandbits(128))),
            "request_time_unix_nano": at + i * step,
            "token_name": f"team-{rnd.randrange(20):02d}",
            "agent": _AGENT_OF_ROUTE[route],
            "user_agent": "claude-cli/2.1.197 (external, cli)",
            "route": route, "operation": operation, "endpoint": endpoint,
            "upstream_model": model, "status_code": status,
            "input_tokens": rnd.randrange(1, 40_000) if ok else None,
            "output_tokens": rnd.randrange(1, 8_000) if ok else None,
            "cache_read_input_tokens": rnd.randrange(0, 200_000) if ok else None,
            "cache_creation_input_tokens": rnd.randrange(0, 20_000) if ok else None,
            "reasoning_tokens": rnd.randrange(0, 4_000) if ok and route == "openai" else None,
            "latency_ms": latency,
            "time_to_first_token_ms": rnd.uniform(100, latency) if ok and streamed else None,
            "streamed": streamed,
        })  # fmt: skip
    return pa.RecordBatch.from_pylist(rows, schema=load_schema("usage").arrow)


class Warehouse:
    """The benchmark's warehouse, made by the collector's own sink, one commit a flush."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path = path
        self.flushes = rows // FLUSH_ROWS
        self.start_ns = time.time_ns() - MONTH_NS
        # An app id of its own each run: a kept warehouse takes the next run's appends.
        self.sink = DeltaSink(path, app_id=f"bench-{uuid.uuid4()}")
        self.metrics = _Metrics()
        self.appended = 0

    def fill(self) -> None:
        for n in range(self.flushes):
            self.append(n)
            if n % 20 == 19:
                print(f"  warehouse: {n + 1}/{self.flushes} flushes a table", flush=True)

    def append(self, n: int | None = None) -> None:
        """One flush to each table (the next one, after ``fill``: later than all the rest)."""
        n = self.flushes + self.appended if n is None else n
        if n >= self.flushes:
            self.appended += 1
        for table, batch in (
            (LOGS_TABLE, _logs_flush(n, self.flushes, self.start_ns)),
            (METRICS_TABLE, self.metrics.flush(n, self.flushes, self.start_ns)),
            (USAGE_TABLE, _usage_flush(n, self.flushes, self.start_ns)),
        ):
            self.sink.append(table, [(n + 1, batch)])


# The page's requests: its access check, then its ten figures and the all-time options together.
_PAGE = (
    "tiles", "options", "calls?by=day,user", "calls?by=model", "calls?by=session&limit=10",
    "tools", "errors?limit=20", "productivity", "edits", "gateway",
)  # fmt: skip


async def _page(base: str, query: str = "") -> float:
    """The page's requests against ``base``, seconds; each must answer 200."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> Any:
            joiner = "&" if "?" in path else "?"
            async with session.get(
                f"{base}/dashboard/api/{path}{joiner if query else ''}{query}"
            ) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"{path}: {r.status} {body}")
                return body

        await get("access")
        await asyncio.gather(*(get(p) for p in _PAGE), get("options"))
    return time.perf_counter() - started


def _median(runs: int, f: Any) -> float:
    return statistics.median(f() for _ in range(runs))


class Dashboard:
    """``python -m collector dashboard`` on the warehouse."""

    def __init__(self, warehouse: Path, log: Path) -> None:
        self.port = _free_port()
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "dashboard", "--warehouse", str(warehouse),
             "--http", f"127.0.0.1:{self.port}", "--log-format", "json"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                asyncio.run(self._ping())
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dashboard did not start")

    async def _ping(self) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.base}/dashboard") as r:
                r.raise_for_status()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def _browser(dashboard: Dashboard, warehouse: Warehouse, runs: int) -> dict[str, float] | None:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("  (no chromium: the browser figures are left out; apt-get install chromium)")
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def load() -> float:
                started = time.perf_counter()
                page.goto(f"{dashboard.base}/dashboard")
                page.wait_for_selector("body[data-state=ready]", timeout=120_000)
                return time.perf_counter() - started

            load()  # the page's assets into the browser's cache, as for a returning reader
            warm = _median(runs, load)

            def after_append() -> float:
                warehouse.append()
                return load()

            appended = _median(runs, after_append)
        finally:
            browser.close()
    return {"browser_warm_s": warm, "browser_after_append_s": appended}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dashboard", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="100,000 rows a table")
    parser.add_argument("--rows", type=int, default=None, help="rows a table (1,000,000)")
    parser.add_argument(
        "--warehouse", type=Path, default=None,
        help="made here and kept (reused if there already; it grows by 10 flushes a run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    runs = 5
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        root = Path(tmp)
        made = time.perf_counter()
        path = args.warehouse or root / "warehouse"
        warehouse = Warehouse(path, rows)
        if not (path / "main").exists():
            warehouse.fill()
        print(f"  warehouse of {rows:,} rows a table made in {time.perf_counter() - made:.0f} s")
        dashboard = Dashboard(path, root / "dashboard.log")
        try:
            figures: dict[str, float] = {"rows_per_table": rows}
            figures["cold_s"] = asyncio.run(_page(dashboard.base))
            figures["warm_s"] = _median(runs, lambda: asyncio.run(_page(dashboard.base)))
            user = f"user={_USERS[3]}&agent=claude-code"
            figures["filtered_s"] = _median(runs, lambda: asyncio.run(_page(dashboard.base, user)))

            def after_append() -> float:
                warehouse.append()
                return asyncio.run(_page(dashboard.base))

            figures["after_append_s"] = _median(runs, after_append)
            figures.update(_browser(dashboard, warehouse, runs) or {})
            figures["rss_mib"] = dashboard.rss_mib()
        finally:
            dashboard.stop()
    print()
    print(f"dashboard page over {rows:,} rows a table (logs, metrics, usage), seconds:")
    for name, value in figures.items():
        if name != "rows_per_table":
            print(f"  {name:<24} {value:>8.3f}" if name != "rss_mib" else
                  f"  {'dashboard RSS MiB':<24} {value:>8.0f}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"dashboard-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
