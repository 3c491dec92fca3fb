"""Errors an export can end in, each with the status OTLP prescribes on HTTP and on gRPC.

A receiver turns one of these into its transport's answer; nothing below the receivers knows
about HTTP or gRPC, it only raises the error that says what went wrong.
"""

from __future__ import annotations

from google.rpc import code_pb2

__all__ = [
    "ExportError",
    "InvalidArgument",
    "PayloadTooLarge",
    "PermissionDenied",
    "RequestTimeout",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedMediaType",
]


class ExportError(Exception):
    """A request the collector will not store, with the answer to give."""

    http_status = 500
    rpc_code = code_pb2.INTERNAL  # google.rpc.Code, shared by gRPC and the HTTP Status body

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidArgument(ExportError):
    """The request is malformed or names a table it may not be written to; do not retry."""

    http_status = 400
    rpc_code = code_pb2.INVALID_ARGUMENT


class UnsupportedMediaType(InvalidArgument):
    http_status = 415


class PayloadTooLarge(ExportError):
    """The body is over the size cap (after decompression); not retryable."""

    http_status = 413
    rpc_code = code_pb2.RESOURCE_EXHAUSTED


class Unavailable(ExportError):
    """Transient trouble on our side: the client should retry after ``retry_after`` seconds."""

    http_status = 503
    rpc_code = code_pb2.UNAVAILABLE


class Unauthenticated(ExportError):
    """No credentials, or unknown ones."""

    http_status = 401
    rpc_code = code_pb2.UNAUTHENTICATED


class PermissionDenied(ExportError):
    """Known credentials that do not grant writing this table."""

    http_status = 403
    rpc_code = code_pb2.PERMISSION_DENIED


class RequestTimeout(ExportError):
    """The client sent its body too slowly."""

    http_status = 408
    rpc_code = code_pb2.DEADLINE_EXCEEDED
