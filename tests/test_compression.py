"""Unit tests for collector/compression.py: decoding request bodies under a size cap."""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest
import zstandard

from collector.compression import ENCODINGS, BodyReader
from collector.errors import InvalidArgument, PayloadTooLarge

MiB = 1024 * 1024
LIMIT = 1 * MiB
PAYLOAD = b"".join(
    b"line %d: the quick brown fox jumps over the lazy dog\n" % n for n in range(500)
)
BOMB_SIZE = 200 * 1000 * 1000


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(
    encoding: str | None, data: bytes, *, limit: int = LIMIT, size: int | None = None
) -> bytes:
    reader = BodyReader(encoding, limit)
    for chunk in chunks(data, size or max(len(data), 1)):
        reader.feed(chunk)
    return reader.finish()


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def zstd_streamed(data: bytes) -> bytes:
    """A zstd frame without a content size in its header, as a streaming client writes it."""
    c = zstandard.ZstdCompressor().compressobj()
    return c.compress(data) + c.flush()


# --- the bombs, generated streaming once per module --------------------------------------------


def _bomb(compressor: object) -> bytes:
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(BOMB_SIZE // MiB)]  # type: ignore[attr-defined]
    parts.append(compressor.compress(bytes(BOMB_SIZE % MiB)))  # type: ignore[attr-defined]
    parts.append(compressor.flush())  # type: ignore[attr-defined]
    return b"".join(parts)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    return _bomb(zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS))


@pytest.fixture(scope="module")
def deflate_bomb() -> bytes:
    return _bomb(zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS))


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    return _bomb(zstandard.ZstdCompressor(level=3).compressobj())


# --- encodings -------------------------------------------------------------------------------


def test_encodings() -> None:
    assert ENCODINGS == ("gzip", "deflate", "zstd", "identity")


@pytest.mark.parametrize("encoding", [None, "", "identity", "IDENTITY", " identity "])
def test_identity(encoding: str | None) -> None:
    reader = BodyReader(encoding, LIMIT)
    assert reader.encoding == "identity"
    for chunk in chunks(PAYLOAD, 1000):
        reader.feed(chunk)
    assert reader.received == len(PAYLOAD)
    assert reader.finish() == PAYLOAD


def test_identity_empty() -> None:
    assert BodyReader(None, LIMIT).finish() == b""
    assert read("identity", b"") == b""


@pytest.mark.parametrize("size", [None, 1, 7, 512])
def test_gzip(size: int | None) -> None:
    body = gzip.compress(PAYLOAD)
    assert read("gzip", body, size=size) == PAYLOAD


@pytest.mark.parametrize("encoding", ["GZIP", " gzip", "Gzip "])
def test_gzip_encoding_is_case_and_space_insensitive(encoding: str) -> None:
    reader = BodyReader(encoding, LIMIT)
    assert reader.encoding == "gzip"
    reader.feed(gzip.compress(PAYLOAD))
    assert reader.finish() == PAYLOAD


def test_gzip_received_counts_wire_bytes() -> None:
    body = gzip.compress(PAYLOAD)
    reader = BodyReader("gzip", LIMIT)
    for chunk in chunks(body, 100):
        reader.feed(chunk)
    assert reader.received == len(body)
    assert reader.finish() == PAYLOAD


@pytest.mark.parametrize("size", [None, 1, 3, 64])
def test_gzip_two_members(size: int | None) -> None:
    body = gzip.compress(b"first member|") + gzip.compress(b"second member")
    assert read("gzip", body, size=size) == b"first member|second member"


def test_gzip_many_members_with_empty_ones() -> None:
    body = b"".join(gzip.compress(part) for part in [b"a", b"", b"bc", b"", b"def"])
    assert read("gzip", body, size=5) == b"abcdef"


def test_gzip_empty_payload() -> None:
    assert read("gzip", gzip.compress(b"")) == b""


def test_gzip_random_data() -> None:
    data = os.urandom(200_000)
    assert read("gzip", gzip.compress(data), size=4096) == data


@pytest.mark.parametrize("size", [None, 2, 5, 1000])
def test_deflate_zlib_format(size: int | None) -> None:
    assert read("deflate", zlib.compress(PAYLOAD), size=size) == PAYLOAD


@pytest.mark.parametrize("size", [None, 1, 5, 1000])
def test_deflate_raw(size: int | None) -> None:
    assert read("deflate", deflate_raw(PAYLOAD), size=size) == PAYLOAD


