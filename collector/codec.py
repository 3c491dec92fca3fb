"""Request bodies ↔ OTLP messages, for the two OTLP/HTTP encodings: protobuf and JSON."""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from collector.errors import ExportError, InvalidArgument, UnsupportedMediaType
from collector.flatten import DEFAULT_LIMITS, Limits
from collector.flatten.native import Decoded
from collector.otlpjson import Node
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


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters; 415 if we do not take it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: send {' or '.join(MEDIA_TYPES)}"
        )
    return media


def decode_request(
    signal: Signal, body: bytes | bytearray, media: str, limits: Limits = DEFAULT_LIMITS
) -> Message | Node | Decoded:
    """The OTLP request in ``body``: a protobuf message (or the native core's flattened rows,
    made under ``limits``), or for JSON a :class:`Node` tree the flatteners read the same way."""
    name = signal.request_type.DESCRIPTOR.name
    if media == JSON:
        if not body.strip():
            return signal.request_type()  # an empty body is an empty request, as with protobuf
        try:
            return signal.decode_json(body, limits)
        except (ValueError, TypeError, RecursionError) as e:  # incl. JsonError, JSONDecodeError
            raise InvalidArgument(f"cannot decode the body as an OTLP {name} (JSON): {e}") from None
    try:
        return signal.decode_protobuf(body, limits)
    except (DecodeError, RecursionError) as e:
        raise InvalidArgument(f"cannot decode the body as an OTLP {name} ({media}): {e}") from None


def encode_message(message: Message, media: str) -> bytes:
    if media == JSON:
        tree = json_format.MessageToDict(message)
        return json.dumps(tree, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return message.SerializeToString()


def status_message(error: ExportError) -> status_pb2.Status:
    return status_pb2.Status(code=error.rpc_code, message=error.message)
