"""The native core (``collector._native``, Rust): OTLP protobuf bytes → the table's Arrow
columns in one pass, with no Python object per record, attribute or value.

It does exactly what the Python flatteners do with the same bytes (tests/test_native.py holds
it to the same Arrow IPC bytes and the same errors); they stay as the fallback and the
reference. ``COLLECTOR_PURE_PYTHON=1`` forces the fallback; without the extension (no Rust
toolchain at install) the fallback runs and the start-up log says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.flatten.common import Flattened
from collector.flatten.values import Limits, MalformedValue, enum_names
from collector.otlpjson import native_schema
from collector.schema import load_schema

__all__ = [
    "ENGINE",
    "FALLBACK_REASON",
    "NATIVE_SIGNALS",
    "PURE_PYTHON_ENV",
    "Decoded",
    "flatten_native",
    "transcode_json",
]

PURE_PYTHON_ENV = "COLLECTOR_PURE_PYTHON"


def _load() -> tuple[dict[str, Any], str | None]:
    """The native flatteners by signal, or why there are none."""
    if os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0"):
        return {}, f"{PURE_PYTHON_ENV} is set"
    try:
        from collector import _native  # type: ignore[attr-defined]

        _native.set_enums(
            *(
                [names.get(i) for i in range(max(names) + 1)]
                for names in map(
                    enum_names,
                    ("severity_number", "aggregation_temporality", "span_kind", "status_code"),
                )
            )
        )
        flatteners = {
            "logs": _native.flatten_logs,
            "metrics": _native.flatten_metrics,
            "traces": _native.flatten_spans,
        }
        # OTLP/JSON is read into protobuf bytes for the same flatteners; the request types
        # are the schema's first messages, in _SIGNALS' order.
        _native.set_json_schema(*native_schema([r.DESCRIPTOR for _, r in _SIGNALS.values()]))
        global _transcode
        _transcode = _native.transcode_json
    except ImportError as e:
        return {}, f"the native extension is not installed ({e})"
    except (AttributeError, TypeError, ValueError) as e:
        # A module left by an older build: reinstall (make install) to rebuild it.
        return {}, f"the native extension is out of date ({e})"
    # The tables' columns are the DDL's (schemas/*.sql): a core that builds others (the DDL
    # changed, the crate did not) must not run.
    for signal, flatten in flatteners.items():
        schema = load_schema(_SIGNALS[signal][0]).arrow
        try:
            _array_batch(flatten(b"", 0, 0)[1], schema)
        except (ValueError, TypeError, pa.ArrowException) as e:
            return {}, f"the native core's {signal} columns are not those of schemas/: {e}"
    return flatteners, None


# Each signal's table schema and request type (as in collector.signals, which imports this
# module; tests/test_native.py holds the two to agree).
_SIGNALS: dict[str, tuple[str, type[Any]]] = {
    "logs": ("otel_logs", ExportLogsServiceRequest),
    "metrics": ("otel_metrics", ExportMetricsServiceRequest),
    "traces": ("otel_spans", ExportTraceServiceRequest),
}
_transcode: Any = None


def transcode_json(signal: str, body: bytes | bytearray) -> bytes | None:
    """The OTLP/JSON request ``body`` of ``signal`` as protobuf bytes, read by the native core;
    None when the Python reading (collector.otlpjson, the reference) is to decide: the body
    has an error, which it words with the JSON path, or a form the core does not check."""
    return _transcode(body, list(_SIGNALS).index(signal))


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request the native core decoded and flattened in one pass: how many records it holds
    (for --max-request-records, checked before its rows are taken), and its rows or the error
    the flattener raises for it (a malformed attribute or body, a value too large for its
    column), raised when the rows are asked for, as the Python flatteners raise it."""

    signal: str
    body: bytes | bytearray  # to flatten again if asked under other limits
    schema: pa.Schema
    records: int
    limits: Limits
    flattened: Flattened | None
    error: Exception | None

    def flatten(self, limits: Limits) -> Flattened:
        if limits != self.limits:
            return flatten_native(self.signal, self.body, limits, self.schema).flatten(limits)
        if self.error is not None:
            raise self.error
        assert self.flattened is not None
        return self.flattened


def flatten_native(
    signal: str, body: bytes | bytearray, limits: Limits, schema: pa.Schema
) -> Decoded:
    """Decode and flatten a protobuf request of ``signal``; ValueError with the parser's
    reason if the request itself does not parse."""
    records, columns, rejected, first, truncated, dropped, error = _FLATTEN[signal](
        body, limits.max_attributes, limits.max_value_bytes
    )
    if error is not None:
        kind, message = error
        raised = MalformedValue(message) if kind == "malformed" else pa.ArrowInvalid(message)
        return Decoded(signal, body, schema, records, limits, None, raised)
    flat = Flattened(_array_batch(columns, schema), rejected, _rejection(first), truncated, dropped)
    return Decoded(signal, body, schema, records, limits, flat, None)


def _rejection(first: tuple[str, str | None, str] | None) -> str | None:
    """The partial-success message of the first record rejected, as the Python flatteners
    word it (a metric's name quoted by ``repr``)."""
    if first is None:
        return None
    what, name, reason = first
    return f"{what}: {reason}" if name is None else f"{what} {name!r}: {reason}"


def _array_batch(columns: list[tuple[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    names = [name for name, _ in columns]
    if names != schema.names:
        raise ValueError(f"the native core built {names}, the schema has {schema.names}")
    arrays = [_array(field.type, node) for field, (_, node) in zip(schema, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _array(type: pa.DataType, node: tuple[Any, ...]) -> pa.Array:
    """An array over the buffers the native core built for a column of ``type`` (or, for a
    metric type no point of the request has, its nulls as the Python flattener makes them)."""
    if len(node) == 2:
        return pa.nulls(node[0], type)
    length, nulls, buffers, children = node
    kids: list[pa.Array] | None = None
    if isinstance(type, pa.StructType):
        kids = [_array(type.field(i).type, c) for i, c in enumerate(children)]
    elif isinstance(type, pa.MapType):
        kids = [_array(pa.struct([type.key_field, type.item_field]), children[0])]
    elif isinstance(type, pa.ListType):
        kids = [_array(type.value_type, children[0])]
    return pa.Array.from_buffers(
        type,
        length,
        [None if b is None else pa.py_buffer(b) for b in buffers],
        null_count=nulls,
        children=kids,
    )


_FLATTEN, FALLBACK_REASON = _load()
NATIVE_SIGNALS = frozenset(_FLATTEN)  # the signals whose protobuf requests the core decodes
ENGINE = "native" if _FLATTEN else "python"
