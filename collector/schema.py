"""Table schemas, parsed from the DDL in ``schemas/*.sql``.

The SQL files are the contract (they are the Databricks DDL verbatim); the Arrow schema the
flatteners build, the Delta schema a new table is created with and the check of an existing
table are all derived here from the parsed DDL, so a schema is written down exactly once.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = [
    "Array",
    "Column",
    "Map",
    "Primitive",
    "SchemaMismatch",
    "SqlType",
    "Struct",
    "TableSchema",
    "load_schema",
    "parse_ddl",
    "schema_dir",
    "schema_for_table",
    "schemas_by_suffix",
]


@dataclass(frozen=True)
class Primitive:
    name: str  # STRING, LONG, INT, DOUBLE, BOOLEAN

    def sql(self) -> str:
        return self.name


@dataclass(frozen=True)
class Array:
    element: SqlType

    def sql(self) -> str:
        return f"ARRAY<{self.element.sql()}>"


@dataclass(frozen=True)
class Map:
    key: SqlType
    value: SqlType

    def sql(self) -> str:
        return f"MAP<{self.key.sql()}, {self.value.sql()}>"


@dataclass(frozen=True)
class Column:
    name: str
    type: SqlType


@dataclass(frozen=True)
class Struct:
    fields: tuple[Column, ...]

    def sql(self) -> str:
        return "STRUCT<" + ", ".join(f"{f.name}: {f.type.sql()}" for f in self.fields) + ">"


SqlType = Primitive | Array | Map | Struct

# Spark SQL spellings → (Arrow type, Delta JSON type name). Synonyms map to one canonical name.
_PRIMITIVES: dict[str, tuple[pa.DataType, str]] = {
    "STRING": (pa.string(), "string"),
    "LONG": (pa.int64(), "long"),
    "INT": (pa.int32(), "integer"),
    "DOUBLE": (pa.float64(), "double"),
    "BOOLEAN": (pa.bool_(), "boolean"),
}
_SYNONYMS = {"BIGINT": "LONG", "INTEGER": "INT", "BOOL": "BOOLEAN"}
_DELTA_TO_SQL = {delta: sql for sql, (_, delta) in _PRIMITIVES.items()}


class DdlError(ValueError):
    """The DDL text is not of the form this parser understands."""


class SchemaMismatch(Exception):
    """An existing table's schema differs from the DDL; ``str()`` names the first difference."""


# A `<placeholder>` is only one when part of a table name (followed by `.` or a name), so that
# `array<long>` still reads as a type.
_TOKEN = re.compile(
    r"\s*(?:(--[^\n]*)|('(?:[^']|'')*')|(<[a-z_]+>(?=[._A-Za-z]))|([A-Za-z0-9_][A-Za-z0-9_.]*)|(.))",
    re.S,
)


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    for m in _TOKEN.finditer(text):
        comment, string, placeholder, word, punct = m.groups()
        if comment:
            continue
        tok = string or placeholder or word or punct
        if tok and not tok.isspace():
            tokens.append(tok)
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise DdlError(f"unexpected end of DDL, expected {expected or 'more'}")
        if expected is not None and tok.upper() != expected.upper():
            raise DdlError(f"expected {expected!r}, found {tok!r}")
        self.pos += 1
        return tok

    def table_name(self) -> str:
        # `<catalog>.<schema>.<table_prefix>_otel_metrics` tokenizes as placeholders, dots, words.
        parts = []
        while self.peek() not in (None, "("):
            parts.append(self.take())
        return "".join(parts)

    def type(self) -> SqlType:
        word = self.take().upper()
        word = _SYNONYMS.get(word, word)
        if word in _PRIMITIVES:
            return Primitive(word)
        if word == "ARRAY":
            self.take("<")
            element = self.type()
            self.take(">")
            return Array(element)
        if word == "MAP":
            self.take("<")
            key = self.type()
            self.take(",")
            value = self.type()
            self.take(">")
            return Map(key, value)
        if word == "STRUCT":
            self.take("<")
            fields = []
            while True:
                name = self.take()
                self.take(":")
                fields.append(Column(name, self.type()))
                if self.peek() == ",":
                    self.take(",")
                    continue
                self.take(">")
                return Struct(tuple(fields))
        raise DdlError(f"unsupported type {word!r}")

    def columns(self) -> tuple[Column, ...]:
        self.take("(")
        cols = []
        while True:
            name = self.take()
            cols.append(Column(name, self.type()))
            if self.peek() == ",":
                self.take(",")
                continue
            self.take(")")
            return tuple(cols)

    def properties(self) -> dict[str, str]:
        props: dict[str, str] = {}
        self.take("(")
        while self.peek() != ")":
            key = _unquote(self.take())
            self.take("=")
            props[key] = _unquote(self.take())
            if self.peek() == ",":
                self.take(",")
        self.take(")")
        return props


