"""A Delta table read by its data files: which files each new version holds, and one file's
columns. Readers that keep what they made of each file (the dashboard's frames, the budgets'
spend) pay for a new version with the files it added, not with the whole table: a collector
appends a file to each table every few seconds, to tables of millions of rows.

Files are read as they are: the collector's tables have no deletion vectors or column mapping
(a table written elsewhere with them would be read as if it had none)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from collector.storage import Files, Warehouse
from collector.tables import TableName

__all__ = ["TableFiles"]


class TableFiles:
    def __init__(self, warehouse: Warehouse, name: TableName) -> None:
        self.warehouse = warehouse
        self.name = name
        self.files = Files(warehouse, *name.parts())
        self.delta: DeltaTable | None = None

    def latest(self) -> tuple[int, list[str]]:
        """The table's latest version and the data files it holds (raises deltalake's
        TableNotFoundError when there is no table yet)."""
        if self.delta is None:
            uri = self.warehouse.join(*self.name.parts())
            self.delta = DeltaTable(uri, storage_options=self.warehouse.delta_options())
        else:
            self.delta.update_incremental()
        paths = pa.table(self.delta.get_add_actions(flatten=False))["path"].to_pylist()
        return self.delta.version(), paths

    @property
    def schema(self) -> pa.Schema:
        assert self.delta is not None, "latest() first"
        return pa.schema(self.delta.schema().to_arrow())

    def read(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """``columns`` (all the table's by default) of one data file; a column the table
        gained after the file was written (usage.sql's later columns) reads as nulls."""
        schema = self.schema
        wanted = columns or schema.names
        with self.files.reader(path) as file:
            parquet = pq.ParquetFile(file)
            present = set(parquet.schema_arrow.names)
            table = parquet.read(columns=[c for c in wanted if c in present])
        for name in wanted:
            if name not in present:
                field = schema.field(name)
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        return table.select(wanted)
