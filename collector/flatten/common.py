"""What every signal's rows share: the resource and scope they came from, and the result type."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
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
    per-row cost is an index, and the struct columns are made with a single ``take``.
    """

    def __init__(self, schema: pa.Schema, scope_url_column: str, convert: Converter) -> None:
        self._schema = schema
        self._scope_url_column = scope_url_column
        self._resources = Rows(schema.field("resource").type, convert)
        self._scopes = Rows(schema.field("instrumentation_scope").type, convert)
        self._resource_urls: list[str] = []
        self._scope_urls: list[str] = []
        self._resource_index: list[int] = []
        self._scope_index: list[int] = []

    def add_resource(self, resource: Resource, schema_url: str) -> int:
        self._resources["attributes"].append(resource.attributes)
        self._resources["dropped_attributes_count"].append(resource.dropped_attributes_count)
        self._resource_urls.append(schema_url)
        return len(self._resource_urls) - 1

    def add_scope(self, scope: InstrumentationScope, schema_url: str) -> int:
        s = self._scopes
        s["name"].append(scope.name)
        s["version"].append(scope.version)
        s["attributes"].append(scope.attributes)
        s["dropped_attributes_count"].append(scope.dropped_attributes_count)
        self._scope_urls.append(schema_url)
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
        r = pa.array(self._resource_index, pa.int32())
        s = pa.array(self._scope_index, pa.int32())
        string = pa.string()
        rows.set("resource", self._resources.build_struct().take(r))
        rows.set("resource_schema_url", pa.array(self._resource_urls, string).take(r))
        rows.set("instrumentation_scope", self._scopes.build_struct().take(s))
        rows.set(self._scope_url_column, pa.array(self._scope_urls, string).take(s))


def finish(rows: Rows, origins: Origins, rej: Rejections, convert: Converter) -> Flattened:
    origins.fill(rows)
    return Flattened(rows.build_batch(), rej.count, rej.first, convert.truncated, convert.dropped)
