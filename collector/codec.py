"""Request bodies ↔ OTLP messages, by media type."""

from __future__ import annotations

from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from collector.errors import ExportError, InvalidArgument, UnsupportedMediaType
from collector.signals import Signal

__all__ = [
    "MEDIA_TYPES",
    "PROTOBUF",
    "decode_request",
    "encode_message",
    "media_type",
    "status_message",
]

PROTOBUF = "application/x-protobuf"
MEDIA_TYPES = (PROTOBUF,)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters; 415 if we do not take it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: send {' or '.join(MEDIA_TYPES)}"
        )
    return media


def decode_request(signal: Signal, body: bytes, media: str) -> Message:
    request = signal.request_type()
    try:
        request.ParseFromString(body)
    except DecodeError as e:
        raise InvalidArgument(
            f"cannot decode the body as an OTLP {request.DESCRIPTOR.name} ({media}): {e}"
        ) from None
    return request


def encode_message(message: Message, media: str) -> bytes:
    return message.SerializeToString()


def status_message(error: ExportError) -> status_pb2.Status:
    return status_pb2.Status(code=error.rpc_code, message=error.message)
