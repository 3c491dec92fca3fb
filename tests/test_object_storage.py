"""The warehouse on object storage: S3 on moto's server (single-threaded, so that its
conditional puts are atomic) and Azure Blob on Azurite, written by the collector's sink, its
maintainer and several replicas at once, read back by delta-rs/polars and DuckDB; the outages a
store has, and the configuration errors a user can make. GCS (fake-gcs-server, see
tests/emulators.py) for one writer only."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.maintenance import Maintainer, MaintenancePolicy
from collector.sink import DeltaSink
from collector.storage import Files, Warehouse
from tests.conftest import ROOT, CollectorProcess, free_port
from tests.emulators import FAULTS, HttpProxy, Store, TcpProxy, emulator, environment
from tests.readers import polars_credentials, read_both, read_polars
from tests.test_crash import Ledger
from tests.test_durability import post, readyz, wait_until
from tests.test_maintenance import (
    CLAUDE,
    CODEX,
    LOGS,
    canonical,
    key,
    logs_batch,
    shifted,
    shifted_body,
)

NOW = MaintenancePolicy(compact_min_age=0)
TABLE = "main.agents.cc_otel_logs"


@pytest.fixture(scope="module")
def s3() -> Iterator[Store]:
    with emulator("s3") as store:
        yield store


@pytest.fixture(scope="module")
def azure() -> Iterator[Store]:
    with emulator("azure") as store:
        yield store


@pytest.fixture(scope="module")
def gcs() -> Iterator[Store]:
    with emulator("gcs") as store:
        yield store


@pytest.fixture(params=["s3", "azure", "gcs"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each emulator in turn, its variables set in this process (for the readers and the sink
    in the test itself)."""
    running: Store = request.getfixturevalue(request.param)
    with environment(running.env):
        yield running


# Replicas and outages: on the emulators that order concurrent conditional writes as the real
# stores do (nothing here shows how GCS does).
SHARED = pytest.mark.parametrize("store", ["s3", "azure"], indirect=True)


def rows(uri: str) -> list[dict]:
    """The table's rows, read by polars and by DuckDB, asserted equal; on GCS by polars alone
    (DuckDB reaches GCS through its S3-compatible API, which the emulator lacks)."""
    return read_polars(uri) if uri.startswith("gs://") else read_both(uri)