def _unquote(tok: str) -> str:
    if len(tok) >= 2 and tok[0] == tok[-1] == "'":
        return tok[1:-1].replace("''", "'")
    return tok


@dataclass(frozen=True)
class TableSchema:
    """One table's DDL, parsed, with everything derived from it."""

    name_template: str
    columns: tuple[Column, ...]
    properties: dict[str, str]

    @property
    def suffix(self) -> str:
        """The table-name suffix that says which signal the table holds, e.g. ``_otel_logs``."""
        return self.name_template.rsplit(">", 1)[-1]

    @property
    def kind(self) -> str:
        """The short name of what the table holds (``logs``, ``metrics``, ``usage``…), as
        ``--retention`` names it."""
        return self.suffix.removeprefix("_").removeprefix("otel_")

    @functools.cached_property
    def time_columns(self) -> tuple[str, ...]:
        """Where a row's time is, in order of preference: a row's time is the first of these
        that is set and not 0 (OTLP's "unknown"). The top-level ``…time_unix_nano`` columns in
        DDL order (a log's event time, then its observed time; a span's start; a proxy call's
        request time), else the ``time_unix_nano`` of each struct (a metric's data point, in
        whichever of gauge, sum, histogram… the row uses). Dotted paths."""
        top = [c.name for c in self.columns if c.name.endswith("time_unix_nano")]
        if top:
            return tuple(top)
        nested = tuple(
            f"{c.name}.{f.name}"
            for c in self.columns
            if isinstance(c.type, Struct)
            for f in c.type.fields
            if f.name == "time_unix_nano"
        )
        if not nested:
            raise ValueError(f"{self.name_template}: no time column in the DDL")
        return nested

    @functools.cached_property
    def arrow(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, to_arrow(c.type)) for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def check_delta_schema(self, delta_json: str | dict[str, Any]) -> None:
        """Raise :class:`SchemaMismatch` naming the first field where a Delta schema differs."""
        found = json.loads(delta_json) if isinstance(delta_json, str) else delta_json
        _compare_struct(Struct(self.columns), found, "")

    def missing_columns(self, delta_json: str | dict[str, Any]) -> list[Column]:
        """The DDL's last columns, which a table written by an earlier version lacks (a DDL
        gains columns at its end only): the columns to add to it, if that is all that
        differs. Raises :class:`SchemaMismatch` on any other difference, a column missing
        from the middle included: such a table was not made by this DDL."""
        found = json.loads(delta_json) if isinstance(delta_json, str) else delta_json
        names = [f["name"] for f in found.get("fields", [])]
        if names != [c.name for c in self.columns[: len(names)]]:
            _compare_struct(Struct(self.columns), found, "")  # says what differs
        _compare_struct(Struct(self.columns[: len(names)]), found, "")
        return list(self.columns[len(names) :])


def to_arrow(t: SqlType) -> pa.DataType:
    if isinstance(t, Primitive):
        return _PRIMITIVES[t.name][0]
    if isinstance(t, Array):
        return pa.list_(to_arrow(t.element))
    if isinstance(t, Map):
        return pa.map_(to_arrow(t.key), to_arrow(t.value))
    return pa.struct([pa.field(f.name, to_arrow(f.type)) for f in t.fields])


