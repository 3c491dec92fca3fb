"""An OTLP-to-Delta collector for coding-agent telemetry.

Receivers (OTLP/HTTP, OTLP/gRPC) → decode → flatten to Arrow → buffer per table → Delta sink.

The names below are imported on first use: ``python -m collector`` must be able to set up its
process (see :mod:`collector.process`) before pyarrow, delta-rs and grpc are loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.buffer import Buffers, FlushPolicy
    from collector.config import Config
    from collector.errors import ExportError, InvalidArgument, PayloadTooLarge, Unavailable
    from collector.flatten import Flattened, flatten_logs, flatten_metrics, flatten_spans
    from collector.pipeline import Pipeline
    from collector.schema import SchemaMismatch, TableSchema, load_schema
    from collector.server import Collector
    from collector.signals import LOGS, METRICS, SIGNALS, SPANS, Signal
    from collector.sink import DeltaSink
    from collector.tables import TableName

# Where each public name lives, for the lazy import below (the same names as just above).
_MODULES = {
    "collector.buffer": ("Buffers", "FlushPolicy"),
    "collector.config": ("Config",),
    "collector.errors": ("ExportError", "InvalidArgument", "PayloadTooLarge", "Unavailable"),
    "collector.flatten": ("Flattened", "flatten_logs", "flatten_metrics", "flatten_spans"),
    "collector.pipeline": ("Pipeline",),
    "collector.schema": ("SchemaMismatch", "TableSchema", "load_schema"),
    "collector.server": ("Collector",),
    "collector.signals": ("LOGS", "METRICS", "SIGNALS", "SPANS", "Signal"),
    "collector.sink": ("DeltaSink",),
    "collector.tables": ("TableName",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "LOGS",
    "METRICS",
    "SIGNALS",
    "SPANS",
    "Buffers",
    "Collector",
    "Config",
    "DeltaSink",
    "ExportError",
    "Flattened",
    "FlushPolicy",
    "InvalidArgument",
    "PayloadTooLarge",
    "Pipeline",
    "SchemaMismatch",
    "Signal",
    "TableName",
    "TableSchema",
    "Unavailable",
    "flatten_logs",
    "flatten_metrics",
    "flatten_spans",
    "load_schema",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'collector' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
