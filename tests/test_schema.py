"""Unit tests for collector/schema.py: the DDL parser, the Arrow schemas, the Delta schema check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from collector.schema import (
    Array,
    Column,
    DdlError,
    Map,
    Primitive,
    SchemaMismatch,
    Struct,
    TableSchema,
    load_schema,
    parse_ddl,
)

STRING = Primitive("STRING")
LONG = Primitive("LONG")
INT = Primitive("INT")
DOUBLE = Primitive("DOUBLE")
BOOLEAN = Primitive("BOOLEAN")
STR_MAP = pa.map_(pa.string(), pa.string())

METRICS_COLUMNS = [
    "name",
    "description",
    "unit",
    "metric_type",
    "gauge",
    "sum",
    "histogram",
    "exponential_histogram",
    "summary",
    "metadata",
    "resource",
    "resource_schema_url",
    "instrumentation_scope",
    "metric_schema_url",
]
LOGS_COLUMNS = [
    "event_name",
    "trace_id",
    "span_id",
    "time_unix_nano",
    "observed_time_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "attributes",
    "dropped_attributes_count",
    "flags",
    "resource",
    "resource_schema_url",
    "instrumentation_scope",
    "log_schema_url",
]
SPANS_COLUMNS = [
    "trace_id",
    "span_id",
    "trace_state",
    "parent_span_id",
    "flags",
    "name",
    "kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "attributes",
    "dropped_attributes_count",
    "events",
    "dropped_events_count",
    "links",
    "dropped_links_count",
    "status",
    "resource",
    "resource_schema_url",
    "instrumentation_scope",
    "span_schema_url",
]

RESOURCE = pa.struct([("attributes", STR_MAP), ("dropped_attributes_count", pa.int32())])
SCOPE = pa.struct(
    [
        ("name", pa.string()),
        ("version", pa.string()),
        ("attributes", STR_MAP),
        ("dropped_attributes_count", pa.int32()),
    ]
)
EXEMPLARS = pa.list_(
    pa.struct(
        [
            ("time_unix_nano", pa.int64()),
            ("value", pa.float64()),
            ("span_id", pa.string()),
            ("trace_id", pa.string()),
            ("filtered_attributes", STR_MAP),
        ]
    )
)


# --- helpers ---------------------------------------------------------------------------------


def delta_type(t: pa.DataType) -> Any:
    """The Delta (Spark JSON) spelling of an Arrow type, written independently of the code."""
    if pa.types.is_string(t):
        return "string"
    if pa.types.is_int64(t):
        return "long"
    if pa.types.is_int32(t):
        return "integer"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_map(t):
        return {
            "type": "map",
            "keyType": delta_type(t.key_type),
            "valueType": delta_type(t.item_type),
            "valueContainsNull": True,
        }
    if pa.types.is_list(t):
        return {"type": "array", "elementType": delta_type(t.value_type), "containsNull": True}
    if pa.types.is_struct(t):
        return {"type": "struct", "fields": [delta_field(f.name, f.type) for f in t]}
    raise AssertionError(f"no Delta type for {t}")


def delta_field(name: str, t: pa.DataType) -> dict[str, Any]:
    return {"name": name, "type": delta_type(t), "nullable": True, "metadata": {}}


def delta_schema(schema: pa.Schema) -> dict[str, Any]:
    return {"type": "struct", "fields": [delta_field(f.name, f.type) for f in schema]}


def find_field(struct: dict[str, Any], path: str) -> dict[str, Any]:
    """The field dict at a dotted path; ``[]`` steps into an array's element struct."""
    node: Any = struct
    field: dict[str, Any] = {}
    for part in path.split("."):
        while isinstance(node, dict) and node.get("type") == "array":
            node = node["elementType"]
        field = next(f for f in node["fields"] if f["name"] == part)
        node = field["type"]
    return field


def mismatch(schema: TableSchema, found: dict[str, Any]) -> str:
    with pytest.raises(SchemaMismatch) as info:
        schema.check_delta_schema(found)
    return str(info.value)


