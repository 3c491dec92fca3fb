"""Per-table buffers of record batches, flushed to the sink as one append per table.

A table is flushed when its oldest buffered row is ``flush_interval`` seconds old, or at once
when it holds ``flush_rows`` rows or ``flush_bytes`` bytes. One flush per table runs at a time;
rows that arrive meanwhile wait for the next one. A failed flush keeps its rows, ahead of newer
ones, and is retried with exponential backoff.

Each batch carries the WAL sequence number (LSN) of its record. Batches are added in LSN order
and a flush takes only those already durable, so that a commit never holds data that a crash
could take back from the WAL, and the highest LSN of a commit covers everything before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import structlog

from collector.redaction import error_text
from collector.tables import TableName

__all__ = ["Buffers", "Entry", "FlushPolicy", "TableState"]

log = structlog.get_logger("collector.buffer")

Entry = tuple[int, pa.RecordBatch]  # (LSN, batch)
# Stores a table's entries as one commit; returns the table version, or None if every entry
# was already stored (a replay after a crash).
Append = Callable[[TableName, Sequence[Entry]], "int | None"]
Committed = Callable[[TableName, int], None]


@dataclass(frozen=True)
class FlushPolicy:
    interval: float = 5.0
    rows: int = 100_000
    bytes: int = 64 * 1024 * 1024
    max_held_bytes: int = 256 * 1024 * 1024  # above it, new requests are pushed back


@dataclass
class TableState:
    """What /readyz shows of a table."""

    rows: int = 0  # held: buffered, or in a flush that has not committed yet
    bytes: int = 0
    failures: int = 0
    last_error: str | None = None
    last_flush: float | None = None  # wall time of the last successful flush
    version: int | None = None
    flushing_since: float | None = None  # wall time the running flush began, if one runs


@dataclass
class _TableBuffer:
    entries: list[Entry] = field(default_factory=list)
    since: float = 0.0  # monotonic time of the oldest buffered entry
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: TableState = field(default_factory=TableState)
    retry_at: float = 0.0  # monotonic time before which a failed table is not flushed again

    def take(self, durable: int) -> tuple[list[Entry], float]:
        """The durable prefix of the entries (LSN order makes it a prefix)."""
        n = 0
        while n < len(self.entries) and self.entries[n][0] <= durable:
            n += 1
        taken, self.entries = self.entries[:n], self.entries[n:]
        since = self.since
        if self.entries:
            self.since = time.monotonic()
        return taken, since

    def put_back(self, entries: list[Entry], since: float) -> None:
        """Return entries whose flush failed, ahead of any that arrived since."""
        self.entries[:0] = entries
        self.since = since


class Buffers:
    def __init__(
        self,
        append: Append,
        policy: FlushPolicy,
        *,
        durable_lsn: Callable[[], int] = lambda: 2**63,
        committed: Committed = lambda table, lsn: None,
    ) -> None:
        self._append = append
        self._durable_lsn = durable_lsn
        self._committed = committed
        self.policy = policy
        self._tables: dict[TableName, _TableBuffer] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        # Bytes of Arrow data in memory: buffered, or taken by a flush that has not committed.
        self.held_bytes = 0

    @property
    def buffered_rows(self) -> int:
        return sum(b.state.rows for b in self._tables.values())

    @property
    def full(self) -> bool:
        return self.held_bytes >= self.policy.max_held_bytes

    @property
    def retry_after(self) -> float:
        """How long a pushed-back client should wait: about one flush."""
        return max(1.0, self.policy.interval)

    def states(self) -> dict[TableName, TableState]:
        return {table: buf.state for table, buf in self._tables.items()}

    def add(self, table: TableName, batch: pa.RecordBatch, lsn: int) -> None:
        buf = self._tables.get(table)
        if buf is None:
            buf = self._tables[table] = _TableBuffer()
        if not buf.entries:
            buf.since = time.monotonic()
        buf.entries.append((lsn, batch))
        buf.state.rows += batch.num_rows
        size = _size(batch)
        buf.state.bytes += size
        self.held_bytes += size

    def check(self, table: TableName) -> None:
        """Flush ``table`` now if it holds ``flush_rows`` rows or ``flush_bytes`` bytes; called
        once what was added is durable, since a flush takes only durable entries."""
        buf = self._tables[table]
        if buf.state.rows >= self.policy.rows or buf.state.bytes >= self.policy.bytes:
            if time.monotonic() >= buf.retry_at:
                self._spawn(table)

    def start(self) -> None:
        self._timer = asyncio.create_task(self._tick(), name="flush-timer")

    async def _tick(self) -> None:
        period = min(max(self.policy.interval / 4, 0.01), 1.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for table, buf in self._tables.items():
                if buf.entries and now - buf.since >= self.policy.interval and now >= buf.retry_at:
                    self._spawn(table)

    def _spawn(self, table: TableName) -> None:
        if self._tables[table].lock.locked():
            return  # a flush is running; the timer or the next add picks up what is left
        task = asyncio.create_task(self.flush(table), name=f"flush {table}")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def flush_soon(self) -> None:
        """Start a flush of every table that holds rows (after a WAL replay, say)."""
        for table, buf in self._tables.items():
            if buf.entries:
                self._spawn(table)

    async def flush(self, table: TableName) -> bool:
        """Flush what the table holds that is durable; False if the commit failed."""
        buf = self._tables[table]
        async with buf.lock:
            entries, since = buf.take(self._durable_lsn())
            if not entries:
                return True
            rows = sum(b.num_rows for _, b in entries)
            nbytes = sum(_size(b) for _, b in entries)
            started = time.perf_counter()
            buf.state.flushing_since = time.time()
            try:
                version = await asyncio.to_thread(self._append, table, entries)
            except Exception as e:
                buf.state.flushing_since = None
                buf.put_back(entries, since)
                buf.state.failures += 1
                buf.state.last_error = error_text(e)  # shown by /readyz
                # Retry after 1, 2, 4… flush intervals, at most 30 s.
                delay = min(self.policy.interval * 2.0 ** (buf.state.failures - 1), 30.0)
                buf.retry_at = time.monotonic() + delay
                log.error(
                    "flush failed",
                    table=str(table),
                    rows=rows,
                    error=str(e),
                    failures=buf.state.failures,
                )
                return False
            buf.state.flushing_since = None
            self.held_bytes -= nbytes
            buf.state.rows -= rows
            buf.state.bytes -= nbytes
            buf.retry_at = 0.0
            try:
                self._committed(table, entries[-1][0])
            except OSError as e:
                # The rows are in Delta; only the WAL's clean-up failed, and it is redone after
                # the next commit (a replay would skip these rows by the txn version anyway).
                log.warning("wal clean-up failed", table=str(table), error=str(e))
            buf.state.failures = 0
            buf.state.last_error = None
            buf.state.last_flush = time.time()
            buf.state.version = version if version is not None else buf.state.version
            log.info(
                "flushed" if version is not None else "already committed, skipped",
                table=str(table),
                rows=rows,
                bytes=nbytes,
                version=version,
                txn_version=entries[-1][0],  # what the commit's txn action records for us
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return True

    async def close(self, timeout: float) -> bool:
        """Stop the timer and flush everything, trying until ``timeout``; True if all went."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        deadline = time.monotonic() + timeout

        async def drain() -> None:
            await asyncio.gather(*self._flushes, return_exceptions=True)
            delay = 0.1
            while True:
                results = await asyncio.gather(*(self.flush(t) for t in list(self._tables)))
                if all(results):
                    return
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 5.0)

        try:
            await asyncio.wait_for(drain(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True


def _size(batch: pa.RecordBatch) -> int:
    """The bytes of a batch's buffers, as the held-bytes limit counts them: their whole sizes
    (``nbytes``, which counts only the ranges the arrays use, costs a walk of every buffer)."""
    return batch.get_total_buffer_size()
