"""An OTLP-to-Delta collector for coding-agent telemetry.

Receivers (OTLP/HTTP, OTLP/gRPC) → decode → flatten to Arrow → buffer per table → Delta sink.
"""

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