# --- load_schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suffix", "columns"),
    [
        ("otel_metrics", "_otel_metrics", METRICS_COLUMNS),
        ("otel_logs", "_otel_logs", LOGS_COLUMNS),
        ("otel_spans", "_otel_spans", SPANS_COLUMNS),
    ],
)
def test_load_schema(name: str, suffix: str, columns: list[str]) -> None:
    schema = load_schema(name)
    assert schema.properties == {"otel.schemaVersion": "v1"}
    assert schema.suffix == suffix
    assert schema.name_template == f"<catalog>.<schema>.<table_prefix>{suffix}"
    assert [c.name for c in schema.columns] == columns
    assert schema.arrow.names == columns


def test_load_schema_is_cached() -> None:
    assert load_schema("otel_logs") is load_schema("otel_logs")


def test_load_schema_unknown_name() -> None:
    with pytest.raises(FileNotFoundError):
        load_schema("otel_nothing")


def test_logs_arrow_schema_exact() -> None:
    assert load_schema("otel_logs").arrow == pa.schema(
        [
            ("event_name", pa.string()),
            ("trace_id", pa.string()),
            ("span_id", pa.string()),
            ("time_unix_nano", pa.int64()),
            ("observed_time_unix_nano", pa.int64()),
            ("severity_number", pa.string()),
            ("severity_text", pa.string()),
            ("body", pa.string()),
            ("attributes", STR_MAP),
            ("dropped_attributes_count", pa.int32()),
            ("flags", pa.int32()),
            ("resource", RESOURCE),
            ("resource_schema_url", pa.string()),
            ("instrumentation_scope", SCOPE),
            ("log_schema_url", pa.string()),
        ]
    )


def test_metrics_arrow_nested_types() -> None:
    arrow = load_schema("otel_metrics").arrow
    gauge = arrow.field("gauge").type
    total = arrow.field("sum").type
    hist = arrow.field("histogram").type
    exp = arrow.field("exponential_histogram").type
    summary = arrow.field("summary").type

    assert gauge.field("value").type == pa.float64()
    assert gauge.field("exemplars").type == EXEMPLARS
    assert gauge.field("flags").type == pa.int32()
    assert total.field("is_monotonic").type == pa.bool_()
    assert total.field("aggregation_temporality").type == pa.string()
    assert total.field("value").type == pa.float64()
    assert hist.field("count").type == pa.int64()
    assert hist.field("bucket_counts").type == pa.list_(pa.int64())
    assert hist.field("explicit_bounds").type == pa.list_(pa.float64())
    assert hist.field("min").type == pa.float64()
    assert exp.field("positive_bucket").type == pa.struct(
        [("offset", pa.int32()), ("bucket_counts", pa.list_(pa.int64()))]
    )
    assert exp.field("positive_bucket").type.field("offset").type == pa.int32()
    assert exp.field("negative_bucket").type == exp.field("positive_bucket").type
    assert exp.field("scale").type == pa.int32()
    assert exp.field("zero_count").type == pa.int64()
    assert exp.field("zero_threshold").type == pa.float64()
    assert exp.field("exemplars").type == EXEMPLARS
    assert summary.field("quantile_values").type == pa.list_(
        pa.struct([("quantile", pa.float64()), ("value", pa.float64())])
    )
    assert arrow.field("metadata").type == STR_MAP
    assert arrow.field("resource").type == RESOURCE
    assert arrow.field("instrumentation_scope").type == SCOPE