def _delta_type_sql(found: Any) -> str:
    """Render a Delta JSON type in the DDL's spelling, for error messages."""
    if isinstance(found, str):
        return _DELTA_TO_SQL.get(found, found.upper())
    kind = found.get("type")
    if kind == "array":
        return f"ARRAY<{_delta_type_sql(found['elementType'])}>"
    if kind == "map":
        return f"MAP<{_delta_type_sql(found['keyType'])}, {_delta_type_sql(found['valueType'])}>"
    if kind == "struct":
        inner = ", ".join(f"{f['name']}: {_delta_type_sql(f['type'])}" for f in found["fields"])
        return f"STRUCT<{inner}>"
    return str(found)


def _compare(expected: SqlType, found: Any, path: str) -> None:
    def mismatch() -> SchemaMismatch:
        return SchemaMismatch(
            f'Field "{path}" has type {_delta_type_sql(found)} in the table, expected {expected.sql()}'
        )

    if isinstance(expected, Primitive):
        if found != _PRIMITIVES[expected.name][1]:
            raise mismatch()
    elif isinstance(expected, Array):
        if not isinstance(found, dict) or found.get("type") != "array":
            raise mismatch()
        _compare(expected.element, found["elementType"], path + "[]")
    elif isinstance(expected, Map):
        if not isinstance(found, dict) or found.get("type") != "map":
            raise mismatch()
        _compare(expected.key, found["keyType"], path + ".key")
        _compare(expected.value, found["valueType"], path + ".value")
    else:
        if not isinstance(found, dict) or found.get("type") != "struct":
            raise mismatch()
        _compare_struct(expected, found, path + ".")


def _compare_struct(expected: Struct, found: dict[str, Any], prefix: str) -> None:
    found_fields = {f["name"]: f for f in found.get("fields", [])}
    for col in expected.fields:
        if col.name not in found_fields:
            raise SchemaMismatch(
                f'Field "{prefix}{col.name}" found in the schema definition, but not in the table schema.'
            )
        _compare(col.type, found_fields[col.name]["type"], prefix + col.name)
    expected_names = {c.name for c in expected.fields}
    for name in found_fields:
        if name not in expected_names:
            raise SchemaMismatch(
                f'Field "{prefix}{name}" found in the table schema, but not in the schema definition.'
            )


def parse_ddl(text: str) -> TableSchema:
    """Parse one ``CREATE TABLE … USING DELTA TBLPROPERTIES (…)`` statement."""
    p = _Parser(text)
    p.take("CREATE")
    p.take("TABLE")
    name = p.table_name()
    columns = p.columns()
    properties: dict[str, str] = {}
    while p.peek() is not None:
        word = p.take().upper()
        if word == "USING":
            p.take("DELTA")
        elif word == "TBLPROPERTIES":
            properties = p.properties()
        elif word == ";":
            continue
        else:
            raise DdlError(f"unexpected {word!r} after the column list")
    return TableSchema(name, columns, properties)


def schema_dir() -> Path:
    """Where the DDL files are: inside the installed wheel, or ``schemas/`` of a source checkout."""
    packaged = Path(str(resources.files("collector"))) / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def load_schema(name: str) -> TableSchema:
    """The parsed DDL of ``schemas/<name>.sql`` (``otel_metrics``, ``otel_logs``, ``otel_spans``)."""
    return parse_ddl((schema_dir() / f"{name}.sql").read_text(encoding="utf-8"))


@functools.cache
def schemas_by_suffix() -> dict[str, TableSchema]:
    """Every table kind the collector writes, by the table-name suffix that marks it."""
    found = {}
    for path in sorted(schema_dir().glob("*.sql")):
        schema = load_schema(path.stem)
        found[schema.suffix] = schema
    return found


def schema_for_table(table_name: str) -> TableSchema:
    """The schema a table of this name holds, known from its suffix (``…_otel_logs``…)."""
    for suffix, schema in schemas_by_suffix().items():
        if table_name.endswith(suffix):
            return schema
    raise ValueError(f"{table_name}: no schema in schemas/ has this table's suffix")
