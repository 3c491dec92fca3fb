"""Table names: parsing, validation, routing a request to its table, and where a table lives."""

from __future__ import annotations

import re
from dataclasses import dataclass

from collector.errors import InvalidArgument
from collector.signals import SIGNALS, Signal

__all__ = ["InvalidTableName", "TableName", "route"]

TABLE_HEADER = "X-Databricks-UC-Table-Name"

# Unity Catalog identifiers, restricted to what is safe as a directory name on any file system
# or object store: ASCII letters, digits and underscore. Case-insensitive, stored lowercase.
_IDENTIFIER = re.compile(r"[a-z0-9_]{1,255}")


class InvalidTableName(InvalidArgument):
    pass


@dataclass(frozen=True, order=True)
class TableName:
    catalog: str
    schema: str
    table: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        """``catalog.schema.table``, three identifiers of letters, digits and underscore."""
        parts = text.strip().split(".")
        if len(parts) != 3:
            raise InvalidTableName(
                f"table name {text!r} must have three parts, catalog.schema.table, found {len(parts)}"
            )
        folded = [p.lower() for p in parts]
        for part, original in zip(folded, parts, strict=True):
            if not part.isascii() or not _IDENTIFIER.fullmatch(part):
                raise InvalidTableName(
                    f"table name {text!r}: {original!r} is not an identifier "
                    "(1 to 255 ASCII letters, digits or underscores)"
                )
        if folded[0].startswith("_"):
            raise InvalidTableName(
                f"table name {text!r}: catalog names starting with '_' are reserved "
                "for the collector's own files (its WAL lives in <warehouse>/_wal)"
            )
        return cls(*folded)

    def __str__(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.table}"

    def parts(self) -> tuple[str, str, str]:
        return (self.catalog, self.schema, self.table)

    def signal(self) -> Signal | None:
        for signal in SIGNALS:
            if self.table.endswith(signal.table_suffix):
                return signal
        return None


def prefix_table(prefix: str, signal: Signal) -> TableName:
    """``catalog.schema.prefix`` → the signal's table, ``catalog.schema.prefix_otel_<signal>``."""
    return TableName.parse(prefix + signal.table_suffix)


def route(header: str | None, signal: Signal, default_prefix: str) -> TableName:
    """The table a request of ``signal`` goes to: the header's, else the default prefix's."""
    if header is None or not header.strip():
        return prefix_table(default_prefix, signal)
    table = TableName.parse(header)
    holds = table.signal()
    if holds is not signal:
        what = f"a {holds.name} table" if holds else "not an OpenTelemetry table"
        raise InvalidArgument(
            f"table {table} is {what}: {signal.name} must go to a table whose name ends "
            f"in {signal.table_suffix}"
        )
    return table
