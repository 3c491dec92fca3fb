"""OTLP request classes for decoding protobuf bodies, with every per-record attribute list and
log body kept as raw bytes.

A message and a ``bytes`` field share the wire type (length-delimited), so declaring the
``attributes`` of records, data points, spans, events, links and exemplars as ``repeated bytes``
makes the C parser hand over each KeyValue undecoded and in order. Agents repeat the same
attributes on every record, so the flatteners decode each distinct attribute once per request
instead of reading a dozen protobuf wrapper objects per record (collector.flatten.values,
``Converter.maps``). A log body becomes ``repeated bytes`` too: the occurrences of a singular
message field merge, and so do their concatenated bytes when decoded (``Converter.bodies``).
Everything else decodes exactly as the standard classes do; a malformed attribute or body is
found when it is decoded and rejects the whole request, as a full parse would.

A histogram point's ``bucket_counts`` and ``explicit_bounds`` are taken as bytes as well: packed
(the encoding every exporter writes) they are one length-delimited run of 8-byte values that
Arrow reads in place (collector.flatten.packed). Protobuf also allows them unpacked, one value
per tag; the bytes field cannot take those and the parser keeps them as the point's unknown
fields, so the flattener decodes the histograms of such a point again with the standard classes.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["protobuf_decoder"]

# Fields (by message) that stay bytes: the ones that occur once per row, and packed runs of
# fixed-width numbers. Resource and scope attributes keep their type: there are one or two of
# each per request.
_RAW = {
    "opentelemetry.proto.logs.v1.LogRecord": ("attributes", "body"),
    "opentelemetry.proto.metrics.v1.NumberDataPoint": ("attributes",),
    "opentelemetry.proto.metrics.v1.HistogramDataPoint": (
        "attributes",
        "bucket_counts",
        "explicit_bounds",
    ),
    "opentelemetry.proto.metrics.v1.ExponentialHistogramDataPoint": ("attributes",),
    "opentelemetry.proto.metrics.v1.SummaryDataPoint": ("attributes",),
    "opentelemetry.proto.metrics.v1.Exemplar": ("filtered_attributes",),
    "opentelemetry.proto.trace.v1.Span": ("attributes",),
    "opentelemetry.proto.trace.v1.Span.Event": ("attributes",),
    "opentelemetry.proto.trace.v1.Span.Link": ("attributes",),
}
_FILES = (
    common_pb2,
    resource_pb2,
    logs_pb2,
    metrics_pb2,
    trace_pb2,
    logs_service_pb2,
    metrics_service_pb2,
    trace_service_pb2,
)


_Field = descriptor_pb2.FieldDescriptorProto


def _patch(messages: list[descriptor_pb2.DescriptorProto], scope: str) -> None:
    for m in messages:
        name = f"{scope}.{m.name}"
        raw = _RAW.get(name, ())
        for f in m.field:
            if f.name in raw:
                f.type = _Field.TYPE_BYTES
                f.label = _Field.LABEL_REPEATED
                f.ClearField("type_name")
                f.options.ClearField("packed")
        _patch(list(m.nested_type), name)


def _build_pool() -> descriptor_pool.DescriptorPool:
    # A pool of its own: the same message names as the standard classes, which stay untouched.
    pool = descriptor_pool.DescriptorPool()
    for module in _FILES:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        _patch(list(proto.message_type), proto.package)
        pool.Add(proto)
    return pool


_POOL = _build_pool()


def protobuf_decoder(request_type: type[Message]) -> Callable[[bytes], Message]:
    """The function that decodes protobuf bodies of ``request_type`` for the flatteners; it
    raises DecodeError (or RecursionError) as ``FromString`` does."""
    descriptor = _POOL.FindMessageTypeByName(request_type.DESCRIPTOR.full_name)
    return message_factory.GetMessageClass(descriptor).FromString
