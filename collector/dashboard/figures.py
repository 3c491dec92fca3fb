"""The dashboard's figures, computed from the frames of collector.dashboard.data under the
page's filters. Sums are read with their temporality: delta points add up, cumulative ones
count what they grew by within the range."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from collector.dashboard.agents import AGENTS, OTHER
from collector.dashboard.data import EVENT_COLUMNS
from collector.prices import Prices

__all__ = [
    "DIMENSIONS",
    "FilterError",
    "Filters",
    "calls",
    "edits",
    "errors",
    "gateway",
    "increments",
    "options",
    "priced",
    "productivity",
    "tiles",
    "tools",
]

_CUMULATIVE = "AGGREGATION_TEMPORALITY_CUMULATIVE"


class FilterError(ValueError):
    """A filter of the query string cannot be read; the message says which and why."""


def _time(name: str, text: str | None) -> int | None:
    """A time as the page and scripts send it: ISO 8601 (``2026-12-01``, ``…T10:00:00Z``) or
    Unix seconds; nanoseconds since the epoch, as the tables hold it."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        return int(float(text) * 1e9) if text.replace(".", "", 1).isdigit() else _iso(text)
    except ValueError:
        raise FilterError(
            f"{name}={text!r}: expected an ISO 8601 time (2026-12-01T10:00:00Z) or Unix seconds"
        ) from None


def _iso(text: str) -> int:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1e9)


