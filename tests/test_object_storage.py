"""The warehouse on object storage: S3 on moto's server (single-threaded, so that its
conditional puts are atomic), written by the collector's sink and maintainer, read back by
delta-rs and polars, with the configuration errors a user can make."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from collector.maintenance import Maintainer, MaintenancePolicy
from collector.sink import DeltaSink
from collector.storage import Files, Warehouse
from tests.conftest import ROOT, CollectorProcess
from tests.emulators import S3, TcpProxy, environment, moto_s3
from tests.readers import read_both
from tests.test_durability import post, readyz, wait_until
from tests.test_maintenance import CLAUDE, LOGS, canonical, key, logs_batch, shifted, shifted_body

NOW = MaintenancePolicy(compact_min_age=0)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with moto_s3() as server, environment(server.env):
        yield server


def rows(uri: str) -> list[dict]:
    """The table's rows, read by polars and by DuckDB (httpfs and delta), asserted equal."""
    return read_both(uri)


def test_appends_and_maintenance_on_s3(s3: S3) -> None:
    warehouse = Warehouse.parse(f"s3://{s3.bucket()}/telemetry")
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
    assert sink.append(LOGS, [(31, logs_batch(1, 10**15))]) is not None
    assert sum(canonical(rows(uri)).values()) == sum(before.values()) + 8


def serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", "serve", "--log-format", "json", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--warehouse", "ftp://host/wh"], "unknown warehouse scheme ftp://"),
        (["--warehouse", "s3://"], "names no bucket or container"),
        (["--warehouse", "s3://b/wh?region=x"], "options go in --storage-option"),
        (["--warehouse", "s3://bucket/wh"], "--wal-dir is required with a warehouse on object"),
        (["--warehouse", "s3://bucket/wh", "--wal-dir", "{tmp}/wal",
          "--storage-option", "aws_regoin=eu-west-1"], "'aws_regoin' is not valid"),
        (["--warehouse", "s3://bucket/wh", "--wal-dir", "{tmp}/wal",
          "--storage-option", "region"], "a storage option is KEY=VALUE"),
        (["--warehouse", "s3://no-such-bucket-here/wh", "--wal-dir", "{tmp}/wal"],
         "the bucket or container of s3://no-such-bucket-here/wh does not exist"),
        (["--warehouse", "s3://bucket/wh", "--wal-dir", "{tmp}/wal", "--instance-id", "a b"],
         "'a b' is not an instance id"),
    ],
)  # fmt: skip
def test_a_bad_storage_configuration_is_refused_with_its_reason(
    s3: S3, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = serve(*args, env={**os.environ, **s3.env})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout


def test_serve_on_s3_with_its_wal_on_local_disk_and_no_secret_anywhere(
    s3: S3, tmp_path: Path
) -> None:
    warehouse = f"s3://{s3.bucket()}/wh"
    proc = CollectorProcess(
        warehouse, "--wal-dir", str(tmp_path / "wal"), "--workers", "2",
        "--maintenance-interval", "1", "--compact-min-age", "0",
        env=s3.env, log_dir=tmp_path,
    )  # fmt: skip
    table = "main.agents.cc_otel_logs"
    uri = f"{warehouse}/main/agents/cc_otel_logs"
    try:
        sent = [shifted_body(CLAUDE, i * 10**9) for i in range(12)]
        for body in sent:
            assert post(proc, "/v1/logs", body, table)[0] == 200
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
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in text
    assert "collector started" in text and warehouse in text


def _count(uri: str) -> int:
    try:
        return pl.scan_delta(uri).select(pl.len()).collect().item()
    except Exception:  # not created yet
        return 0


def test_a_store_that_goes_away_keeps_every_row_and_writes_it_when_back(
    s3: S3, tmp_path: Path
) -> None:
    proxy = TcpProxy(s3.port)
    env = {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    warehouse = f"s3://{s3.bucket()}/wh"
    uri = f"{warehouse}/main/agents/cc_otel_logs"
    table = "main.agents.cc_otel_logs"
    proc = CollectorProcess(
        warehouse, "--wal-dir", str(tmp_path / "wal"), "--max-buffer-bytes", "300000",
        "--maintenance", "off", "--shutdown-timeout", "5", env=env, log_dir=tmp_path,
    )  # fmt: skip
    sent: list[bytes] = []
    try:
        for i in range(3):
            sent.append(shifted_body(CLAUDE, i * 10**9))
            assert post(proc, "/v1/logs", sent[-1], table)[0] == 200
        wait_until(lambda: _count(uri) == 3 * 8)

        proxy.down()
        refused = None
        for i in range(3, 400):
            body = shifted_body(CLAUDE, i * 10**9)
            status, headers = post(proc, "/v1/logs", body, table)
            if status != 200:
                refused = (status, headers)
                break
            sent.append(body)
        assert refused is not None and refused[0] == 503 and "Retry-After" in refused[1]
        health: dict = {}

        def says_why() -> bool:
            nonlocal health
            status, health = readyz(proc)
            state = health["tables"][table]
            return status == 503 and (state["failures"] > 0 or (state["flushing_for"] or 0) > 10)

        wait_until(says_why, timeout=60)  # the store's client retries for a while first
        assert health["status"] == "unavailable"
        assert "the buffers are at --max-buffer-bytes" in health["problems"]
        assert any(
            p == f"flushes to {table} are failing" or p.startswith(f"a flush to {table} has waited")
            for p in health["problems"]
        )

        proxy.up()
        wait_until(lambda: _count(uri) == len(sent) * 8, timeout=120)
        wait_until(lambda: readyz(proc)[0] == 200, timeout=30)
        expected = Counter(key(r) for body in sent for r in shifted(body, 0).to_pylist())
        assert Counter(key(r) for r in rows(uri)) == expected
    finally:
        code = proc.stop()
        proxy.down()
    assert code == 0
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in proc.logs() + json.dumps(health)


def test_three_replicas_append_to_one_table_exactly_once(s3: S3, tmp_path: Path) -> None:
    """Three `serve` processes on one bucket, as replicas on three hosts: distinct WALs, so
    distinct Delta app ids; concurrent commits to one table, retried on conflict. One of them
    holds its rows in its WAL (a long flush interval) and is SIGKILLed, then started again."""
    warehouse = f"s3://{s3.bucket()}/wh"
    uri = f"{warehouse}/main/agents/cc_otel_logs"
    table = "main.agents.cc_otel_logs"

    def replica(i: int) -> CollectorProcess:
        (tmp_path / f"r{i}").mkdir(exist_ok=True)
        interval = "30" if i == 1 else "0.2"
        return CollectorProcess(
            warehouse, "--wal-dir", str(tmp_path / f"wal-{i}"), "--flush-interval", interval,
            "--instance-id", f"replica-{i}",
            "--maintenance", "on" if i == 0 else "off", "--compact-min-age", "0",
            "--maintenance-interval", "1", env=s3.env, log_dir=tmp_path / f"r{i}",
        )  # fmt: skip

    replicas = [replica(i) for i in range(3)]
    sent: dict[int, list[bytes]] = {i: [] for i in range(3)}
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            for n in range(25):
                body = shifted_body(CLAUDE, (i * 1000 + n) * 10**9)
                assert post(replicas[i], "/v1/logs", body, table)[0] == 200
                sent[i].append(body)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    try:
        replicas[1].stop(signal.SIGKILL)  # its 25 requests are acknowledged, in its WAL only
        replicas[1] = replica(1)  # replays them
        assert replicas[1].stop() == 0  # and flushes them on the way out
        total = sum(len(b) for b in sent.values()) * 8
        wait_until(lambda: _count(uri) == total, timeout=120)
        expected = Counter(
            key(r)
            for bodies in sent.values()
            for body in bodies
            for r in shifted(body, 0).to_pylist()
        )
        assert Counter(key(r) for r in rows(uri)) == expected
        dt = DeltaTable(uri)
        versions = sorted(entry["version"] for entry in dt.history())
        assert versions == list(range(versions[-1] + 1))  # contiguous: none lost, none twice
        for i in range(3):  # each under its own identity: worker 0 of replica i
            assert (dt.transaction_version(f"replica-{i}-0") or 0) > 0, i
    finally:
        for r in (replicas[0], replicas[2]):
            assert r.stop() == 0
