"""Daily and monthly USD budgets per token or team (optionally for some endpoints only): a call
that would start over a budget is refused in its provider's format, with which budget and when
it resets, or moved to the budget's cheaper fallback endpoint.

Spend is each call's estimated cost (records.py), kept in the host's shared SQLite
(collector/hoststate.py) so that every worker of ``--workers N`` counts against the same sums,
and a restart keeps them. A host whose shared file is new (another machine, a lost WAL
directory) first rebuilds this month's spend from the usage table, which holds every call of
every replica that reached Delta. Periods are UTC days and months.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from collector.hoststate import HostState

__all__ = ["Budget", "BudgetSpent", "Spend", "month_spend", "parse_budgets", "period_start"]

log = structlog.get_logger("collector.proxy")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    at REAL NOT NULL, token TEXT NOT NULL, team TEXT, endpoint TEXT NOT NULL, usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_token ON spend (token, at);
CREATE INDEX IF NOT EXISTS spend_team ON spend (team, at);
CREATE TABLE IF NOT EXISTS spend_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_SWEEP_EVERY = 3600.0  # seconds between sweeps of the spend before last month


@dataclass(frozen=True)
class Budget:
    name: str  # proxy.toml's [budgets.NAME]
    scope: str  # "token" or "team"
    who: str | None  # that token or team; None: each token (team) has a budget of this size
    limits: tuple[tuple[str, float], ...]  # (period, USD): day and/or month
    endpoints: str  # an fnmatch pattern: the endpoints whose spend counts and calls are held
    fallback: str | None  # an endpoint the calls go to instead once the budget is spent

    def holds(self, token: str, team: str | None, endpoint: str) -> str | None:
        """The token or team whose budget this is for a call, or None if it does not apply."""
        if not fnmatch.fnmatchcase(endpoint, self.endpoints):
            return None
        holder = token if self.scope == "token" else team
        if holder is None or (self.who is not None and holder != self.who):
            return None
        return holder


class BudgetSpent(Exception):
    """A budget is spent: the message names it and when it resets (``retry_after`` s)."""

    def __init__(self, budget: Budget, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.budget = budget
        self.message = message
        self.retry_after = retry_after


def period_start(period: str, now: float) -> float:
    """The start of the UTC day or month ``now`` is in, in Unix seconds."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return start.timestamp()


def _period_end(period: str, now: float) -> float:
    start = dt.datetime.fromtimestamp(period_start(period, now), dt.UTC)
    if period == "day":
        return (start + dt.timedelta(days=1)).timestamp()
    return start.replace(
        year=start.year + start.month // 12, month=start.month % 12 + 1
    ).timestamp()


