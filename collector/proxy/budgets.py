"""Daily and monthly USD budgets per token or team (optionally for some endpoints only): a call
that would start over a budget is refused in its provider's format, with which budget and when
it resets, or moved to the budget's cheaper fallback endpoint.

Spend is each call's estimated cost (records.py), kept in the host's shared SQLite
(collector/hoststate.py) by request id, so that every worker of ``--workers N`` counts against
the same sums and a restart keeps them. The usage table holds every call of every replica that
reached Delta: it is read at start and then every ``budget_refresh`` seconds (by one worker of
the host), and the calls it holds that the host has not counted (other replicas', or all of
this month's on a host whose shared file is new) are added. Periods are UTC days and months.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from deltalake.exceptions import TableNotFoundError

from collector.hoststate import HostState
from collector.storage import Warehouse
from collector.tablefiles import TableFiles
from collector.tables import TableName

__all__ = ["Budget", "BudgetSpent", "Spend", "UsageSpend", "parse_budgets", "period_start"]

log = structlog.get_logger("collector.proxy")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    at REAL NOT NULL, token TEXT NOT NULL, team TEXT, endpoint TEXT NOT NULL, usd REAL NOT NULL,
    request_id TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS spend_token ON spend (token, at);
CREATE INDEX IF NOT EXISTS spend_team ON spend (team, at);
CREATE TABLE IF NOT EXISTS spend_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# (time, token, team, endpoint, USD, request id): one call's spend.
SpendRow = tuple[float, str, str | None, str, float, str]
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
    """A budget is spent: the message names it and when it resets (at ``resets_at``, Unix
    seconds, in ``retry_after`` s)."""

    def __init__(self, budget: Budget, message: str, resets_at: float, now: float) -> None:
        super().__init__(message)
        self.budget = budget
        self.message = message
        self.resets_at = resets_at
        self.retry_after = resets_at - now


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
                if (
                    isinstance(usd, bool)
                    or not isinstance(usd, int | float)
                    or not math.isfinite(usd)
                    or usd < 0
                ):
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
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(spend)")}
        if columns and "request_id" not in columns:
            # Kept by an earlier version without request ids, which the usage table's rows
            # cannot be matched with: counted again from the table, at the first refresh.
            self._db.executescript("DROP TABLE spend; DELETE FROM spend_meta;")
        self._db.executescript(_SCHEMA)
        self._swept = 0.0

    def due(self, now: float, every: float) -> bool:
        """Whether this worker is to read the usage table now: the host's first worker to ask
        once ``every`` seconds have passed since the last reading (or at its start, 0)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT value FROM spend_meta WHERE key = 'refreshed'"
            ).fetchone()
            if row is not None and now - float(row[0]) < every:
                self._db.execute("ROLLBACK")
                return False
            self._db.execute(
                "INSERT OR REPLACE INTO spend_meta VALUES ('refreshed', ?)", (repr(now),)
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    def read_done(self, now: float) -> None:
        """Say that a worker's reading of the usage table ended (read, or failed to be)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO spend_meta VALUES ('read', ?)", (repr(now),))

    def ever_read(self) -> bool:
        """Whether a reading of the usage table has ended on this host since its state began:
        until then the month's spend is not known, and no worker should serve."""
        row = self._db.execute("SELECT 1 FROM spend_meta WHERE key = 'read'").fetchone()
        return row is not None

    def merge(self, rows: Iterable[SpendRow]) -> int:
        """Count the calls among ``rows`` (the usage table's) not counted yet: how many."""
        before = self._db.total_changes
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO spend VALUES (?, ?, ?, ?, ?, ?)", rows)
        return self._db.total_changes - before

    def add(self, row: SpendRow) -> None:
        at = row[0]
        try:
            self._db.execute("INSERT OR IGNORE INTO spend VALUES (?, ?, ?, ?, ?, ?)", row)
            if at - self._swept >= _SWEEP_EVERY:  # what no budget counts any more goes
                self._swept = at
                self._db.execute("DELETE FROM spend WHERE at < ?",
                                 (period_start("month", period_start("month", at) - 1),))  # fmt: skip
        except sqlite3.Error as e:
            log.warning("spend not counted toward budgets", error=str(e))

    def spent(self, budget: Budget, holder: str, since: float) -> float:
        column = "token" if budget.scope == "token" else "team"
        rows = self._db.execute(
            f"SELECT endpoint, sum(usd) FROM spend WHERE {column} = ? AND at >= ? "
            "GROUP BY endpoint",
            (holder, since),
        ).fetchall()
        # The pattern matched as Budget.holds matches it (SQLite's GLOB differs: [^x], not [!x]).
        return float(sum(usd for e, usd in rows if fnmatch.fnmatchcase(e, budget.endpoints)))

    def check(self, budgets: Iterable[Budget], token: str, team: str | None, endpoint: str,
              now: float) -> None:  # fmt: skip
        """Raise :class:`BudgetSpent` for the first budget the call would start over, naming
        its limit that is spent longest (a spent month outlasts a spent day)."""
        for budget in budgets:
            holder = budget.holds(token, team, endpoint)
            if holder is None:
                continue
            spent_limits = []
            for period, usd in budget.limits:
                try:
                    spent = self.spent(budget, holder, period_start(period, now))
                except sqlite3.Error as e:
                    log.warning("budgets not checked; the call is admitted", error=str(e))
                    return
                if spent >= usd:
                    spent_limits.append((_period_end(period, now), period, usd, spent))
            if spent_limits:
                resets, period, usd, spent = max(spent_limits)
                when = dt.datetime.fromtimestamp(resets, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                raise BudgetSpent(
                    budget,
                    f"{'daily' if period == 'day' else 'monthly'} budget {budget.name!r} of "
                    f"{_usd(usd)} for {budget.scope} {holder!r} is spent ({_usd(spent)}); "
                    f"it resets at {when}",
                    resets,
                    now,
                )


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}".rstrip("0")


class UsageSpend:
    """The priced calls of the usage table, read by the files each new version added (a
    compaction's rewritten files come back with calls already counted: merged by request id)."""

    def __init__(self, warehouse: Warehouse, table: TableName) -> None:
        self.files = TableFiles(warehouse, table)
        self._seen: set[str] = set()

    def new_rows(self, teams: dict[str, str | None], now: float) -> list[SpendRow]:
        """This month's calls in the files added since the last reading (all at the first);
        ``teams`` gives each token's team; none when there is no table yet."""
        try:
            _, paths = self.files.latest()
        except TableNotFoundError:
            return []
        if "estimated_cost_usd" not in self.files.schema.names:
            return []  # an old table, before costs: gains them when this version first writes
        since_ns = int(period_start("month", now) * 1e9)
        found: list[SpendRow] = []
        for path in paths:
            if path in self._seen:
                continue
            columns = ["request_time_unix_nano", "token_name", "endpoint", "estimated_cost_usd",
                       "request_id"]  # fmt: skip
            for r in self.files.read(path, columns).to_pylist():
                if (
                    r["request_time_unix_nano"] >= since_ns
                    and r["token_name"] and r["endpoint"] and r["request_id"]
                    and r["estimated_cost_usd"] is not None
                ):  # fmt: skip
                    found.append((r["request_time_unix_nano"] / 1e9, r["token_name"],
                                  teams.get(r["token_name"]), r["endpoint"],
                                  r["estimated_cost_usd"], r["request_id"]))  # fmt: skip
        self._seen = set(paths)
        return found
