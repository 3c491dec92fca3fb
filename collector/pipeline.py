"""One export request's path: admit → authenticate → route → authorize → flatten → (table
ready?) → WAL → buffer.

Receivers hold :meth:`Pipeline.admission` while they handle a request, authenticate its
credentials, then call :meth:`Pipeline.export` with the decoded OTLP request; it either accepts
the whole request (minus records counted as rejected) or raises an :class:`ExportError` having
stored nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import structlog
from google.protobuf.message import DecodeError, Message

from collector.auth import ANONYMOUS, Authenticator, Principal
from collector.buffer import Buffers
from collector.errors import InvalidArgument, Unavailable
from collector.flatten import DEFAULT_LIMITS, Flattened, Limits, MalformedValue, native
from collector.flatten.native import Decoded
from collector.hoststate import STALE_AFTER, HostState
from collector.maintenance import maintenance_status
from collector.redaction import error_text
from collector.schema import SchemaMismatch, TableSchema, schema_for_table
from collector.selfmetrics import SelfMetrics
from collector.signals import SIGNALS, Signal
from collector.sink import DeltaSink
from collector.tables import TableName, route
from collector.wal import StoredRequest, WalUnreadable, WriteAheadLog

__all__ = ["Pipeline", "flatten_request"]

log = structlog.get_logger("collector.pipeline")

FLUSH_STUCK_AFTER = 10.0  # seconds

# The maintainers' running totals over the warehouse's tables (collector.maintenance).
_MAINTENANCE_HELP = {
    "passes": "Maintenance passes over a table, by any maintainer of the warehouse.",
    "files_compacted": "Data files rewritten into larger ones by compaction.",
    "rows_deleted": "Rows deleted for being older than --retention.",
    "log_files_removed": "Expired Delta log files removed.",
    "data_files_vacuumed": "Data files deleted by vacuum.",
    "failures": "Maintenance passes over a table that failed.",
}


def flatten_request(
    signal: Signal, request: Message | Decoded, limits: Limits = DEFAULT_LIMITS
) -> Flattened:
    """The rows of a decoded request, or InvalidArgument if it cannot be stored as sent."""
    try:
        return signal.flatten(request, limits)
    except (pa.ArrowInvalid, OverflowError) as e:
        # e.g. a uint64 timestamp past the LONG range.
        raise InvalidArgument(f"a value does not fit its column: {e}") from None
    except MalformedValue as e:  # left undecoded by collector.wire until now
        name = signal.request_type.DESCRIPTOR.name
        raise InvalidArgument(f"cannot decode the body as an OTLP {name} (protobuf): {e}") from None


def stored_rows(request: StoredRequest) -> pa.RecordBatch:
    """The rows of a request the WAL kept in place of them, flattened again as they were when
    it was accepted (by the Python flatteners if the core is not loaded now: the same rows)."""
    signal = next(s for s in SIGNALS if s.name == request.signal)
    limits = Limits(request.max_attributes, request.max_value_bytes)
    try:
        return flatten_request(signal, signal.decode_protobuf(request.body, limits), limits).batch
    except (DecodeError, InvalidArgument) as e:  # only if this version reads it otherwise
        raise WalUnreadable(
            f"a {request.signal} request in the WAL, accepted by another version, does not "
            f"flatten in this one ({e}): run the version that wrote it until it has flushed, "
            "or move the WAL directory aside"
        ) from None


class Pipeline:
    def __init__(
        self,
        sink: DeltaSink,
        buffers: Buffers,
        default_table: str,
        wal: WriteAheadLog | None = None,
        *,
        auth: Authenticator | None = None,
        limits: Limits = DEFAULT_LIMITS,
        max_records: int = 100_000,
        max_concurrent: int = 256,
        host: HostState | None = None,
        worker: int = 0,
    ) -> None:
        self.sink = sink
        # The warehouse's maintenance reports, as last read (see read_maintenance_status).
        self.maintained: dict[str, dict[str, Any]] = {}
        self.buffers = buffers
        self.default_table = default_table
        self.wal = wal  # None: durability off, acknowledged once buffered
        self.auth = auth or Authenticator(None)
        self.limits = limits
        self.max_records = max_records
        self.max_concurrent = max_concurrent
        self.host = host  # where the other workers on this host report how they are
        self.worker = worker
        self.metrics = SelfMetrics()
        self._lsn = 0  # sequence numbers when there is no WAL to give them
        self._in_flight = 0

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold a place among the requests in progress; refused (retryably) when there are
        already --max-concurrent-requests or the buffers are full."""
        if self._in_flight >= self.max_concurrent:
            raise Unavailable("too many requests in progress; retry shortly", retry_after=1)
        self.admit()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def authenticate(self, authorization: str | None) -> Principal:
        return self.auth.authenticate(authorization)

    def admit(self) -> None:
        """Push back (retryably) while the buffers hold as much as they may; called by the
        receivers before they read a body, so that a full collector allocates nothing more."""
        if self.buffers.full:
            raise Unavailable(
                "the collector is at its buffer limit; retry later",
                retry_after=self.buffers.retry_after,
            )

    async def export(
        self,
        signal: Signal,
        table_header: str | None,
        request: Message | Decoded,
        principal: Principal = ANONYMOUS,
    ) -> Flattened:
        table = route(table_header, signal, self.default_table)
        principal.authorize(table, signal)
        records = signal.count(request)
        if records > self.max_records:
            raise InvalidArgument(
                f"the request holds {records} records, more than the limit of {self.max_records}"
                ": send smaller batches"
            )
        flat = flatten_request(signal, request, self.limits)
        # The WAL keeps the bytes the native core flattened rather than encode the rows.
        stored = None
        if isinstance(request, Decoded):
            limits = self.limits
            stored = StoredRequest(
                signal.name, limits.max_attributes, limits.max_value_bytes, request.body
            )
        del request  # see the HTTP receiver: the parsed request is not needed while we wait
        if flat.batch.num_rows:
            await self.ready(table, signal.schema)
            self.admit()  # others may have filled the buffers while this request was decoded
            lsn, repeated = self._append(table, flat.batch, stored)
            stored = None  # its bytes are in the WAL: not held while it syncs
            await self._settle(table, flat.batch, lsn, repeated)
        m = self.metrics
        m.inc("otlp_delta_rows_accepted_total", flat.batch.num_rows, signal=signal.name)
        m.inc("otlp_delta_records_rejected_total", flat.rejected, signal=signal.name)
        m.inc("otlp_delta_values_truncated_total", flat.truncated_values)
        m.inc("otlp_delta_attributes_dropped_total", flat.dropped_attributes)
        return flat

    async def store(self, table: TableName, batch: pa.RecordBatch) -> None:
        """Accept rows made elsewhere (the proxy's usage and inference rows) for a table whose
        schema is in schemas/: the same readiness check, backpressure, WAL and buffers."""
        await self.ready(table, schema_for_table(table.table))
        self.admit()
        await self._store(table, batch)

    async def _store(self, table: TableName, batch: pa.RecordBatch) -> None:
        """Buffer the batch; with a WAL, return only once its record is durable."""
        await self._settle(table, batch, *self._append(table, batch))

    def _append(
        self, table: TableName, batch: pa.RecordBatch, request: StoredRequest | None = None
    ) -> tuple[int, bool]:
        """Write the batch's record (the batch, or the request it was flattened from) to the
        WAL, or number it without one: its LSN, and whether it is a retry of one accepted."""
        if self.wal is None:
            self._lsn += 1
            return self._lsn, False
        try:
            return self.wal.write(table, batch, request)
        except OSError as e:
            raise Unavailable(
                f"cannot write the WAL: {e}", retry_after=self.buffers.retry_after
            ) from None

    async def _settle(
        self, table: TableName, batch: pa.RecordBatch, lsn: int, repeated: bool
    ) -> None:
        """Buffer the batch and, with a WAL, return once its record is durable."""
        if self.wal is None:
            self.buffers.add(table, batch, lsn)
            self.buffers.check(table)
            return
        if repeated:  # a retry of a request already accepted is not stored twice
            self.metrics.inc("otlp_delta_retries_deduplicated_total")
            log.info("retry of an accepted request, not stored again", table=str(table))
        else:
            self.buffers.add(table, batch, lsn)
        try:
            await self.wal.durable(lsn)
        except OSError as e:
            raise Unavailable(
                f"cannot sync the WAL: {e}", retry_after=self.buffers.retry_after
            ) from None
        if not repeated:
            self.buffers.check(table)

    def health(self) -> tuple[bool, dict[str, object]]:
        """Whether requests can be accepted now, and the state behind the answer (/readyz):
        this worker's, and what the other workers on the host last reported of theirs."""
        ready, body = self.own_health()
        # As last read from the warehouse (every few seconds, see read_maintenance_status);
        # not part of what the workers publish to each other every second.
        maintained = self.maintained
        if maintained:  # by whichever maintainer (serve's, cron's, a replica's)
            body["maintenance"] = {t: {k: v for k, v in r.items() if k != "totals"}
                                   for t, r in maintained.items()}  # fmt: skip
        if self.host is None:
            return ready, body
        problems: list[str] = body["problems"]  # type: ignore[assignment]
        workers: dict[str, object] = {}
        now = time.time()
        for report in self.host.reports():
            if report.worker == self.worker:
                continue
            silent = now - report.at > STALE_AFTER
            status = "silent" if silent else report.health["status"]
            workers[str(report.worker)] = {
                "pid": report.pid,
                "status": status,
                "reported": report.at,
                "problems": report.health["problems"],
            }
            name = f"worker {report.worker} (pid {report.pid})"
            if silent:
                problems.append(f"{name} has not reported for {now - report.at:.0f} s")
            elif status != "ok":
                problems.extend(f"{name}: {p}" for p in report.health["problems"])
        if workers:
            body["workers"] = workers
            if body["status"] == "ok" and problems:
                body["status"] = "degraded"  # a sibling's trouble: this worker still accepts
        return ready, body

    def own_health(self) -> tuple[bool, dict[str, object]]:
        """This worker's readiness and state alone."""
        problems = []
        if self.wal is not None and self.wal.error:
            problems.append(self.wal.error)
        if self.buffers.full:
            problems.append("the buffers are at --max-buffer-bytes")
        now = time.time()
        tables = {
            str(table): {
                "flushing_for": None
                if state.flushing_since is None
                else round(now - state.flushing_since, 1),
                "buffered_rows": state.rows,
                "buffered_bytes": state.bytes,
                "last_flush": state.last_flush,
                "version": state.version,
                "failures": state.failures,
                "last_error": state.last_error,
            }
            for table, state in sorted(self.buffers.states().items())
        }
        failing = sorted(t for t, s in tables.items() if s["failures"])
        # A store that does not answer keeps a flush waiting (its client retries for minutes)
        # before it fails: a flush this long is trouble already.
        waiting = sorted(
            (t, s["flushing_for"])
            for t, s in tables.items()
            if s["flushing_for"] is not None and s["flushing_for"] > FLUSH_STUCK_AFTER
        )
        status = "unavailable" if problems else "degraded" if failing or waiting else "ok"
        body: dict[str, object] = {
            "status": status,
            "worker": self.worker,
            "problems": problems
            + [f"flushes to {t} are failing" for t in failing]
            + [f"a flush to {t} has waited {s:.0f} s on the warehouse" for t, s in waiting],
            "held_bytes": self.buffers.held_bytes,
            "max_buffer_bytes": self.buffers.policy.max_held_bytes,
            "durability": "wal" if self.wal is not None else "none",
            "tables": tables,
        }
        return not problems, body

    def render_metrics(self) -> str:
        totals: dict[str, float] = {}
        for report in self.maintained.values():
            for name, value in report.get("totals", {}).items():
                totals[name] = totals.get(name, 0) + value
        return self.metrics.render(
            {
                "otlp_delta_buffered_bytes": (
                    "Arrow bytes held in buffers and flushes in progress.",
                    self.buffers.held_bytes,
                ),
                "otlp_delta_buffered_rows": (
                    "Rows waiting to be flushed.",
                    self.buffers.buffered_rows,
                ),
                "otlp_delta_requests_in_progress": ("Requests being handled.", self._in_flight),
                "otlp_delta_native_decoder": (
                    "1 when the native core decodes protobuf requests, 0 on the Python fallback.",
                    native.ENGINE == "native",
                ),
            },
            {
                f"otlp_delta_maintenance_{name}_total": (_MAINTENANCE_HELP[name], value)
                for name, value in totals.items()
                if name in _MAINTENANCE_HELP
            },
        )

    def read_maintenance_status(self) -> None:
        """Refresh what /readyz and /metrics show of maintenance (blocking: in a thread, every
        few seconds). Kept as it was while the warehouse cannot be read: it is not our health."""
        try:
            self.maintained = maintenance_status(self.sink.warehouse)
        except Exception as e:
            log.debug("maintenance reports unreadable", error=str(e))

    async def ready(self, table: TableName, schema: TableSchema) -> None:
        """Make sure the table exists with the DDL's schema before accepting rows for it."""
        if self.sink.is_ready(table):
            return
        try:
            await asyncio.to_thread(self.sink.ensure, table, schema)
        except SchemaMismatch as e:
            raise InvalidArgument(f"Schema validation error: table {table}: {e}") from None
        except Exception as e:
            # The warehouse cannot be reached or written (permissions, disk, object store):
            # our trouble, not the client's, and it may pass.
            raise Unavailable(
                f"storage unavailable for table {table}: {error_text(e)}",
                retry_after=self.buffers.retry_after,
            ) from None
