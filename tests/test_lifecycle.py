"""The collector process: configuration sources, clean shutdown with data buffered, the CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from deltalake import DeltaTable

from collector.schema import Array, Map, Primitive, SqlType, Struct, load_schema
from tests.conftest import CAPTURES, ROOT, CollectorProcess, distinct_logs, wait_for_rows
from tests.readers import duckdb_with_delta, read_both, read_duckdb

LOGS = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()


def _post(collector: CollectorProcess, body: bytes, table: str | None) -> int:
    headers = {"Content-Type": "application/x-protobuf"}
    if table:
        headers["X-Databricks-UC-Table-Name"] = table
    request = urllib.request.Request(collector.url("/v1/logs"), data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_buffered_data_before_exit(tmp_path: Path, sig: int) -> None:
    proc = CollectorProcess(tmp_path / "warehouse", "--flush-interval", "3600")
    table = "main.agents.cc_otel_logs"
    for i in range(3):
        assert _post(proc, distinct_logs(LOGS, i), table) == 200
    # Created on first use, but the rows are still buffered: the interval is an hour.
    assert DeltaTable(str(proc.table_path(table))).version() == 0
    assert proc.stop(sig) == 0
    rows = read_both(proc.table_path(table), key=lambda r: r["time_unix_nano"])
    assert len(rows) == 24
    assert '"collector stopped"' in proc.logs()


def test_flush_rows_threshold_flushes_before_the_interval(tmp_path: Path) -> None:
    proc = CollectorProcess(
        tmp_path / "warehouse", "--flush-interval", "3600", "--flush-rows", "16"
    )
    try:
        table = "main.agents.cc_otel_logs"
        assert _post(proc, distinct_logs(LOGS, 1), table) == 200
        assert _post(proc, distinct_logs(LOGS, 2), table) == 200
        assert len(wait_for_rows(proc.table_path(table), 16)) == 16
        assert DeltaTable(str(proc.table_path(table))).version() == 1  # create, then one append
    finally:
        proc.stop()


def test_settings_from_environment_and_toml(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('default-table = "ignored.by.env"\nflush_interval = 0.3\n')
    proc = CollectorProcess(
        tmp_path / "warehouse",
        "--config",
        str(config),
        env={"COLLECTOR_DEFAULT_TABLE": "Ops.Telemetry.Fallback"},
    )
    try:
        assert _post(proc, LOGS, None) == 200  # no header: the default prefix's logs table
        rows = wait_for_rows(proc.table_path("ops.telemetry.fallback_otel_logs"), 8)
        assert len(rows) == 8
    finally:
        proc.stop()


def test_bad_setting_exits_2_naming_its_source(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector", "serve", "--flush-interval", "soon"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLLECTOR_WAREHOUSE": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 2
    assert "error: --flush-interval: could not convert string to float: 'soon'" in result.stderr


def _duckdb_type(t: SqlType) -> str:
    """The DuckDB spelling of a DDL type, to check the table against the DDL independently."""
    if isinstance(t, Primitive):
        return {"STRING": "VARCHAR", "LONG": "BIGINT", "INT": "INTEGER", "DOUBLE": "DOUBLE",
                "BOOLEAN": "BOOLEAN"}[t.name]  # fmt: skip
    if isinstance(t, Array):
        return _duckdb_type(t.element) + "[]"
    if isinstance(t, Map):
        return f"MAP({_duckdb_type(t.key)}, {_duckdb_type(t.value)})"
    assert isinstance(t, Struct)
    return "STRUCT(" + ", ".join(f'"{f.name}" {_duckdb_type(f.type)}' for f in t.fields) + ")"


def test_tables_create_makes_three_tables_with_the_ddl_schema(tmp_path: Path) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "collector",
                "tables",
                "create",
                "main.agents.cc",
                "--warehouse",
                str(tmp_path),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"main.agents.cc_otel_{s}: created at {tmp_path / 'main' / 'agents' / f'cc_otel_{s}'}"
        for s in ("metrics", "logs", "spans")
    ]
    again = run()
    assert again.returncode == 0
    assert "exists, schema matches" in again.stdout

    for name in ("otel_metrics", "otel_logs", "otel_spans"):
        ddl = load_schema(name)
        path = tmp_path / "main" / "agents" / f"cc_{name}"
        dt = DeltaTable(str(path))
        assert dt.metadata().configuration == {"otel.schemaVersion": "v1"}
        # delta-rs's view of the schema, field by field, with nesting, against the DDL.
        ddl.check_delta_schema(dt.schema().to_json())
        assert [f.name for f in dt.schema().fields] == [c.name for c in ddl.columns]
        # DuckDB's view, compared with the DDL rendered in DuckDB's spelling.
        assert read_duckdb(path) == []
        con = duckdb_with_delta()
        described = con.execute(f"DESCRIBE SELECT * FROM delta_scan('{path}')").fetchall()
        assert [(c, t.replace('"', "")) for c, t, *_ in described] == [
            (c.name, _duckdb_type(c.type).replace('"', "")) for c in ddl.columns
        ]
