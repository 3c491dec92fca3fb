"""Incremental server-sent-events parsing: the relayed bytes are split into events as they
pass, so usage is read from the stream without holding it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = ["SseParser"]


class SseParser:
    """Feed raw chunks; get each complete event's ``data`` parsed as JSON (non-JSON data, such
    as OpenAI's ``[DONE]``, is skipped)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> Iterator[Any]:
        # Events end with a blank line; CRLF and CR line ends are allowed by the spec.
        data = self._pending + chunk
        held = b""
        if data.endswith(b"\r"):  # may be the first half of a CRLF split across chunks
            data, held = data[:-1], b"\r"
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *events, rest = data.split(b"\n\n")
        self._pending = rest + held
        for event in events:
            yield from self._parse(event)

    def close(self) -> Iterator[Any]:
        """A stream may end without the final blank line."""
        pending, self._pending = self._pending, b""
        if pending.strip():
            yield from self._parse(pending)

    @staticmethod
    def _parse(event: bytes) -> Iterator[Any]:
        lines = [
            line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        ]
        if not lines:
            return
        try:
            yield json.loads(b"\n".join(lines))
        except ValueError:
            return
