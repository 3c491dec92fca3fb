"""The warehouse's tables as the dashboard reads them: each OTLP logs table as one row per
event with the agent, user, session, model and call figures taken out of its attributes, and
each metrics table as the points of the agents' productivity sums. A table is read again only
when its Delta version moved."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import polars as pl
from deltalake import DeltaTable

from collector.catalog import find_tables
from collector.dashboard.agents import AGENTS, OTHER, Agent
from collector.storage import Files, Warehouse
from collector.tables import TableName

__all__ = ["EVENT_COLUMNS", "TableData", "Tables"]

# The columns of the events frame (one row per log record).
EVENT_COLUMNS = (
    "table", "time", "agent", "user", "session", "model", "event", "is_call",
    "input", "output", "cache_read", "cache_creation", "reported_cost_usd", "duration_ms",
    "tool", "tool_success", "tool_duration_ms", "is_error", "error_status", "error_message",
)  # fmt: skip


@dataclass(frozen=True)
class TableData:
    version: int
    frame: pl.DataFrame


def _first(keys: tuple[str, ...], column: str = "attributes") -> pl.Expr:
    return pl.coalesce([pl.col(column).map.get(k) for k in keys])


def _number(key: str | None, dtype: pl.DataType) -> pl.Expr:
    if key is None:
        return pl.lit(None, dtype)
    return pl.col("attributes").map.get(key).cast(dtype, strict=False)


def _agent_events(frame: pl.DataFrame, agent: Agent, table: str) -> pl.DataFrame:
    """The rows of ``frame`` (already those of ``agent``) in the events layout."""
    event = pl.col("attributes").map.get("event.name")
    is_call = pl.lit(False)
    if agent.call_event is not None:
        is_call = event == agent.call_event
        if agent.call_when is not None:
            key, value = agent.call_when
            is_call = is_call & (pl.col("attributes").map.get(key) == value)
        if agent.call_has is not None:
            is_call = is_call & pl.col("attributes").map.contains_key(agent.call_has)
    tokens = {k: _number(agent.tokens.get(k), pl.Int64) for k in ("input", "output",
              "cache_read", "cache_creation")}  # fmt: skip
    if agent.input_includes_cache_read:
        tokens["input"] = tokens["input"] - tokens["cache_read"].fill_null(0)
    call = is_call.fill_null(False)
    attribute = pl.col("attributes").map.get
    is_tool = pl.lit(False) if agent.tool_event is None else event == agent.tool_event
    is_tool = is_tool.fill_null(False)
    tool_name, success, tool_duration = agent.tool
    is_error = pl.lit(False)
    status: pl.Expr = pl.lit(None, pl.Int64)
    message: pl.Expr = pl.lit(None, pl.String)
    for name, status_key, message_key, only_failed in agent.errors:
        code = attribute(status_key).cast(pl.Int64, strict=False)
        this = event == name
        if only_failed:
            this = this & (code >= 400)
        this = this.fill_null(False)
        is_error = is_error | this
        status = pl.when(this).then(code).otherwise(status)
        message = pl.when(this).then(attribute(message_key)).otherwise(message)
    return frame.select(
        pl.lit(table).alias("table"),
        # Codex leaves a record's time unset (0), as OTLP allows: then it is when observed.
        pl.when(pl.col("time_unix_nano") > 0)
        .then(pl.col("time_unix_nano"))
        .otherwise(pl.col("observed_time_unix_nano"))
        .alias("time"),
        pl.lit(agent.key).alias("agent"),
        _first(agent.user).alias("user"),
        pl.coalesce([_first(agent.session), _first(agent.session, "resource_attributes")]).alias(
            "session"
        ),
        pl.col("attributes").map.get("model").alias("model"),
        pl.coalesce([event, pl.col("event_name")]).alias("event"),
        call.alias("is_call"),
        *(pl.when(call).then(v).alias(k) for k, v in tokens.items()),
        pl.when(call).then(_number(agent.cost, pl.Float64)).alias("reported_cost_usd"),
        pl.when(call).then(_number(agent.duration, pl.Float64)).alias("duration_ms"),
        pl.when(is_tool).then(attribute(tool_name)).alias("tool"),
        pl.when(is_tool)
        .then(attribute(success).str.to_lowercase() == "true")
        .alias("tool_success"),
        pl.when(is_tool)
        .then(attribute(tool_duration).cast(pl.Float64, strict=False))
        .alias("tool_duration_ms"),
        is_error.alias("is_error"),
        status.alias("error_status"),
        message.alias("error_message"),
    )


def events_frame(table: str, raw: pl.DataFrame) -> pl.DataFrame:
    frame = raw.with_columns(
        pl.col("resource").struct.field("attributes").alias("resource_attributes"),
    ).with_columns(
        pl.col("resource_attributes").map.get("service.name").alias("service"),
    )
    parts = []
    for agent in (*AGENTS, OTHER):
        if agent is OTHER:
            mine = ~pl.any_horizontal(
                [pl.col("service").str.starts_with(p) for a in AGENTS for p in a.service_prefixes]
            ).fill_null(True)
        else:
            mine = pl.any_horizontal(
                [pl.col("service").str.starts_with(p) for p in agent.service_prefixes]
            ).fill_null(False)
        parts.append(_agent_events(frame.filter(mine), agent, table))
    return pl.concat(parts)


def metric_points(table: str, raw: pl.DataFrame) -> pl.DataFrame:
    """The sum points of the metrics the agents' productivity figures come from."""
    wanted = {name for a in AGENTS for name, _ in a.metrics.values()}
    wanted |= {a.edit_decisions[0] for a in AGENTS if a.edit_decisions}
    sums = raw.filter(pl.col("name").is_in(sorted(wanted)) & (pl.col("metric_type") == "sum"))
    point = pl.col("sum")
    resource = pl.col("resource").struct.field("attributes")
    return sums.select(
        pl.lit(table).alias("table"),
        pl.col("name"),
        resource.map.get("service.name").alias("service"),
        point.struct.field("time_unix_nano").alias("time"),
        point.struct.field("start_time_unix_nano").alias("start_time"),
        point.struct.field("value").alias("value"),
        point.struct.field("aggregation_temporality").alias("temporality"),
        point.struct.field("attributes").alias("attributes"),
        resource.alias("resource_attributes"),
    )