def test_appends_and_maintenance(store: Store) -> None:
    warehouse = Warehouse.parse(store.warehouse("telemetry"))
    sink = DeltaSink(warehouse, app_id="writer")
    batches = [logs_batch(s, s * 10**9) for s in range(30)]
    for i, batch in enumerate(batches):
        assert sink.append(LOGS, [(i + 1, batch)]) == i + 1
    uri = sink.uri(LOGS)
    assert uri == f"{warehouse.uri}/main/agents/cc_otel_logs"
    before = canonical(rows(uri))
    assert sum(before.values()) == sum(b.num_rows for b in batches)
    assert len(DeltaTable(uri).file_uris()) == 30

    maintainer = Maintainer(warehouse, NOW)
    assert maintainer.tables() == [LOGS]
    (report,) = maintainer.run_once()
    assert report.error is None, report.error
    assert (report.files_before, report.files_after) == (30, 1)
    assert canonical(rows(uri)) == before
    dt = DeltaTable(uri)
    assert dt.transaction_version("writer") == 30
    files = Files(warehouse)
    names = {e.path for e in files.list("_maintenance")}
    assert "_maintenance/reports/main.agents.cc_otel_logs.json" in names
    assert any(n.startswith("_maintenance/leases/main.agents.cc_otel_logs.") for n in names)
    log = {e.path for e in files.list("main/agents/cc_otel_logs/_delta_log")}
    assert f"main/agents/cc_otel_logs/_delta_log/{dt.version():020d}.checkpoint.parquet" in log
    # The sink goes on appending, exactly once: a replayed batch is skipped.
    assert sink.append(LOGS, [(30, batches[-1])]) is None
    for s in range(9):
        assert sink.append(LOGS, [(31 + s, logs_batch(1, 10**15 + s))]) is not None
    after = canonical(rows(uri))
    assert sum(after.values()) == sum(before.values()) + 9 * 8
    # `maintain` on the same URI, as a cron job or a sidecar would run it: no WAL of its own.
    result = subprocess.run(
        [sys.executable, "-m", "collector", "maintain", "--once", "--warehouse", warehouse.uri,
         "--compact-min-age", "0", "--log-format", "json"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, **store.env}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("main.agents.cc_otel_logs: files 10 → 1,")
    assert canonical(rows(uri)) == after
    assert store.secret not in result.stdout + result.stderr


def serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", "serve", "--log-format", "json", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("s3", ["--warehouse", "ftp://host/wh"], "unknown warehouse scheme ftp://"),
        ("s3", ["--warehouse", "s3://"], "names no bucket or container"),
        ("s3", ["--warehouse", "s3://b/wh?region=x"], "options go in --storage-option"),
        ("s3", ["--warehouse", "s3://bucket/wh"],
         "--wal-dir is required with a warehouse on object"),
        ("s3", ["--warehouse", "s3://bucket/wh", "--wal-dir", "{tmp}/wal",
                "--storage-option", "aws_regoin=eu-west-1"], "'aws_regoin' is not valid"),
        ("s3", ["--warehouse", "s3://bucket/wh", "--wal-dir", "{tmp}/wal",
                "--storage-option", "region"], "a storage option is KEY=VALUE"),
        ("s3", ["--warehouse", "s3://no-such-bucket-here/wh", "--wal-dir", "{tmp}/wal"],
         "the bucket or container of s3://no-such-bucket-here/wh does not exist"),
        ("s3", ["--warehouse", "s3://bucket/wh", "--wal-dir", "{tmp}/wal",
                "--instance-id", "a b"], "'a b' is not an instance id"),
        ("azure", ["--warehouse", "az://no-such-container/wh", "--wal-dir", "{tmp}/wal"],
         "the bucket or container of az://no-such-container/wh does not exist"),
        ("azure", ["--warehouse", "az://c/wh", "--wal-dir", "{tmp}/wal",
                   "--storage-option", "azure_storage_acount_name=x"],
         "'azure_storage_acount_name' is not valid"),
        ("azure", ["--warehouse", "abfss://c@/wh", "--wal-dir", "{tmp}/wal"], "abfss://c@/wh"),
        ("gcs", ["--warehouse", "gs://no-such-bucket-here/wh", "--wal-dir", "{tmp}/wal"],
         "the bucket or container of gs://no-such-bucket-here/wh does not exist"),
    ],
)  # fmt: skip
def test_a_bad_storage_configuration_is_refused_with_its_reason(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, args: list[str], message: str
) -> None:
    running: Store = request.getfixturevalue(kind)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = serve(*args, env={**os.environ, **running.env})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert running.secret not in result.stderr + result.stdout


def test_serve_with_its_wal_on_local_disk_and_no_secret_anywhere(
    store: Store, tmp_path: Path
) -> None:
    warehouse = store.warehouse()
    proc = CollectorProcess(
        warehouse, "--wal-dir", str(tmp_path / "wal"), "--workers", "2",
        "--maintenance-interval", "1", "--compact-min-age", "0",
        env=store.env, log_dir=tmp_path,
    )  # fmt: skip
    uri = f"{warehouse}/main/agents/cc_otel_logs"
    try:
        sent = [shifted_body(CLAUDE, i * 10**9) for i in range(12)]
        for body in sent:
            assert post(proc, "/v1/logs", body, TABLE)[0] == 200
        wait_until(lambda: _count(uri) == 12 * 8)
        status, health = readyz(proc)
        assert status == 200, health
        expected = Counter(key(r) for body in sent for r in shifted(body, 0).to_pylist())
        assert Counter(key(r) for r in rows(uri)) == expected
        with urllib.request.urlopen(proc.url("/metrics")) as answer:
            metrics = answer.read().decode()
    finally:
        assert proc.stop() == 0
    text = proc.logs() + json.dumps(health) + metrics
    assert store.secret not in text
    assert "collector started" in text and warehouse in text


def _count(uri: str) -> int:
    try:
        return (
            pl.scan_delta(uri, credential_provider=polars_credentials(uri))
            .select(pl.len())
            .collect()
            .item()
        )
    except Exception:  # not created yet
        return 0


