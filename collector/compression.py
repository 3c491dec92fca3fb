"""Streaming decompression of request bodies with a cap on the decompressed size.

The cap is enforced while inflating, so a small body that expands without bound (a zip bomb)
is refused after at most about ``limit`` bytes of output, never allocated whole.
"""

from __future__ import annotations

import zlib
from typing import Any

import zstandard

from collector.errors import InvalidArgument, PayloadTooLarge

__all__ = ["ENCODINGS", "BodyReader"]

ENCODINGS = ("gzip", "deflate", "zstd", "identity")

_STEP = 4 << 20
# zstd expands at most about 32768:1 (a 128 KiB RLE block from 4 bytes): feeding it slices of
# step/32768 bytes keeps every call's output within one step.
_ZSTD_MAX_RATIO = 32768
# Decoders need a window as large as the frame asks for; 8 MiB covers every standard level.
_ZSTD_MAX_WINDOW = 1 << 23


class BodyReader:
    """Collects a body chunk by chunk, decoding ``Content-Encoding`` on the way."""

    def __init__(self, encoding: str | None, limit: int) -> None:
        enc = (encoding or "identity").strip().lower()
        if enc not in ENCODINGS:
            raise InvalidArgument(
                f"unsupported Content-Encoding {encoding!r}: use one of {', '.join(ENCODINGS)}"
            )
        self.encoding = enc
        self.limit = limit
        # Incompressible data grows a little when compressed; empty gzip members inflate to
        # nothing. Bound the wire bytes too, with room for that overhead.
        self.wire_limit = limit if enc == "identity" else limit + limit // 64 + 65536
        self.received = 0
        self._out = bytearray()
        self._decoder: Any = None
        self._head = b""  # deflate: bytes held until the format can be told (zlib or raw)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body exceeds the limit of {self.limit} bytes"
            + (" after decompression" if self.encoding != "identity" else "")
        )

    def _emit(self, data: bytes) -> None:
        if len(self._out) + len(data) > self.limit:
            raise self._too_large()
        self._out += data

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.wire_limit:
            raise self._too_large()
        if self.encoding == "identity":
            self._emit(chunk)
            return
        try:
            self._inflate(chunk)
        except (zlib.error, zstandard.ZstdError) as e:
            raise InvalidArgument(f"cannot decompress the {self.encoding} body: {e}") from None

    def _new_decoder(self, head: bytes) -> Any:
        if self.encoding == "zstd":
            return zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW).decompressobj()
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # HTTP "deflate" is the zlib format, but some clients send a raw deflate stream.
        is_zlib = head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)

    def _inflate(self, data: bytes) -> None:
        if self.encoding == "deflate" and self._decoder is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = b""
        while True:
            if self._decoder is None:
                if not data:
                    return
                self._decoder = self._new_decoder(data)
            d = self._decoder
            # Output comes in steps of at most _STEP bytes, so that what is held is the body
            # so far plus one step, never a whole inflated chunk on top of it.
            step = min(self.limit - len(self._out) + 1, _STEP)
            if self.encoding == "zstd":
                take = max(1, step // _ZSTD_MAX_RATIO)
                out = d.decompress(data[:take])
                data = data[take:]
                drained = True
            else:
                out = d.decompress(data, step)
                data = d.unconsumed_tail
                drained = len(out) < step  # a full step may leave output pending inside zlib
            self._emit(out)
            if d.eof:
                # Several gzip members or zstd frames may follow each other.
                data = d.unused_data + data
                self._decoder = None
            elif not data and drained:
                return

    def finish(self) -> bytearray:
        """The whole decoded body (a bytearray: copying it to bytes would double the peak)."""
        if self._decoder is not None or self._head:
            raise InvalidArgument(f"the {self.encoding} body is truncated")
        return self._out
