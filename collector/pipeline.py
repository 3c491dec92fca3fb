"""One export request's path: route → flatten → (table ready?) → buffer.

Receivers call :meth:`Pipeline.export` with a decoded OTLP request; it either accepts the whole
request (minus records counted as rejected) or raises an :class:`ExportError` having stored nothing.
"""

from __future__ import annotations

import asyncio

import pyarrow as pa
from google.protobuf.message import Message

from collector.buffer import Buffers
from collector.errors import InvalidArgument, Unavailable
from collector.flatten import Flattened
from collector.schema import SchemaMismatch
from collector.signals import Signal
from collector.sink import DeltaSink
from collector.tables import TableName, route

__all__ = ["Pipeline"]


class Pipeline:
    def __init__(self, sink: DeltaSink, buffers: Buffers, default_table: str) -> None:
        self.sink = sink
        self.buffers = buffers
        self.default_table = default_table

    def admit(self) -> None:
        """Push back (retryably) while the buffers hold as much as they may; called by the
        receivers before they read a body, so that a full collector allocates nothing more."""
        if self.buffers.full:
            raise Unavailable(
                "the collector is at its buffer limit; retry later",
                retry_after=self.buffers.retry_after,
            )

    async def export(self, signal: Signal, table_header: str | None, request: Message) -> Flattened:
        table = route(table_header, signal, self.default_table)
        try:
            flat = signal.flatten(request)
        except (pa.ArrowInvalid, OverflowError) as e:
            # e.g. a uint64 timestamp past the LONG range: the request cannot be stored as sent.
            raise InvalidArgument(f"a value does not fit its column: {e}") from None
        if flat.batch.num_rows:
            await self.ready(table, signal)
            self.admit()  # others may have filled the buffers while this request was decoded
            self.buffers.add(table, flat.batch)
        return flat

    async def ready(self, table: TableName, signal: Signal) -> None:
        """Make sure the table exists with the DDL's schema before accepting rows for it."""
        if self.sink.is_ready(table):
            return
        try:
            await asyncio.to_thread(self.sink.ensure, table, signal.schema)
        except SchemaMismatch as e:
            raise InvalidArgument(f"Schema validation error: table {table}: {e}") from None
        except Exception as e:
            # The warehouse cannot be reached or written (permissions, disk, object store):
            # our trouble, not the client's, and it may pass.
            raise Unavailable(
                f"storage unavailable for table {table}: {e}", retry_after=self.buffers.retry_after
            ) from None
