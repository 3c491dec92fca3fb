"""Request bodies ↔ OTLP messages, for the two OTLP/HTTP encodings: protobuf and JSON."""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from collector.errors import ExportError, InvalidArgument, UnsupportedMediaType
from collector.signals import Signal

__all__ = [
    "JSON",
    "MEDIA_TYPES",
    "PROTOBUF",
    "decode_request",
    "encode_message",
    "media_type",
    "status_message",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)

# OTLP/JSON writes these bytes fields as hex, where proto3's JSON mapping expects base64. They
# appear as JSON keys only in Span, Span.Link, LogRecord and Exemplar (attribute keys are values).
_HEX_FIELDS = frozenset(
    {"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"}
)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters; 415 if we do not take it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: send {' or '.join(MEDIA_TYPES)}"
        )
    return media


def _hex_to_base64(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    raise InvalidArgument(f"{key} {value[:64]!r} is not a hex string") from None
            else:
                _hex_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_to_base64(item)


def decode_request(signal: Signal, body: bytes, media: str) -> Message:
    request = signal.request_type()
    name = request.DESCRIPTOR.name
    if media == JSON:
        if not body.strip():
            return request  # an empty body is an empty request, as with protobuf
        try:
            tree = json.loads(body)
            _hex_to_base64(tree)
            json_format.ParseDict(tree, request, ignore_unknown_fields=True)
        except InvalidArgument:
            raise
        except (
            json_format.ParseError,
            ValueError,  # JSONDecodeError, UnicodeDecodeError
            TypeError,
            AttributeError,
            KeyError,
            RecursionError,
        ) as e:
            raise InvalidArgument(f"cannot decode the body as an OTLP {name} (JSON): {e}") from None
        return request
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError) as e:
        raise InvalidArgument(f"cannot decode the body as an OTLP {name} ({media}): {e}") from None
    return request


def encode_message(message: Message, media: str) -> bytes:
    if media == JSON:
        tree = json_format.MessageToDict(message)
        return json.dumps(tree, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return message.SerializeToString()


def status_message(error: ExportError) -> status_pb2.Status:
    return status_pb2.Status(code=error.rpc_code, message=error.message)
