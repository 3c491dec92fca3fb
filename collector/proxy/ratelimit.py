"""Requests and tokens per minute, per (token, endpoint), over a sliding one-minute window,
counted in the host's shared SQLite (collector/hoststate.py): every worker of ``--workers N``
admits against the same counts, so a token gets its limit, not N times it. Each admission is
one write transaction; SQLite orders the workers' transactions, so the limit holds exactly.

A collector's replicas on other hosts count apart (the README says how to size limits for
them). If the shared file cannot be written, the call is admitted and a warning logged: a
limiter that fails stops no one's work."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import structlog

from collector.hoststate import HostState

__all__ = ["RateLimited", "RateLimiter", "Reservation"]

log = structlog.get_logger("collector.proxy")

WINDOW = 60.0
_REQUEST, _TOKENS = 0, 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_events (
    who TEXT NOT NULL, endpoint TEXT NOT NULL, kind INTEGER NOT NULL, at REAL NOT NULL,
    amount INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_events_key ON limit_events (who, endpoint, kind, at);
"""
_EXPIRE_EVERY = 10.0  # seconds between sweeps of the events that left every window
# An admitted call's reserved tokens: (token, endpoint, its row), None without a token limit.
Reservation = tuple[str, str, int] | None


class RateLimited(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RateLimiter:
    """Token counts are known only once a response is over, so an admitted call reserves an
    estimate of its tokens, which the calls admitted after it count, and settles at the
    count its provider reported. A call is admitted while the calls of the last minute (and
    those in flight, at their estimates) are under the limit: only the call that crosses it
    may overshoot. Times are wall-clock seconds, which all the host's processes share."""

    def __init__(self, host: HostState, clock: Callable[[], float] = time.time) -> None:
        self._db = host.connect()  # used by the event loop's thread only
        self._clock = clock
        self._db.executescript(_SCHEMA)
        self._expired = 0.0

    def admit(self, who: str, endpoint: str, rpm: int, tpm: int, estimate: int = 0) -> Reservation:
        """Count one request and reserve ``estimate`` tokens, or raise :class:`RateLimited`
        with the seconds to wait. The reservation is to be settled when the call ends."""
        if not rpm and not tpm:
            return None
        try:
            refusal, reservation = self._admit(who, endpoint, rpm, tpm, estimate, self._clock())
        except sqlite3.Error as e:
            log.warning("rate limits not counted; the call is admitted", error=str(e))
            return None
        if refusal is not None:
            raise refusal
        return reservation

    def _admit(
        self, who: str, endpoint: str, rpm: int, tpm: int, estimate: int, now: float
    ) -> tuple[RateLimited | None, Reservation]:
        self._db.execute("BEGIN IMMEDIATE")  # the workers' admissions, one at a time
        reservation: Reservation = None
        try:
            refusal = self._refusal(who, endpoint, rpm, tpm, now)
            if refusal is None:
                self._db.execute(
                    "INSERT INTO limit_events VALUES (?, ?, ?, ?, 1)",
                    (who, endpoint, _REQUEST, now),
                )
                if tpm:
                    cursor = self._db.execute(
                        "INSERT INTO limit_events VALUES (?, ?, ?, ?, ?)",
                        (who, endpoint, _TOKENS, now, max(estimate, 0)),
                    )
                    reservation = (who, endpoint, cursor.lastrowid)
                self._expire(now)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return refusal, reservation

    def _refusal(
        self, who: str, endpoint: str, rpm: int, tpm: int, now: float
    ) -> RateLimited | None:
        since = now - WINDOW
        if rpm:
            # The rpm-th most recent request of the window: when it leaves, one more fits.
            row = self._db.execute(
                "SELECT at FROM limit_events WHERE who = ? AND endpoint = ? AND kind = ? "
                "AND at > ? ORDER BY at DESC LIMIT 1 OFFSET ?",
                (who, endpoint, _REQUEST, since, rpm - 1),
            ).fetchone()
            if row is not None:
                return RateLimited(
                    f"rate limit of {rpm} requests per minute reached for endpoint {endpoint!r}",
                    row[0] + WINDOW - now,
                )
        if tpm:
            counts = self._db.execute(
                "SELECT at, amount FROM limit_events WHERE who = ? AND endpoint = ? "
                "AND kind = ? AND at > ? ORDER BY at",
                (who, endpoint, _TOKENS, since),
            ).fetchall()
            over = sum(amount for _, amount in counts) - tpm
            if over >= 0:
                # Wait until enough of the oldest calls leave the window to get under it.
                wait = WINDOW
                for at, amount in counts:
                    over -= amount
                    if over < 0:
                        wait = at + WINDOW - now
                        break
                return RateLimited(
                    f"rate limit of {tpm} tokens per minute reached for endpoint {endpoint!r}",
                    wait,
                )
        return None

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """The call's tokens in place of its estimate, counted from now (the answer's end)."""
        if reservation is None:
            return
        who, endpoint, rowid = reservation
        now = self._clock()
        try:
            updated = self._db.execute(
                "UPDATE limit_events SET amount = ?, at = ? WHERE rowid = ? AND kind = ?",
                (max(tokens, 0), now, rowid, _TOKENS),
            ).rowcount
            if not updated and tokens > 0:  # a call longer than the window: swept meanwhile
                self._db.execute(
                    "INSERT INTO limit_events VALUES (?, ?, ?, ?, ?)",
                    (who, endpoint, _TOKENS, now, tokens),
                )
        except sqlite3.Error as e:
            log.warning("tokens not counted toward the rate limit", error=str(e))

    def _expire(self, now: float) -> None:
        if now - self._expired < _EXPIRE_EVERY:
            return
        self._expired = now
        self._db.execute("DELETE FROM limit_events WHERE at <= ?", (now - WINDOW,))
