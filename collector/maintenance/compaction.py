"""Compaction: the table's small files rewritten into few large ones, rows in time order.

Candidates are the files smaller than half the target size and older than the minimum age, in
size tiers (see ``_groups``); a tier with enough files is packed, in the order of the earliest
row time each file holds, into groups of up to the target size. Each group is merged into one
file, streaming: files are read one at a time, and a row is
written as soon as no file still to be read can hold an earlier one (every such file starts
later). What waits is the overlap in time between neighbouring files, at most ``memory`` bytes
of Arrow data (beyond that it is written as it is, still sorted within itself), plus one input
file and one row group being built. Per-file min/max statistics then let readers skip by time.

The commit removes the inputs and adds the outputs, all with ``dataChange = false``, so it
never conflicts with the appends that run meanwhile. It carries a transaction (``txn``) of the
maintenance app id, version one above the table's: of two rewrites prepared on the same
snapshot (two maintainers, or a compaction racing a retention delete) delta-rs lets one commit
and fails the other, so rows are never rewritten twice.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction, RemoveAction

from collector.filestats import INDEXED_COLUMNS_PROPERTY, file_stats, merge_stats, primitive_columns
from collector.schema import TableSchema
from collector.sink import COMMIT_HOOKS, commit_properties
from collector.storage import Files

__all__ = [
    "MAINTENANCE_APP_ID",
    "Compaction",
    "active_paths",
    "compact",
    "maintenance_commit",
    "row_times",
]

MAINTENANCE_APP_ID = "otlp-delta-collector-maintenance"
_ROW_GROUP_ROWS = 128 * 1024
_FANOUT = 8  # files of one size tier rewritten together
_TIERS = 4  # size tiers below the target
_ROW_GROUP_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Compaction:
    files_removed: int
    files_added: int
    rows: int
    bytes_removed: int
    bytes_added: int
    version: int


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    first: int = 0  # earliest row time in it (ns), for the merge order; read when needed


def maintenance_commit(dt: DeltaTable) -> CommitProperties:
    """Commit properties of a rewrite: the maintenance txn, one version above the table's."""
    return commit_properties(
        MAINTENANCE_APP_ID, (dt.transaction_version(MAINTENANCE_APP_ID) or 0) + 1
    )


def row_times(table: pa.Table, columns: Sequence[str]) -> pa.ChunkedArray:
    """Each row's time: the first of ``columns`` (dotted paths) that is set and not 0."""
    times: pa.ChunkedArray | None = None
    for path in reversed(columns):
        column = _column(table, path)
        if times is None:
            times = column
            continue
        usable = pc.fill_null(pc.and_kleene(pc.is_valid(column), pc.not_equal(column, 0)), False)
        times = pc.if_else(usable, column, times)
    assert times is not None
    return times


def _column(table: pa.Table, path: str) -> pa.ChunkedArray:
    name, _, child = path.partition(".")
    column = table.column(name)
    return pc.struct_field(column, child) if child else column


def compact(
    dt: DeltaTable,
    files: Files,
    schema: TableSchema,
    *,
    target_size: int,
    min_age: float,
    memory: int,
    still_ours: Callable[[], None],
) -> Compaction | None:
    """Rewrite the table's small files; None when there is nothing worth rewriting.

    ``still_ours`` raises if this maintainer should not commit any more (a lost lease).
    """
    properties = maintenance_commit(dt)  # on the snapshot the candidates come from
    groups = _groups(
        _candidates(dt, target_size, min_age),
        target_size,
        lambda f: _first_time(files.reader(f.path), schema),
    )
    if not groups:
        return None
    indexed = int(dt.metadata().configuration.get(INDEXED_COLUMNS_PROPERTY) or 32)
    now = int(time.time() * 1000)
    adds: list[AddAction] = []
    removes: list[RemoveAction] = []
    try:
        for group in groups:
            rows = _merged(files, group, schema, memory)
            adds.extend(_write(files, rows, schema, indexed, target_size))
            removes.extend(
                RemoveAction(path=f.path, data_change=False, deletion_timestamp=now, size=f.size)
                for f in group
            )
        still_ours()
        dt.create_write_transaction(
            [*adds, *removes],
            mode="append",
            schema=dt.schema(),
            commit_properties=properties,
            post_commithook_properties=COMMIT_HOOKS,
        )
    except BaseException:
        # A commit can be durable and still raise (its checkpoint, say): then it is done.
        dt.update_incremental()
        if not adds or not {a.path for a in adds} <= active_paths(dt):
            for a in adds:  # never committed: nothing refers to them
                files.delete(a.path)
            raise
    dt.update_incremental()
    return Compaction(
        files_removed=len(removes),
        files_added=len(adds),
        rows=sum(_records(a) for a in adds),
        bytes_removed=sum(r.size or 0 for r in removes),
        bytes_added=sum(a.size for a in adds),
        version=dt.version(),
    )


def _candidates(dt: DeltaTable, target_size: int, min_age: float) -> list[_File]:
    """The files small enough (under half the target) and old enough to be rewritten."""
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
    cutoff = (time.time() - min_age) * 1000
    return [
        _File(path, size)
        for path, size, modified in zip(
            actions["path"], actions["size_bytes"], actions["modification_time"], strict=True
        )
        if size * 2 < target_size and modified <= cutoff
    ]


def _first_time(source: io.RawIOBase, schema: TableSchema) -> int:
    with source:  # the footer and the time columns are read, not the whole file
        times = row_times(_read(source, schema, times_only=True), schema.time_columns)
    first = pc.min(times).as_py()
    return first if first is not None else 0


