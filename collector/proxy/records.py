"""One call's usage and inference rows, as Arrow batches of exactly the tables' DDL schemas."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate

import pyarrow as pa

from collector.prices import Price
from collector.proxy.call import Call
from collector.proxy.redact import Redactor
from collector.schema import load_schema

__all__ = [
    "REDACTION_MARGIN",
    "Cost",
    "agent_of",
    "cost_of",
    "inference_batch",
    "truncate",
    "usage_batch",
]

# Checked in order: Claude Code says `claude-cli/2.1.197 (external, cli)`, Codex CLI
# `codex_cli_rs/0.169.0 …` (or codex_exec), Gemini CLI `GeminiCLI/0.61.0 …`.
_AGENTS = (
    ("claude-code", ("claude-cli", "claude-code")),
    ("codex", ("codex",)),
    ("gemini-cli", ("geminicli", "gemini-cli")),
    ("cursor", ("cursor",)),
)


def agent_of(user_agent: str, route: str) -> str:
    ua = user_agent.lower()
    for agent, marks in _AGENTS:
        if any(m in ua for m in marks):
            return agent
    # Cursor calls from its own servers with a generic client: its route says who it is.
    return "cursor" if route == "cursor" else "other"


def truncate(data: bytes, limit: int) -> tuple[str, bool]:
    """At most ``limit`` bytes of UTF-8 text, cut on a character boundary."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    return data[:limit].decode("utf-8", "ignore"), True


@dataclass(frozen=True)
class Cost:
    """A call's estimated cost: the model it was priced as, and USD per kind of token."""

    priced_model: str
    input: float
    output: float
    cache_read: float
    cache_write: float

    @property
    def total(self) -> float:
        return self.input + self.output + self.cache_read + self.cache_write


def cost_of(call: Call, api: str, priced_model: str, price: Price | None) -> Cost | None:
    """What ``call`` cost at ``price`` (None: no price known, or no usage reported)."""
    if call.usage is None or price is None:
        return None
    return Cost(priced_model, *price.parts(*call.usage.billed(api)))


def usage_batch(call: Call, cost: Cost | None = None) -> pa.RecordBatch:
    u = call.usage
    row = {
        "request_id": call.request_id,
        "request_time_unix_nano": call.time_unix_nano,
        "token_name": call.token_name,
        "agent": agent_of(call.user_agent, call.route),
        "user_agent": call.user_agent or None,
        "route": call.route,
        "operation": call.operation,
        "endpoint": call.endpoint,
        "upstream_model": call.upstream_model,
        "status_code": call.status,
        "input_tokens": u.input_tokens if u else None,
        "output_tokens": u.output_tokens if u else None,
        "cache_read_input_tokens": u.cache_read_input_tokens if u else None,
        "cache_creation_input_tokens": u.cache_creation_input_tokens if u else None,
        "reasoning_tokens": u.reasoning_tokens if u else None,
        "latency_ms": call.latency_ms,
        "time_to_first_token_ms": call.first_byte_ms,
        "streamed": call.streamed,
        "priced_model": cost.priced_model if cost else None,
        "input_cost_usd": cost.input if cost else None,
        "output_cost_usd": cost.output if cost else None,
        "cache_read_cost_usd": cost.cache_read if cost else None,
        "cache_write_cost_usd": cost.cache_write if cost else None,
        "estimated_cost_usd": cost.total if cost else None,
        "upstream": call.upstream,
        "attempts": call.attempts or None,
    }
    return pa.RecordBatch.from_pylist([row], schema=load_schema("usage").arrow)


def inference_batch(call: Call, limit: int, redactor: Redactor | None = None) -> pa.RecordBatch:
    """The call's payloads, each cut at ``limit`` bytes, with the credentials ``redactor``
    finds replaced first (in a margin past the limit too, so that none is stored cut in two
    and unrecognisable). A streamed answer in which the model wrote a credential across
    several events, where the stored text cannot show it whole, is withheld."""
    request_bytes = call.request_body[: limit + REDACTION_MARGIN]
    response_bytes = bytes(call.response_body)
    found: Counter[str] = Counter()
    if redactor is not None:
        text, found = redactor.redact(request_bytes.decode("utf-8", "replace"))
        request_bytes = text.encode()
        text, in_response = redactor.redact(response_bytes.decode("utf-8", "replace"))
        response_bytes = text.encode()
        found += in_response
        across = _across_events(redactor, call.streamed_pieces)
        if across:
            response_bytes = _WITHHELD.encode()
            found = found - in_response + across
    request, request_cut = truncate(request_bytes, limit)
    response, response_cut = truncate(response_bytes, limit)
    # Cut before redaction too (the margin): the redacted text's length says nothing of that.
    request_cut = request_cut or len(call.request_body) > limit + REDACTION_MARGIN
    row = {
        "request_id": call.request_id,
        "request_time_unix_nano": call.time_unix_nano,
        "token_name": call.token_name,
        "route": call.route,
        "operation": call.operation,
        "endpoint": call.endpoint,
        "upstream_model": call.upstream_model,
        "status_code": call.status,
        "request_body": request,
        "response_body": response,
        "request_truncated": request_cut,
        "response_truncated": response_cut or call.response_truncated,
        "redactions": sum(found.values()) if redactor is not None else None,
        "redacted_kinds": sorted(found) if redactor is not None else None,
    }
    return pa.RecordBatch.from_pylist([row], schema=load_schema("inference").arrow)


def _across_events(redactor: Redactor, pieces: list[str]) -> Counter[str]:
    """The credentials a stream's events wrote in more than one piece (none of its events
    holds one whole, and the pieces join into it), by kind; empty if there are none."""
    ends = list(accumulate(len(piece) for piece in pieces))
    written = "".join(pieces)
    if not any(
        bisect_right(ends, start) < bisect_left(ends, end)
        for _, start, end in redactor.find(written)
    ):
        return Counter()
    return redactor.redact(written)[1]


# Bytes past the stored limit that are kept and searched: a credential across the cut (a
# private key is up to ~3.3 KB) is found whole and replaced, not stored as a fragment.
REDACTION_MARGIN = 8192
_WITHHELD = "[response withheld: the model wrote a credential across stream events]"
