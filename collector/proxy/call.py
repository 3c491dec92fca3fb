"""What the proxy learns about one call as it goes, from its request to its answer's end: the
one record that its usage and inference rows and its span are made from."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.proxy.providers import Answer, Usage

__all__ = ["Call", "TraceContext", "session_of"]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# Where the agents say which session a call is part of: Claude Code's header, Codex's (0.170
# on; session_id before).
_SESSION_HEADERS = ("X-Claude-Code-Session-Id", "session-id", "session_id")


@dataclass(frozen=True)
class TraceContext:
    """The trace a call's span belongs to: the caller's (W3C ``traceparent``), or a new one."""

    trace_id: bytes
    parent_span_id: bytes  # b"": the call's span is its trace's root
    trace_state: str = ""
    trace_flags: int = 1  # sampled

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> TraceContext:
        """The caller's trace when its ``traceparent`` is valid (W3C Trace Context: a version
        other than ff, ids not all zeros; a version 00 header exactly that long), else a new
        trace, as a W3C participant treats an invalid header."""
        match = _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip())
        if match is not None:
            version, trace_id, parent_id, flags, rest = match.groups()
            if (
                version != "ff"
                and not (version == "00" and rest)
                and trace_id.strip("0")
                and parent_id.strip("0")
            ):
                state = headers.get("tracestate", "").strip()
                return cls(
                    bytes.fromhex(trace_id),
                    bytes.fromhex(parent_id),
                    state if len(state) <= 512 else "",
                    int(flags, 16),
                )
        return cls.new()

    @classmethod
    def new(cls) -> TraceContext:
        return cls(os.urandom(16), b"")


def session_of(headers: Mapping[str, str]) -> str | None:
    """The agent's session the call is part of, as its headers say."""
    for name in _SESSION_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            return value[:256]
    return None


@dataclass
class Call:
    """What the proxy learned about one call, filled in as it goes."""

    request_id: str
    time_unix_nano: int
    route: str
    operation: str
    user_agent: str
    token_name: str | None = None
    team: str | None = None  # the token's, for team budgets
    endpoint: str | None = None
    upstream: str | None = None  # the name of the upstream that served (or was tried last)
    upstream_model: str | None = None
    attempts: int = 0  # upstreams tried
    status: int = 0
    usage: Usage | None = None
    latency_ms: float = 0.0
    first_byte_ms: float | None = None
    streamed: bool = False
    request_body: bytes = b""
    response_body: bytearray = field(default_factory=bytearray)
    response_truncated: bool = False
    streamed_pieces: list[str] = field(default_factory=list)  # what each streamed event wrote
    # For the call's span:
    trace: TraceContext = field(default_factory=TraceContext.new)
    span_id: bytes = field(default_factory=lambda: os.urandom(8))
    session_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # max_tokens, temperature, …
    answer: Answer = field(default_factory=Answer)
    server: tuple[str, int] | None = None  # the upstream's host and port
    error_type: str | None = None  # when no answer says what went wrong (unreachable, …)
    failed_attempts: list[tuple[int, str, str]] = field(default_factory=list)  # time, name, why