def _groups(
    files: list[_File], target_size: int, first_time: Callable[[_File], int]
) -> list[list[_File]]:
    """What to rewrite: files of one size tier, once it holds ``_FANOUT`` of them, packed in time
    order up to the target size. Rewriting a growing file with every few new ones would rewrite
    each row hundreds of times on a quiet table; tiers rewrite it about once per tier (four
    between a flush of 32 KiB and the target), while no tier keeps more than a few files. Only
    the files of such tiers are read, for their earliest row time."""
    tiers: dict[int, list[_File]] = {}
    base = max(target_size / _FANOUT**_TIERS, 1.0)
    for f in files:
        tier = max(0, int(math.log(max(f.size, 1) / base, _FANOUT)))
        tiers.setdefault(tier, []).append(f)
    groups: list[list[_File]] = []
    for tier in sorted(tiers):
        if len(tiers[tier]) < _FANOUT:
            continue
        members = sorted(
            (dataclasses.replace(f, first=first_time(f)) for f in tiers[tier]),
            key=lambda f: f.first,
        )
        current: list[_File] = []
        size = 0
        for f in members:
            if current and size + f.size > target_size:
                groups.append(current)
                current, size = [], 0
            current.append(f)
            size += f.size
        groups.append(current)
    return [g for g in groups if len(g) > 1]


def _read(source: object, schema: TableSchema, times_only: bool = False) -> pa.Table:
    if times_only:  # the columns that hold the row times (a metric's whole point structs)
        columns = list(dict.fromkeys(c.partition(".")[0] for c in schema.time_columns))
        return pq.read_table(source, columns=columns, use_threads=False)
    table = pq.read_table(source, use_threads=False)
    # Files written by delta-rs (a retention delete) may use other Arrow layouts of the same
    # Delta types: everything is written back in the DDL's.
    return table if table.schema == schema.arrow else table.cast(schema.arrow)


def _merged(
    files: Files, group: list[_File], schema: TableSchema, memory: int
) -> Iterator[pa.Table]:
    """The rows of the group's files in time order, in tables of any size."""
    pending: pa.Table | None = None
    for i, f in enumerate(group):
        data = files.read(f.path)  # one input file, under half the target size
        if data is None:
            raise FileNotFoundError(f"{f.path} is referenced by the table but missing")
        table = _read(pa.BufferReader(data), schema)
        del data
        pending = table if pending is None else pa.concat_tables([pending, table])
        times = row_times(pending, schema.time_columns)
        pending = pending.take(pc.array_sort_indices(times, null_placement="at_start"))
        if i + 1 == len(group) or pending.nbytes > memory:
            yield pending
            pending = None
            continue
        # Rows earlier than the next file's first row can come from no file still unread.
        times = row_times(pending, schema.time_columns)
        ready = pc.sum(pc.fill_null(pc.less(times, group[i + 1].first), True)).as_py() or 0
        if ready:
            yield pending.slice(0, ready)
            pending = pending.slice(ready)


def _write(
    files: Files,
    tables: Iterator[pa.Table],
    schema: TableSchema,
    indexed: int,
    target_size: int,
) -> list[AddAction]:
    """Write the rows into files of about ``target_size``, row groups of about 128k rows."""
    adds: list[AddAction] = []
    writer: pq.ParquetWriter | None = None
    out: io.RawIOBase | None = None
    name = ""
    parts: list[str] = []
    held: list[pa.RecordBatch] = []
    held_rows = held_bytes = 0

    def flush_group() -> None:
        nonlocal writer, out, name, held_rows, held_bytes
        if not held:
            return
        chunk = pa.Table.from_batches(held)
        held.clear()
        held_rows = held_bytes = 0
        if writer is None:
            name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
            out = files.writer(name)
            writer = pq.ParquetWriter(
                out,
                schema.arrow,
                compression="snappy",
                write_statistics=primitive_columns(schema.arrow),
            )
        writer.write_table(chunk, row_group_size=_ROW_GROUP_ROWS)
        parts.append(file_stats(chunk, indexed))
        assert out is not None
        if out.tell() >= target_size:
            close_file()

    def close_file() -> None:
        nonlocal writer, out
        if writer is None or out is None:
            return
        writer.close()
        out.close()  # the file is whole at its path from here on
        size = out.tell()
        writer = out = None
        adds.append(
            AddAction(
                path=name,
                size=size,
                partition_values={},
                modification_time=int(time.time() * 1000),
                data_change=False,
                stats=merge_stats(parts),
            )
        )
        parts.clear()

    try:
        for table in tables:
            for batch in table.to_batches(max_chunksize=_ROW_GROUP_ROWS):
                held.append(batch)
                held_rows += batch.num_rows
                held_bytes += batch.nbytes
                if held_rows >= _ROW_GROUP_ROWS or held_bytes >= _ROW_GROUP_BYTES:
                    flush_group()
        flush_group()
        close_file()
    except BaseException:
        if writer is not None:
            writer.close()
        if out is not None:
            out.close()
        for path in [*(a.path for a in adds), name]:
            if path:
                files.delete(path)
        raise
    return adds


def _records(add: AddAction) -> int:
    return int(json.loads(add.stats)["numRecords"])


def active_paths(dt: DeltaTable) -> set[str]:
    """The data files of the table's current version (paths relative to the table)."""
    return set(pa.table(dt.get_add_actions()).column("path").to_pylist())
