"""The warehouse's tables as the dashboard reads them, one row per thing counted with every
per-row figure worked out once, when a file is first read: each OTLP logs table as one row per
event (agent, user, session, model, day, and for a model call its tokens and its cost, reported
or estimated), each metrics table as the points of the agents' productivity sums (agent, user,
model), each usage table as the proxy's calls (priced). The figures (collector.dashboard.figures)
only filter and aggregate these.

A table is held per data file: a new Delta version costs the reading of the files it added."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from collector.catalog import find_tables
from collector.dashboard.agents import AGENTS, OTHER, Agent
from collector.prices import Prices
from collector.proxy.config import API_OF_ROUTE
from collector.proxy.providers import INPUT_INCLUDES_CACHE_READ
from collector.schema import load_schema
from collector.storage import Files, Warehouse
from collector.tablefiles import TableFiles
from collector.tables import TableName

__all__ = ["KINDS", "Kind", "Tables", "priced"]

_TOKENS = ("input", "output", "cache_read", "cache_creation")


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


def _categories(frame: pl.DataFrame, *free_text: str) -> pl.DataFrame:
    """The frame with its names (users, sessions, models, agents…) as categoricals: the
    figures group and count by them, and a million 64-character user ids are then a
    million integers (a third of the time of a page). ``free_text`` columns stay strings."""
    names = [c for c, t in frame.schema.items() if t == pl.String and c not in free_text]
    return frame.with_columns(pl.col(names).cast(pl.Categorical))


def _day(time: str = "time") -> pl.Expr:
    return pl.from_epoch(time, time_unit="ns").dt.date().alias("day")


def priced(calls: pl.DataFrame, prices: Prices) -> pl.DataFrame:
    """The calls with ``estimated_cost_usd`` where the agent reported no cost (tokens times
    the prices of the model the call names; null for a model no price is known of) and
    ``cost_usd``, the reported cost or else the estimate."""
    models = calls["model"].drop_nulls().unique().to_list()
    known = {m: p for m in models if (p := prices.price(m)) is not None}
    table = pl.DataFrame(
        {
            "model": list(known),
            **{f"_price_{k}": [getattr(p, a) for p in known.values()] for k, a in
               zip(_TOKENS, ("input", "output", "cache_read", "cache_write"), strict=True)},
        },
        schema={"model": pl.String, **{f"_price_{k}": pl.Float64 for k in _TOKENS}},
    )  # fmt: skip
    joined = calls.join(table, on="model", how="left", maintain_order="left")
    estimate = sum(pl.col(k).fill_null(0) * pl.col(f"_price_{k}") for k in _TOKENS) / 1e6
    reported = pl.col("reported_cost_usd")
    return (
        joined.with_columns(
            pl.when(reported.is_null()).then(estimate).alias("estimated_cost_usd"),
        )
        .with_columns(
            pl.coalesce([reported, pl.col("estimated_cost_usd")]).alias("cost_usd"),
        )
        .drop([f"_price_{k}" for k in _TOKENS])
    )


def events_frame(table: str, raw: pl.DataFrame, prices: Prices) -> pl.DataFrame:
    """A logs table's rows as events: one agent's layout (agents.py) for each agent's rows."""
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
    events = pl.concat(parts).with_columns(_day())
    # Only model calls are priced: the other events carry no tokens.
    events = priced(events, prices).with_columns(
        pl.when(pl.col("is_call")).then(pl.col(c)).alias(c)
        for c in ("estimated_cost_usd", "cost_usd")
    )
    return _categories(events, "error_message")


def _agent_of_service() -> pl.Expr:
    service = pl.col("service")
    agent = pl.lit(OTHER.key)
    for a in reversed(AGENTS):
        agent = (
            pl.when(pl.any_horizontal([service.str.starts_with(p) for p in a.service_prefixes]))
            .then(pl.lit(a.key))
            .otherwise(agent)
        )
    return agent


def _figure_of_point() -> tuple[pl.Expr, list[str]]:
    """Which productivity figure a metric point counts toward ("edits" for edit decisions; null:
    none), as agents.py names them, and the metric names that feed one."""
    attribute = pl.col("attributes").map.get
    figure: pl.Expr = pl.lit(None, pl.String)
    names = []
    for agent in AGENTS:
        specs = [(f, name, when) for f, (name, when) in agent.metrics.items()]
        if agent.edit_decisions is not None:
            specs.append(("edits", agent.edit_decisions[0], None))
        for name_of_figure, name, when in specs:
            this = (pl.col("name") == name) & (pl.col("agent") == agent.key)
            if when is not None:
                this = this & (attribute(when[0]) == when[1])
            figure = pl.when(this.fill_null(False)).then(pl.lit(name_of_figure)).otherwise(figure)
            names.append(name)
    return figure, sorted(set(names))