def test_spans_arrow_nested_types() -> None:
    arrow = load_schema("otel_spans").arrow
    assert arrow.field("events").type == pa.list_(
        pa.struct(
            [
                ("time_unix_nano", pa.int64()),
                ("name", pa.string()),
                ("attributes", STR_MAP),
                ("dropped_attributes_count", pa.int32()),
            ]
        )
    )
    assert arrow.field("links").type == pa.list_(
        pa.struct(
            [
                ("trace_id", pa.string()),
                ("span_id", pa.string()),
                ("trace_state", pa.string()),
                ("attributes", STR_MAP),
                ("dropped_attributes_count", pa.int32()),
                ("flags", pa.int32()),
            ]
        )
    )
    assert arrow.field("status").type == pa.struct(
        [("message", pa.string()), ("code", pa.string())]
    )
    assert arrow.field("flags").type == pa.int32()
    assert arrow.field("start_time_unix_nano").type == pa.int64()


def test_column_lookup() -> None:
    schema = load_schema("otel_spans")
    assert schema.column("status") == Column(
        "status", Struct((Column("message", STRING), Column("code", STRING)))
    )
    with pytest.raises(KeyError):
        schema.column("nope")


# --- parse_ddl -------------------------------------------------------------------------------

SYNTHETIC = """
-- A leading comment, with an apostrophe: it's ignored.
CREATE TABLE <catalog>.<schema>.<table_prefix>_otel_test (
  s STRING,  -- trailing comment
  l LONG,
  i INT,
  d DOUBLE,
  b BOOLEAN,
  -- a comment between columns
  st STRUCT<
    a: STRING,
    n: STRUCT<x: INT, y: LONG>
  >,
  arr ARRAY<ARRAY<DOUBLE>>,
  objs ARRAY<STRUCT<k: STRING, v: BOOLEAN>>,
  m MAP<STRING, ARRAY<LONG>>,
  mm MAP<STRING, MAP<STRING, INT>>
) USING DELTA
TBLPROPERTIES (
  'otel.schemaVersion' = 'v1',
  'delta.appendOnly' = 'true',
  'comment' = 'it''s -- not a comment',
  delta.logRetentionDuration = 'interval 30 days'
);
"""


def test_parse_ddl_synthetic() -> None:
    schema = parse_ddl(SYNTHETIC)
    assert schema.name_template == "<catalog>.<schema>.<table_prefix>_otel_test"
    assert schema.suffix == "_otel_test"
    assert schema.columns == (
        Column("s", STRING),
        Column("l", LONG),
        Column("i", INT),
        Column("d", DOUBLE),
        Column("b", BOOLEAN),
        Column(
            "st",
            Struct(
                (
                    Column("a", STRING),
                    Column("n", Struct((Column("x", INT), Column("y", LONG)))),
                )
            ),
        ),
        Column("arr", Array(Array(DOUBLE))),
        Column("objs", Array(Struct((Column("k", STRING), Column("v", BOOLEAN))))),
        Column("m", Map(STRING, Array(LONG))),
        Column("mm", Map(STRING, Map(STRING, INT))),
    )
    assert schema.properties == {
        "otel.schemaVersion": "v1",
        "delta.appendOnly": "true",
        "comment": "it's -- not a comment",
        "delta.logRetentionDuration": "interval 30 days",
    }


def test_parse_ddl_synthetic_arrow() -> None:
    assert parse_ddl(SYNTHETIC).arrow == pa.schema(
        [
            ("s", pa.string()),
            ("l", pa.int64()),
            ("i", pa.int32()),
            ("d", pa.float64()),
            ("b", pa.bool_()),
            (
                "st",
                pa.struct(
                    [("a", pa.string()), ("n", pa.struct([("x", pa.int32()), ("y", pa.int64())]))]
                ),
            ),
            ("arr", pa.list_(pa.list_(pa.float64()))),
            ("objs", pa.list_(pa.struct([("k", pa.string()), ("v", pa.bool_())]))),
            ("m", pa.map_(pa.string(), pa.list_(pa.int64()))),
            ("mm", pa.map_(pa.string(), pa.map_(pa.string(), pa.int32()))),
        ]
    )


def test_parse_ddl_sql_rendering() -> None:
    schema = parse_ddl(SYNTHETIC)
    assert schema.column("st").type.sql() == "STRUCT<a: STRING, n: STRUCT<x: INT, y: LONG>>"
    assert schema.column("objs").type.sql() == "ARRAY<STRUCT<k: STRING, v: BOOLEAN>>"
    assert schema.column("mm").type.sql() == "MAP<STRING, MAP<STRING, INT>>"


