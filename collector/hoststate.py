"""What the collector processes on one host share, in ``<wal-dir>/host.sqlite``.

- **The retry index**: the digest of every request that any worker accepted in the last
  ``--dedup-window`` seconds. A client retries a request that was stored but not answered (a
  crash, a timeout) on a new connection, which the kernel may hand to another worker; that
  worker finds the digest here and acknowledges the retry without storing it again. One lookup
  and one insert per request, whatever its size.
- **Worker reports**: each worker's health, refreshed every second, so that ``/readyz`` on any
  worker tells of a sibling whose flushes fail.
- **The proxy's rate-limit windows** (collector/proxy/ratelimit.py, on a connection of its own).

SQLite in WAL mode with ``synchronous=NORMAL``: a committed row survives the crash of the
process that wrote it (it is in the kernel's page cache) but not a crash of the machine. The
index is therefore a cache of what the workers' own WALs hold; each worker rebuilds it from every
sibling WAL before it accepts requests. Whatever goes wrong with it costs at most a duplicate
row, never an acknowledged one: a failing index is logged and requests are stored as new.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

__all__ = ["REPORT_INTERVAL", "STALE_AFTER", "HostState", "WorkerReport"]

log = structlog.get_logger("collector.hoststate")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retries (digest BLOB PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retries_at ON retries (at);
CREATE TABLE IF NOT EXISTS workers (
    worker INTEGER PRIMARY KEY, pid INTEGER NOT NULL, at REAL NOT NULL, report TEXT NOT NULL
);
"""
_EXPIRE_EVERY = 60.0  # seconds between sweeps of expired digests
REPORT_INTERVAL = 1.0  # seconds between a worker's reports
STALE_AFTER = 15.0  # seconds without a report after which a worker is said to be silent


@dataclass(frozen=True)
class WorkerReport:
    worker: int
    pid: int
    at: float  # wall time of the report
    health: dict[str, Any]  # the worker's own /readyz body


class HostState:
    def __init__(self, path: Path, dedup_window: float) -> None:
        self.path = path
        self.dedup_window = dedup_window
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self.connect()
        self._db.executescript(_SCHEMA)
        self._expired = 0.0

    def connect(self) -> sqlite3.Connection:
        """A connection of its own to the shared file (one per thread that writes in
        transactions: a connection's transactions would interleave between threads).
        Autocommit: each statement is its own short transaction unless one is begun, so that
        no worker holds the write lock for long. The busy timeout rides out the others'."""
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def close(self) -> None:
        self._db.close()

    # --- the retry index -----------------------------------------------------------------

    def seen(self, digest: bytes, now: float) -> bool:
        """Whether a worker accepted a request with this digest within the window."""
        try:
            row = self._db.execute("SELECT at FROM retries WHERE digest = ?", (digest,)).fetchone()
        except sqlite3.Error as e:
            log.warning("retry index unreadable; storing the request as new", error=str(e))
            return False
        return row is not None and row[0] >= now - self.dedup_window

    def remember(self, items: Iterable[tuple[bytes, float]]) -> None:
        """Note accepted requests (digest, wall time accepted)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO retries VALUES (?, ?) "
                    "ON CONFLICT (digest) DO UPDATE SET at = max(at, excluded.at)",
                    items,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._expire()
        except sqlite3.Error as e:
            log.warning("retry index not written; a retry may be stored twice", error=str(e))

    def _expire(self) -> None:
        now = time.time()
        if now - self._expired < _EXPIRE_EVERY:
            return
        self._expired = now
        self._db.execute("DELETE FROM retries WHERE at < ?", (now - self.dedup_window,))

    # --- worker reports ------------------------------------------------------------------

    def report(self, worker: int, pid: int, health: dict[str, Any]) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?)",
                (worker, pid, time.time(), json.dumps(health)),
            )
        except sqlite3.Error as e:
            log.warning("worker report not written", error=str(e))

    def withdraw(self, worker: int, *, and_above: bool = False) -> None:
        """Remove a worker's report: one that stops cleanly, or (``and_above``) those whose
        index is beyond ``--workers`` now."""
        try:
            self._db.execute(
                f"DELETE FROM workers WHERE worker {'>=' if and_above else '='} ?", (worker,)
            )
        except sqlite3.Error as e:
            log.warning("worker report not removed", error=str(e))

    def reports(self) -> list[WorkerReport]:
        try:
            rows = self._db.execute("SELECT * FROM workers ORDER BY worker").fetchall()
        except sqlite3.Error as e:
            log.warning("worker reports unreadable", error=str(e))
            return []
        return [WorkerReport(w, pid, at, json.loads(body)) for w, pid, at, body in rows]
