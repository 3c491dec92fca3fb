"""OTLP export requests → Arrow record batches in the DDL's schema. Pure functions, no I/O."""

from collector.flatten.common import Flattened
from collector.flatten.logs import flatten_logs
from collector.flatten.metrics import flatten_metrics
from collector.flatten.spans import flatten_spans
from collector.flatten.values import DEFAULT_LIMITS, Limits, MalformedValue

__all__ = [
    "DEFAULT_LIMITS",
    "Flattened",
    "Limits",
    "MalformedValue",
    "flatten_logs",
    "flatten_metrics",
    "flatten_spans",
]
