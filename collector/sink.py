"""The Delta sink: creates tables from the DDL, checks existing ones, appends batches.

Blocking calls (delta-rs does its own I/O); the buffer runs them in a worker thread. Knows
nothing of OTLP or transports: it stores Arrow tables under ``<warehouse>/<catalog>/<schema>/<table>``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from collector.schema import TableSchema
from collector.tables import TableName

__all__ = ["DeltaSink"]


class DeltaSink:
    def __init__(self, warehouse: str | os.PathLike[str]) -> None:
        self.warehouse = Path(warehouse).resolve()
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
                except Exception:
                    # Another process may have created it between our look and our create.
                    dt = DeltaTable(location)
            schema.check_delta_schema(dt.schema().to_json())
            self._tables[table] = dt
            return created

    def append(self, table: TableName, data: pa.Table) -> int:
        """Append ``data`` as one commit; returns the table version it created."""
        dt = self._tables[table]
        write_deltalake(dt, data, mode="append")
        return dt.version()