def test_parse_ddl_synonyms_and_case() -> None:
    schema = parse_ddl(
        "create table t (a bigint, b integer, c bool, d string, e Double, f MAP<string, long>)"
    )
    assert schema.columns == (
        Column("a", LONG),
        Column("b", INT),
        Column("c", BOOLEAN),
        Column("d", STRING),
        Column("e", DOUBLE),
        Column("f", Map(STRING, LONG)),
    )
    assert schema.properties == {}
    assert schema.name_template == "t"


def test_parse_ddl_without_properties() -> None:
    schema = parse_ddl("CREATE TABLE a.b.c_otel_logs (x STRING) USING DELTA")
    assert schema.columns == (Column("x", STRING),)
    assert schema.properties == {}
    assert schema.name_template == "a.b.c_otel_logs"


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE t (a TIMESTAMP)", "unsupported type 'TIMESTAMP'"),
        ("CREATE TABLE t (a DECIMAL(10, 2))", "unsupported type 'DECIMAL'"),
        ("CREATE TABLE t (a ARRAY<DATE>)", "unsupported type 'DATE'"),
        ("CREATE TABLE t (a STRUCT<x: FLOAT>)", "unsupported type 'FLOAT'"),
        ("CREATE TABLE t (a MAP<STRING, BINARY>)", "unsupported type 'BINARY'"),
    ],
)
def test_parse_ddl_unsupported_type(ddl: str, message: str) -> None:
    with pytest.raises(DdlError) as info:
        parse_ddl(ddl)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("DROP TABLE t", "expected 'CREATE', found 'DROP'"),
        ("CREATE TABLE t (a STRING", "unexpected end of DDL, expected )"),
        ("CREATE TABLE t (a ARRAY<STRING)", "expected '>', found ')'"),
        ("CREATE TABLE t (a MAP<STRING STRING>)", "expected ',', found 'STRING'"),
        ("CREATE TABLE t (a STRUCT<x STRING>)", "expected ':', found 'STRING'"),
        ("CREATE TABLE t (a STRING) USING PARQUET", "expected 'DELTA', found 'PARQUET'"),
        (
            "CREATE TABLE t (a STRING) PARTITIONED BY (a)",
            "unexpected 'PARTITIONED' after the column list",
        ),
    ],
)
def test_parse_ddl_malformed(ddl: str, message: str) -> None:
    with pytest.raises(DdlError) as info:
        parse_ddl(ddl)
    assert str(info.value) == message


def test_ddl_error_is_value_error() -> None:
    assert issubclass(DdlError, ValueError)


def test_parse_ddl_lowercase_array_element() -> None:
    schema = parse_ddl("CREATE TABLE t (a array<long>, b ARRAY<string>)")
    assert schema.columns == (Column("a", Array(LONG)), Column("b", Array(STRING)))


def test_parse_ddl_numeric_property_value() -> None:
    schema = parse_ddl("CREATE TABLE t (a STRING) TBLPROPERTIES ('delta.minReaderVersion' = 10)")
    assert schema.properties == {"delta.minReaderVersion": "10"}


# --- check_delta_schema ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["otel_metrics", "otel_logs", "otel_spans"])
def test_check_delta_schema_matching(name: str) -> None:
    schema = load_schema(name)
    found = delta_schema(schema.arrow)
    schema.check_delta_schema(found)  # a dict
    schema.check_delta_schema(json.dumps(found))  # and its JSON text


def test_check_delta_schema_synthetic_matching() -> None:
    schema = parse_ddl(SYNTHETIC)
    schema.check_delta_schema(delta_schema(schema.arrow))


def test_missing_top_level_field() -> None:
    schema = load_schema("otel_logs")
    found = delta_schema(schema.arrow)
    found["fields"] = [f for f in found["fields"] if f["name"] != "flags"]
    assert (
        mismatch(schema, found)
        == 'Field "flags" found in the schema definition, but not in the table schema.'
    )


