"""The Delta sink's own Parquet files: the statistics in their ``add`` actions are exact, readers
that skip files by them find every row, and tables with writer features go through delta-rs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from collector.filestats import file_stats
from collector.schema import load_schema
from collector.signals import LOGS, METRICS
from collector.sink import DeltaSink
from collector.tables import TableName
from tests.readers import duckdb_with_delta, read_both

LOGS_TABLE = TableName.parse("main.stats.t_otel_logs")
METRICS_TABLE = TableName.parse("main.stats.t_otel_metrics")


def logs_batch(times: list[int], body: str = "hello", trace: bytes = b"") -> pa.RecordBatch:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "claude-code"
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = "scope", "1.0"
    for i, t in enumerate(times):
        record = sl.log_records.add(time_unix_nano=t, severity_number=9 + i, severity_text="INFO")
        record.body.string_value = body
        record.attributes.add(key="n").value.int_value = i
        if trace and i == 0:
            record.trace_id = trace
    return LOGS.flatten(request).batch


def added_stats(path: Path) -> list[dict[str, Any]]:
    """The stats of every file added to the table, in commit order."""
    out = []
    for commit in sorted((path / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                out.append(json.loads(action["add"]["stats"]))
    return out


def test_a_logs_file_carries_exact_statistics(tmp_path: Path) -> None:
    sink = DeltaSink(tmp_path)
    sink.ensure(LOGS_TABLE, load_schema("otel_logs"))
    sink.append(LOGS_TABLE, [(1, logs_batch([30, 10, 20], trace=b"\x0a" * 16))])
    (stats,) = added_stats(sink.location(LOGS_TABLE))
    origin = {"name": "scope", "version": "1.0", "dropped_attributes_count": 0}
    assert stats == {
        "numRecords": 3,
        "minValues": {
            "trace_id": "0a" * 16,
            "time_unix_nano": 10,
            "observed_time_unix_nano": 0,
            "severity_number": "SEVERITY_NUMBER_INFO",
            "severity_text": "INFO",
            "body": "hello",
            "dropped_attributes_count": 0,
            "flags": 0,
            "resource": {"dropped_attributes_count": 0},
            "resource_schema_url": "",
            "instrumentation_scope": origin,
            "log_schema_url": "",
        },
        "maxValues": {
            "trace_id": "0a" * 16,
            "time_unix_nano": 30,
            "observed_time_unix_nano": 0,
            "severity_number": "SEVERITY_NUMBER_INFO3",
            "severity_text": "INFO",
            "body": "hello",
            "dropped_attributes_count": 0,
            "flags": 0,
            "resource": {"dropped_attributes_count": 0},
            "resource_schema_url": "",
            "instrumentation_scope": origin,
            "log_schema_url": "",
        },
        "nullCount": {
            "event_name": 3,
            "trace_id": 2,
            "span_id": 3,
            "time_unix_nano": 0,
            "observed_time_unix_nano": 0,
            "severity_number": 0,
            "severity_text": 0,
            "body": 0,
            "dropped_attributes_count": 0,
            "flags": 0,
            "resource": {"dropped_attributes_count": 0},
            "resource_schema_url": 0,
            "instrumentation_scope": {"name": 0, "version": 0, "dropped_attributes_count": 0},
            "log_schema_url": 0,
        },
    }


def test_long_strings_keep_a_lower_bound_only() -> None:
    long = "x" * 40
    stats = json.loads(file_stats(pa.Table.from_batches([logs_batch([1], body=long)])))
    assert stats["minValues"]["body"] == "x" * 32
    assert "body" not in stats["maxValues"]


def test_doubles_without_finite_bounds_get_none() -> None:
    def gauge(values: list[float]) -> pa.Table:
        request = ExportMetricsServiceRequest()
        metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="g")
        for v in values:
            metric.gauge.data_points.add(as_double=v, time_unix_nano=1)
        return pa.Table.from_batches([METRICS.flatten(request).batch])

    finite = json.loads(file_stats(gauge([1.5, -2.0])))
    assert (finite["minValues"]["gauge"]["value"], finite["maxValues"]["gauge"]["value"]) == (
        -2.0,
        1.5,
    )
    for values in ([1.0, math.nan], [1.0, math.inf]):
        stats = json.loads(file_stats(gauge(values)))
        assert "value" not in stats["minValues"]["gauge"]
        assert "value" not in stats["maxValues"]["gauge"]
        assert stats["nullCount"]["gauge"]["value"] == 0
    # Rows of other types: the sum struct is null on every row, its fields counted as null.
    assert stats["nullCount"]["sum"]["value"] == 2
    assert "sum" not in stats["minValues"]


def test_indexed_columns_follow_the_table_property() -> None:
    table = pa.Table.from_batches([logs_batch([5])])
    stats = json.loads(file_stats(table, indexed_columns=4))
    assert stats["nullCount"] == {
        "event_name": 1,
        "trace_id": 1,
        "span_id": 1,
        "time_unix_nano": 0,
    }
    assert stats["minValues"] == {"time_unix_nano": 5}


def test_readers_that_skip_files_by_statistics_find_every_row(tmp_path: Path) -> None:
    sink = DeltaSink(tmp_path)
    sink.ensure(LOGS_TABLE, load_schema("otel_logs"))
    for lsn, times in enumerate(([1, 2, 3], [100, 200], [1000, 2000, 3000]), start=1):
        sink.append(LOGS_TABLE, [(lsn, logs_batch(times))])
    path = sink.location(LOGS_TABLE)
    con = duckdb_with_delta()
    for low, high, expected in ((2, 150, [2, 3, 100]), (150, 2500, [200, 1000, 2000]), (4, 5, [])):
        query = (
            "SELECT time_unix_nano FROM delta_scan(?) WHERE time_unix_nano BETWEEN ? AND ?"
            " ORDER BY 1"
        )
        found = [r[0] for r in con.execute(query, [str(path), low, high]).fetchall()]
        assert found == expected
        frame = pl.scan_delta(str(path)).filter(pl.col("time_unix_nano").is_between(low, high))
        assert sorted(frame.collect()["time_unix_nano"].to_list()) == expected
    con.close()


def test_a_table_with_writer_features_is_written_by_delta_rs(tmp_path: Path) -> None:
    """Change data feed needs writer version 4, which our plain Parquet append does not
    implement: delta-rs's writer takes such tables, and the rows land the same."""
    schema = load_schema("otel_logs")
    sink = DeltaSink(tmp_path)
    location = sink.location(LOGS_TABLE)
    DeltaTable.create(
        str(location),
        schema=schema.arrow,
        configuration={**schema.properties, "delta.enableChangeDataFeed": "true"},
        raise_if_key_not_exists=False,
    )
    assert DeltaTable(str(location)).protocol().min_writer_version >= 4
    sink.ensure(LOGS_TABLE, schema)
    assert sink.append(LOGS_TABLE, [(7, logs_batch([1, 2]))]) == 1
    rows = read_both(location, key=lambda r: r["time_unix_nano"])
    assert [r["time_unix_nano"] for r in rows] == [1, 2]