def parse_budgets(data: Any, endpoints: Iterable[str], where: str) -> tuple[Budget, ...]:
    """The ``[budgets.NAME]`` tables of proxy.toml; ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: [budgets.NAME] tables, each a budget")
    known = set(endpoints)
    budgets = []
    for name, b in data.items():
        at = f"{where}: budgets.{name}"
        if not isinstance(b, dict):
            raise ValueError(f"{at}: a table")
        unknown = set(b) - {"each", "token", "team", "daily_usd", "monthly_usd", "endpoints",
                            "fallback"}  # fmt: skip
        if unknown:
            raise ValueError(f"{at}: unknown key(s) {sorted(unknown)}")
        whose = [k for k in ("each", "token", "team") if k in b]
        if len(whose) != 1:
            raise ValueError(
                f'{at}: give one of each = "token" | "team", token = NAME, team = NAME'
            )
        if whose[0] == "each":
            if b["each"] not in ("token", "team"):
                raise ValueError(f'{at}: each must be "token" or "team", got {b["each"]!r}')
            scope, who = str(b["each"]), None
        else:
            scope, who = whose[0], str(b[whose[0]])
        limits = []
        for period, key in (("day", "daily_usd"), ("month", "monthly_usd")):
            if key in b:
                usd = b[key]
                if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0:
                    raise ValueError(f"{at}: {key} must be a number of USD ≥ 0, got {usd!r}")
                limits.append((period, float(usd)))
        if not limits:
            raise ValueError(f"{at}: give daily_usd, monthly_usd or both")
        fallback = b.get("fallback")
        if fallback is not None and str(fallback) not in known:
            raise ValueError(f"{at}: fallback {fallback!r} is not one of the [endpoints.*]")
        budgets.append(Budget(str(name), scope, who, tuple(limits), str(b.get("endpoints", "*")),
                              None if fallback is None else str(fallback)))  # fmt: skip
    return tuple(budgets)


class Spend:
    """What tokens and teams spent, per endpoint, on the host's shared SQLite."""

    def __init__(self, host: HostState) -> None:
        self._db = host.connect()  # used by the event loop's thread only
        self._db.executescript(_SCHEMA)
        self._swept = 0.0

    @property
    def rebuilt(self) -> bool:
        row = self._db.execute("SELECT value FROM spend_meta WHERE key = 'rebuilt'").fetchone()
        return row is not None

    def rebuild(self, rows: Iterable[tuple[float, str, str | None, str, float]]) -> bool:
        """This month's spend from the usage table, (time, token, team, endpoint, USD) — on a
        host that has none yet; several workers may offer it, one takes it. Whether it did."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self.rebuilt:
                self._db.execute("ROLLBACK")
                return False
            self._db.executemany("INSERT INTO spend VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute(
                "INSERT INTO spend_meta VALUES ('rebuilt', ?)",
                (dt.datetime.now(dt.UTC).isoformat(),),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    def add(self, at: float, token: str, team: str | None, endpoint: str, usd: float) -> None:
        try:
            self._db.execute("INSERT INTO spend VALUES (?, ?, ?, ?, ?)",
                             (at, token, team, endpoint, usd))  # fmt: skip
            if at - self._swept >= _SWEEP_EVERY:  # what no budget counts any more goes
                self._swept = at
                self._db.execute("DELETE FROM spend WHERE at < ?",
                                 (period_start("month", period_start("month", at) - 1),))  # fmt: skip
        except sqlite3.Error as e:
            log.warning("spend not counted toward budgets", error=str(e))

    def spent(self, budget: Budget, holder: str, since: float) -> float:
        column = "token" if budget.scope == "token" else "team"
        row = self._db.execute(
            f"SELECT coalesce(sum(usd), 0) FROM spend WHERE {column} = ? AND at >= ? "
            "AND endpoint GLOB ?",
            (holder, since, budget.endpoints),
        ).fetchone()
        return float(row[0])

    def check(self, budgets: Iterable[Budget], token: str, team: str | None, endpoint: str,
              now: float) -> None:  # fmt: skip
        """Raise :class:`BudgetSpent` for the first budget the call would start over."""
        for budget in budgets:
            holder = budget.holds(token, team, endpoint)
            if holder is None:
                continue
            for period, usd in budget.limits:
                since = period_start(period, now)
                try:
                    spent = self.spent(budget, holder, since)
                except sqlite3.Error as e:
                    log.warning("budgets not checked; the call is admitted", error=str(e))
                    return
                if spent >= usd:
                    resets = _period_end(period, now)
                    when = dt.datetime.fromtimestamp(resets, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    raise BudgetSpent(
                        budget,
                        f"{'daily' if period == 'day' else 'monthly'} budget {budget.name!r} of "
                        f"{_usd(usd)} for {budget.scope} {holder!r} is spent ({_usd(spent)}); "
                        f"it resets at {when}",
                        resets - now,
                    )


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}".rstrip("0")


def month_spend(
    uri: str, options: dict[str, str] | None, teams: dict[str, str | None], now: float
) -> list[tuple[float, str, str | None, str, float]]:
    """This month's priced calls in the usage table at ``uri`` (none if there is no table
    yet), as :meth:`Spend.rebuild` takes them; ``teams`` gives each token's team."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return []
    if "estimated_cost_usd" not in {f.name for f in table.schema().fields}:
        log.warning("the usage table holds no costs yet: spend before this version is not counted")
        return []
    since_ns = int(period_start("month", now) * 1e9)
    rows = table.to_pyarrow_table(
        columns=["request_time_unix_nano", "token_name", "endpoint", "estimated_cost_usd"],
        filters=[("request_time_unix_nano", ">=", since_ns)],
    ).to_pylist()
    return [
        (r["request_time_unix_nano"] / 1e9, r["token_name"], teams.get(r["token_name"]),
         r["endpoint"], r["estimated_cost_usd"])
        for r in rows
        if r["token_name"] and r["endpoint"] and r["estimated_cost_usd"] is not None
    ]  # fmt: skip