@SHARED
@pytest.mark.parametrize("cause", ["down", "credentials", "throttling", "bucket"])
def test_a_store_that_fails_keeps_every_row_and_writes_it_when_back(
    store: Store, tmp_path: Path, cause: str
) -> None:
    """The store goes away (its endpoint closes), refuses the credentials, throttles every
    request, or loses its bucket or container, then comes back: the collector stays up, says
    why it is degraded, answers 503 once its buffers are full, and writes every row after."""
    proxy: TcpProxy | HttpProxy = TcpProxy(store.port) if cause == "down" else HttpProxy(store.port)
    warehouse = store.warehouse()
    uri = f"{warehouse}/main/agents/cc_otel_logs"
    proc = CollectorProcess(
        warehouse, "--wal-dir", str(tmp_path / "wal"), "--max-buffer-bytes", "300000",
        "--maintenance", "off", "--shutdown-timeout", "5", env=store.via(proxy.port),
        log_dir=tmp_path,
    )  # fmt: skip
    sent: list[bytes] = []
    health: dict = {}
    try:
        for i in range(3):
            sent.append(shifted_body(CLAUDE, i * 10**9))
            assert post(proc, "/v1/logs", sent[-1], TABLE)[0] == 200
        wait_until(lambda: _count(uri) == 3 * 8)
        # That flush wholly done (its refresh after the commit too): nothing held leaves now.
        wait_until(lambda: readyz(proc)[1]["held_bytes"] == 0)

        if isinstance(proxy, TcpProxy):
            proxy.down()
        else:
            proxy.fail(store.kind, cause)
        refused = None
        for i in range(3, 400):
            body = shifted_body(CLAUDE, i * 10**9)
            status, headers = post(proc, "/v1/logs", body, TABLE)
            if status != 200:
                refused = (status, headers)
                break
            sent.append(body)
        assert refused is not None and refused[0] == 503 and "Retry-After" in refused[1]

        # Refused credentials and a missing bucket are not retried: their cause shows (a GET
        # that finds no bucket says only "not found", a listing names it). A store that does
        # not answer, or throttles, is retried for a while first.
        cause_code = FAULTS[(store.kind, cause)][1] if cause in ("credentials", "bucket") else ""

        def says_why() -> bool:
            nonlocal health
            status, health = readyz(proc)
            state = health["tables"][TABLE]
            failing = state["failures"] > 0 and cause_code in (state["last_error"] or "")
            return status == 503 and (failing or (state["flushing_for"] or 0) > 10)

        wait_until(says_why, timeout=90)
        assert health["status"] == "unavailable"
        assert "the buffers are at --max-buffer-bytes" in health["problems"]
        assert any(
            p == f"flushes to {TABLE} are failing" or p.startswith(f"a flush to {TABLE} has waited")
            for p in health["problems"]
        )
        assert "\x1b" not in (health["tables"][TABLE]["last_error"] or "")  # no terminal colours

        proxy.up() if isinstance(proxy, TcpProxy) else proxy.heal()
        wait_until(lambda: _count(uri) == len(sent) * 8, timeout=180)
        wait_until(lambda: readyz(proc)[0] == 200, timeout=30)
        expected = Counter(key(r) for body in sent for r in shifted(body, 0).to_pylist())
        assert Counter(key(r) for r in rows(uri)) == expected
    finally:
        code = proc.stop()
        proxy.down() if isinstance(proxy, TcpProxy) else proxy.close()
    assert code == 0
    assert store.secret not in proc.logs() + json.dumps(health)


REPLICAS = 3


