"""Commits that recover: the Delta sink against other writers, stale snapshots, a commit that is
durable and still raises, and a second writer under our own app id.

Each test uses a real table (created from the DDL) and real other writers: another process, or
another handle on the table, doing what an operator or a second collector does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import structlog
from deltalake import DeltaTable
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.flatten import flatten_logs
from collector.schema import schema_for_table
from collector.sink import DeltaSink, IdentityConflict
from collector.tables import TableName
from tests.conftest import CAPTURES, ROOT, distinct_logs
from tests.readers import read_both

TABLE = TableName("main", "agents", "cc_otel_logs")
LOGS = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()  # 8 records


def batch(n: int) -> pa.RecordBatch:
    """The capture's 8 records, their observed times moved by ``n`` ns: distinct per ``n``."""
    return flatten_logs(ExportLogsServiceRequest.FromString(distinct_logs(LOGS, n))).batch


def observed(rows: list[dict]) -> list[int]:
    return sorted(r["observed_time_unix_nano"] for r in rows)


def expected(ns: range | list[int]) -> list[int]:
    return sorted(t for n in ns for t in batch(n).column("observed_time_unix_nano").to_pylist())


def sink(warehouse: Path, app_id: str = "collector-a") -> DeltaSink:
    s = DeltaSink(warehouse, app_id=app_id)
    s.ensure(TABLE, schema_for_table(TABLE.table))
    return s


def test_appends_by_another_process_between_our_read_and_our_commit_lose_nothing(
    tmp_path: Path,
) -> None:
    ours = sink(tmp_path)
    assert ours.append(TABLE, [(1, batch(1))]) is not None
    # Another collector process commits 30 times after our snapshot was taken.
    script = (
        "import sys; from tests.test_commits import TABLE, batch; from collector.sink import "
        "DeltaSink\ns = DeltaSink(sys.argv[1], app_id='collector-b')\n"
        "for n in range(100, 130): s.append(TABLE, [(n, batch(n))])"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, check=True)
    version = ours.append(TABLE, [(2, batch(2))])
    assert version == DeltaTable(str(ours.location(TABLE))).version()
    rows = read_both(ours.location(TABLE))
    assert observed(rows) == expected([1, 2, *range(100, 130)])
    dt = DeltaTable(str(ours.location(TABLE)))
    assert dt.transaction_version("collector-a") == 2
    assert dt.transaction_version("collector-b") == 129


def test_a_metadata_change_by_another_writer_does_not_fail_every_later_commit(
    tmp_path: Path,
) -> None:
    """The regression: a failed commit left the sink on its stale snapshot, where delta-rs found
    the same conflict on every retry, forever."""
    ours = sink(tmp_path)
    ours.append(TABLE, [(1, batch(1))])
    # An operator changes a table property while the collector runs: a metaData commit, which
    # conflicts with any commit prepared on the snapshot before it.
    DeltaTable(str(ours.location(TABLE))).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 60 days"}
    )
    assert ours.append(TABLE, [(2, batch(2))]) is not None
    assert ours.append(TABLE, [(3, batch(3))]) is not None
    dt = DeltaTable(str(ours.location(TABLE)))
    assert dt.metadata().configuration["delta.logRetentionDuration"] == "interval 60 days"
    assert dt.metadata().configuration["otel.schemaVersion"] == "v1"
    assert dt.transaction_version("collector-a") == 3
    assert observed(read_both(ours.location(TABLE))) == expected([1, 2, 3])


def test_a_commit_that_raises_after_it_is_durable_is_not_stored_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delta-rs reports an error after the commit file is written, as a store whose answer to
    the commit is lost does: the one fault injected here, at the library's boundary."""
    location = tmp_path / "main" / "agents" / "cc_otel_logs"
    ours = sink(tmp_path)
    ours.append(TABLE, [(1, batch(1))])
    committed = DeltaTable.create_write_transaction

    def lost_answer(self: DeltaTable, *args: object, **kwargs: object) -> None:
        committed(self, *args, **kwargs)
        raise OSError("connection reset by peer")

    with monkeypatch.context() as patch, structlog.testing.capture_logs() as logs:
        patch.setattr(DeltaTable, "create_write_transaction", lost_answer)
        assert ours.append(TABLE, [(2, batch(2)), (3, batch(3))]) == 2
    assert [e["event"] for e in logs] == ["commit raised after it was stored"]
    # The WAL replays the same entries after a crash: they are skipped, not stored again.
    assert ours.append(TABLE, [(2, batch(2)), (3, batch(3))]) is None
    assert ours.append(TABLE, [(4, batch(4))]) == 3
    assert observed(read_both(location)) == expected([1, 2, 3, 4])


def test_a_checkpoint_that_fails_fails_no_append(tmp_path: Path) -> None:
    location = tmp_path / "main" / "agents" / "cc_otel_logs"
    ours = sink(tmp_path)
    # Version 10 is due a checkpoint: a directory where it goes fails it.
    (location / "_delta_log" / f"{10:020d}.checkpoint.parquet" / "x").mkdir(parents=True)
    with structlog.testing.capture_logs() as logs:
        for n in range(1, 21):
            assert ours.append(TABLE, [(n, batch(n))]) == n
    assert [(e["event"], e["version"]) for e in logs] == [("checkpoint failed", 10)]
    assert (location / "_delta_log" / f"{20:020d}.checkpoint.parquet").is_file()
    assert observed(read_both(location)) == expected(range(1, 21))


def test_a_second_writer_under_our_app_id_is_an_error_never_papered_over(tmp_path: Path) -> None:
    first = sink(tmp_path, "shared-id")
    first.append(TABLE, [(1, batch(1))])
    impostor = sink(tmp_path, "shared-id")
    impostor.append(TABLE, [(5, batch(5))])  # on a fresh snapshot: nothing to catch yet
    with structlog.testing.capture_logs() as logs, pytest.raises(IdentityConflict) as raised:
        first.append(TABLE, [(2, batch(2))])
    assert "shared-id" in str(raised.value) and str(TABLE) in str(raised.value)
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert error["app_id"] == "shared-id" and error["table"] == str(TABLE)
    # Later flushes fail the same way: the table's txn version (5) is not taken as ours, which
    # would have skipped batch 2 as stored.
    with pytest.raises(IdentityConflict):
        first.append(TABLE, [(2, batch(2))])
    assert observed(read_both(first.location(TABLE))) == expected([1, 5])


def test_conflict_retries_are_logged_with_the_table(tmp_path: Path) -> None:
    ours = sink(tmp_path)
    ours.append(TABLE, [(1, batch(1))])
    DeltaTable(str(ours.location(TABLE))).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 45 days"}
    )
    with structlog.testing.capture_logs() as logs:
        ours.append(TABLE, [(2, batch(2))])
    (retry,) = logs
    assert retry["event"] == "commit conflict, retrying"
    assert retry["table"] == str(TABLE) and retry["attempt"] == 1
    assert "Metadata changed" in retry["error"]