def test_missing_nested_field() -> None:
    schema = load_schema("otel_metrics")
    found = delta_schema(schema.arrow)
    resource = find_field(found, "resource")["type"]
    resource["fields"] = [f for f in resource["fields"] if f["name"] != "dropped_attributes_count"]
    assert (
        mismatch(schema, found)
        == 'Field "resource.dropped_attributes_count" found in the schema definition, but not in the table schema.'
    )


def test_missing_field_inside_array_element() -> None:
    schema = load_schema("otel_spans")
    found = delta_schema(schema.arrow)
    event = find_field(found, "events")["type"]["elementType"]
    event["fields"] = [f for f in event["fields"] if f["name"] != "name"]
    assert (
        mismatch(schema, found)
        == 'Field "events[].name" found in the schema definition, but not in the table schema.'
    )


def test_extra_top_level_field() -> None:
    schema = load_schema("otel_logs")
    found = delta_schema(schema.arrow)
    found["fields"].append(delta_field("extra", pa.string()))
    assert (
        mismatch(schema, found)
        == 'Field "extra" found in the table schema, but not in the schema definition.'
    )


def test_extra_nested_field() -> None:
    schema = load_schema("otel_metrics")
    found = delta_schema(schema.arrow)
    find_field(found, "sum")["type"]["fields"].append(delta_field("bonus", pa.int64()))
    assert (
        mismatch(schema, found)
        == 'Field "sum.bonus" found in the table schema, but not in the schema definition.'
    )


def test_missing_reported_before_extra() -> None:
    schema = load_schema("otel_logs")
    found = delta_schema(schema.arrow)
    found["fields"] = [f for f in found["fields"] if f["name"] != "body"]
    found["fields"].insert(0, delta_field("aaa", pa.string()))
    assert (
        mismatch(schema, found)
        == 'Field "body" found in the schema definition, but not in the table schema.'
    )


