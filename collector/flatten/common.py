"""What every signal's rows share: the resource and scope they came from, and the result type."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from collector.flatten.columns import Rows, repeat_each
from collector.flatten.values import Converter

__all__ = ["Flattened", "Origins", "Rejections"]


@dataclass(frozen=True)
class Flattened:
    """The rows one request produced, and what it had to leave out (OTLP partial success)."""

    batch: pa.RecordBatch
    rejected: int = 0
    error: str | None = None  # the first problem, in English, when rejected > 0
    truncated_values: int = 0  # strings cut to Limits.max_value_bytes
    dropped_attributes: int = 0  # attributes beyond Limits.max_attributes


class Rejections:
    """Counts records that cannot be stored and keeps the reason of the first in the request
    (``at`` orders them when they are not found in request order)."""

    __slots__ = ("_first_at", "count", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None
        self._first_at = 0

    def add(self, what: str, reason: object, at: int = 0) -> None:
        self.count += 1
        if self.first is None or at < self._first_at:
            self.first = f"{what}: {reason}"
            self._first_at = at


class Origins:
    """Resource and scope columns, built once per ResourceX / ScopeX and repeated by index.

    Agents send one resource and one or two scopes per request for hundreds of records, so the
    per-row cost is an index, and the struct columns are made with a single ``take``. A request
    with one resource and one scope, the usual case, reuses the columns made for an earlier
    request of as many rows from the same ones (:class:`_OriginCache`).
    """

    def __init__(self, schema: pa.Schema, scope_url_column: str, convert: Converter) -> None:
        self._schema = schema
        self._scope_url_column = scope_url_column
        self._convert = convert
        self._resources = Rows(schema.field("resource").type, convert)
        self._scopes = Rows(schema.field("instrumentation_scope").type, convert)
        self._resource_urls: list[str] = []
        self._scope_urls: list[str] = []
        self._resource_index: list[int] = []
        self._scope_index: list[int] = []
        self._sources: list[Any] = []  # the Resource and scope messages, for the cache key

    def add_resource(self, resource: Resource, schema_url: str) -> int:
        self._resources["attributes"].append(resource.attributes)
        self._resources["dropped_attributes_count"].append(resource.dropped_attributes_count)
        self._resource_urls.append(schema_url)
        self._sources.append(resource)
        return len(self._resource_urls) - 1

    def add_scope(self, scope: InstrumentationScope, schema_url: str) -> int:
        s = self._scopes
        s["name"].append(scope.name)
        s["version"].append(scope.version)
        s["attributes"].append(scope.attributes)
        s["dropped_attributes_count"].append(scope.dropped_attributes_count)
        self._scope_urls.append(schema_url)
        self._sources.append(scope)
        return len(self._scope_urls) - 1

    def repeat(self, resource: int, scope: int, rows: int) -> None:
        """The next ``rows`` rows came from this resource and scope."""
        self._resource_index.extend([resource] * rows)
        self._scope_index.extend([scope] * rows)

    def repeat_each(self, resources: list[int], scopes: list[int], counts: list[int]) -> None:
        """Row groups in order: ``counts[i]`` rows from ``resources[i]`` and ``scopes[i]``."""
        self._resource_index.extend(repeat_each(resources, counts))
        self._scope_index.extend(repeat_each(scopes, counts))

    def fill(self, rows: Rows) -> None:
        n = len(self._resource_index)
        key = self._cache_key(n)
        cached = _CACHE.get(key) if key else None
        if cached is None:
            convert = self._convert
            truncated, dropped = convert.truncated, convert.dropped
            columns = self._build()
            cached = columns, convert.truncated - truncated, convert.dropped - dropped
            if key:
                _CACHE.put(key, cached)
        else:
            # What the limits cut from the resource and scope counts for every request.
            self._convert.truncated += cached[1]
            self._convert.dropped += cached[2]
        for name, column in cached[0].items():
            rows.set(name, column)

    def _build(self) -> dict[str, pa.Array]:
        r = pa.array(self._resource_index, pa.int32())
        s = pa.array(self._scope_index, pa.int32())
        string = pa.string()
        return {
            "resource": self._resources.build_struct().take(r),
            "resource_schema_url": pa.array(self._resource_urls, string).take(r),
            "instrumentation_scope": self._scopes.build_struct().take(s),
            self._scope_url_column: pa.array(self._scope_urls, string).take(s),
        }

    def _cache_key(self, rows: int) -> tuple[Any, ...] | None:
        """What the columns of a single-origin protobuf request are made of; None otherwise.

        The number of rows is part of it: columns cut to size would be slices, whose Arrow IPC
        differs from that of fresh columns, and the WAL tells a retried request by its IPC."""
        single = len(self._resource_urls) == len(self._scope_urls) == 1
        if not (rows and single and isinstance(self._sources[0], Message)):
            return None
        resource, scope = self._sources
        convert = self._convert
        return (
            rows,
            self._scope_url_column,
            convert.max_attributes,
            convert.max_value_bytes,
            resource.SerializeToString(),
            self._resource_urls[0],
            scope.SerializeToString(),
            self._scope_urls[0],
        )


class _OriginCache:
    """Origin columns by cache key, least recently used first out, within a budget of bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # flatteners may run on several threads

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        size = sum(c.nbytes for c in value[0].values())
        if size > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted


_CACHE = _OriginCache(max_bytes=16 * 1024 * 1024)


def finish(rows: Rows, origins: Origins, rej: Rejections, convert: Converter) -> Flattened:
    origins.fill(rows)
    return Flattened(rows.build_batch(), rej.count, rej.first, convert.truncated, convert.dropped)