def test_deflate_zlib_format_first_chunk_one_byte() -> None:
    assert read("deflate", zlib.compress(PAYLOAD), size=1) == PAYLOAD


@pytest.mark.parametrize("size", [None, 1, 100])
def test_zstd(size: int | None) -> None:
    assert read("zstd", zstd(PAYLOAD), size=size) == PAYLOAD


def test_zstd_without_content_size() -> None:
    body = zstd_streamed(PAYLOAD)
    assert read("zstd", body, size=10) == PAYLOAD


def test_zstd_two_frames() -> None:
    assert read("zstd", zstd(b"one|") + zstd_streamed(b"two")) == b"one|two"


def test_zstd_empty_body() -> None:
    assert BodyReader("zstd", LIMIT).finish() == b""


# --- malformed bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["br", "compress", "x-gzip", "gzip, deflate", "zip"])
def test_unknown_encoding(encoding: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        BodyReader(encoding, LIMIT)
    assert str(info.value) == (
        f"unsupported Content-Encoding {encoding!r}: use one of gzip, deflate, zstd, identity"
    )
    assert info.value.http_status == 400


@pytest.mark.parametrize("cut", [1, 4, 8, 20])
def test_truncated_gzip(cut: int) -> None:
    body = gzip.compress(PAYLOAD)
    reader = BodyReader("gzip", LIMIT)
    reader.feed(body[:-cut])
    with pytest.raises(InvalidArgument) as info:
        reader.finish()
    assert str(info.value) == "the gzip body is truncated"


def test_truncated_gzip_header_only() -> None:
    reader = BodyReader("gzip", LIMIT)
    reader.feed(gzip.compress(PAYLOAD)[:5])
    with pytest.raises(InvalidArgument) as info:
        reader.finish()
    assert str(info.value) == "the gzip body is truncated"


def test_truncated_second_gzip_member() -> None:
    body = gzip.compress(b"whole") + gzip.compress(PAYLOAD)[:-10]
    reader = BodyReader("gzip", LIMIT)
    reader.feed(body)
    with pytest.raises(InvalidArgument) as info:
        reader.finish()
    assert str(info.value) == "the gzip body is truncated"


@pytest.mark.parametrize("compress", [zlib.compress, deflate_raw])
def test_truncated_deflate(compress: object) -> None:
    reader = BodyReader("deflate", LIMIT)
    reader.feed(compress(PAYLOAD)[:-5])  # type: ignore[operator]
    with pytest.raises(InvalidArgument) as info:
        reader.finish()
    assert str(info.value) == "the deflate body is truncated"


@pytest.mark.parametrize("keep", [10, 0.5])
def test_truncated_zstd(keep: float) -> None:
    body = zstd(os.urandom(50_000))
    cut = keep if isinstance(keep, int) else int(len(body) * keep)
    reader = BodyReader("zstd", LIMIT)
    reader.feed(body[:cut])
    with pytest.raises(InvalidArgument):
        reader.finish()


def test_gzip_not_gzip() -> None:
    reader = BodyReader("gzip", LIMIT)
    with pytest.raises(InvalidArgument) as info:
        reader.feed(b"this is not gzip at all")
    assert str(info.value).startswith("cannot decompress the gzip body: ")


def test_gzip_bad_crc() -> None:
    body = bytearray(gzip.compress(PAYLOAD))
    body[-8] ^= 0xFF  # the CRC-32 in the trailer
    reader = BodyReader("gzip", LIMIT)
    with pytest.raises(InvalidArgument) as info:
        reader.feed(bytes(body))
    assert str(info.value).startswith("cannot decompress the gzip body: ")


def test_gzip_trailing_garbage() -> None:
    reader = BodyReader("gzip", LIMIT)
    with pytest.raises(InvalidArgument) as info:
        reader.feed(gzip.compress(PAYLOAD) + b"garbage!")
    assert str(info.value).startswith("cannot decompress the gzip body: ")


def test_deflate_corrupt() -> None:
    body = bytearray(zlib.compress(PAYLOAD))
    body[-1] ^= 0xFF  # the Adler-32 trailer
    reader = BodyReader("deflate", LIMIT)
    with pytest.raises(InvalidArgument) as info:
        reader.feed(bytes(body))
    assert str(info.value).startswith("cannot decompress the deflate body: ")


@pytest.mark.parametrize("body", [b"not zstd at all", zstd(PAYLOAD) + b"garbage!"])
def test_zstd_corrupt(body: bytes) -> None:
    reader = BodyReader("zstd", LIMIT)
    with pytest.raises(InvalidArgument) as info:
        reader.feed(body)
        reader.finish()
    assert str(info.value).startswith("cannot decompress the zstd body: ")


# --- the size cap ----------------------------------------------------------------------------


def test_identity_at_limit() -> None:
    assert read("identity", b"x" * 100, limit=100, size=30) == b"x" * 100


def test_identity_over_limit() -> None:
    reader = BodyReader("identity", 100)
    reader.feed(b"x" * 60)
    with pytest.raises(PayloadTooLarge) as info:
        reader.feed(b"x" * 41)
    assert str(info.value) == "request body exceeds the limit of 100 bytes"
    assert info.value.http_status == 413


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", deflate_raw)],
)
def test_zlib_family_at_and_over_limit(encoding: str, compress: object) -> None:
    data = b"a" * 10_000
    body = compress(data)  # type: ignore[operator]
    assert read(encoding, body, limit=10_000) == data
    reader = BodyReader(encoding, 9_999)
    with pytest.raises(PayloadTooLarge) as info:
        reader.feed(body)
    assert str(info.value) == "request body exceeds the limit of 9999 bytes after decompression"