@pytest.mark.parametrize(
    ("name", "path", "new_type", "message"),
    [
        ("otel_logs", "flags", "long", 'Field "flags" has type LONG in the table, expected INT'),
        (
            "otel_logs",
            "time_unix_nano",
            "integer",
            'Field "time_unix_nano" has type INT in the table, expected LONG',
        ),
        (
            "otel_logs",
            "body",
            "binary",
            'Field "body" has type BINARY in the table, expected STRING',
        ),
        (
            "otel_metrics",
            "sum.value",
            "string",
            'Field "sum.value" has type STRING in the table, expected DOUBLE',
        ),
        (
            "otel_metrics",
            "sum.is_monotonic",
            "string",
            'Field "sum.is_monotonic" has type STRING in the table, expected BOOLEAN',
        ),
        (
            "otel_metrics",
            "exponential_histogram.positive_bucket.offset",
            "long",
            'Field "exponential_histogram.positive_bucket.offset" has type LONG in the table, expected INT',
        ),
        (
            "otel_metrics",
            "histogram.bucket_counts",
            {"type": "array", "elementType": "integer", "containsNull": True},
            'Field "histogram.bucket_counts[]" has type INT in the table, expected LONG',
        ),
        (
            "otel_metrics",
            "histogram.explicit_bounds",
            "double",
            'Field "histogram.explicit_bounds" has type DOUBLE in the table, expected ARRAY<DOUBLE>',
        ),
        (
            "otel_metrics",
            "summary.quantile_values.quantile",
            "float",
            'Field "summary.quantile_values[].quantile" has type FLOAT in the table, expected DOUBLE',
        ),
        (
            "otel_logs",
            "attributes",
            {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": True},
            'Field "attributes.value" has type LONG in the table, expected STRING',
        ),
        (
            "otel_logs",
            "attributes",
            {"type": "map", "keyType": "integer", "valueType": "string", "valueContainsNull": True},
            'Field "attributes.key" has type INT in the table, expected STRING',
        ),
        (
            "otel_logs",
            "attributes",
            {"type": "array", "elementType": "string", "containsNull": True},
            'Field "attributes" has type ARRAY<STRING> in the table, expected MAP<STRING, STRING>',
        ),
        (
            "otel_logs",
            "resource",
            "string",
            'Field "resource" has type STRING in the table, expected '
            "STRUCT<attributes: MAP<STRING, STRING>, dropped_attributes_count: INT>",
        ),
        (
            "otel_spans",
            "status",
            {"type": "struct", "fields": [delta_field("code", pa.int32())]},
            'Field "status.message" found in the schema definition, but not in the table schema.',
        ),
        (
            "otel_spans",
            "events",
            {
                "type": "struct",
                "fields": [delta_field("name", pa.string())],
            },
            'Field "events" has type STRUCT<name: STRING> in the table, expected '
            "ARRAY<STRUCT<time_unix_nano: LONG, name: STRING, attributes: MAP<STRING, STRING>, "
            "dropped_attributes_count: INT>>",
        ),
    ],
)
def test_wrong_type(name: str, path: str, new_type: Any, message: str) -> None:
    schema = load_schema(name)
    found = delta_schema(schema.arrow)
    find_field(found, path)["type"] = new_type
    assert mismatch(schema, found) == message


def test_schema_mismatch_is_an_exception() -> None:
    assert issubclass(SchemaMismatch, Exception)


# --- a real Delta table ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["otel_metrics", "otel_logs", "otel_spans"])
def test_round_trip_with_deltalake(tmp_path: Path, name: str) -> None:
    schema = load_schema(name)
    DeltaTable.create(tmp_path, schema=schema.arrow)
    found = DeltaTable(tmp_path).schema().to_json()
    schema.check_delta_schema(found)


def test_round_trip_with_deltalake_detects_other_table(tmp_path: Path) -> None:
    DeltaTable.create(tmp_path, schema=load_schema("otel_logs").arrow)
    found = DeltaTable(tmp_path).schema().to_json()
    with pytest.raises(SchemaMismatch) as info:
        load_schema("otel_spans").check_delta_schema(found)
    assert (
        str(info.value)
        == 'Field "trace_state" found in the schema definition, but not in the table schema.'
    )


# --- missing_columns (a table from an earlier DDL) -------------------------------------------


def test_a_table_lacking_only_later_columns_is_to_gain_them() -> None:
    schema = load_schema("usage")
    found = delta_schema(schema.arrow)
    assert schema.missing_columns(found) == []
    names = [f["name"] for f in found["fields"]]
    found["fields"] = found["fields"][: names.index("priced_model")]  # as the first version
    missing = schema.missing_columns(json.dumps(found))
    assert [c.name for c in missing] == [
        "priced_model", "input_cost_usd", "output_cost_usd", "cache_read_cost_usd",
        "cache_write_cost_usd", "estimated_cost_usd", "upstream", "attempts",
    ]  # fmt: skip


def test_a_table_that_differs_otherwise_is_refused_even_if_it_also_lacks_columns() -> None:
    schema = load_schema("usage")
    found = delta_schema(schema.arrow)
    found["fields"] = [f for f in found["fields"] if f["name"] != "estimated_cost_usd"]
    find_field(found, "status_code")["type"] = "string"
    # (and a column missing from the middle is not an earlier version's table either)
    with pytest.raises(SchemaMismatch, match='"status_code" has type STRING in the table'):
        schema.missing_columns(found)
    found = delta_schema(schema.arrow)
    found["fields"].append(delta_field("extra", pa.string()))
    with pytest.raises(SchemaMismatch, match='"extra" found in the table schema'):
        schema.missing_columns(found)
    found = delta_schema(schema.arrow)
    found["fields"] = [f for f in found["fields"] if f["name"] != "agent"]
    with pytest.raises(SchemaMismatch, match='"agent" found in the schema definition'):
        schema.missing_columns(found)
