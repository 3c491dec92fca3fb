"""Streaming decompression of request bodies with a cap on the decompressed size.

The cap is enforced while inflating, so a small body that expands without bound (a zip bomb)
is refused after at most ``limit`` bytes of output, never allocated whole.
"""

from __future__ import annotations

import io
import zlib

import zstandard

from collector.errors import InvalidArgument, PayloadTooLarge

__all__ = ["ENCODINGS", "BodyReader"]

ENCODINGS = ("gzip", "deflate", "zstd", "identity")
_STEP = 1 << 20


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
        self.received = 0  # bytes on the wire
        self._out = bytearray()
        self._zlib: zlib._Decompress | None = None
        self._compressed = bytearray()  # zstd: inflated at the end, through a bounded reader

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
        if self.received > self.limit:
            raise self._too_large()
        if self.encoding == "identity":
            self._out += chunk
        elif self.encoding == "zstd":
            self._compressed += chunk
        else:
            self._inflate(chunk)

    def _inflate(self, data: bytes) -> None:
        while data:
            if self._zlib is None:
                self._zlib = zlib.decompressobj(self._wbits(data))
            d = self._zlib
            try:
                out = d.decompress(data, self.limit - len(self._out) + 1)
            except zlib.error as e:
                raise InvalidArgument(f"cannot decompress the {self.encoding} body: {e}") from None
            self._emit(out)
            if d.eof:
                # gzip allows several members back to back; anything after is another member.
                data = d.unused_data
                self._zlib = None
            else:
                data = d.unconsumed_tail

    def _wbits(self, head: bytes) -> int:
        if self.encoding == "gzip":
            return 16 + zlib.MAX_WBITS
        # HTTP "deflate" is the zlib format, but some clients send a raw deflate stream.
        is_zlib = len(head) >= 2 and head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0
        return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS

    def finish(self) -> bytes:
        if self.encoding == "zstd":
            self._unzstd()
        elif self._zlib is not None and not self._zlib.eof:
            raise InvalidArgument(f"the {self.encoding} body is truncated")
        return bytes(self._out)

    def _unzstd(self) -> None:
        if not self._compressed:
            return
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(self._compressed), read_across_frames=True
        )
        try:
            while chunk := reader.read(_STEP):
                self._emit(chunk)
        except zstandard.ZstdError as e:
            raise InvalidArgument(f"cannot decompress the zstd body: {e}") from None
