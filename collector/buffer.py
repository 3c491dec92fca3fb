"""Per-table buffers of record batches, flushed to the sink as one append per table.

A table is flushed when its oldest buffered row is ``flush_interval`` seconds old, or at once
when it holds ``flush_rows`` rows or ``flush_bytes`` bytes. One flush per table runs at a time;
rows that arrive meanwhile wait for the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import structlog

from collector.tables import TableName

__all__ = ["Buffers", "FlushPolicy"]

log = structlog.get_logger("collector.buffer")

Append = Callable[[TableName, pa.Table], int]


@dataclass(frozen=True)
class FlushPolicy:
    interval: float = 5.0
    rows: int = 100_000
    bytes: int = 64 * 1024 * 1024
    max_held_bytes: int = 256 * 1024 * 1024  # above it, new requests are pushed back


@dataclass
class _TableBuffer:
    schema: pa.Schema
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    since: float = 0.0  # monotonic time of the oldest buffered batch
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0

    def take(self) -> tuple[list[pa.RecordBatch], float]:
        batches, self.batches = self.batches, []
        self.rows = self.bytes = 0
        return batches, self.since

    def put_back(self, batches: list[pa.RecordBatch], since: float) -> None:
        """Return batches whose flush failed, ahead of any that arrived since."""
        self.batches[:0] = batches
        self.rows += sum(b.num_rows for b in batches)
        self.bytes += sum(b.nbytes for b in batches)
        self.since = since


class Buffers:
    def __init__(self, append: Append, policy: FlushPolicy) -> None:
        self._append = append
        self.policy = policy
        self._tables: dict[TableName, _TableBuffer] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        # Bytes of Arrow data in memory: buffered, or taken by a flush that has not committed.
        self.held_bytes = 0

    @property
    def buffered_rows(self) -> int:
        return sum(b.rows for b in self._tables.values())

    @property
    def full(self) -> bool:
        return self.held_bytes >= self.policy.max_held_bytes

    @property
    def retry_after(self) -> float:
        """How long a pushed-back client should wait: about one flush."""
        return max(1.0, self.policy.interval)

    def add(self, table: TableName, batch: pa.RecordBatch) -> None:
        buf = self._tables.get(table)
        if buf is None:
            buf = self._tables[table] = _TableBuffer(batch.schema)
        if not buf.batches:
            buf.since = time.monotonic()
        buf.batches.append(batch)
        buf.rows += batch.num_rows
        buf.bytes += batch.nbytes
        self.held_bytes += batch.nbytes
        if buf.rows >= self.policy.rows or buf.bytes >= self.policy.bytes:
            self._spawn(table)

    def start(self) -> None:
        self._timer = asyncio.create_task(self._tick(), name="flush-timer")

    async def _tick(self) -> None:
        period = min(max(self.policy.interval / 4, 0.01), 1.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for table, buf in self._tables.items():
                backoff = min(2.0**buf.failures, 60.0) if buf.failures else 0.0
                if buf.batches and now - buf.since >= self.policy.interval + backoff:
                    self._spawn(table)

    def _spawn(self, table: TableName) -> None:
        if self._tables[table].lock.locked():
            return  # a flush is running; the timer or the next add picks up what is left
        task = asyncio.create_task(self.flush(table), name=f"flush {table}")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self, table: TableName) -> None:
        buf = self._tables[table]
        async with buf.lock:
            batches, since = buf.take()
            if not batches:
                return
            data = pa.Table.from_batches(batches, schema=buf.schema)
            started = time.perf_counter()
            try:
                version = await asyncio.to_thread(self._append, table, data)
            except Exception as e:
                buf.failures += 1
                buf.put_back(batches, since)
                log.error(
                    "flush failed",
                    table=str(table),
                    rows=data.num_rows,
                    error=str(e),
                    failures=buf.failures,
                )
                return
            buf.failures = 0
            self.held_bytes -= sum(b.nbytes for b in batches)
            log.info(
                "flushed",
                table=str(table),
                rows=data.num_rows,
                bytes=data.nbytes,
                version=version,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def close(self) -> None:
        """Stop the timer and flush everything that is buffered."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        await asyncio.gather(*self._flushes, return_exceptions=True)
        await asyncio.gather(*(self.flush(t) for t in list(self._tables)))