def run_replicas(
    store: Store, tmp_path: Path, kills: int, env: dict[str, str], until: str
) -> tuple[Ledger, str, list[CollectorProcess]]:
    """Three `serve` processes on one warehouse, as replicas on three hosts, each with its
    default worker count, its own WAL and instance id, maintenance on (one holds the lease); a
    real OTLP exporter sends to each. ``kills`` times a random replica is SIGKILLed at a random
    moment and started again on the same WAL, then all stop, and start and stop once more (a
    replay of anything left), not before one of them has logged ``until``. Returns what was
    sent and acknowledged, the table's URI, and the last process of each replica."""
    warehouse = store.warehouse()
    ports = [(free_port(), free_port()) for _ in range(REPLICAS)]

    def replica(i: int, wait: bool = False) -> CollectorProcess:
        (tmp_path / f"r{i}").mkdir(exist_ok=True)
        return CollectorProcess(
            warehouse, "--wal-dir", str(tmp_path / f"wal-{i}"), "--instance-id", f"replica-{i}",
            "--workers", "2", "--maintenance-interval", "2", "--compact-min-age", "0",
            # A killed replica's lease passes on in seconds, not the default minute.
            "--maintenance-lease", "3",
            env=env, ports=ports[i], wait=wait, log_dir=tmp_path / f"r{i}",
        )  # fmt: skip

    procs = [replica(i, wait=True) for i in range(REPLICAS)]
    ledger = Ledger()
    threads = [
        threading.Thread(target=ledger.send, args=(procs[i].url("/v1/logs"), TABLE, i))
        for i in range(REPLICAS)
    ]
    for t in threads:
        t.start()
    rnd = random.Random()
    try:
        for _ in range(kills):
            time.sleep(rnd.uniform(0.5, 3.0))
            i = rnd.randrange(REPLICAS)
            procs[i].stop(signal.SIGKILL)
            procs[i] = replica(i)  # not waiting: the next kill may land while it starts
        for i in range(REPLICAS):
            procs[i].wait_listening(timeout=60)
        wait_until(lambda: any(until in p.logs() for p in procs), 120)
        time.sleep(2)  # the exporters' retries land
    finally:
        ledger.running.clear()
        for t in threads:
            t.join(timeout=120)
        stopped = [p.stop(timeout=60) for p in procs]
    assert stopped == [0] * REPLICAS, stopped
    procs = [replica(i, wait=True) for i in range(REPLICAS)]
    assert [p.stop(timeout=60) for p in procs] == [0] * REPLICAS
    return ledger, f"{warehouse}/main/agents/cc_otel_logs", procs


def _events(log: str) -> Iterator[dict]:
    """The JSON lines of a log; a line a SIGKILL cut short, or one that another process wrote
    into the middle of, is not one."""
    for line in log.splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def assert_every_flush_committed(uri: str, procs: list[CollectorProcess]) -> None:
    """Each flush a replica logged is a commit in the table's log: the txn action of its
    worker's app id with the version it logged. A commit another writer overwrote is missing,
    even when the collector later noticed and wrote its rows again."""
    flushed = {
        (f"replica-{i}-{event['worker']}", event["txn_version"])
        for i, proc in enumerate(procs)
        for event in _events(proc.logs())
        if event.get("event") == "flushed" and event.get("table") == TABLE
    }
    warehouse, table = uri.split("/main/", 1)
    files = Files(Warehouse.parse(warehouse), "main", table, "_delta_log")
    committed = {
        (action["txn"]["appId"], action["txn"]["version"])
        for entry in files.list()
        if entry.path.endswith(".json")
        for action in map(json.loads, (files.read(entry.path) or b"").splitlines())
        if "txn" in action
    }
    missing = flushed - committed
    assert not missing, f"{len(missing)} logged flushes missing from the log: {sorted(missing)[:5]}"


@pytest.mark.slow
@SHARED
def test_replicas_killed_at_random_lose_and_duplicate_nothing(store: Store, tmp_path: Path) -> None:
    """Every acknowledged record exactly once, table versions contiguous, each replica
    committing under its own identity, whatever moment each was SIGKILLed at."""
    kills = int(os.environ.get("CRASH_KILLS", 9))
    # Appends go on until one of them has compacted the table under its lease.
    ledger, uri, procs = run_replicas(store, tmp_path, kills, store.env, "maintenance: compacted")
    table_rows = rows(uri)
    ledger.check(table_rows, f"{REPLICAS} replicas on {store.kind}, kills={kills}")
    assert len(ledger.acked) > 1000
    dt = DeltaTable(uri)
    history = dt.history()
    versions = sorted(entry["version"] for entry in history)
    assert versions == list(range(versions[-1] + 1))  # none lost, none written twice
    for i in range(REPLICAS):  # each replica's workers commit under their own app ids
        assert any(dt.transaction_version(f"replica-{i}-{w}") for w in (0, 1)), i
    assert_every_flush_committed(uri, procs)
    logs = "".join(p.logs() for p in procs)
    assert "Concurrent transaction" not in logs and "share one identity" not in logs
    assert store.secret not in logs


