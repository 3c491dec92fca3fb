"""The Delta sink: creates tables from the DDL, checks existing ones, appends batches.

Blocking calls; the buffer runs them in a worker thread. Knows nothing of OTLP or transports:
it stores Arrow tables under ``<warehouse>/<catalog>/<schema>/<table>``.

An append writes one Parquet file with pyarrow's streaming writer (memory bounded by a row
group) and commits it with delta-rs as an ``add`` action with statistics (collector.filestats).
delta-rs's own writer holds about three times the data in memory while it writes, which at
100k records/s was most of the collector's footprint. Tables using writer features beyond
appends (protocol writer version > 2: column mapping, constraints, generated columns…) or
column invariants are written by delta-rs's writer, which enforces them.

A commit that raises is not taken at its word. The table is refreshed first (delta-rs does not
refresh it, and a retry on a stale snapshot fails the same way forever), then its transaction
version for our app id says whether the commit went in after all (a commit is durable before
its post-commit hook, which can still fail). Conflicts with other writers are retried with
jittered exponential backoff; a conflict with a writer using our own app id is never retried:
it means two writers share one identity, which exactly-once cannot survive.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import structlog
from deltalake import (
    CommitProperties,
    DeltaTable,
    Field,
    PostCommitHookProperties,
    Transaction,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction

from collector.filestats import INDEXED_COLUMNS_PROPERTY, file_stats, primitive_columns
from collector.schema import TableSchema, schema_for_table, to_arrow
from collector.storage import Files, Warehouse
from collector.tables import TableName

__all__ = ["COMMIT_HOOKS", "DeltaSink", "IdentityConflict", "commit_properties"]

log = structlog.get_logger("collector.sink")

# Our own tries of one commit, each after a refresh; delta-rs retries a conflict with other
# writers up to max_commit_retries times itself, without a pause.
_COMMIT_ATTEMPTS = 8
_DELTA_COMMIT_RETRIES = 50
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 5.0
_SAME_APP_ID = (
    "Concurrent transaction failed"  # delta-rs's CommitConflictError::ConcurrentTransaction
)


# No log clean-up after a commit: that lists the whole _delta_log, on every commit;
# maintenance does it. Nor delta-rs's checkpoint every 100 commits: see DeltaSink._checkpoint.
COMMIT_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
# Opening a table, each append's own refresh and every reader replay each commit since the
# last checkpoint: measured here, each one of them added ~0.3 ms to an append and to a DuckDB
# count(*), 30 ms at delta-rs's default interval of 100. A checkpoint of a maintained table
# (tens of files, an hour of tombstones) costs a few ms, once per CHECKPOINT_INTERVAL commits.
CHECKPOINT_INTERVAL = 10
CHECKPOINT_INTERVAL_PROPERTY = "delta.checkpointInterval"


def commit_properties(app_id: str | None, version: int) -> CommitProperties:
    """A commit's properties: delta-rs's own conflict retries raised for busy tables, and the
    application transaction (``txn``) that makes it exactly once, when there is an app id."""
    txns = [Transaction(app_id=app_id, version=version)] if app_id is not None else None
    return CommitProperties(max_commit_retries=_DELTA_COMMIT_RETRIES, app_transactions=txns)


class IdentityConflict(Exception):
    """Another writer commits to the table under our Delta app id."""


class DeltaSink:
    """Delta tables under a warehouse directory.

    With an ``app_id``, each append is an application transaction (Delta ``txn`` action) whose
    version is the highest sequence number of the batches it holds; batches at or below the
    table's current version for that app id are already stored and are skipped. That is what
    makes a replay of the write-ahead log after a crash exactly-once.
    """

    def __init__(
        self, warehouse: Warehouse | str | os.PathLike[str], app_id: str | None = None
    ) -> None:
        self.warehouse = Warehouse.of(warehouse)
        # Data files go up through obstore on object storage; on a disk, pyarrow writes them.
        self._files = None if self.warehouse.is_local else Files(self.warehouse)
        self.app_id = app_id
        self._tables: dict[TableName, DeltaTable] = {}
        # Tables found (or made) with the DDL's schema by this process. A table object is
        # dropped when the store fails; the table stays checked, so that requests for it go on
        # into the WAL while the store is away.
        self._checked: set[TableName] = set()
        # The transaction version of our last commit to each table in this process: if the
        # table ever shows another one, someone else commits as us.
        self._ours: dict[TableName, int] = {}
        # Tables another writer commits to under our app id: their txn version is no longer a
        # record of what we stored, so nothing more is written to them until a restart.
        self._shared_identity: set[TableName] = set()
        # The version each table object was loaded at (see _reload).
        self._loaded_at: dict[TableName, int] = {}
        self._lock = threading.Lock()

    def location(self, table: TableName) -> Path:
        """The directory of a table of a local warehouse."""
        path = self.warehouse.path.joinpath(*table.parts()).resolve()
        # TableName's grammar already forbids separators and dots; this guards the invariant.
        if not path.is_relative_to(self.warehouse.path):
            raise ValueError(f"table {table} resolves outside the warehouse")
        return path

    def uri(self, table: TableName) -> str:
        """Where the table lives, as delta-rs takes it: a directory or an object-store URI."""
        if self.warehouse.is_local:
            return str(self.location(table))
        return self.warehouse.join(*table.parts())

    def _open(self, table: TableName) -> DeltaTable:
        return DeltaTable(self.uri(table), storage_options=self.warehouse.delta_options())

    def is_ready(self, table: TableName) -> bool:
        return table in self._checked

    def ensure(self, table: TableName, schema: TableSchema) -> bool:
        """Open the table, creating it from the DDL if missing; True if it was created.

        Raises :class:`collector.schema.SchemaMismatch` if an existing table's schema differs
        from the DDL: such a table is never written to.
        """
        with self._lock:
            if table in self._tables:
                return False
            created = False
            try:
                dt = self._open(table)
            except TableNotFoundError:
                try:
                    dt = DeltaTable.create(
                        self.uri(table),
                        schema=schema.arrow,
                        mode="error",
                        name=table.table,
                        configuration=schema.properties,
                        storage_options=self.warehouse.delta_options(),
                        raise_if_key_not_exists=False,
                    )
                    created = True
                except Exception as create_error:
                    # Another process may have created it between our look and our create; if
                    # it did not, the create's own error is the one worth reporting.
                    try:
                        dt = self._open(table)
                    except Exception:
                        raise create_error from None
            if schema.missing_columns(dt.schema().to_json()):
                dt = self._add_columns(table, dt, schema)
            schema.check_delta_schema(dt.schema().to_json())
            self._tables[table] = dt
            self._checked.add(table)
            self._loaded_at[table] = dt.version()
            return created

    def _add_columns(self, table: TableName, dt: DeltaTable, schema: TableSchema) -> DeltaTable:
        """The table with the DDL's columns it lacks added, in place (a metadata commit: no
        file is rewritten; its rows read the new columns as null). Of several writers that
        find the table so at once, one adds them; the others see them added."""
        for attempt in range(_COMMIT_ATTEMPTS):
            missing = schema.missing_columns(dt.schema().to_json())
            if not missing:
                break
            fields = [Field.from_arrow(pa.field(c.name, to_arrow(c.type))) for c in missing]
            try:
                dt.alter.add_columns(fields)
            except CommitFailedError:
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise
                dt = self._open(table)  # another writer committed first: look again
                continue
            log.info("table gained columns", table=str(table), columns=[c.name for c in missing])
        return dt

    def append(self, table: TableName, entries: Sequence[tuple[int, pa.RecordBatch]]) -> int | None:
        """Append the batches of ``entries`` (sequence number, batch), in order, as one commit.

        Returns the table version created, or None when every batch was already stored.
        """
        try:
            dt, done = self._opened(table)
        except IdentityConflict:
            raise
        except Exception:
            # A snapshot held for long still refers to the log files it was loaded from, which
            # maintenance removes once they expire: the table opened afresh reads without them.
            self._forget(table)
            dt, done = self._opened(table)
        if self.app_id is not None:
            entries = [e for e in entries if e[0] > done]
            if not entries:
                return None
        properties = commit_properties(self.app_id, entries[-1][0])
        data = pa.Table.from_batches([batch for _, batch in entries])
        if _plain_appends(dt):
            add = self._write_file(table, dt, data)

            def commit() -> None:
                dt.create_write_transaction(
                    [add],
                    mode="append",
                    schema=dt.schema(),
                    commit_properties=properties,
                    post_commithook_properties=COMMIT_HOOKS,
                )
        else:

            def commit() -> None:
                write_deltalake(
                    dt,
                    data,
                    mode="append",
                    commit_properties=properties,
                    post_commithook_properties=COMMIT_HOOKS,
                )

        return self._commit(table, dt, commit, entries[-1][0])

    def _opened(self, table: TableName) -> tuple[DeltaTable, int]:
        """The table (opened, from the DDL if need be) and what it holds from us."""
        if table not in self._tables:  # rows replayed from the WAL after a restart
            self.ensure(table, schema_for_table(table.table))
        dt = self._tables[table]
        return dt, self._stored(table, dt) if self.app_id is not None else 0

    def _stored(self, table: TableName, dt: DeltaTable) -> int:
        """The highest sequence number the table holds from us (its txn version)."""
        assert self.app_id is not None
        done = dt.transaction_version(self.app_id) or 0
        ours = self._ours.get(table)
        if table in self._shared_identity or (ours is not None and done != ours):
            raise self._identity_conflict(table, f"its transaction version is {done}, ours {ours}")
        return done

    def _identity_conflict(self, table: TableName, detail: str) -> IdentityConflict:
        self._shared_identity.add(table)
        log.error(
            "another writer commits under our app id: two collectors share one identity",
            app_id=self.app_id,
            table=str(table),
            detail=detail,
        )
        return IdentityConflict(
            f"table {table}: another writer commits under app id {self.app_id} ({detail}); "
            "each collector process needs a WAL of its own, and the store must honour "
            "conditional writes (else commits overwrite each other)"
        )

    def _commit(
        self, table: TableName, dt: DeltaTable, commit: Callable[[], None], last: int
    ) -> int:
        """Run ``commit`` until it is in: refresh after each failure, check whether it went in
        anyway, back off and retry conflicts with other writers."""
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                commit()
                break
            except Exception as e:
                if self.app_id is not None and _SAME_APP_ID in str(e):
                    raise self._identity_conflict(table, "its commit won over ours") from e
                if not self._refresh(table, dt):
                    raise
                if self.app_id is not None and (dt.transaction_version(self.app_id) or 0) >= last:
                    log.warning("commit raised after it was stored", table=str(table), error=str(e))
                    break
                if not isinstance(e, CommitFailedError) or attempt == _COMMIT_ATTEMPTS:
                    raise
                delay = min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX)
                log.info(
                    "commit conflict, retrying", table=str(table), attempt=attempt, error=str(e)
                )
                time.sleep(delay * random.uniform(0.5, 1.5))
        if self.app_id is not None:
            self._ours[table] = last
        # A refresh that fails here leaves the table to be opened afresh by the next append:
        # a stale snapshot would have it commit this batch again.
        self._refresh(table, dt)
        version = dt.version()
        self._checkpoint(table, dt, version)
        if version - self._loaded_at.get(table, version) >= CHECKPOINT_INTERVAL:
            self._reload(table)
        return version

    def _checkpoint(self, table: TableName, dt: DeltaTable, version: int) -> None:
        """A checkpoint at each multiple of the interval (the table's own when it sets one):
        with several writers, whoever committed that version writes it."""
        try:
            interval = int(dt.metadata().configuration[CHECKPOINT_INTERVAL_PROPERTY])
        except (KeyError, ValueError):
            interval = CHECKPOINT_INTERVAL
        if interval <= 0 or version == 0 or version % interval:
            return
        try:
            dt.create_checkpoint()
        except Exception as e:  # the commit is in; without the checkpoint reads are slower
            log.warning("checkpoint failed", table=str(table), version=version, error=str(e))

    def _reload(self, table: TableName) -> None:
        """Load the table afresh, from its newest checkpoint. A table object brought up to
        date commit by commit replays every commit since it was loaded, on every append:
        measured here, 9 ms an append on a freshly loaded table, 28 ms 100 commits later."""
        try:
            dt = self._open(table)
        except Exception:
            self._forget(table)  # the next append opens it, or says why it cannot
            return
        with self._lock:
            self._tables[table] = dt
            self._loaded_at[table] = dt.version()

    def _refresh(self, table: TableName, dt: DeltaTable) -> bool:
        """Bring ``dt`` up to the table's latest version; if that fails too (the store is
        down), forget it, so that the next append opens the table afresh."""
        try:
            dt.update_incremental()
            return True
        except Exception:
            self._forget(table)
            return False

    def _forget(self, table: TableName) -> None:
        with self._lock:
            self._tables.pop(table, None)

    def _write_file(self, table: TableName, dt: DeltaTable, data: pa.Table) -> AddAction:
        """Write ``data`` as one Parquet file in the table's directory; the add action for it.
        A crash before the commit leaves an unreferenced file, which readers never see. On
        object storage the file is built in memory (one flush, bounded by --flush-bytes) and
        uploaded, in parts when it is large."""
        name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        local = self.warehouse.is_local
        sink: Any = str(self.location(table) / name) if local else pa.BufferOutputStream()
        pq.write_table(
            data,
            sink,
            compression="snappy",
            row_group_size=_ROW_GROUP_ROWS,
            write_statistics=primitive_columns(data.schema),
        )
        if local:
            size = os.path.getsize(sink)
        else:
            body = sink.getvalue()
            size = body.size
            assert self._files is not None
            self._files.write("/".join([*table.parts(), name]), body.to_pybytes())
        indexed = int(dt.metadata().configuration.get(INDEXED_COLUMNS_PROPERTY) or 32)
        return AddAction(
            path=name,
            size=size,
            partition_values={},
            modification_time=int(time.time() * 1000),
            data_change=True,
            stats=file_stats(data, indexed),
        )


_ROW_GROUP_ROWS = 128 * 1024


def _plain_appends(dt: DeltaTable) -> bool:
    """Whether appending a Parquet file is all a write to this table needs (see the module)."""
    protocol = dt.protocol()
    if protocol.min_writer_version > 2 or protocol.writer_features:
        return False
    return "delta.invariants" not in dt.schema().to_json()
