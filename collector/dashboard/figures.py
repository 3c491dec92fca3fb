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
from collector.dashboard.data import LOGS
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
    endpoint: str | None = None  # the proxy's: its usage rows only
    token: str | None = None  # the name of the proxy's caller's token: its usage rows only

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
            query.get("endpoint") or None,
            query.get("token") or None,
        )
        if filters.since is not None and filters.until is not None:
            if filters.until <= filters.since:
                raise FilterError("to must be after from")
        return filters

    def events(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        return frame.filter(*self.conditions(model=True))

    def conditions(self, *, model: bool = True, usage: bool = False) -> list[pl.Expr]:
        """The filters as polars conditions on the time, agent, user and model columns of the
        events and metric points; with ``usage``, on the proxy's usage rows, which have the
        token name and the endpoint instead of a user (their model is the upstream's)."""
        conditions = [pl.lit(True)]
        if self.since is not None:
            conditions.append(pl.col("time") >= self.since)
        if self.until is not None:
            conditions.append(pl.col("time") < self.until)
        named = {"agent": self.agent, "model": self.model if model else None}
        if usage:
            named |= {"token_name": self.token, "endpoint": self.endpoint}
        else:
            named["user"] = self.user
        conditions += [pl.col(column) == value for column, value in named.items() if value]
        return conditions


def _lazy(frames: Iterable[pl.DataFrame]) -> pl.LazyFrame | None:
    """The frames of one kind (collector.dashboard.data), as one lazy frame: each figure's
    query then reads only the columns it needs (None: no frame)."""
    frames = list(frames)
    return pl.concat([f.lazy() for f in frames], how="diagonal_relaxed") if frames else None


def _events(frames: Iterable[pl.DataFrame]) -> pl.LazyFrame:
    frames = list(frames)
    if not frames:  # the reader may read no logs table: its figures are of no events
        frames = [LOGS.empty(Prices())]
    lazy = _lazy(frames)
    assert lazy is not None
    return lazy


def increments(points: pl.LazyFrame, filters: Filters) -> pl.LazyFrame:
    """Each point of a sum within the range, with ``increment``, what it adds: a delta point
    its value; a cumulative one what its series (same metric, attributes, resource and start)
    grew by since the series' previous point, before the range too, or from zero for the first
    (and from zero again after a reset, when the value fell)."""
    conditions = filters.conditions(model=True)
    delta = points.filter(pl.col("temporality") != _CUMULATIVE, *conditions)
    series = ["table", "name", "series", "start_time"]
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


_FIGURES = ("lines_added", "lines_removed", "commits", "pull_requests", "active_time_s")


def _productivity(points: Iterable[pl.DataFrame], filters: Filters) -> dict[str, pl.LazyFrame]:
    """Each productivity figure's increments, from every agent that sends it."""
    metrics = _lazy(points)
    if metrics is None:
        return {}
    return {f: increments(metrics.filter(pl.col("figure") == f), filters) for f in _FIGURES}


_TOKENS = ("input", "output", "cache_read", "cache_creation")


def _quantile(column: str, q: float) -> pl.Expr:
    """The ``q`` quantile of the non-null values (linear interpolation). Nulls are dropped
    first: polars' quantile over a column with nulls takes three times as long."""
    return pl.col(column).drop_nulls().quantile(q, "linear")


def _total(column: str) -> pl.Expr:
    """A sum that is null when nothing was there to add (no figure, not zero)."""
    values = pl.col(column)
    return pl.when(values.is_not_null().any()).then(values.sum()).otherwise(None)


def tiles(
    events: Iterable[pl.DataFrame], points: Iterable[pl.DataFrame], filters: Filters
) -> dict[str, Any]:
    """The headline figures: adoption, calls, tokens, cost (reported, estimated), productivity."""
    frame = filters.events(_events(events))
    people = frame.select(
        pl.col("user").drop_nulls().n_unique().alias("active_users"),
        pl.col("session").drop_nulls().n_unique().alias("sessions"),
    )
    calls = frame.filter(pl.col("is_call")).select(
        pl.len().alias("api_calls"),
        *(pl.col(k).sum() for k in _TOKENS),
        _total("cost_usd").alias("cost_usd"),
        _total("reported_cost_usd").alias("reported_cost_usd"),
        _total("estimated_cost_usd").alias("estimated_cost_usd"),
        pl.col("cost_usd").is_null().sum().alias("unpriced_calls"),
    )
    sums = _productivity(points, filters)
    added = [f.select(pl.col("increment").sum().alias(name)) for name, f in sums.items()]
    who, figures, *productive = pl.collect_all([people, calls, *added])
    tokens = {k: int(figures[k].item() or 0) for k in _TOKENS}
    prompt = tokens["input"] + tokens["cache_read"] + tokens["cache_creation"]
    produced = {name: 0.0 for name in _FIGURES} | {
        f.columns[0]: float(f.item()) for f in productive
    }
    return {
        "active_users": who["active_users"].item(),
        "sessions": who["sessions"].item(),
        "api_calls": figures["api_calls"].item(),
        "tokens": tokens,
        "cache_hit_ratio": tokens["cache_read"] / prompt if prompt else None,
        "cost_usd": figures["cost_usd"].item(),
        "reported_cost_usd": figures["reported_cost_usd"].item(),
        "estimated_cost_usd": figures["estimated_cost_usd"].item(),
        "unpriced_calls": figures["unpriced_calls"].item(),
        **produced,
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


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """A result as JSON rows, days as ISO dates (UTC)."""
    if "day" in frame.columns:
        frame = frame.with_columns(pl.col("day").cast(pl.String))
    return frame.to_dicts()


def calls(
    events: Iterable[pl.DataFrame], filters: Filters, query: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Model calls grouped ``by`` (query: day, agent, user, model, session): their count,
    tokens, cost (reported, estimated, and the two together), and duration p50 / p95 (linear
    interpolation); ordered by cost, then tokens, largest first, or by day; ``limit`` rows."""
    by = _dimensions(query.get("by"))
    limit = _limit(query.get("limit"))
    frame = filters.events(_events(events)).filter(pl.col("is_call"))
    total = sum(pl.col(k).fill_null(0) for k in _TOKENS)
    aggregates = [
        pl.len().alias("calls"),
        *(pl.col(k).sum().alias(k) for k in _TOKENS),
        total.sum().alias("total_tokens"),
        _total("cost_usd").alias("cost_usd"),
        _total("reported_cost_usd").alias("reported_cost_usd"),
        _total("estimated_cost_usd").alias("estimated_cost_usd"),
        _quantile("duration_ms", 0.5).alias("duration_p50_ms"),
        _quantile("duration_ms", 0.95).alias("duration_p95_ms"),
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
    return _rows(grouped.collect())


def options(
    events: Iterable[pl.DataFrame], usage: Iterable[pl.DataFrame], filters: Filters
) -> dict[str, list[str]]:
    """What the filters can be set to in the range: the agents, users and models seen in the
    events, and the endpoints and token names in the proxy's usage."""
    in_range = Filters(filters.since, filters.until).conditions(model=False)
    frame = _events(events).filter(*in_range)
    calls = _lazy(u for u in usage if not u.is_empty())
    names = [("agent", frame, "agent"), ("user", frame, "user"), ("model", frame, "model")]
    if calls is not None:
        calls = calls.filter(*in_range)
        names += [("endpoint", calls, "endpoint"), ("token", calls, "token_name")]
    seen = pl.collect_all([f.select(pl.col(c).drop_nulls().unique()) for _, f, c in names])
    found = {n: sorted(v[c].to_list()) for (n, _, c), v in zip(names, seen, strict=True)}
    return {"endpoint": [], "token": [], **found}


def tools(events: Iterable[pl.DataFrame], filters: Filters) -> list[dict[str, Any]]:
    """Tool calls by agent and tool: how many, the share that succeeded, duration p50 / p95;
    the most used first."""
    frame = filters.events(_events(events)).filter(pl.col("tool").is_not_null())
    return _rows(
        frame.group_by("agent", "tool")
        .agg(
            pl.len().alias("calls"),
            pl.col("tool_success").mean().alias("success_rate"),
            _quantile("tool_duration_ms", 0.5).alias("duration_p50_ms"),
            _quantile("tool_duration_ms", 0.95).alias("duration_p95_ms"),
        )
        .sort(["calls", "agent", "tool"], descending=[True, False, False])
        .collect()
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
    counted, latest = pl.collect_all([counts, recent])
    return {"by_status": counted.to_dicts(), "recent": latest.to_dicts()}


def productivity(points: Iterable[pl.DataFrame], filters: Filters) -> list[dict[str, Any]]:
    """Lines added and removed, commits, pull requests and active time, per day (UTC)."""
    sums = _productivity(points, filters)
    per_day = pl.collect_all(
        [f.group_by("day").agg(pl.col("increment").sum().alias(name)) for name, f in sums.items()]
    )
    days: dict[Any, dict[str, Any]] = {}
    for frame in per_day:
        name = frame.columns[1]
        for day, value in frame.iter_rows():
            days.setdefault(day, {})[name] = value
    return [{"day": str(d), **{n: days[d].get(n, 0.0) for n in _FIGURES}} for d in sorted(days)]


def edits(points: Iterable[pl.DataFrame], filters: Filters) -> list[dict[str, Any]]:
    """Edit suggestions accepted and rejected, by tool and language, from the agents that
    count them (Claude Code's claude_code.code_edit_tool.decision), most decided first."""
    metrics = _lazy(points)
    if metrics is None:
        return []
    decided = increments(metrics.filter(pl.col("figure") == "edits"), filters)
    accepted = pl.col("increment").filter(pl.col("decision") == "accept").sum()
    rejected = pl.col("increment").filter(pl.col("decision") == "reject").sum()
    rows = (
        decided.group_by("tool", "language")
        .agg(accepted.alias("accepted"), rejected.alias("rejected"))
        .with_columns(
            (pl.col("accepted") / (pl.col("accepted") + pl.col("rejected"))).alias(
                "acceptance_rate"
            )
        )
        .with_columns((pl.col("accepted") + pl.col("rejected")).alias("decisions"))
        .sort(["decisions", "tool", "language"], descending=[True, False, False], nulls_last=True)
    )
    return rows.drop("decisions").collect().to_dicts()


def gateway(usage: Iterable[pl.DataFrame], filters: Filters) -> dict[str, Any]:
    """The proxy's calls, from its usage tables: requests by status per day, tokens per token
    name per day, latency and time to first token by endpoint (with errors and estimated
    cost), and the rate-limit refusals (429) per token name. Filtered by time, agent, model
    (the upstream's), endpoint and token name."""
    lazy = _lazy(u for u in usage if not u.is_empty())
    if lazy is None:
        return {"by_status": [], "tokens": [], "endpoints": [], "refusals": []}
    frame = lazy.filter(*filters.conditions(usage=True))
    tokens = [_total(k).alias(k) for k in _TOKENS]  # null: the provider reported none
    by_status = frame.group_by("day", "status_code").agg(pl.len().alias("requests"))
    per_token = frame.group_by("day", "token_name").agg(*tokens)
    endpoints = frame.group_by("endpoint").agg(
        pl.len().alias("requests"),
        (pl.col("status_code") >= 400).sum().alias("errors"),
        *tokens,
        _total("estimated_cost_usd").alias("estimated_cost_usd"),
        _quantile("latency_ms", 0.5).alias("latency_p50_ms"),
        _quantile("latency_ms", 0.95).alias("latency_p95_ms"),
        _quantile("time_to_first_token_ms", 0.5).alias("ttft_p50_ms"),
        _quantile("time_to_first_token_ms", 0.95).alias("ttft_p95_ms"),
    )
    refusals = (
        frame.filter(pl.col("status_code") == 429)
        .group_by("token_name")
        .agg(pl.len().alias("refusals"))
    )
    status, spent, served, refused = pl.collect_all([
        by_status.sort("day", "status_code"),
        per_token.sort("day", "token_name", nulls_last=True),
        endpoints.sort(["requests", "endpoint"], descending=[True, False]),
        refusals.sort(["refusals", "token_name"], descending=[True, False]),
    ])  # fmt: skip
    return {
        "by_status": _rows(status),
        "tokens": _rows(spent),
        "endpoints": served.to_dicts(),
        "refusals": refused.to_dicts(),
    }