class Tables:
    """The dashboard's reading of a warehouse, cached per table and version."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.files = Files(warehouse)
        self._cache: dict[TableName, TableData] = {}
        self._lock = threading.Lock()

    def names(self) -> list[TableName]:
        return find_tables(self.files)

    def read(self, table: TableName) -> pl.DataFrame:
        """The table's frame (events, metric points, or the table as it is), at its latest
        version."""
        dt = DeltaTable(
            self.warehouse.join(*table.parts()), storage_options=self.warehouse.delta_options()
        )
        version = dt.version()
        with self._lock:
            cached = self._cache.get(table)
        if cached is not None and cached.version == version:
            return cached.frame
        name = table.table
        if name.endswith("_otel_logs"):
            raw = pl.from_arrow(
                dt.to_pyarrow_table(
                    columns=[
                        "time_unix_nano",
                        "observed_time_unix_nano",
                        "event_name",
                        "attributes",
                        "resource",
                    ]
                )
            )
            frame = events_frame(str(table), raw)  # type: ignore[arg-type]
        elif name.endswith("_otel_metrics"):
            raw = pl.from_arrow(
                dt.to_pyarrow_table(columns=["name", "metric_type", "sum", "resource"])
            )
            frame = metric_points(str(table), raw)  # type: ignore[arg-type]
        else:
            frame = pl.from_arrow(dt.to_pyarrow_table())  # type: ignore[assignment]
        with self._lock:
            self._cache[table] = TableData(version, frame)
        return frame
