"""The tables a warehouse holds: every Delta table whose name says what it holds (by its
suffix, see collector.schema), found by listing the warehouse's directories."""

from __future__ import annotations

from collector.schema import schema_for_table
from collector.storage import Files
from collector.tables import InvalidTableName, TableName

__all__ = ["find_tables"]


def find_tables(files: Files) -> list[TableName]:
    """Every Delta table under ``files`` (a warehouse's root) whose name says what it holds."""
    found = []
    # Names that start with "_" are the collector's own (_wal, _maintenance): no tables.
    for catalog in (c for c in files.children()[0] if not c.startswith("_")):
        for schema in files.children(catalog)[0]:
            for name in files.children(f"{catalog}/{schema}")[0]:
                try:
                    table = TableName(catalog, schema, name)
                    schema_for_table(name)
                except (InvalidTableName, ValueError):
                    continue
                if "_delta_log" in files.children("/".join(table.parts()))[0]:
                    found.append(table)
    return sorted(found, key=str)