def test_parquet_statistics_cover_the_primitive_columns_only(tmp_path: Path) -> None:
    """Row groups carry min/max for the columns filters name (times, names, ids), not for the
    keys and values of maps or the elements of arrays."""
    sink = DeltaSink(tmp_path)
    sink.ensure(METRICS_TABLE, load_schema("otel_metrics"))
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="latency")
    point = metric.histogram.data_points.add(time_unix_nano=5, count=2, explicit_bounds=[1.0])
    point.bucket_counts.extend([1, 1])
    point.attributes.add(key="model").value.string_value = "gpt-5"
    sink.append(METRICS_TABLE, [(1, METRICS.flatten(request).batch)])
    (data_file,) = sink.location(METRICS_TABLE).glob("*.parquet")
    row_group = pq.ParquetFile(data_file).metadata.row_group(0)
    stats = {
        row_group.column(i).path_in_schema: row_group.column(i).statistics
        for i in range(row_group.num_columns)
    }
    assert stats["name"].min == stats["name"].max == "latency"
    assert (stats["histogram.time_unix_nano"].min, stats["histogram.count"].max) == (5, 2)
    assert stats["instrumentation_scope.name"].has_min_max
    without = [path for path, s in stats.items() if s is None]
    assert without == [path for path in stats if ".key_value." in path or ".list." in path]
    assert "histogram.attributes.key_value.key" in without
    assert "histogram.explicit_bounds.list.element" in without