@pytest.mark.slow
def test_the_replica_test_sees_lost_commits_on_a_store_without_conditional_puts(
    s3: Store, tmp_path: Path
) -> None:
    """A negative control: the same replicas on an S3 that ignores ``If-None-Match`` (a relay
    that drops it) overwrite each other's commits, and the check above sees the loss."""
    proxy = HttpProxy(s3.port, ignore_conditions=True)
    try:
        with environment(s3.env):
            # Appends go on until a collector noticed that its commit is gone (its txn version on
            # the table fell behind): a commit was overwritten.
            _, uri, procs = run_replicas(s3, tmp_path, 0, s3.via(proxy.port), "share one identity")
            with pytest.raises(AssertionError, match="logged flushes missing from the log"):
                assert_every_flush_committed(uri, procs)
    finally:
        proxy.close()


def _dashboard_get(port: int, path: str, proc: subprocess.Popen[bytes]) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.URLError:
            assert time.monotonic() < deadline and proc.poll() is None, "dashboard did not start"
            time.sleep(0.2)


def _rounded(value: object) -> object:
    """``value`` with its floats to 12 significant digits: sums of costs differ in their last
    bits with the order of the rows, which a compaction changes."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _calls_in(bodies: list[bytes]) -> int:
    """The model calls in the captures' requests, counted from the protobuf itself: Claude
    Code's api_request events and Codex's completed responses that carry the tokens."""
    calls = 0
    for body in bodies:
        for rl in ExportLogsServiceRequest.FromString(body).resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    a = {kv.key: kv.value.string_value for kv in record.attributes}
                    claude = a.get("event.name") == "api_request"
                    codex = (a.get("event.name") == "codex.sse_event"
                             and a.get("event.kind") == "response.completed"
                             and "input_token_count" in a)  # fmt: skip
                    calls += claude or codex
    return calls


@SHARED
def test_the_dashboard_reads_a_table_on_the_store_through_its_compaction(
    store: Store, tmp_path: Path
) -> None:
    """``python -m collector dashboard`` on a warehouse in the store, read per data file: its
    figures equal those of the same batches in a local warehouse, before and after a
    maintenance pass replaced the files (no file counted twice or lost) and appends after it."""
    from collector.dashboard import figures
    from collector.dashboard.data import Tables

    warehouse = Warehouse.parse(store.warehouse("dash"))
    remote, local = DeltaSink(warehouse, app_id="w"), DeltaSink(tmp_path / "wh", app_id="w")
    shifts = [s * 3_600 * 10**9 for s in range(12)]
    bodies = [shifted_body(CLAUDE if s % 2 else CODEX, shifts[s]) for s in range(12)]
    for sink in (remote, local):
        for s in range(10):
            sink.append(LOGS, [(s + 1, logs_batch(s, shifts[s]))])
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "dashboard", "--warehouse", warehouse.uri,
         "--http", f"127.0.0.1:{port}", "--log-format", "json"],
        cwd=ROOT, env={**os.environ, **store.env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    reference = Tables(Warehouse.of(tmp_path / "wh"))

    def assert_same(appended: int) -> None:
        events = [reference.read(LOGS)]
        want = json.loads(json.dumps({"tables": [str(LOGS)],
                                      **figures.tiles(events, [], figures.Filters())}))  # fmt: skip
        got = _dashboard_get(port, "/dashboard/api/tiles", proc)
        assert _rounded(got) == _rounded(want)
        assert want["api_calls"] == _calls_in(bodies[:appended])
        by_day = _dashboard_get(port, "/dashboard/api/calls?by=day,agent", proc)["rows"]
        query = {"by": "day,agent"}
        want_by_day = json.loads(json.dumps(figures.calls(events, figures.Filters(), query)))
        assert _rounded(by_day) == _rounded(want_by_day)

    try:
        assert_same(10)
        (report,) = Maintainer(warehouse, NOW).run_once()
        assert report.error is None and report.files_after < report.files_before
        assert_same(10)
        for sink in (remote, local):
            for s in (10, 11):
                sink.append(LOGS, [(s + 1, logs_batch(s, shifts[s]))])
        assert_same(12)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
