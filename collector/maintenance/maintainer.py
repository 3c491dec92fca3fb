"""The maintainer: per table, under its lease, retention → compaction → checkpoint → log
cleanup → vacuum, then a line of what it did.

``serve`` runs one in a process of its own (:mod:`.background`), at the lowest CPU priority, so
that flushes and acknowledgements never wait for it; ``python -m collector maintain`` runs the
same passes by hand or from cron. Any number of maintainers may run on one warehouse: the
table's lease (:mod:`.lease`) makes one of them do a given table at a time.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from deltalake import DeltaTable

from collector.catalog import find_tables
from collector.config import Config
from collector.maintenance.compaction import Compaction, compact, maintenance_commit
from collector.maintenance.lease import Lease, LeaseLost
from collector.maintenance.logcleanup import expired_log_files
from collector.maintenance.vacuum import TOMBSTONE_PROPERTY, TOMBSTONE_RETENTION, vacuum
from collector.redaction import error_text
from collector.schema import TableSchema, schema_for_table
from collector.sink import CHECKPOINT_INTERVAL, COMMIT_HOOKS
from collector.storage import Files, Warehouse
from collector.tables import TableName

__all__ = ["Maintainer", "MaintenancePolicy", "TableReport", "maintenance_status"]

log = structlog.get_logger("collector.maintenance")

MiB = 1024 * 1024


_DEFAULTS = Config()  # the settings' defaults are the policy's


@dataclass(frozen=True)
class MaintenancePolicy:
    target_file_size: int = _DEFAULTS.target_file_size
    compact_min_age: float = _DEFAULTS.compact_min_age
    log_retention: float = _DEFAULTS.log_retention
    vacuum_retention: float = _DEFAULTS.vacuum_retention
    retention: Mapping[str, float] = field(default_factory=dict)  # table kind → seconds
    interval: float = _DEFAULTS.maintenance_interval
    lease_ttl: float = _DEFAULTS.maintenance_lease
    memory: int = 256 * MiB  # rows a compaction may hold while it merges (see compaction.py)
    # Retention and vacuum read the whole table (vacuum lists every file): hourly, not on each
    # pass; the first pass of a maintainer does them at once.
    hourly: float = 3600.0

    @classmethod
    def from_config(cls, config: Config) -> MaintenancePolicy:
        return cls(
            target_file_size=config.target_file_size,
            compact_min_age=config.compact_min_age,
            log_retention=config.log_retention,
            vacuum_retention=config.vacuum_retention,
            retention=dict(config.retention),
            interval=config.maintenance_interval,
            lease_ttl=config.maintenance_lease,
        )


@dataclass
class TableReport:
    table: str
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    rows_deleted: int = 0
    log_files_removed: int = 0
    data_files_vacuumed: int = 0
    compaction: Compaction | None = None
    error: str | None = None
    ms: float = 0.0
    at: float = 0.0  # wall time the table's maintenance began

    def line(self) -> str:
        text = (
            f"{self.table}: files {self.files_before} → {self.files_after}, "
            f"{self.bytes_before / MiB:.1f} → {self.bytes_after / MiB:.1f} MiB"
        )
        if self.compaction:
            text += f", {self.compaction.rows} rows rewritten"
        if self.rows_deleted:
            text += f", {self.rows_deleted} rows past retention deleted"
        text += f", {self.log_files_removed} log files and {self.data_files_vacuumed} data "
        text += f"files removed, {self.ms:.0f} ms"
        return text + (f" (error: {self.error})" if self.error else "")


class Maintainer:
    def __init__(
        self,
        warehouse: Warehouse | str | os.PathLike[str],
        policy: MaintenancePolicy,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.warehouse = Warehouse.of(warehouse)
        self.policy = policy
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # The wall time that retention, vacuum and log clean-up measure ages by.
        self.clock = clock
        self.files = Files(self.warehouse)
        self.leases = Files(self.warehouse, "_maintenance", "leases")
        self.ledgers = Files(self.warehouse, "_maintenance", "vacuum")
        self.reports = Files(self.warehouse, "_maintenance", "reports")
        self._hourly_done: dict[TableName, float] = {}

    def tables(self) -> list[TableName]:
        """Every Delta table under the warehouse whose name says what it holds."""
        return find_tables(self.files)

    def run_once(
        self,
        tables: Iterable[TableName] | None = None,
        progress: Callable[[TableReport], None] | None = None,
    ) -> list[TableReport]:
        """One pass; the reports of the tables this maintainer held the lease of."""
        reports = []
        for table in list(tables) if tables is not None else self.tables():
            try:
                report = self.maintain(table)
            except Exception as e:  # the table could not even be opened: the next one
                log.error("maintenance failed", table=str(table), error=str(e))
                continue
            if report is not None:
                reports.append(report)
                if progress is not None:
                    progress(report)
        return reports

    def maintain(self, table: TableName) -> TableReport | None:
        """Maintain one table; None if another maintainer holds it."""
        lease = Lease(self.leases, str(table), self.owner, self.policy.lease_ttl)
        with lease.held() as mine:
            if not mine:
                return None
            at, started = time.time(), time.perf_counter()
            dt = self._open(table)
            files, size = _footprint(dt)
            report = TableReport(str(table), files, files, size, size, at=at)
            try:
                self._maintain(table, dt, report, lease)
            except LeaseLost as e:
                report.error = str(e)
                log.warning("maintenance lease lost", table=str(table))
            except Exception as e:
                report.error = error_text(e)  # published for every /readyz
                log.error("maintenance failed", table=str(table), error=str(e))
            report.files_after, report.bytes_after = _footprint(self._open(table))
            report.ms = (time.perf_counter() - started) * 1000
            self._publish(report)  # still under the lease: nobody else writes it now
            return report

    def _open(self, table: TableName) -> DeltaTable:
        return DeltaTable(
            self.warehouse.join(*table.parts()), storage_options=self.warehouse.delta_options()
        )

    def _maintain(
        self, table: TableName, dt: DeltaTable, report: TableReport, lease: Lease
    ) -> None:
        files = Files(self.warehouse, *table.parts())
        log_files = Files(self.warehouse, *table.parts(), "_delta_log")
        schema = schema_for_table(table.table)
        policy = self.policy
        now = self.clock()
        hourly = now - self._hourly_done.get(table, -float("inf")) >= policy.hourly
        if TOMBSTONE_PROPERTY not in dt.metadata().configuration:
            # Vacuum keeps its own ledger (see .vacuum): tombstones need not outlive an hour,
            # and every checkpoint, so every reader, would otherwise carry days of them.
            lease.check()
            dt.alter.set_table_properties(
                {TOMBSTONE_PROPERTY: TOMBSTONE_RETENTION},
                commit_properties=maintenance_commit(dt),
                post_commithook_properties=COMMIT_HOOKS,
            )
            self._action(table, "tombstone retention set", value=TOMBSTONE_RETENTION)
        limit = policy.retention.get(schema.kind)
        if limit is not None and hourly:
            lease.check()
            report.rows_deleted = self._apply_retention(table, dt, schema, now - limit)
        lease.check()
        report.compaction = compact(
            dt,
            files,
            schema,
            target_size=policy.target_file_size,
            min_age=policy.compact_min_age,
            memory=policy.memory,
            still_ours=lease.check,
        )
        if report.compaction is not None:
            c = report.compaction
            self._action(
                table,
                "compacted",
                files_removed=c.files_removed,
                files_added=c.files_added,
                rows=c.rows,
                bytes_removed=c.bytes_removed,
                bytes_added=c.bytes_added,
                version=c.version,
            )
        if (
            report.compaction is not None
            or _commits_since_checkpoint(log_files, dt) >= CHECKPOINT_INTERVAL
        ):
            dt.create_checkpoint()  # opening the table reads it plus the commits after it
            self._action(table, "checkpoint", version=dt.version())
        if hourly:
            lease.check()
            swept = vacuum(
                files,
                lambda: self._open(table),
                self.ledgers,
                f"{table}.json",
                policy.vacuum_retention,
                now,
            )
            self._hourly_done[table] = now
            report.data_files_vacuumed = swept.deleted
            self._action(table, "vacuumed", files_removed=swept.deleted, waiting=swept.waiting)
        # Last: the snapshots loaded before it (ours too) refer to the log files it removes.
        expired = expired_log_files(log_files, now - policy.log_retention)
        for name in expired:
            log_files.delete(name)
        report.log_files_removed = len(expired)
        if expired:
            self._action(table, "log cleaned up", files_removed=len(expired))

    def _publish(self, report: TableReport) -> None:
        """The table's last report, and its running totals, for every /readyz and /metrics."""
        name = f"{report.table}.json"
        totals = (self.reports.read_json(name) or {}).get("totals", {})
        done = {
            "passes": 1,
            "files_compacted": report.compaction.files_removed if report.compaction else 0,
            "rows_deleted": report.rows_deleted,
            "log_files_removed": report.log_files_removed,
            "data_files_vacuumed": report.data_files_vacuumed,
            "failures": 1 if report.error else 0,
        }
        body = {
            "at": report.at,
            "ms": round(report.ms),
            "files_before": report.files_before,
            "files_after": report.files_after,
            "bytes_after": report.bytes_after,
            "rows_deleted": report.rows_deleted,
            "error": report.error,
            "totals": {k: totals.get(k, 0) + v for k, v in done.items()},
        }
        self.reports.write(name, json.dumps(body).encode())  # whole or not at all

    def _apply_retention(
        self, table: TableName, dt: DeltaTable, schema: TableSchema, cutoff: float
    ) -> int:
        ns = int(cutoff * 1e9)
        when = " ".join(f"WHEN {c} IS NOT NULL AND {c} <> 0 THEN {c}" for c in schema.time_columns)
        result = dt.delete(
            f"CASE {when} END < {ns}",
            commit_properties=maintenance_commit(dt),
            post_commithook_properties=COMMIT_HOOKS,
        )
        deleted = int(result.get("num_deleted_rows") or 0)
        if deleted:
            self._action(table, "retention applied", rows_deleted=deleted, before_ns=ns)
        return deleted

    def _action(self, table: TableName, action: str, **details: object) -> None:
        log.info(f"maintenance: {action}", table=str(table), **details)


def maintenance_status(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    """The last maintenance of each table of the warehouse, whoever did it."""
    reports = Files(warehouse, "_maintenance", "reports")
    status = {}
    for entry in sorted(reports.children()[1], key=lambda e: e.path):
        report = reports.read_json(entry.path) if entry.path.endswith(".json") else None
        if report is not None:
            status[entry.path.removesuffix(".json")] = report
    return status


def _footprint(dt: DeltaTable) -> tuple[int, int]:
    actions = pa.table(dt.get_add_actions())
    return actions.num_rows, int(pc.sum(actions.column("size_bytes")).as_py() or 0)


def _commits_since_checkpoint(log_files: Files, dt: DeltaTable) -> int:
    last = (log_files.read_json("_last_checkpoint") or {}).get("version", -1)
    return dt.version() - int(last)
