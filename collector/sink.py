"""The Delta sink: creates tables from the DDL, checks existing ones, appends batches.

Blocking calls; the buffer runs them in a worker thread. Knows nothing of OTLP or transports:
it stores Arrow tables under ``<warehouse>/<catalog>/<schema>/<table>``.

An append writes one Parquet file with pyarrow's streaming writer (memory bounded by a row
group) and commits it with delta-rs as an ``add`` action with statistics (collector.filestats).
delta-rs's own writer holds about three times the data in memory while it writes, which at
100k records/s was most of the collector's footprint. Tables using writer features beyond
appends (protocol writer version > 2: column mapping, constraints, generated columns…) or
column invariants are written by delta-rs's writer, which enforces them.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction

from collector.filestats import INDEXED_COLUMNS_PROPERTY, file_stats, primitive_columns
from collector.schema import TableSchema, schema_for_table
from collector.tables import TableName

__all__ = ["DeltaSink"]


class DeltaSink:
    """Delta tables under a warehouse directory.

    With an ``app_id``, each append is an application transaction (Delta ``txn`` action) whose
    version is the highest sequence number of the batches it holds; batches at or below the
    table's current version for that app id are already stored and are skipped. That is what
    makes a replay of the write-ahead log after a crash exactly-once.
    """

    def __init__(self, warehouse: str | os.PathLike[str], app_id: str | None = None) -> None:
        self.warehouse = Path(warehouse).resolve()
        self.app_id = app_id
        self._tables: dict[TableName, DeltaTable] = {}
        self._lock = threading.Lock()

    def location(self, table: TableName) -> Path:
        path = self.warehouse.joinpath(*table.parts()).resolve()
        # TableName's grammar already forbids separators and dots; this guards the invariant.
        if not path.is_relative_to(self.warehouse):
            raise ValueError(f"table {table} resolves outside the warehouse")
        return path

    def is_ready(self, table: TableName) -> bool:
        return table in self._tables

    def ensure(self, table: TableName, schema: TableSchema) -> bool:
        """Open the table, creating it from the DDL if missing; True if it was created.

        Raises :class:`collector.schema.SchemaMismatch` if an existing table's schema differs
        from the DDL: such a table is never written to.
        """
        with self._lock:
            if table in self._tables:
                return False
            location = str(self.location(table))
            created = False
            try:
                dt = DeltaTable(location)
            except TableNotFoundError:
                try:
                    dt = DeltaTable.create(
                        location,
                        schema=schema.arrow,
                        mode="error",
                        name=table.table,
                        configuration=schema.properties,
                        raise_if_key_not_exists=False,
                    )
                    created = True
                except Exception as create_error:
                    # Another process may have created it between our look and our create; if
                    # it did not, the create's own error is the one worth reporting.
                    try:
                        dt = DeltaTable(location)
                    except Exception:
                        raise create_error from None
            schema.check_delta_schema(dt.schema().to_json())
            self._tables[table] = dt
            return created

    def append(self, table: TableName, entries: Sequence[tuple[int, pa.RecordBatch]]) -> int | None:
        """Append the batches of ``entries`` (sequence number, batch), in order, as one commit.

        Returns the table version created, or None when every batch was already stored.
        """
        if table not in self._tables:  # rows replayed from the WAL after a restart
            self.ensure(table, schema_for_table(table.table))
        dt = self._tables[table]
        properties = None
        if self.app_id is not None:
            done = dt.transaction_version(self.app_id) or 0
            entries = [e for e in entries if e[0] > done]
            if not entries:
                return None
            properties = CommitProperties(
                app_transactions=[Transaction(app_id=self.app_id, version=entries[-1][0])]
            )
        data = pa.Table.from_batches([batch for _, batch in entries])
        if _plain_appends(dt):
            self._append_file(self.location(table), dt, data, properties)
        else:
            write_deltalake(dt, data, mode="append", commit_properties=properties)
        return dt.version()

    def _append_file(
        self, location: Path, dt: DeltaTable, data: pa.Table, properties: CommitProperties | None
    ) -> None:
        name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        path = location / name
        pq.write_table(
            data,
            path,
            compression="snappy",
            row_group_size=_ROW_GROUP_ROWS,
            write_statistics=primitive_columns(data.schema),
        )
        indexed = int(dt.metadata().configuration.get(INDEXED_COLUMNS_PROPERTY) or 32)
        add = AddAction(
            path=name,
            size=os.path.getsize(path),
            partition_values={},
            modification_time=int(time.time() * 1000),
            data_change=True,
            stats=file_stats(data, indexed),
        )
        # A crash before the commit leaves an unreferenced file, which readers never see.
        dt.create_write_transaction(
            [add], mode="append", schema=dt.schema(), commit_properties=properties
        )
        dt.update_incremental()


_ROW_GROUP_ROWS = 128 * 1024


def _plain_appends(dt: DeltaTable) -> bool:
    """Whether appending a Parquet file is all a write to this table needs (see the module)."""
    protocol = dt.protocol()
    if protocol.min_writer_version > 2 or protocol.writer_features:
        return False
    return "delta.invariants" not in dt.schema().to_json()