@dataclass(frozen=True)
class Filters:
    since: int | None = None  # ns since the epoch, inclusive
    until: int | None = None  # exclusive
    agent: str | None = None
    user: str | None = None
    model: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        agents = {a.key for a in (*AGENTS, OTHER)}
        agent = query.get("agent") or None
        if agent is not None and agent not in agents:
            raise FilterError(f"agent={agent!r}: expected one of {', '.join(sorted(agents))}")
        filters = cls(
            _time("from", query.get("from")),
            _time("to", query.get("to")),
            agent,
            query.get("user") or None,
            query.get("model") or None,
        )
        if filters.since is not None and filters.until is not None:
            if filters.until <= filters.since:
                raise FilterError("to must be after from")
        return filters

    def events(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(*self._conditions(model=True))

    def _conditions(self, *, model: bool) -> list[pl.Expr]:
        conditions = [pl.lit(True)]
        if self.since is not None:
            conditions.append(pl.col("time") >= self.since)
        if self.until is not None:
            conditions.append(pl.col("time") < self.until)
        if self.agent is not None:
            conditions.append(pl.col("agent") == self.agent)
        if self.user is not None:
            conditions.append(pl.col("user") == self.user)
        if model and self.model is not None:
            conditions.append(pl.col("model") == self.model)
        return conditions


def _events(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    frames = list(frames)
    if not frames:
        return pl.DataFrame(schema={c: _EMPTY_EVENTS[c] for c in EVENT_COLUMNS})
    return pl.concat(frames)


_EMPTY_EVENTS: dict[str, Any] = {
    "table": pl.String, "time": pl.Int64, "agent": pl.String, "user": pl.String,
    "session": pl.String, "model": pl.String, "event": pl.String, "is_call": pl.Boolean,
    "input": pl.Int64, "output": pl.Int64, "cache_read": pl.Int64, "cache_creation": pl.Int64,
    "reported_cost_usd": pl.Float64, "duration_ms": pl.Float64, "tool": pl.String,
    "tool_success": pl.Boolean, "tool_duration_ms": pl.Float64, "is_error": pl.Boolean,
    "error_status": pl.Int64, "error_message": pl.String,
}  # fmt: skip


def _metric_frame(points: pl.DataFrame) -> pl.DataFrame:
    """Points with the agent, user and model columns the filters read."""
    service = pl.col("service")
    agent = pl.lit(OTHER.key)
    for a in reversed(AGENTS):
        agent = (
            pl.when(pl.any_horizontal([service.str.starts_with(p) for p in a.service_prefixes]))
            .then(pl.lit(a.key))
            .otherwise(agent)
        )
    user_keys = list(dict.fromkeys(k for a in (*AGENTS, OTHER) for k in a.user))
    return points.with_columns(
        agent.alias("agent"),
        pl.coalesce([pl.col("attributes").map.get(k) for k in user_keys]).alias("user"),
        pl.col("attributes").map.get("model").alias("model"),
    )


def increments(points: pl.DataFrame, filters: Filters) -> pl.DataFrame:
    """Each point of a sum within the range, with ``increment``, what it adds: a delta point
    its value; a cumulative one what its series (same metric, attributes, resource and start)
    grew by since the series' previous point, before the range too, or from zero for the first
    (and from zero again after a reset, when the value fell)."""
    conditions = filters._conditions(model=True)
    delta = points.filter(pl.col("temporality") != _CUMULATIVE, *conditions)
    series = ["table", "name", "attributes", "resource_attributes", "start_time"]
    previous = pl.col("value").shift(1).over(series, order_by="time")
    grown = pl.col("value") - previous.fill_null(0.0)
    cumulative = (
        points.filter(pl.col("temporality") == _CUMULATIVE)
        .with_columns(pl.when(grown < 0).then(pl.col("value")).otherwise(grown).alias("increment"))
        .filter(*conditions)
    )
    return pl.concat(
        [delta.with_columns(pl.col("value").alias("increment")), cumulative], how="vertical"
    )


def _productivity(points: Iterable[pl.DataFrame], filters: Filters) -> dict[str, pl.DataFrame]:
    """Each productivity figure's increments, from every agent that sends it."""
    frames = [p for p in points if not p.is_empty()]
    metrics = _metric_frame(pl.concat(frames)) if frames else None
    figures: dict[str, pl.DataFrame] = {}
    for figure in ("lines_added", "lines_removed", "commits", "pull_requests", "active_time_s"):
        parts = []
        for agent in AGENTS:
            spec = agent.metrics.get(figure)
            if spec is None or metrics is None or filters.agent not in (None, agent.key):
                continue
            name, when = spec
            selected = metrics.filter((pl.col("name") == name) & (pl.col("agent") == agent.key))
            if when is not None:
                selected = selected.filter(pl.col("attributes").map.get(when[0]) == when[1])
            parts.append(increments(selected, filters))
        figures[figure] = pl.concat(parts) if parts else pl.DataFrame()
    return figures


_TOKENS = ("input", "output", "cache_read", "cache_creation")


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
    joined = calls.join(table, on="model", how="left")
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


def _total(column: str) -> pl.Expr:
    """A sum that is null when nothing was there to add (no figure, not zero)."""
    values = pl.col(column)
    return pl.when(values.is_not_null().any()).then(values.sum()).otherwise(None)


def tiles(
    events: Iterable[pl.DataFrame],
    points: Iterable[pl.DataFrame],
    filters: Filters,
    prices: Prices | None = None,
) -> dict[str, Any]:
    """The headline figures: adoption, calls, tokens, cost (reported, estimated), productivity."""
    frame = filters.events(_events(events))
    people = _events([frame]).filter(pl.col("user").is_not_null())
    calls = priced(frame.filter(pl.col("is_call")), prices or Prices())
    tokens = {
        k: int(calls[k].sum() or 0) for k in ("input", "output", "cache_read", "cache_creation")
    }
    prompt = tokens["input"] + tokens["cache_read"] + tokens["cache_creation"]
    productivity = {
        figure: float(frame["increment"].sum()) if frame.height else 0.0
        for figure, frame in _productivity(points, filters).items()
    }
    return {
        "active_users": people["user"].n_unique(),
        "sessions": frame.filter(pl.col("session").is_not_null())["session"].n_unique(),
        "api_calls": calls.height,
        "tokens": tokens,
        "cache_hit_ratio": tokens["cache_read"] / prompt if prompt else None,
        "cost_usd": calls.select(_total("cost_usd")).item(),
        "reported_cost_usd": calls.select(_total("reported_cost_usd")).item(),
        "estimated_cost_usd": calls.select(_total("estimated_cost_usd")).item(),
        "unpriced_calls": calls.filter(pl.col("cost_usd").is_null()).height,
        "lines_added": productivity["lines_added"],
        "lines_removed": productivity["lines_removed"],
        "commits": productivity["commits"],
        "pull_requests": productivity["pull_requests"],
        "active_time_s": productivity["active_time_s"],
    }


DIMENSIONS = ("day", "agent", "user", "model", "session")


def _dimensions(text: str | None) -> list[str]:
    names = [d.strip() for d in (text or "").split(",") if d.strip()]
    unknown = [d for d in names if d not in DIMENSIONS]
    if unknown or len(set(names)) != len(names):
        raise FilterError(
            f"by={text!r}: expected distinct names among {', '.join(DIMENSIONS)}, comma-separated"
        )
    return names


def _limit(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or not 0 < int(text) <= 10_000:
        raise FilterError(f"limit={text!r}: expected a whole number from 1 to 10000")
    return int(text)


def _day(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.from_epoch("time", time_unit="ns").dt.date().cast(pl.String).alias("day")
    )


def calls(
    events: Iterable[pl.DataFrame],
    filters: Filters,
    query: Mapping[str, str],
    prices: Prices | None = None,
) -> list[dict[str, Any]]:
    """Model calls grouped ``by`` (query: day, agent, user, model, session): their count,
    tokens, cost (reported, estimated, and the two together), and duration p50 / p95 (linear
    interpolation); ordered by cost, then tokens, largest first, or by day; ``limit`` rows."""
    by = _dimensions(query.get("by"))
    limit = _limit(query.get("limit"))
    frame = filters.events(_events(events)).filter(pl.col("is_call"))
    frame = _day(priced(frame, prices or Prices()))
    total = sum(pl.col(k).fill_null(0) for k in ("input", "output", "cache_read",
                                                  "cache_creation"))  # fmt: skip
    aggregates = [
        pl.len().alias("calls"),
        *(pl.col(k).sum().alias(k) for k in ("input", "output", "cache_read", "cache_creation")),
        total.sum().alias("total_tokens"),
        _total("cost_usd").alias("cost_usd"),
        _total("reported_cost_usd").alias("reported_cost_usd"),
        _total("estimated_cost_usd").alias("estimated_cost_usd"),
        pl.col("duration_ms").quantile(0.5, "linear").alias("duration_p50_ms"),
        pl.col("duration_ms").quantile(0.95, "linear").alias("duration_p95_ms"),
    ]
    if "session" in by:  # who and with what, for the top sessions
        aggregates += [
            pl.col("user").drop_nulls().first().alias("session_user"),
            pl.col("model").drop_nulls().unique().sort().alias("models"),
        ]
    grouped = frame.group_by(by).agg(aggregates) if by else frame.select(aggregates)
    order = ["day"] if "day" in by else []
    grouped = grouped.sort(
        [*order, "cost_usd", "total_tokens", *[d for d in by if d != "day"]],
        descending=[False] * len(order) + [True, True] + [False] * (len(by) - len(order)),
        nulls_last=True,
    )
    if limit is not None:
        grouped = grouped.head(limit)
    return grouped.to_dicts()


def options(events: Iterable[pl.DataFrame], filters: Filters) -> dict[str, list[str]]:
    """What the filters can be set to in the range: the agents, users and models seen."""
    frame = _events(events)
    frame = frame.filter(*Filters(filters.since, filters.until)._conditions(model=False))
    return {
        name: sorted(frame[name].drop_nulls().unique().to_list())
        for name in ("agent", "user", "model")
    }


def tools(events: Iterable[pl.DataFrame], filters: Filters) -> list[dict[str, Any]]:
    """Tool calls by agent and tool: how many, the share that succeeded, duration p50 / p95;
    the most used first."""
    frame = filters.events(_events(events)).filter(pl.col("tool").is_not_null())
    return (
        frame.group_by("agent", "tool")
        .agg(
            pl.len().alias("calls"),
            pl.col("tool_success").mean().alias("success_rate"),
            pl.col("tool_duration_ms").quantile(0.5, "linear").alias("duration_p50_ms"),
            pl.col("tool_duration_ms").quantile(0.95, "linear").alias("duration_p95_ms"),
        )
        .sort(["calls", "agent", "tool"], descending=[True, False, False])
        .to_dicts()
    )


def errors(
    events: Iterable[pl.DataFrame], filters: Filters, query: Mapping[str, str]
) -> dict[str, Any]:
    """Failed model requests: counted by agent, status and model, and the most recent ones
    (``limit``, 50 by default) with their message."""
    limit = _limit(query.get("limit")) or 50
    frame = filters.events(_events(events)).filter(pl.col("is_error"))
    counts = (
        frame.group_by("agent", "error_status", "model")
        .agg(pl.len().alias("errors"))
        .sort(
            ["errors", "agent", "error_status", "model"],
            descending=[True, False, False, False],
            nulls_last=True,
        )
    )
    recent = frame.sort("time", descending=True).head(limit)
    recent = recent.select(
        pl.from_epoch("time", time_unit="ns").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias("time"),
        "agent", "user", "session", "model",
        pl.col("error_status").alias("status"), pl.col("error_message").alias("message"),
    )  # fmt: skip
    return {"by_status": counts.to_dicts(), "recent": recent.to_dicts()}


def productivity(points: Iterable[pl.DataFrame], filters: Filters) -> list[dict[str, Any]]:
    """Lines added and removed, commits, pull requests and active time, per day (UTC)."""
    days: dict[str, dict[str, Any]] = {}
    for figure, frame in _productivity(points, filters).items():
        if not frame.height:
            continue
        per_day = _day(frame).group_by("day").agg(pl.col("increment").sum())
        for day, value in per_day.iter_rows():
            days.setdefault(day, {"day": day})[figure] = value
    names = ("lines_added", "lines_removed", "commits", "pull_requests", "active_time_s")
    return [{"day": d, **{n: days[d].get(n, 0.0) for n in names}} for d in sorted(days)]


def edits(points: Iterable[pl.DataFrame], filters: Filters) -> list[dict[str, Any]]:
    """Edit suggestions accepted and rejected, by tool and language, from the agents that
    count them (Claude Code's claude_code.code_edit_tool.decision), most decided first."""
    frames = [p for p in points if not p.is_empty()]
    if not frames:
        return []
    metrics = _metric_frame(pl.concat(frames))
    parts = []
    for agent in AGENTS:
        if agent.edit_decisions is None or filters.agent not in (None, agent.key):
            continue
        name, tool, language, decision = agent.edit_decisions
        selected = metrics.filter((pl.col("name") == name) & (pl.col("agent") == agent.key))
        attribute = pl.col("attributes").map.get
        parts.append(
            increments(selected, filters).select(
                attribute(tool).alias("tool"),
                attribute(language).alias("language"),
                attribute(decision).alias("decision"),
                "increment",
            )
        )
    if not parts:
        return []
    frame = pl.concat(parts)
    accepted = pl.col("increment").filter(pl.col("decision") == "accept").sum()
    rejected = pl.col("increment").filter(pl.col("decision") == "reject").sum()
    rows = (
        frame.group_by("tool", "language")
        .agg(accepted.alias("accepted"), rejected.alias("rejected"))
        .with_columns(
            (pl.col("accepted") / (pl.col("accepted") + pl.col("rejected"))).alias(
                "acceptance_rate"
            )
        )
        .with_columns((pl.col("accepted") + pl.col("rejected")).alias("decisions"))
        .sort(["decisions", "tool", "language"], descending=[True, False, False], nulls_last=True)
    )
    return rows.drop("decisions").to_dicts()


# The proxy's routes whose providers count cached input inside the input (usage.sql).
_INPUT_INCLUDES_CACHE = ("openai", "cursor", "gemini")


def gateway(
    usage: Iterable[pl.DataFrame], filters: Filters, prices: Prices | None = None
) -> dict[str, Any]:
    """The proxy's calls, from its usage tables: requests by status per day, tokens per token
    name per day, latency and time to first token by endpoint (with errors and estimated
    cost), and the rate-limit refusals (429) per token name. The filters read the usage
    columns: agent, ``user`` as the token name, ``model`` as the endpoint."""
    frames = [u for u in usage if not u.is_empty()]
    if not frames:
        return {"by_status": [], "tokens": [], "endpoints": [], "refusals": []}
    cache_read = pl.col("cache_read_input_tokens").fill_null(0)
    frame = pl.concat(frames, how="diagonal_relaxed").select(
        pl.col("request_time_unix_nano").alias("time"),
        "agent",
        pl.col("token_name").alias("user"),
        pl.col("endpoint").alias("model"),
        "endpoint",
        "upstream_model",
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
    )
    frame = _day(filters.events(frame))
    # Priced by the model the endpoint serves (the upstream's), else by the endpoint's name.
    priced_frame = priced(
        frame.with_columns(
            pl.coalesce(["upstream_model", "endpoint"]).alias("model"),
            pl.lit(None, pl.Float64).alias("reported_cost_usd"),
        ),
        prices or Prices(),
    )
    tokens = [_total(k).alias(k) for k in _TOKENS]  # null: the provider reported none
    by_status = frame.group_by("day", "status_code").agg(pl.len().alias("requests"))
    per_token = frame.group_by("day", "user").agg(*tokens).rename({"user": "token_name"})
    endpoints = priced_frame.group_by("endpoint").agg(
        pl.len().alias("requests"),
        (pl.col("status_code") >= 400).sum().alias("errors"),
        *tokens,
        _total("estimated_cost_usd").alias("estimated_cost_usd"),
        pl.col("latency_ms").quantile(0.5, "linear").alias("latency_p50_ms"),
        pl.col("latency_ms").quantile(0.95, "linear").alias("latency_p95_ms"),
        pl.col("time_to_first_token_ms").quantile(0.5, "linear").alias("ttft_p50_ms"),
        pl.col("time_to_first_token_ms").quantile(0.95, "linear").alias("ttft_p95_ms"),
    )
    refusals = (
        frame.filter(pl.col("status_code") == 429)
        .group_by("user")
        .agg(pl.len().alias("refusals"))
        .rename({"user": "token_name"})
    )
    return {
        "by_status": by_status.sort("day", "status_code").to_dicts(),
        "tokens": per_token.sort("day", "token_name", nulls_last=True).to_dicts(),
        "endpoints": endpoints.sort(["requests", "endpoint"], descending=[True, False]).to_dicts(),
        "refusals": refusals.sort(["refusals", "token_name"], descending=[True, False]).to_dicts(),
    }