def test_gzip_over_limit_across_members() -> None:
    body = gzip.compress(b"a" * 600) + gzip.compress(b"b" * 600)
    reader = BodyReader("gzip", 1000)
    with pytest.raises(PayloadTooLarge):
        reader.feed(body)
    assert len(reader._out) <= 1000


def test_zstd_at_and_over_limit() -> None:
    data = b"z" * 10_000
    assert read("zstd", zstd(data), limit=10_000) == data
    reader = BodyReader("zstd", 9_999)
    with pytest.raises(PayloadTooLarge) as info:
        reader.feed(zstd(data))
    assert str(info.value) == "request body exceeds the limit of 9999 bytes after decompression"


def test_compressed_body_over_limit_on_the_wire() -> None:
    body = gzip.compress(os.urandom(5000))
    reader = BodyReader("gzip", 4000)
    with pytest.raises(PayloadTooLarge):
        reader.feed(body)


def test_limit_applies_after_decompression_only() -> None:
    data = os.urandom(990)
    body = gzip.compress(data)
    assert len(body) > 1000
    assert read("gzip", body, limit=1000) == data


# --- zip bombs -------------------------------------------------------------------------------


def _feed_bomb(encoding: str, bomb: bytes) -> tuple[BodyReader, int]:
    tracemalloc.start()
    try:
        reader = BodyReader(encoding, LIMIT)
        with pytest.raises(PayloadTooLarge) as info:
            for chunk in chunks(bomb, 64 * 1024):
                reader.feed(chunk)
            reader.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"request body exceeds the limit of {LIMIT} bytes after decompression"
    )
    return reader, peak


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
def test_zip_bomb(encoding: str, gzip_bomb: bytes, deflate_bomb: bytes, zstd_bomb: bytes) -> None:
    bomb = {"gzip": gzip_bomb, "deflate": deflate_bomb, "zstd": zstd_bomb}[encoding]
    assert len(bomb) < LIMIT  # small on the wire: only decompression can catch it
    reader, peak = _feed_bomb(encoding, bomb)
    assert len(reader._out) <= LIMIT
    assert peak < 16 * MiB, f"peak traced memory {peak} bytes"


def test_gzip_bomb_stops_early(gzip_bomb: bytes) -> None:
    # The ~200 KB bomb inflates ~1000:1; the reader must give up after about 1 MiB of output,
    # i.e. within the first few kilobytes of input, not after reading the whole body.
    reader = BodyReader("gzip", LIMIT)
    with pytest.raises(PayloadTooLarge):
        for chunk in chunks(gzip_bomb, 1024):
            reader.feed(chunk)
    assert reader.received <= 8 * 1024
    assert len(reader._out) <= LIMIT


def test_ten_gigabyte_gzip_bomb_at_the_default_cap() -> None:
    # 100 gzip members of 100 MB of zeros each: a 10 GB body that is ~10 MB on the wire,
    # generated lazily. With the default 64 MiB cap the reader gives up after the first member
    # or so, holding no more than the cap.
    member = gzip.compress(b"\0" * 100_000_000, compresslevel=9)
    cap = 64 * MiB
    reader = BodyReader("gzip", cap)
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            for _ in range(100):
                for chunk in chunks(member, 64 * 1024):
                    fed += len(chunk)
                    reader.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fed <= len(member)  # refused within the first of the hundred members
    assert len(reader._out) <= cap
    assert peak < cap + 16 * MiB, f"peak traced memory {peak} bytes"
