"""The write-ahead log on its own: durability, recovery, retries, segment lifecycle."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from collector import wal as wal_module
from collector.hoststate import HostState
from collector.tables import TableName
from collector.wal import WalIdentityMismatch, WalLocked, WriteAheadLog

LOGS = TableName("main", "agents", "cc_otel_logs")
METRICS = TableName("main", "agents", "cc_otel_metrics")


def batch(n: int) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(range(n), pa.int64()), "s": [f"v{i}" for i in range(n)]})


def opened(path: Path, **kwargs: object) -> tuple[WriteAheadLog, list]:
    wal = WriteAheadLog(path, **kwargs)  # type: ignore[arg-type]
    return wal, list(wal.recover())


async def test_records_survive_a_restart_in_order(tmp_path: Path) -> None:
    wal, replayed = opened(tmp_path)
    assert replayed == []
    lsns = []
    for i, table in enumerate([LOGS, METRICS, LOGS]):
        lsn, repeated = wal.write(table, batch(i + 1))
        assert not repeated
        lsns.append(lsn)
    await wal.durable(lsns[-1])
    assert lsns == [1, 2, 3]
    assert wal.synced_lsn == 3
    wal.close()

    again, records = opened(tmp_path)
    assert [(r.lsn, r.table, r.rows) for r in records] == [
        (1, LOGS, batch(1)),
        (2, METRICS, batch(2)),
        (3, LOGS, batch(3)),
    ]
    assert again.instance_id == wal.instance_id  # the Delta txn app id is stable
    lsn, _ = again.write(LOGS, batch(9))
    assert lsn == 4


async def test_a_torn_record_at_the_end_is_dropped(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    lsn, _ = wal.write(LOGS, batch(2))
    await wal.durable(lsn)
    wal.close()
    (segment,) = [p for p in tmp_path.glob("*.wal") if p.stat().st_size]
    good = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02")  # a frame header and a little of its body
    again, records = opened(tmp_path)
    assert [r.lsn for r in records] == [1]
    assert segment.stat().st_size == good
    assert again.write(LOGS, batch(3))[0] == 2


async def test_a_retry_is_recognised_not_written(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    first, repeated = wal.write(LOGS, batch(5))
    assert not repeated
    assert wal.write(LOGS, batch(5)) == (first, True)
    assert wal.write(METRICS, batch(5))[1] is False  # same rows, other table: not a retry
    await wal.durable(first)
    wal.close()
    # After a crash the retry is still recognised, by the record replayed from disk.
    again, _ = opened(tmp_path)
    assert again.write(LOGS, batch(5)) == (first, True)


async def test_retries_are_recognised_after_their_segment_is_gone(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    lsn, _ = wal.write(LOGS, batch(5))
    await wal.durable(lsn)
    wal.committed(LOGS, lsn)  # in Delta now: the segment goes, its digest stays
    assert not [p for p in tmp_path.glob("*.wal") if p.stat().st_size]
    assert list(tmp_path.glob("*.digests"))
    assert wal.write(LOGS, batch(5)) == (0, True)
    wal.close()
    again, records = opened(tmp_path)
    assert records == []
    assert again.write(LOGS, batch(5)) == (0, True)


async def test_dedup_window_zero_stores_every_request(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path, dedup_window=0)
    assert wal.write(LOGS, batch(5)) == (1, False)
    assert wal.write(LOGS, batch(5)) == (2, False)


async def test_segments_go_once_every_table_has_committed_past_them(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path, segment_bytes=1)  # every record in a segment of its own
    a, _ = wal.write(LOGS, batch(1))
    b, _ = wal.write(METRICS, batch(2))
    c, _ = wal.write(LOGS, batch(3))
    await wal.durable(c)

    def live() -> list[int]:
        return sorted(int(p.stem) for p in tmp_path.glob("*.wal") if p.stat().st_size)

    assert live() == [a, b, c]
    wal.committed(LOGS, a)
    assert live() == [b, c]
    wal.committed(LOGS, c)
    assert live() == [b]
    wal.committed(METRICS, b)
    assert live() == []
    wal.close()


async def test_lsns_keep_growing_after_the_log_is_drained(tmp_path: Path) -> None:
    # A reused LSN would be taken for one already committed (Delta txn version) and skipped.
    wal, _ = opened(tmp_path)
    for i in range(3):
        lsn, _ = wal.write(LOGS, batch(i + 1))
    await wal.durable(lsn)
    wal.committed(LOGS, lsn)
    wal.close()
    again, records = opened(tmp_path)
    assert records == []
    assert again.write(LOGS, batch(10))[0] == lsn + 1


async def test_concurrent_writers_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = wal_module._fdatasync_all

    def counting(fds: list[int]) -> None:
        calls.append(len(fds))
        real(fds)

    monkeypatch.setattr(wal_module, "_fdatasync_all", counting)
    wal, _ = opened(tmp_path)

    async def one(i: int) -> None:
        lsn, _ = wal.write(LOGS, batch(i + 1))
        await wal.durable(lsn)

    await asyncio.gather(*(one(i) for i in range(100)))
    assert wal.synced_lsn == 100
    assert 1 <= len(calls) < 10  # group commit: a handful of fsyncs for 100 records


def test_a_log_has_one_owner(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    lsn, _ = wal.write(LOGS, batch(1))
    with pytest.raises(WalLocked) as refused:
        WriteAheadLog(tmp_path, lock_timeout=0.3)
    assert str(refused.value) == (
        f"the write-ahead log {tmp_path} is in use by another process (pid {os.getpid()}); "
        "each collector process needs a --wal-dir of its own"
    )
    assert len(list(WriteAheadLog.scan(tmp_path, horizon=0))) == 1  # nothing was touched
    wal.close()  # the owner goes: the next one takes over at once
    again, records = opened(tmp_path)
    assert [r.lsn for r in records] == [lsn]
    again.close()


async def test_a_retry_on_another_worker_is_recognised_through_the_host_index(
    tmp_path: Path,
) -> None:
    host = HostState(tmp_path / "host.sqlite", dedup_window=600)
    mine, _ = opened(tmp_path / "worker-0", host=host)
    other, _ = opened(tmp_path / "worker-1", host=HostState(tmp_path / "host.sqlite", 600))
    lsn, _ = mine.write(LOGS, batch(5))
    assert other.write(LOGS, batch(5)) == (0, True)  # accepted by worker 0: not written again
    assert other.write(LOGS, batch(6))[1] is False
    await mine.durable(lsn)


def test_a_sibling_log_is_read_for_its_digests_while_its_owner_writes(tmp_path: Path) -> None:
    """A worker that crashed between its WAL write and its index insert: the digest is found
    in its log, which the others read before they accept anything."""
    owner, _ = opened(tmp_path)
    owner.write(LOGS, batch(1))
    owner.write(METRICS, batch(2))
    with (tmp_path / f"{1:020d}.wal").open("ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02")  # as if a third record were being written
    digests = list(WriteAheadLog.scan(tmp_path, horizon=time.time() - 60))
    assert [d for d, _ in digests] == [
        WriteAheadLog.digest(LOGS, wal_module._ipc(batch(1))),
        WriteAheadLog.digest(METRICS, wal_module._ipc(batch(2))),
    ]
    assert list(WriteAheadLog.scan(tmp_path, horizon=time.time() + 60)) == []
    owner.close()


def test_a_log_keeps_the_instance_id_it_was_first_given(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path / "a", instance_id="replica-a-0")
    assert wal.instance_id == "replica-a-0"
    wal.write(LOGS, batch(1))
    wal.close()
    again, _ = opened(tmp_path / "a")  # not given: the log's own
    assert again.instance_id == "replica-a-0"
    again.close()
    # Another id would commit the rows still in the log again, under another app id.
    with pytest.raises(WalIdentityMismatch) as refused:
        WriteAheadLog(tmp_path / "a", instance_id="replica-b-0")
    assert str(refused.value) == (
        f"the write-ahead log {tmp_path / 'a'} belongs to instance replica-a-0, not "
        "replica-b-0: start with that instance id, or give this one a new --wal-dir"
    )
    made_up, _ = opened(tmp_path / "b")
    assert made_up.instance_id.startswith("otlp-delta-collector-")
    made_up.close()
    right, _ = opened(tmp_path / "a", instance_id="replica-a-0")  # the refusal left no lock
    right.close()


async def test_a_request_kept_in_place_of_its_rows_replays_to_the_same_rows(
    tmp_path: Path,
) -> None:
    """With the native core the log keeps the protobuf request, not its encoded rows; replay
    flattens it again under the limits it was accepted with. Both kinds share one log."""
    from collector.codec import PROTOBUF, decode_request
    from collector.flatten import Limits
    from collector.pipeline import flatten_request, stored_rows
    from collector.signals import LOGS as LOGS_SIGNAL
    from collector.wal import StoredRequest
    from tests.conftest import CAPTURES

    body = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
    limits = Limits(max_attributes=5, max_value_bytes=20)
    rows = flatten_request(LOGS_SIGNAL, decode_request(LOGS_SIGNAL, body, PROTOBUF, limits), limits)
    request = StoredRequest("logs", 5, 20, bytearray(body))
    wal, _ = opened(tmp_path)
    first, _ = wal.write(LOGS, rows.batch, request)
    second, _ = wal.write(METRICS, batch(3))
    assert wal.write(LOGS, rows.batch, request) == (first, True)  # a retry, by the request's digest
    await wal.durable(second)
    wal.close()
    wal, records = opened(tmp_path)
    assert [(r.lsn, r.table) for r in records] == [(first, LOGS), (second, METRICS)]
    kept = records[0].rows
    assert kept == StoredRequest("logs", 5, 20, body)
    assert isinstance(kept, StoredRequest)
    assert stored_rows(kept).equals(rows.batch) and rows.truncated_values > 0
    assert records[1].rows.equals(batch(3))
    wal.close()