def _edit_attribute(index: int) -> pl.Expr:
    """An edit decision's tool (1), language (2) or decision (3), by its agent's names."""
    value: pl.Expr = pl.lit(None, pl.String)
    for agent in AGENTS:
        if agent.edit_decisions is not None:
            this = pl.col("agent") == agent.key
            key = agent.edit_decisions[index]
            value = pl.when(this).then(pl.col("attributes").map.get(key)).otherwise(value)
    return value


def metric_points(table: str, raw: pl.DataFrame, prices: Prices) -> pl.DataFrame:
    """The sum points the agents' productivity figures come from: each with the figure it
    counts toward, its agent, user, model and day, what an edit decision decided, and its
    series (metric, start, and a hash of its attributes and resource: a cumulative point's
    increment is what it grew by since the previous point of its series)."""
    figure, wanted = _figure_of_point()
    sums = raw.filter(pl.col("name").is_in(wanted) & (pl.col("metric_type") == "sum"))
    point = pl.col("sum")
    resource = pl.col("resource").struct.field("attributes")
    user_keys = list(dict.fromkeys(k for a in (*AGENTS, OTHER) for k in a.user))
    return (
        sums.select(
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
        .with_columns(_agent_of_service().alias("agent"))
        .with_columns(
            figure.alias("figure"),
            pl.coalesce([pl.col("attributes").map.get(k) for k in user_keys]).alias("user"),
            pl.col("attributes").map.get("model").alias("model"),
            _day(),
            *(
                _edit_attribute(i).alias(n)
                for i, n in ((1, "tool"), (2, "language"), (3, "decision"))
            ),
            pl.struct(pl.col("attributes").alias("a"), pl.col("resource_attributes").alias("r"))
            .hash()
            .alias("series"),
        )
        .filter(pl.col("figure").is_not_null())
        .drop("attributes", "resource_attributes", "service")
        .pipe(_categories)
    )


# The proxy's routes whose providers count cached input inside the input (usage.sql).
_INPUT_INCLUDES_CACHE = sorted(
    route for route, api in API_OF_ROUTE.items() if api in INPUT_INCLUDES_CACHE_READ
)


def usage_rows(table: str, raw: pl.DataFrame, prices: Prices) -> pl.DataFrame:
    """The proxy's calls in the layout the filters read: ``model`` is the model the endpoint
    serves (the upstream's), else the endpoint's name, with input counted without its cached
    part, as everywhere here. The cost is the one the proxy worked out for the call (with the
    endpoint's own price); for rows from before it did, an estimate by ``model``."""
    cache_read = pl.col("cache_read_input_tokens").fill_null(0)
    frame = raw.select(
        pl.col("request_time_unix_nano").alias("time"),
        "agent",
        "token_name",
        pl.coalesce(["upstream_model", "endpoint"]).alias("model"),
        "endpoint",
        "status_code",
        pl.when(pl.col("route").is_in(_INPUT_INCLUDES_CACHE))
        .then(pl.col("input_tokens") - cache_read)
        .otherwise(pl.col("input_tokens"))
        .alias("input"),
        pl.col("output_tokens").alias("output"),
        pl.col("cache_read_input_tokens").alias("cache_read"),
        pl.col("cache_creation_input_tokens").alias("cache_creation"),
        "latency_ms",
        "time_to_first_token_ms",
        pl.col("estimated_cost_usd").alias("priced_cost_usd"),
        pl.lit(None, pl.Float64).alias("reported_cost_usd"),
        _day("request_time_unix_nano"),
    )
    frame = priced(frame, prices).with_columns(
        pl.coalesce("priced_cost_usd", "estimated_cost_usd").alias("estimated_cost_usd")
    )
    return _categories(frame.drop("priced_cost_usd", "cost_usd"))


@dataclass(frozen=True)
class Kind:
    """A kind of table the dashboard reads: its name's suffix, the DDL it is written by, the
    columns read, and how its rows are shaped."""

    suffix: str
    schema: str  # schemas/<schema>.sql
    columns: tuple[str, ...] | None  # None: all
    shape: Callable[[str, pl.DataFrame, Prices], pl.DataFrame]

    def empty(self, prices: Prices) -> pl.DataFrame:
        """The shaped frame of no rows, for a reader who may read no table of the kind."""
        empty = load_schema(self.schema).arrow.empty_table()
        raw = empty.select(list(self.columns)) if self.columns else empty
        return self.shape("", pl.from_arrow(raw), prices)  # type: ignore[arg-type]


LOGS = Kind(
    "_otel_logs",
    "otel_logs",
    ("time_unix_nano", "observed_time_unix_nano", "event_name", "attributes", "resource"),
    events_frame,
)
METRICS = Kind("_otel_metrics", "otel_metrics", ("name", "metric_type", "sum", "resource"),
               metric_points)  # fmt: skip
USAGE = Kind("_usage", "usage", None, usage_rows)
KINDS = (LOGS, METRICS, USAGE)


def kind_of(table: TableName) -> Kind | None:
    return next((k for k in KINDS if table.table.endswith(k.suffix)), None)


class _Table:
    """One table as the dashboard holds it: the shaped frame of each of its data files, so
    that a new version costs the reading of the files it added (collector.tablefiles)."""

    def __init__(self, name: TableName, kind: Kind, warehouse: Warehouse) -> None:
        self.name = name
        self.kind = kind
        self.files = TableFiles(warehouse, name)
        self.version = -1
        self.parts: dict[str, pl.DataFrame] = {}
        self.frame: pl.DataFrame | None = None
        # Requests of one page arrive together: one of them reads, the others wait for it.
        self.lock = threading.Lock()

    def read(self, prices: Prices) -> tuple[int, pl.DataFrame]:
        """The latest version and the frame at it."""
        with self.lock:
            version, paths = self.files.latest()
            if self.frame is not None and version == self.version:
                return version, self.frame
            new = [path for path in paths if path not in self.parts]
            # Files are read side by side: a first read takes every file of the table, and
            # pyarrow and polars let go of the GIL while they read and shape.
            with ThreadPoolExecutor(min(len(new), os.cpu_count() or 1) or 1) as pool:
                read = pool.map(lambda path: self._part(path, prices), new)
                added = dict(zip(new, read, strict=True))
            parts = {path: added[path] if path in added else self.parts[path] for path in paths}
            if parts:
                self.frame = pl.concat(list(parts.values()), how="diagonal_relaxed")
            else:
                self.frame = self.kind.empty(prices)
            self.parts = parts
            self.version = version
            return version, self.frame

    def _part(self, path: str, prices: Prices) -> pl.DataFrame:
        columns = list(self.kind.columns) if self.kind.columns else None
        raw = pl.from_arrow(self.files.read(path, columns))
        return self.kind.shape(str(self.name), raw, prices)  # type: ignore[arg-type]


class Tables:
    """The dashboard's reading of a warehouse, kept per table and brought up to date by the
    files each new version added."""

    def __init__(self, warehouse: Warehouse, prices: Prices | None = None) -> None:
        self.warehouse = warehouse
        self.prices = prices or Prices()
        self.files = Files(warehouse)
        self._tables: dict[TableName, _Table] = {}
        self._lock = threading.Lock()

    def names(self) -> list[TableName]:
        return find_tables(self.files)

    def read(self, table: TableName) -> pl.DataFrame:
        """The table's shaped frame (its kind's, by the name's suffix), at its latest version."""
        return self.snapshot([table])[table][1]

    def snapshot(self, tables: list[TableName]) -> dict[TableName, tuple[int, pl.DataFrame]]:
        """Of ``tables``, each of a kind the dashboard reads: its latest version and its
        shaped frame at that version."""
        held = [self._held(t) for t in tables if kind_of(t) is not None]
        if len(held) < 2:
            return {h.name: h.read(self.prices) for h in held}
        # Side by side: after a flush each table has a file to read.
        with ThreadPoolExecutor(min(len(held), os.cpu_count() or 1)) as pool:
            return dict(zip((h.name for h in held), pool.map(lambda h: h.read(self.prices), held),
                            strict=True))  # fmt: skip

    def _held(self, table: TableName) -> _Table:
        kind = kind_of(table)
        if kind is None:
            raise ValueError(f"the dashboard reads no table like {table}")
        with self._lock:
            held = self._tables.get(table)
            if held is None:
                held = self._tables[table] = _Table(table, kind, self.warehouse)
        return held
