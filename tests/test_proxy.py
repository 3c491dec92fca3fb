"""The coding-agent proxy, driven by the providers' official SDKs against a real collector
process; the upstream is tests/upstream_stub.py (the providers cannot be reached from tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx  # the HTTP client the SDKs themselves use
import openai
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from collector.auth import add_token
from collector.schema import load_schema
from tests import upstream_stub as up
from tests.conftest import ROOT, CollectorProcess, free_port, wait_for_rows
from tests.readers import duckdb_with_delta, read_both, read_polars

KEYS = {
    "STUB_ANTHROPIC_KEY": "sk-ant-upstream-key",
    "STUB_OPENAI_KEY": "sk-openai-upstream-key",
    "STUB_GEMINI_KEY": "AIza-gemini-upstream-key",
}
USAGE_TABLE = "main.ai_gateway.agents_usage"
INFERENCE_TABLE = "main.ai_gateway.agents_inference"
SPANS_TABLE = "main.ai_gateway.agents_otel_spans"

PROXY_TOML = """
tables = "main.ai_gateway.agents"
max_payload_bytes = "64KiB"
idle_timeout = 30

[upstreams.anthropic]
base_url = "{url}"
api_key_env = "STUB_ANTHROPIC_KEY"

[upstreams.openai]
base_url = "{url}"
api_key_env = "STUB_OPENAI_KEY"

[upstreams.gemini]
base_url = "{url}"
api_key_env = "STUB_GEMINI_KEY"

[upstreams.unreachable]
api = "anthropic"
base_url = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused
api_key_env = "STUB_ANTHROPIC_KEY"

[routes.cursor]
log_payloads = false

[endpoints.databricks-claude-unreachable]
upstream = "unreachable"
model = "claude-opus-4-6"

[endpoints.databricks-claude-opus-4-6]
upstream = "anthropic"
model = "claude-opus-4-6"

[endpoints.databricks-claude-overloaded]
upstream = "anthropic"
model = "claude-overloaded"

[endpoints.databricks-claude-slow]
upstream = "anthropic"
model = "claude-slow"

[endpoints.databricks-claude-leaky]
upstream = "anthropic"
model = "claude-leaky"

[upstreams.anthropic-b]
api = "anthropic"
base_url = "{url}"
api_key_env = "STUB_ANTHROPIC_KEY"

[endpoints.databricks-claude-fallback]
targets = [
  {{ upstream = "unreachable", model = "claude-opus-4-6" }},
  {{ upstream = "anthropic", model = "claude-overloaded" }},
  {{ upstream = "anthropic-b", model = "claude-unavailable" }},
  {{ upstream = "anthropic-b", model = "claude-opus-4-6" }},
]

[endpoints.databricks-claude-broken]
targets = [
  {{ upstream = "anthropic", model = "claude-broken" }},
  {{ upstream = "anthropic-b", model = "claude-opus-4-6" }},
]

[endpoints.databricks-claude-cheap]
upstream = "anthropic"
model = "claude-haiku-4-5"

[budgets.dave-daily]
token = "dave"
daily_usd = 0.0001

[budgets.ops-monthly]
team = "ops"
monthly_usd = 0.0001

[budgets.gina-opus]
token = "gina"
daily_usd = 0.0001
endpoints = "databricks-claude-opus-*"
fallback = "databricks-claude-cheap"

[endpoints.databricks-claude-balanced]
targets = [
  {{ upstream = "anthropic", model = "claude-opus-4-6", weight = 1 }},
  {{ upstream = "anthropic-b", model = "claude-opus-4-6", weight = 1 }},
]

[redaction.patterns]
internal_ticket = "TICKET-[0-9]{{6}}"

[endpoints.databricks-claude-limited]
upstream = "anthropic"
model = "claude-opus-4-6"
requests_per_minute = 2

[endpoints.databricks-gpt-5-2]
upstream = "openai"
model = "gpt-5.2"

[endpoints.databricks-gpt-tpm]
upstream = "openai"
model = "gpt-5.2"
tokens_per_minute = 10

[endpoints.databricks-gemini-2-5-flash]
upstream = "gemini"
model = "gemini-2.5-flash"

[endpoints.databricks-gemini-bad]
upstream = "gemini"
model = "gemini-bad"

[endpoints.databricks-gemini-limited]
upstream = "gemini"
model = "gemini-2.5-flash"
requests_per_minute = 1
"""


@dataclass
class Gateway:
    proc: CollectorProcess
    stub: up.Stub
    alice: str  # endpoint:databricks-*
    bob: str  # a table grant only: may call no endpoint
    carol: str  # endpoint:databricks-claude-*
    budgeted: dict[str, str]  # the tokens of the budget tests, by name

    def url(self, path: str) -> str:
        return self.proc.url(path)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stub = up.Stub()
    stub.start()
    d = tmp_path_factory.mktemp("proxy")
    tokens = d / "tokens.toml"
    alice = add_token(tokens, "alice", ["endpoint:databricks-*"])
    bob = add_token(tokens, "bob", ["main.agents.*"])
    carol = add_token(tokens, "carol", ["endpoint:databricks-claude-*"])
    budgeted = {
        name: add_token(tokens, name, ["endpoint:databricks-*"], team)
        for name, team in (("dave", None), ("erin", "ops"), ("frank", "ops"), ("gina", None))
    }
    config = d / "proxy.toml"
    config.write_text(PROXY_TOML.format(url=stub.url))
    proc = CollectorProcess(
        d / "warehouse", "--proxy-config", str(config), "--tokens-file", str(tokens), env=KEYS
    )
    yield Gateway(proc, stub, alice, bob, carol, budgeted)
    assert proc.stop() == 0
    stub.stop()
    logs = proc.logs()
    for secret in [alice, bob, carol, *budgeted.values(), *KEYS.values()]:
        assert secret not in logs


def agent_ua(agent: str) -> str:
    """A user agent of the agent's shape, unique so that a test finds its own rows."""
    return f"{agent} test-{uuid.uuid4().hex[:12]}"


def rows_of(
    gw: Gateway, table: str, where: Any, count: int = 1, key: str = "request_id"
) -> list[dict[str, Any]]:
    """The rows of ``table`` that ``where`` selects, once there are ``count``, read by polars
    and DuckDB (asserted equal; rows identified by ``key``)."""
    path = gw.proc.table_path(table)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (path / "_delta_log").is_dir() and len(
            [r for r in read_polars(path) if where(r)]
        ) >= count:
            break
        time.sleep(0.1)
    rows = [r for r in read_both(path, key=lambda r: r[key]) if where(r)]
    assert len(rows) == count, sorted(
        (r.get("endpoint", r.get("name")), r.get("token_name"), r.get("status_code")) for r in rows
    )
    return rows


def usage_rows(gw: Gateway, ua: str, count: int = 1) -> list[dict[str, Any]]:
    # Some SDKs add their own name to the user agent we set (google-genai does).
    rows = rows_of(gw, USAGE_TABLE, lambda r: ua in (r["user_agent"] or ""), count)
    for row in rows:
        assert ua in row.pop("user_agent")
        assert len(row.pop("request_id")) == 32
        assert abs(row.pop("request_time_unix_nano") - time.time_ns()) < 60e9
        latency, first = row.pop("latency_ms"), row.pop("time_to_first_token_ms")
        assert latency > 0
        assert first is None or 0 < first <= latency
    return rows


def inference_row(gw: Gateway, ua: str) -> dict[str, Any]:
    (usage,) = rows_of(gw, USAGE_TABLE, lambda r: ua in (r["user_agent"] or ""))
    (row,) = rows_of(gw, INFERENCE_TABLE, lambda r: r["request_id"] == usage["request_id"])
    return row


def usage(
    *,
    agent: str,
    route: str,
    operation: str,
    endpoint: str,
    model: str,
    status: int = 200,
    tokens: tuple[int, int, int, int, int] | None = None,
    streamed: bool = False,
    token_name: str = "alice",
    upstream: str | None = "",
    attempts: int = 1,
) -> dict[str, Any]:
    """A usage row as a call must leave it; ``upstream`` "" is the route's own (the tests'
    upstreams are named after their APIs), None for a call refused before any was tried."""
    names = (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "reasoning_tokens",
    )
    return {
        "token_name": token_name,
        "agent": agent,
        "route": route,
        "operation": operation,
        "endpoint": endpoint,
        "upstream_model": model,
        "status_code": status,
        **dict(zip(names, tokens or (None,) * 5, strict=True)),
        "streamed": streamed,
        **cost(route, model, tokens),
        "upstream": {"cursor": "openai"}.get(route, route) if upstream == "" else upstream,
        "attempts": None if upstream is None else attempts,
    }


def cost(route: str, model: str, tokens: tuple[int, int, int, int, int] | None) -> dict:
    """The cost columns a call's usage row must hold: each kind of token priced by
    genai-prices' own calc_price (OpenAI's and Gemini's input counts its cached part; Gemini
    bills its thoughts as output); all None for a model it does not know or no usage."""
    names = ("input_cost_usd", "output_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd")

    def price(**counts: int) -> float:
        return float(calc_price(PriceUsage(**counts), model_ref=model).total_price)

    try:
        price(input_tokens=1)
    except LookupError:
        tokens = None
    if tokens is None:
        return {"priced_model": None, **dict.fromkeys(names), "estimated_cost_usd": None}
    inp, out, read, write, reasoning = tokens
    uncached = inp - read if route in ("openai", "cursor", "gemini") else inp
    parts = [
        price(input_tokens=uncached),
        price(output_tokens=out + (reasoning if route == "gemini" else 0)),
        price(input_tokens=read, cache_read_tokens=read),
        price(input_tokens=write, cache_write_tokens=write),
    ]
    return {
        "priced_model": model,
        **{n: pytest.approx(v, rel=1e-9, abs=1e-15) for n, v in zip(names, parts, strict=True)},
        "estimated_cost_usd": pytest.approx(sum(parts), rel=1e-9),
    }


def assert_forwarded_with_provider_key(seen: up.Seen, header: str, value: str, caller: str) -> None:
    assert seen.headers[header] == value
    for h in {"authorization", "x-api-key", "x-goog-api-key"} - {header}:
        assert h not in seen.headers
    assert all(caller not in v for v in seen.headers.values())


def claude(gw: Gateway | CollectorProcess, token: str, ua: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gw.url("/anthropic"),
        api_key=None,
        auth_token=token,
        max_retries=0,
        default_headers={"User-Agent": ua},
        **kw,
    )


# --- Anthropic Messages (Claude Code) ---------------------------------------------------------


def test_anthropic_streaming_as_claude_code(gw: Gateway) -> None:
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    client = claude(gw, gw.alice, ua)
    # Claude Code uses the beta surface: /v1/messages?beta=true with anthropic-beta headers.
    with client.beta.messages.stream(
        model="databricks-claude-opus-4-6",
        max_tokens=256,
        messages=[{"role": "user", "content": "Say hello"}],
        betas=["interleaved-thinking-2025-05-14"],
        extra_query={"beta": "true"},  # what Claude Code's TypeScript SDK adds
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == up.ANTHROPIC_TEXT
    assert final.usage.output_tokens == up.ANTHROPIC_OUTPUT_TOKENS
    assert final.usage.cache_read_input_tokens == 100
    seen = gw.stub.requests[-1]
    assert (seen.path, seen.query) == ("/v1/messages", {"beta": "true"})
    assert seen.body["model"] == "claude-opus-4-6"
    assert seen.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert (
        seen.headers["anthropic-version"]
        == anthropic.Anthropic(api_key="x").default_headers["anthropic-version"]
    )
    assert_forwarded_with_provider_key(seen, "x-api-key", KEYS["STUB_ANTHROPIC_KEY"], gw.alice)

    assert usage_rows(gw, ua) == [
        usage(
            agent="claude-code",
            route="anthropic",
            operation="messages",
            endpoint="databricks-claude-opus-4-6",
            model="claude-opus-4-6",
            tokens=(25, 15, 100, 7, 0),
            streamed=True,
        )
    ]
    row = inference_row(gw, ua)
    assert json.loads(row["request_body"])["model"] == "databricks-claude-opus-4-6"
    assert row["response_body"] == b"".join(up.anthropic_events("claude-opus-4-6")).decode()
    assert (row["request_truncated"], row["response_truncated"], row["status_code"]) == (
        False,
        False,
        200,
    )


def test_anthropic_not_streamed_and_count_tokens_with_x_api_key(gw: Gateway) -> None:
    ua = agent_ua("claude-cli/2.1.197 (external, sdk-cli)")
    # ANTHROPIC_API_KEY instead of ANTHROPIC_AUTH_TOKEN: the token arrives as x-api-key.
    client = anthropic.Anthropic(
        base_url=gw.url("/anthropic"),
        api_key=gw.alice,
        max_retries=0,
        default_headers={"User-Agent": ua},
    )
    message = client.messages.create(
        model="databricks-claude-opus-4-6",
        max_tokens=256,
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert message.model_dump(exclude_none=True) == anthropic.types.Message.model_validate(
        up.anthropic_message("claude-opus-4-6")
    ).model_dump(exclude_none=True)
    assert_forwarded_with_provider_key(
        gw.stub.requests[-1], "x-api-key", KEYS["STUB_ANTHROPIC_KEY"], gw.alice
    )
    counted = client.messages.count_tokens(
        model="databricks-claude-opus-4-6", messages=[{"role": "user", "content": "hi"}]
    )
    assert counted.input_tokens == 42
    assert gw.stub.requests[-1].body["model"] == "claude-opus-4-6"
    common = dict(
        agent="claude-code",
        route="anthropic",
        endpoint="databricks-claude-opus-4-6",
        model="claude-opus-4-6",
    )
    rows = sorted(usage_rows(gw, ua, 2), key=lambda r: r["operation"])
    assert rows == [
        usage(operation="count_tokens", **common),
        usage(operation="messages", tokens=(25, 15, 100, 7, 0), **common),
    ]


# --- OpenAI Responses (Codex CLI) and Chat Completions (Cursor) ---------------------------------


def gpt(gw: Gateway, token: str, ua: str, route: str = "openai") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.url(f"/{route}/v1"),
        api_key=token,
        max_retries=0,
        default_headers={"User-Agent": ua, "OpenAI-Beta": "responses=experimental"},
    )


def test_openai_responses_as_codex(gw: Gateway) -> None:
    ua = agent_ua("codex_cli_rs/0.169.0 (Debian 13; x86_64) xterm")
    client = gpt(gw, gw.alice, ua)
    events = list(
        client.responses.create(
            model="databricks-gpt-5-2", input="What is the answer?", stream=True
        )
    )
    assert [e.type for e in events][-1] == "response.completed"
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == up.RESPONSES_TEXT
    assert events[-1].response.usage.model_dump(exclude_none=True) == up.RESPONSES_USAGE
    seen = gw.stub.requests[-1]
    assert (seen.path, seen.body["model"]) == ("/v1/responses", "gpt-5.2")
    assert seen.headers["openai-beta"] == "responses=experimental"
    assert_forwarded_with_provider_key(
        seen, "authorization", f"Bearer {KEYS['STUB_OPENAI_KEY']}", gw.alice
    )

    response = client.responses.create(model="databricks-gpt-5-2", input="Again?")
    assert response.output_text == "".join(up.RESPONSES_TEXT)
    assert response.usage is not None and response.usage.total_tokens == 42
    common = dict(
        agent="codex",
        route="openai",
        operation="responses",
        endpoint="databricks-gpt-5-2",
        model="gpt-5.2",
        tokens=(30, 12, 10, 0, 5),
    )
    rows = sorted(usage_rows(gw, ua, 2), key=lambda r: r["streamed"])
    assert rows == [usage(**common), usage(streamed=True, **common)]


def test_chat_completions_streaming_on_cursor_route_gets_usage(gw: Gateway) -> None:
    ua = agent_ua("Go-http-client/2.0")
    client = gpt(gw, gw.alice, ua, route="cursor")
    chunks = list(
        client.chat.completions.create(
            model="databricks-gpt-5-2",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(up.CHAT_TEXT)
    # The proxy asked for the usage chunk (the client did not), so the caller sees it too.
    assert gw.stub.requests[-1].body["stream_options"] == {"include_usage": True}
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.model_dump(exclude_none=True) == up.CHAT_USAGE
    )
    assert usage_rows(gw, ua) == [
        usage(
            agent="cursor",
            route="cursor",
            operation="chat.completions",
            endpoint="databricks-gpt-5-2",
            model="gpt-5.2",
            tokens=(20, 5, 4, 0, 2),
            streamed=True,
        )
    ]
    # Payload logging is off for the cursor route.
    (row,) = rows_of(gw, USAGE_TABLE, lambda r: ua in r["user_agent"])
    time.sleep(0.5)
    path = gw.proc.table_path(INFERENCE_TABLE)
    assert not [r for r in read_polars(path) if r["request_id"] == row["request_id"]]


def test_chat_completions_not_streamed(gw: Gateway) -> None:
    ua = agent_ua("OpenAI/Python")
    completion = gpt(gw, gw.alice, ua).chat.completions.create(
        model="databricks-gpt-5-2", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.model_dump(
        exclude_none=True
    ) == openai.types.chat.ChatCompletion.model_validate(up.chat_completion("gpt-5.2")).model_dump(
        exclude_none=True
    )
    assert "stream_options" not in gw.stub.requests[-1].body
    assert usage_rows(gw, ua) == [
        usage(
            agent="other",
            route="openai",
            operation="chat.completions",
            endpoint="databricks-gpt-5-2",
            model="gpt-5.2",
            tokens=(20, 5, 4, 0, 2),
        )
    ]
    row = inference_row(gw, ua)
    assert json.loads(row["response_body"]) == up.chat_completion("gpt-5.2")


# --- Gemini (Gemini CLI) ----------------------------------------------------------------------


def gemini(
    gw: Gateway, ua: str, *, bearer: str | None = None, api_key: str = "unused"
) -> genai.Client:
    # GEMINI_API_KEY_AUTH_MECHANISM=bearer makes Gemini CLI send Authorization: Bearer <key>.
    headers = {"User-Agent": ua} | ({"Authorization": f"Bearer {bearer}"} if bearer else {})
    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            base_url=gw.url("/gemini"), api_version="v1beta", headers=headers
        ),
    )


def test_gemini_as_gemini_cli(gw: Gateway) -> None:
    ua = agent_ua("GeminiCLI/0.61.0/gemini-2.5-flash (linux; x64)")
    client = gemini(gw, ua, bearer=gw.alice)
    chunks = list(
        client.models.generate_content_stream(model="databricks-gemini-2-5-flash", contents="Salut")
    )
    assert [c.text for c in chunks] == up.GEMINI_TEXT
    assert chunks[-1].usage_metadata.thoughts_token_count == 6
    seen = gw.stub.requests[-1]
    assert seen.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert seen.query == {"alt": "sse"}
    assert_forwarded_with_provider_key(seen, "x-goog-api-key", KEYS["STUB_GEMINI_KEY"], gw.alice)

    response = client.models.generate_content(model="databricks-gemini-2-5-flash", contents="Salut")
    assert response.text == "".join(up.GEMINI_TEXT)
    assert (
        client.models.count_tokens(model="databricks-gemini-2-5-flash", contents="x").total_tokens
        == 31
    )
    assert gw.stub.requests[-1].path == "/v1beta/models/gemini-2.5-flash:countTokens"
    common = dict(
        agent="gemini-cli",
        route="gemini",
        endpoint="databricks-gemini-2-5-flash",
        model="gemini-2.5-flash",
    )
    rows = sorted(usage_rows(gw, ua, 3), key=lambda r: r["operation"])
    assert rows == [
        usage(operation="countTokens", **common),
        usage(operation="generateContent", tokens=(11, 9, 3, 0, 6), **common),
        usage(operation="streamGenerateContent", tokens=(11, 9, 3, 0, 6), streamed=True, **common),
    ]


def test_gemini_with_x_goog_api_key(gw: Gateway) -> None:
    ua = agent_ua("google-genai-sdk")
    client = gemini(gw, ua, api_key=gw.alice)  # the SDK closes its HTTP client with it
    response = client.models.generate_content(model="databricks-gemini-2-5-flash", contents="Salut")
    assert response.usage_metadata.prompt_token_count == 11
    assert_forwarded_with_provider_key(
        gw.stub.requests[-1], "x-goog-api-key", KEYS["STUB_GEMINI_KEY"], gw.alice
    )


# --- auth, grants, rate limits, errors, disconnects -------------------------------------------


def test_claude_codes_model_picker_lists_the_endpoints_the_token_may_call(gw: Gateway) -> None:
    """GET /anthropic/v1/models in Anthropic's format, paged as the SDK pages it, and one
    model by id; each token sees only the Anthropic endpoints its grants allow."""
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    anthropic_endpoints = sorted(
        n for n in PROXY_TOML.split("[endpoints.")[1:]
        if 'upstream = "anthropic"' in n or 'upstream = "unreachable"' in n
    )  # fmt: skip
    names = [n.split("]")[0] for n in anthropic_endpoints]
    assert len(names) == 10
    listed = list(claude(gw, gw.alice, ua).models.list(limit=2))  # three pages
    assert [m.id for m in listed] == names
    assert {(m.type, m.display_name == m.id) for m in listed} == {("model", True)}
    assert [m.id for m in claude(gw, gw.carol, ua).models.list()] == names
    assert list(claude(gw, gw.bob, ua).models.list()) == []
    page = claude(gw, gw.alice, ua).models.list(limit=2, after_id=names[1])
    assert [m.id for m in page.data] == names[2:4] and page.has_more
    before = claude(gw, gw.alice, ua).models.list(limit=2, before_id=names[3])
    assert [m.id for m in before.data] == names[1:3]
    assert claude(gw, gw.alice, ua).models.retrieve(names[0]).id == names[0]
    with pytest.raises(anthropic.NotFoundError):
        claude(gw, gw.alice, ua).models.retrieve("databricks-gpt-5-2")  # not an Anthropic one
    with pytest.raises(anthropic.AuthenticationError):
        claude(gw, "odc_not-a-token", ua).models.list()


def test_credentials_in_payloads_are_redacted_before_they_are_stored(gw: Gateway) -> None:
    """A prompt holding (fake) keys: the upstream gets it as sent and the agent its answer,
    the inference table the prompt with each key replaced, counted by kind (an extra pattern
    from proxy.toml too). A key the model streams in pieces withholds the stored answer."""
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    secrets = {
        "anthropic_key": "sk-ant-api03-" + "k9" * 20,
        "aws_access_key_id": "AKIA" + "Z3" * 8,
        "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "internal_ticket": "TICKET-204816",
    }
    prompt = (
        f"My .env:\nANTHROPIC_API_KEY={secrets['anthropic_key']}\n"
        f"AWS_ACCESS_KEY_ID={secrets['aws_access_key_id']}\nand {secrets['private_key']}\n"
        f"Why does {secrets['internal_ticket']} fail?"
    )
    reply = claude(gw, gw.alice, ua).messages.create(
        model="databricks-claude-opus-4-6", max_tokens=64,
        messages=[{"role": "user", "content": prompt}],
    )  # fmt: skip
    assert reply.content[0].text == "".join(up.ANTHROPIC_TEXT)
    assert gw.stub.requests[-1].body["messages"][0]["content"] == prompt
    row = inference_row(gw, ua)
    stored = prompt
    for kind, secret in secrets.items():
        stored = stored.replace(secret, f"[REDACTED:{kind}]")
    assert json.loads(row["request_body"])["messages"][0]["content"] == stored
    assert all(secret not in row["request_body"] for secret in secrets.values())
    assert (row["redactions"], row["redacted_kinds"]) == (4, sorted(secrets))

    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    with claude(gw, gw.alice, ua).messages.stream(
        model="databricks-claude-leaky", max_tokens=64,
        messages=[{"role": "user", "content": "What is my key?"}],
    ) as stream:  # fmt: skip
        assert "".join(stream.text_stream) == "".join(up.LEAKY_TEXT)
    row = inference_row(gw, ua)
    assert up.LEAKED_KEY[9:25] not in row["response_body"]
    assert row["response_body"].startswith("[response withheld")
    assert (row["redactions"], row["redacted_kinds"]) == (1, ["anthropic_key"])


def test_a_target_that_fails_before_any_byte_is_relayed_is_retried_on_the_next(
    gw: Gateway,
) -> None:
    """An endpoint's targets in order: refused connections, a 529 and a 503 are retried on the
    next, and the fourth serves; the usage row says which upstream and how many were tried."""
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    seen = len(gw.stub.requests)
    reply = claude(gw, gw.alice, ua).messages.create(
        model="databricks-claude-fallback", max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
    )  # fmt: skip
    assert reply.content[0].text == "".join(up.ANTHROPIC_TEXT)
    tried = [r.body["model"] for r in gw.stub.requests[seen:]]
    assert tried == ["claude-overloaded", "claude-unavailable", "claude-opus-4-6"]
    assert usage_rows(gw, ua) == [
        usage(agent="claude-code", route="anthropic", operation="messages",
              endpoint="databricks-claude-fallback", model="claude-opus-4-6",
              tokens=(25, 15, 100, 7, 0), upstream="anthropic-b", attempts=4)
    ]  # fmt: skip


def test_a_stream_that_fails_after_bytes_were_relayed_is_not_retried(gw: Gateway) -> None:
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    seen = len(gw.stub.requests)
    # The caller's connection is cut as the upstream's was: its client sees a broken answer.
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        with claude(gw, gw.alice, ua).messages.stream(
            model="databricks-claude-broken", max_tokens=64,
            messages=[{"role": "user", "content": "Say hello"}],
        ) as stream:  # fmt: skip
            list(stream.text_stream)
    assert [r.body["model"] for r in gw.stub.requests[seen:]] == ["claude-broken"]
    (row,) = usage_rows(gw, ua)
    assert (row["status_code"], row["upstream"], row["attempts"], row["upstream_model"]) == (
        502, "anthropic", 1, "claude-broken",
    )  # fmt: skip


def test_weighted_targets_share_the_calls(gw: Gateway) -> None:
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    for _ in range(24):
        claude(gw, gw.alice, ua).messages.create(
            model="databricks-claude-balanced", max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
        )  # fmt: skip
    served = Counter(r["upstream"] for r in usage_rows(gw, ua, 24))
    assert set(served) == {"anthropic", "anthropic-b"} and sum(served.values()) == 24
    assert all(r["attempts"] == 1 for r in usage_rows(gw, ua, 24))


def hello(gw: Gateway, token: str, model: str = "databricks-claude-opus-4-6") -> Any:
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    return claude(gw, token, ua).messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )


def test_a_token_over_its_daily_budget_is_refused_in_each_providers_format(gw: Gateway) -> None:
    """The first call spends more than dave's $0.0001 a day; every next call, on any route,
    is a 429 in its provider's format that names the budget and when it resets."""
    dave = gw.budgeted["dave"]
    assert hello(gw, dave).content[0].text == "".join(up.ANTHROPIC_TEXT)
    tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 86_400))
    said = f"daily budget 'dave-daily' of $0.0001 for token 'dave' is spent ($0.000594); it resets at {tomorrow}"
    with pytest.raises(anthropic.RateLimitError) as refused:
        hello(gw, dave)
    assert refused.value.body["error"] == {"type": "rate_limit_error", "message": said}
    wait = float(refused.value.response.headers["Retry-After"])
    assert 0 < wait <= 86_400
    # The SDKs' retries (two by default) are called off: x-should-retry.
    ua = agent_ua("codex_cli_rs/0.171.0")
    codex = openai.OpenAI(base_url=gw.url("/openai/v1"), api_key=dave,
                          default_headers={"User-Agent": ua})  # fmt: skip
    with pytest.raises(openai.RateLimitError) as refused_openai:
        codex.responses.create(model="databricks-gpt-5-2", input="hi")
    midnight = time.mktime(time.strptime(tomorrow, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    # Codex stops at a usage-limit error and shows the promo header's text with it.
    assert refused_openai.value.body == {  # type: ignore[comparison-overlap]
        "message": said, "type": "usage_limit_reached", "param": None,
        "code": "budget_exceeded", "resets_at": int(midnight),
    }  # fmt: skip
    headers = refused_openai.value.response.headers
    assert (headers["x-should-retry"], headers["x-codex-promo-message"]) == ("false", said)
    assert [r["status_code"] for r in usage_rows(gw, ua)] == [429]
    gemini = genai.Client(api_key=dave, http_options=types.HttpOptions(
        base_url=gw.url("/gemini"), headers={"Authorization": f"Bearer {dave}"}))  # fmt: skip
    with pytest.raises(genai_errors.ClientError) as refused_gemini:
        gemini.models.generate_content(model="databricks-gemini-2-5-flash", contents="hi")
    assert refused_gemini.value.code == 429 and said in str(refused_gemini.value)


def test_a_team_budget_counts_every_token_of_the_team(gw: Gateway) -> None:
    erin, frank = gw.budgeted["erin"], gw.budgeted["frank"]
    hello(gw, erin)  # spends the team's month
    with pytest.raises(anthropic.RateLimitError, match=r"budget 'ops-monthly' .* for team 'ops'"):
        hello(gw, frank)


def test_a_spent_budget_with_a_fallback_moves_the_call_to_the_cheaper_endpoint(
    gw: Gateway,
) -> None:
    gina = gw.budgeted["gina"]
    assert hello(gw, gina).model == "claude-opus-4-6"
    moved = hello(gw, gina)  # gina's opus budget is spent: haiku answers instead
    assert moved.model == "claude-haiku-4-5" and moved.content[0].text == "".join(up.ANTHROPIC_TEXT)
    assert gw.stub.requests[-1].body["model"] == "claude-haiku-4-5"
    assert hello(gw, gina, "databricks-claude-cheap").model == "claude-haiku-4-5"  # no budget


# --- A span per call (OpenTelemetry GenAI semantic conventions) --------------------------------


def call_of(gw: Gateway, ua: str) -> dict[str, Any]:
    """The call's usage row, and its span as it must be from it (the parts every span has)."""
    (row,) = rows_of(gw, USAGE_TABLE, lambda r: ua in (r["user_agent"] or ""))
    (span,) = rows_of(
        gw, SPANS_TABLE,
        lambda r: r["attributes"].get("gateway.request_id") == row["request_id"], key="span_id",
    )  # fmt: skip
    assert len(span["span_id"]) == 16 and span["span_id"] != "0" * 16
    assert span.pop("start_time_unix_nano") == row["request_time_unix_nano"]
    assert span.pop("end_time_unix_nano") - row["request_time_unix_nano"] == pytest.approx(
        row["latency_ms"] * 1e6, abs=1
    )
    cost = span["attributes"].pop("gateway.estimated_cost_usd", None)
    if row["estimated_cost_usd"] is None:
        assert cost is None
    else:
        assert float(cost) == pytest.approx(row["estimated_cost_usd"], rel=1e-12)
    assert span.pop("resource") == {
        "attributes": {"service.name": "otlp-delta-collector", "service.version": "0.1.0"},
        "dropped_attributes_count": 0,
    }
    assert span.pop("instrumentation_scope") == {
        "name": "collector.proxy", "version": "0.1.0", "attributes": {},
        "dropped_attributes_count": 0,
    }  # fmt: skip
    for name in ("dropped_attributes_count", "dropped_events_count", "dropped_links_count"):
        assert span.pop(name) == 0
    assert (span.pop("links"), span.pop("resource_schema_url"), span.pop("span_schema_url")) == (
        [], "", "",
    )  # fmt: skip
    return {"usage": row, "span": span}


def gateway_attributes(usage: dict[str, Any], **extra: str) -> dict[str, str]:
    """The span attributes that repeat the call's usage row."""
    return {
        "gateway.request_id": usage["request_id"],
        "gateway.route": usage["route"],
        "gateway.agent": usage["agent"],
        "gateway.token": usage["token_name"],
        "gateway.endpoint": usage["endpoint"],
        "gateway.upstream": usage["upstream"],
        "gateway.attempts": str(usage["attempts"]),
        "http.response.status_code": str(usage["status_code"]),
        "user_agent.original": usage["user_agent"],
        **extra,
    }


def stub_address(gw: Gateway) -> dict[str, str]:
    host, port = gw.stub.url.removeprefix("http://").split(":")
    return {"server.address": host, "server.port": port}


def test_each_call_is_a_span_in_the_callers_trace(gw: Gateway) -> None:
    """An agent's own span (the OTel SDK's, exported to the collector) is the parent of the
    proxy's span of the model call it made: same trace, joined by traceparent."""
    exporter = http_traces.OTLPSpanExporter(
        endpoint=gw.url("/v1/traces"),
        headers={"Authorization": f"Bearer {gw.bob}",
                 "X-Databricks-UC-Table-Name": "main.agents.claude_otel_spans"},
    )  # fmt: skip
    provider = TracerProvider(resource=Resource({"service.name": "claude-code"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    session = str(uuid.uuid4())
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    with provider.get_tracer("claude-code").start_as_current_span("claude_code.turn") as turn:
        headers = {"X-Claude-Code-Session-Id": session}
        TraceContextTextMapPropagator().inject(headers)
        headers["tracestate"] = "claude=turn-3"
        with claude(gw, gw.alice, ua).beta.messages.stream(
            model="databricks-claude-opus-4-6", max_tokens=256, extra_body={"temperature": 0.5},
            messages=[{"role": "user", "content": "Say hello"}], extra_headers=headers,
        ) as stream:  # fmt: skip
            list(stream.text_stream)
    provider.shutdown()
    trace_id = f"{turn.get_span_context().trace_id:032x}"
    turn_id = f"{turn.get_span_context().span_id:016x}"
    assert "traceparent" not in gw.stub.requests[-1].headers  # the provider is not told

    call = call_of(gw, ua)
    span, row = call["span"], call["usage"]
    assert span == {
        "trace_id": trace_id,
        "span_id": span["span_id"],
        "trace_state": "claude=turn-3",
        "parent_span_id": turn_id,
        # the caller's trace flags (sampled, random), and its parent is remote (bits 8, 9)
        "flags": 0x300 | turn.get_span_context().trace_flags,
        "name": "chat claude-opus-4-6",
        "kind": "SPAN_KIND_CLIENT",
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-opus-4-6",
            "gen_ai.request.max_tokens": "256",
            "gen_ai.request.temperature": "0.5",
            "gen_ai.request.stream": "true",
            "gen_ai.response.id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "gen_ai.response.model": "claude-opus-4-6",
            "gen_ai.response.finish_reasons": '["end_turn"]',
            "gen_ai.conversation.id": session,
            "session.id": session,
            **stub_address(gw),
            # all the input, cached or not: 25 + 100 read + 7 written
            "gen_ai.usage.input_tokens": "132",
            "gen_ai.usage.output_tokens": "15",
            "gen_ai.usage.cache_read.input_tokens": "100",
            "gen_ai.usage.cache_creation.input_tokens": "7",
            "gen_ai.usage.reasoning.output_tokens": "0",
            **gateway_attributes(row),
        },
        "events": [],
        "status": {"message": "", "code": "STATUS_CODE_UNSET"},
    }
    # The join, as a reader of both tables does it.
    agent_spans = gw.proc.table_path("main.agents.claude_otel_spans")
    wait_for_rows(agent_spans, 1)
    con = duckdb_with_delta()
    joined = con.execute(
        f"SELECT a.name, p.name, p.attributes['gen_ai.usage.output_tokens'] "
        f"FROM delta_scan('{agent_spans}') a JOIN delta_scan('{gw.proc.table_path(SPANS_TABLE)}') p "
        "ON p.trace_id = a.trace_id AND p.parent_span_id = a.span_id WHERE a.span_id = ?",
        [turn_id],
    ).fetchall()
    assert joined == [("claude_code.turn", "chat claude-opus-4-6", "15")]


def test_spans_of_codex_and_gemini_calls(gw: Gateway) -> None:
    """Without traceparent a call's span starts a trace of its own; Codex's session_id header
    is its conversation; Gemini's options are read from its generationConfig."""
    ua = agent_ua("codex_cli_rs/0.169.0 (Debian 13; x86_64) xterm")
    session = str(uuid.uuid4())
    gpt(gw, gw.alice, ua).responses.create(
        model="databricks-gpt-5-2", input="What is the answer?", max_output_tokens=300,
        extra_headers={"session_id": session},
    )  # fmt: skip
    call = call_of(gw, ua)
    span, row = call["span"], call["usage"]
    assert len(span.pop("trace_id")) == 32 and span.pop("span_id")
    assert span == {
        "trace_state": "",
        "parent_span_id": None,
        "flags": 0x101,
        "name": "chat gpt-5.2",
        "kind": "SPAN_KIND_CLIENT",
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-5.2",
            "gen_ai.request.max_tokens": "300",
            "gen_ai.request.stream": "false",
            "gen_ai.response.id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
            "gen_ai.response.model": "gpt-5.2",
            "gen_ai.response.finish_reasons": '["completed"]',
            "gen_ai.conversation.id": session,
            "session.id": session,
            **stub_address(gw),
            "gen_ai.usage.input_tokens": "30",  # OpenAI's input holds its 10 cached
            "gen_ai.usage.output_tokens": "12",  # and its output its 5 of reasoning
            "gen_ai.usage.cache_read.input_tokens": "10",
            "gen_ai.usage.cache_creation.input_tokens": "0",
            "gen_ai.usage.reasoning.output_tokens": "5",
            **gateway_attributes(row),
        },
        "events": [],
        "status": {"message": "", "code": "STATUS_CODE_UNSET"},
    }

    ua = agent_ua("GeminiCLI/0.61.0/gemini-2.5-flash (linux; x64)")
    client = gemini(gw, ua, bearer=gw.alice)  # held: the SDK closes its client with it
    list(client.models.generate_content_stream(
        model="databricks-gemini-2-5-flash", contents="Salut",
        config=types.GenerateContentConfig(max_output_tokens=100, temperature=0.2, top_p=0.9),
    ))  # fmt: skip
    span, row = (call := call_of(gw, ua))["span"], call["usage"]
    assert (span["name"], span["parent_span_id"], span["status"]["code"]) == (
        "generate_content gemini-2.5-flash", None, "STATUS_CODE_UNSET",
    )  # fmt: skip
    assert span["attributes"] == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-flash",
        "gen_ai.request.max_tokens": "100",
        "gen_ai.request.temperature": "0.2",
        "gen_ai.request.top_p": "0.9",
        "gen_ai.request.stream": "true",
        "gen_ai.response.id": "mJ4-aKWKJ5-Mz7IPhKvN0QU",
        "gen_ai.response.model": "gemini-2.5-flash",
        "gen_ai.response.finish_reasons": '["STOP"]',
        **stub_address(gw),
        "gen_ai.usage.input_tokens": "11",
        "gen_ai.usage.output_tokens": "15",  # 9 of answer, 6 of thoughts (billed as output)
        "gen_ai.usage.cache_read.input_tokens": "3",
        "gen_ai.usage.cache_creation.input_tokens": "0",
        "gen_ai.usage.reasoning.output_tokens": "6",
        **gateway_attributes(row),
    }


def test_spans_of_failed_calls_say_what_failed(gw: Gateway) -> None:
    """error.type is the provider's error (or the proxy's own refusal's) in its own words, or
    what kept the upstream from answering; targets that failed before one served are events."""
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    client = claude(gw, gw.alice, ua)
    client.messages.create(
        model="databricks-claude-fallback", max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
    )  # fmt: skip
    span = call_of(gw, ua)["span"]
    assert [(e["name"], e["attributes"]) for e in span["events"]] == [
        ("gateway.upstream_failed",
         {"gateway.upstream": "unreachable", "error.type": "ClientConnectorError"}),
        ("gateway.upstream_failed", {"gateway.upstream": "anthropic", "error.type": "529"}),
        ("gateway.upstream_failed", {"gateway.upstream": "anthropic-b", "error.type": "503"}),
    ]  # fmt: skip
    assert span["events"][0]["time_unix_nano"] <= span["events"][2]["time_unix_nano"]
    assert (span["attributes"]["gateway.attempts"], span["status"]["code"]) == (
        "4",
        "STATUS_CODE_UNSET",
    )

    def failed(endpoint: str, token: str) -> dict[str, Any]:
        ua = agent_ua("claude-cli/2.1.197 (external, cli)")
        with pytest.raises(anthropic.APIStatusError):
            claude(gw, token, ua).messages.create(
                model=endpoint, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            )
        span = call_of(gw, ua)["span"]
        return {
            "name": span["name"],
            "error.type": span["attributes"].get("error.type"),
            "status": span["attributes"].get("http.response.status_code"),
            "message": span["status"]["message"],
            "code": span["status"]["code"],
        }

    assert failed("databricks-claude-overloaded", gw.alice) == {
        "name": "chat claude-overloaded", "error.type": "overloaded_error", "status": "529",
        "message": "Overloaded", "code": "STATUS_CODE_ERROR",
    }  # fmt: skip
    assert failed("databricks-claude-unreachable", gw.alice) == {
        "name": "chat claude-opus-4-6", "error.type": "ClientConnectorError", "status": "502",
        "message": "upstream unreachable unreachable: ClientConnectorError",
        "code": "STATUS_CODE_ERROR",
    }  # fmt: skip
    assert failed("databricks-gpt-5-2", gw.carol) == {  # not among carol's grants
        "name": "chat", "error.type": "permission_error", "status": "403",
        "message": "token 'carol' may not call endpoint 'databricks-gpt-5-2'",
        "code": "STATUS_CODE_ERROR",
    }  # fmt: skip


def test_span_export_retries_while_the_endpoint_is_down_and_never_holds_up_calls(
    tmp_path: Path,
) -> None:
    """The traces endpoint is another collector. Down when the call is made: the export retries
    until it is up, and the span lands there as in the proxy's own table. Down for good: the
    call is not held up, and the span is dropped after its tries, counted on /metrics."""
    stub = up.Stub()
    stub.start()
    receiver_ports = (free_port(), free_port())
    config = tmp_path / "proxy.toml"
    config.write_text(
        PROXY_TOML.format(url=stub.url) + "\n[traces]\n"
        f'export_url = "http://127.0.0.1:{receiver_ports[0]}/v1/traces"\n'
        'export_headers = { "X-Databricks-UC-Table-Name" = "main.traces.gateway_otel_spans" }\n'
    )
    proc = CollectorProcess(tmp_path / "proxy", "--proxy-config", str(config), env=KEYS)
    body = {"model": "databricks-claude-opus-4-6", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip

    def call() -> None:
        answer = httpx.post(proc.url("/anthropic/v1/messages"), json=body, timeout=30,
                            headers={"anthropic-version": "2023-06-01"})  # fmt: skip
        assert answer.status_code == 200

    def metric(name: str) -> float:
        text = httpx.get(proc.url("/metrics")).text
        values = [line.split()[-1] for line in text.splitlines() if line.startswith(name)]
        return float(values[0]) if values else 0.0

    receiver = None
    try:
        call()
        time.sleep(1.5)  # the batch's second, and a first refused try
        receiver = CollectorProcess(tmp_path / "receiver", ports=receiver_ports)
        landed = receiver.table_path("main.traces.gateway_otel_spans")
        wait_for_rows(landed, 1)
        own = proc.table_path(SPANS_TABLE)
        wait_for_rows(own, 1)
        assert read_both(landed, key=lambda r: r["span_id"]) == read_both(
            own, key=lambda r: r["span_id"]
        )
        assert metric("otlp_delta_proxy_spans_exported_total") == 1
        assert receiver.stop() == 0
        receiver = None
        call()
        # Answered while the export of its span has yet to give up: the call did not wait.
        assert metric("otlp_delta_proxy_spans_dropped_total") == 0
        deadline = time.monotonic() + 30  # 1 s of batching, then 5 tries over 7.5 s
        while metric("otlp_delta_proxy_spans_dropped_total") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert metric("otlp_delta_proxy_spans_exported_total") == 1
        wait_for_rows(own, 2)
    finally:
        if receiver is not None:
            receiver.stop()
        assert proc.stop() == 0
        stub.stop()
    dropped = [
        json.loads(line) for line in proc.logs().splitlines() if "spans not exported" in line
    ]
    assert [(d["spans"], d["reason"]) for d in dropped] == [(1, "ClientConnectorError")]


def test_unknown_token_is_401_in_each_providers_format(gw: Gateway) -> None:
    ua = agent_ua("test")
    with pytest.raises(anthropic.AuthenticationError) as a:
        claude(gw, "not-a-token", ua).messages.create(
            model="databricks-claude-opus-4-6",
            max_tokens=1,
            messages=[{"role": "user", "content": "x"}],
        )
    assert a.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "unknown bearer token"},
    }
    with pytest.raises(openai.AuthenticationError) as o:
        gpt(gw, "not-a-token", ua).responses.create(model="databricks-gpt-5-2", input="x")
    assert o.value.response.json() == {
        "error": {
            "message": "unknown bearer token",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    g_client = gemini(gw, ua, bearer="not-a-token")  # kept: it closes its HTTP client when freed
    with pytest.raises(genai_errors.ClientError) as g:
        g_client.models.generate_content(model="databricks-gemini-2-5-flash", contents="x")
    assert (g.value.code, g.value.status) == (401, "UNAUTHENTICATED")
    no_token = httpx.post(gw.url("/openai/v1/responses"), json={"model": "databricks-gpt-5-2"})
    assert no_token.status_code == 401
    assert no_token.json()["error"]["code"] == "invalid_api_key"


def test_endpoint_grants_are_403_in_each_providers_format(gw: Gateway) -> None:
    ua = agent_ua("test")
    with pytest.raises(anthropic.PermissionDeniedError) as a:
        claude(gw, gw.bob, ua).messages.create(
            model="databricks-claude-opus-4-6",
            max_tokens=1,
            messages=[{"role": "user", "content": "x"}],
        )
    assert a.value.body == {
        "type": "error",
        "error": {
            "type": "permission_error",
            "message": "token 'bob' may not call endpoint 'databricks-claude-opus-4-6'",
        },
    }
    # carol's grant endpoint:databricks-claude-* covers Claude and nothing else.
    claude(gw, gw.carol, ua).messages.create(
        model="databricks-claude-opus-4-6",
        max_tokens=1,
        messages=[{"role": "user", "content": "x"}],
    )
    with pytest.raises(openai.PermissionDeniedError) as o:
        gpt(gw, gw.carol, ua).chat.completions.create(
            model="databricks-gpt-5-2", messages=[{"role": "user", "content": "x"}]
        )
    assert o.value.response.json()["error"] == {
        "message": "token 'carol' may not call endpoint 'databricks-gpt-5-2'",
        "type": "permission_error",
        "param": None,
        "code": "permission_denied",
    }
    g_client = gemini(gw, ua, bearer=gw.carol)  # kept: it closes its HTTP client when freed
    with pytest.raises(genai_errors.ClientError) as g:
        g_client.models.generate_content(model="databricks-gemini-2-5-flash", contents="x")
    assert (g.value.code, g.value.status) == (403, "PERMISSION_DENIED")
    statuses = sorted((r["token_name"], r["status_code"]) for r in usage_rows(gw, ua, 4))
    assert statuses == [("bob", 403), ("carol", 200), ("carol", 403), ("carol", 403)]


def test_rate_limits_are_429_with_retry_after(gw: Gateway) -> None:
    ua = agent_ua("test")
    client = claude(gw, gw.alice, ua)
    ask = dict(max_tokens=1, messages=[{"role": "user", "content": "x"}])
    for _ in range(2):
        client.messages.create(model="databricks-claude-limited", **ask)
    with pytest.raises(anthropic.RateLimitError) as a:
        client.messages.create(model="databricks-claude-limited", **ask)
    assert 1 <= int(a.value.response.headers["Retry-After"]) <= 60
    assert a.value.body["error"]["type"] == "rate_limit_error"
    # Per token: carol still has her own two requests.
    claude(gw, gw.carol, ua).messages.create(model="databricks-claude-limited", **ask)

    # Tokens per minute: the first call's 42 tokens use up the 10 a minute.
    openai_client = gpt(gw, gw.alice, ua)
    openai_client.responses.create(model="databricks-gpt-tpm", input="x")
    with pytest.raises(openai.RateLimitError) as o:
        openai_client.responses.create(model="databricks-gpt-tpm", input="x")
    assert int(o.value.response.headers["Retry-After"]) >= 1
    assert o.value.response.json()["error"]["code"] == "rate_limit_exceeded"

    g_client = gemini(gw, ua, bearer=gw.alice)
    g_client.models.generate_content(model="databricks-gemini-limited", contents="x")
    with pytest.raises(genai_errors.ClientError) as g:
        g_client.models.generate_content(model="databricks-gemini-limited", contents="x")
    assert (g.value.code, g.value.status) == (429, "RESOURCE_EXHAUSTED")
    (detail,) = g.value.details["error"]["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert detail["retryDelay"].endswith("s")
    codes = sorted(r["status_code"] for r in usage_rows(gw, ua, 8))
    assert codes == [200] * 5 + [429] * 3


def test_upstream_errors_are_relayed_as_sent(gw: Gateway) -> None:
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    with pytest.raises(anthropic.APIStatusError) as a:
        claude(gw, gw.alice, ua).messages.create(
            model="databricks-claude-overloaded",
            max_tokens=1,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
    assert a.value.status_code == 529
    assert a.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert a.value.response.headers["request-id"] == "req_overloaded"
    assert usage_rows(gw, ua) == [
        usage(
            agent="claude-code",
            route="anthropic",
            operation="messages",
            endpoint="databricks-claude-overloaded",
            model="claude-overloaded",
            status=529,
        )
    ]
    g_client = gemini(gw, ua, bearer=gw.alice)  # kept: it closes its HTTP client when freed
    with pytest.raises(genai_errors.ClientError) as g:
        g_client.models.generate_content(model="databricks-gemini-bad", contents="x")
    assert (g.value.code, g.value.message) == (400, "Invalid JSON payload received.")


def test_unreachable_upstream_is_502_in_the_providers_format(gw: Gateway) -> None:
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    client = claude(gw, gw.alice, ua).with_options(max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(
            model="databricks-claude-unreachable",
            max_tokens=1,
            messages=[{"role": "user", "content": "x"}],
        )
    assert e.value.status_code == 502
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "api_error"
    assert "upstream" in e.value.body["error"]["message"]
    assert usage_rows(gw, ua) == [
        usage(
            agent="claude-code",
            route="anthropic",
            operation="messages",
            endpoint="databricks-claude-unreachable",
            model="claude-opus-4-6",
            status=502,
            upstream="unreachable",
        )
    ]


def test_client_disconnect_cancels_the_upstream_stream(gw: Gateway) -> None:
    ua = agent_ua("claude-cli/2.1.197 (external, cli)")
    client = claude(gw, gw.alice, ua)
    with client.messages.stream(
        model="databricks-claude-slow", max_tokens=1, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    deadline = time.monotonic() + 5
    while "claude-slow" not in gw.stub.cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "claude-slow" in gw.stub.cancelled
    (row,) = usage_rows(gw, ua)
    assert (row["status_code"], row["streamed"], row["input_tokens"]) == (499, True, 25)


def test_first_byte_latency_added_by_the_proxy(gw: Gateway) -> None:
    """Time to the first SSE byte through the proxy against straight from the stub."""
    body = {
        "model": "claude-opus-4-6",
        "max_tokens": 1,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }

    def first_byte(url: str, headers: dict[str, str], model: str) -> float:
        with httpx.Client() as http:
            best = float("inf")
            for _ in range(10):
                started = time.perf_counter()
                with http.stream("POST", url, json=body | {"model": model}, headers=headers) as r:
                    chunks = r.iter_raw()
                    next(chunks)
                    best = min(best, time.perf_counter() - started)
                    for _ in chunks:
                        pass
            return best

    direct = first_byte(gw.stub.url + "/v1/messages", {}, "claude-opus-4-6")
    proxied = first_byte(
        gw.url("/anthropic/v1/messages"),
        {"Authorization": f"Bearer {gw.alice}", "anthropic-version": "2023-06-01"},
        "databricks-claude-opus-4-6",
    )
    print(f"first byte: direct {direct * 1000:.2f} ms, through the proxy {proxied * 1000:.2f} ms")
    assert proxied - direct < 0.05


# The columns usage.sql gained after its first version (the estimated cost of each call).
COST_COLUMNS = ("priced_model", "input_cost_usd", "output_cost_usd", "cache_read_cost_usd",
                "cache_write_cost_usd", "estimated_cost_usd")  # fmt: skip
LATER_COLUMNS = (*COST_COLUMNS, "upstream", "attempts")  # and who served


def test_a_usage_table_from_before_the_cost_columns_gains_them_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    """A usage table an earlier version made (today's DDL without the cost columns), with
    rows: two workers starting on it add the columns in place (no file rewritten, nothing
    refused), the old rows read them as null and the new call's row has its cost."""
    schema = load_schema("usage")
    old = pa.schema([f for f in schema.arrow if f.name not in LATER_COLUMNS])
    path = tmp_path / "warehouse" / "main" / "ai_gateway" / "agents_usage"
    rows = [
        {"request_id": f"{i:032x}", "request_time_unix_nano": 1_700_000_000_000_000_000 + i,
         "token_name": "alice", "agent": "claude-code", "user_agent": "claude-cli/2.0.1",
         "route": "anthropic", "operation": "messages", "endpoint": "databricks-claude-opus-4-6",
         "upstream_model": "claude-opus-4-6", "status_code": 200, "input_tokens": 10 + i,
         "output_tokens": 5 * i, "cache_read_input_tokens": i, "cache_creation_input_tokens": 0,
         "reasoning_tokens": None, "latency_ms": 120.5 + i, "time_to_first_token_ms": 80.25,
         "streamed": bool(i % 2)}
        for i in range(3)
    ]  # fmt: skip
    table = DeltaTable.create(str(path), schema=old, configuration=schema.properties,
                              raise_if_key_not_exists=False)  # fmt: skip
    write_deltalake(table, pa.Table.from_pylist(rows, schema=old), mode="append")
    (old_file,) = DeltaTable(str(path)).file_uris()

    stub = up.Stub()
    stub.start()
    tokens = tmp_path / "tokens.toml"
    alice = add_token(tokens, "alice", ["endpoint:databricks-*"])
    reader = add_token(tokens, "reader", ["read:main.ai_gateway.*"])
    config = tmp_path / "proxy.toml"
    config.write_text(PROXY_TOML.format(url=stub.url))
    proc = CollectorProcess(tmp_path / "warehouse", "--proxy-config", str(config),
                            "--tokens-file", str(tokens), "--workers", "2", env=KEYS)  # fmt: skip
    try:
        ua = agent_ua("claude-cli/2.1.197 (external, cli)")
        for _ in range(4):  # over the two workers
            claude(proc, alice, ua).messages.create(
                model="databricks-claude-opus-4-6", max_tokens=64,
                messages=[{"role": "user", "content": "Say hello"}],
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while len(read_polars(path)) < 7:
            assert time.monotonic() < deadline, "the calls' rows did not land"
            time.sleep(0.2)
        got = sorted(read_both(path, key=lambda r: r["request_id"]),
                     key=lambda r: r["request_time_unix_nano"])  # fmt: skip
        # The dashboard reads the table's files of both shapes: the old rows priced by its
        # own estimate, the new ones by the cost the proxy stored.
        answer = httpx.get(proc.url("/dashboard/api/gateway"),
                           headers={"Authorization": f"Bearer {reader}"}, timeout=60)  # fmt: skip
        assert answer.status_code == 200, answer.text
        (endpoint,) = answer.json()["endpoints"]
    finally:
        assert proc.stop() == 0
        stub.stop()
    dt = DeltaTable(str(path))
    assert [f.name for f in dt.schema().fields] == [*old.names, *LATER_COLUMNS]
    assert old_file in dt.file_uris()  # added in place: the old rows' file is the same file
    assert got[:3] == [{**r, **dict.fromkeys(LATER_COLUMNS)} for r in rows]
    for row in got[3:]:
        tokens_of = tuple(row[k] for k in ("input_tokens", "output_tokens",
                                           "cache_read_input_tokens",
                                           "cache_creation_input_tokens", "reasoning_tokens"))  # fmt: skip
        assert {k: row[k] for k in COST_COLUMNS} == {
            k: v for k, v in cost("anthropic", "claude-opus-4-6", tokens_of).items()
        }
        assert row["estimated_cost_usd"] > 0
        assert (row["upstream"], row["attempts"]) == ("anthropic", 1)
    assert (endpoint["endpoint"], endpoint["requests"]) == ("databricks-claude-opus-4-6", 7)
    every = [
        cost("anthropic", "claude-opus-4-6", (r["input_tokens"], r["output_tokens"],
             r["cache_read_input_tokens"], r["cache_creation_input_tokens"], 0))
        for r in got
    ]  # fmt: skip
    assert endpoint["estimated_cost_usd"] == pytest.approx(
        sum(c["estimated_cost_usd"].expected for c in every), rel=1e-9
    )
    added = [line for line in proc.logs().splitlines() if "table gained columns" in line]
    assert len(added) == 1 and all(c in added[0] for c in LATER_COLUMNS)


def gateway_files(
    tmp_path: Path, stub: up.Stub, extra: str = "", head: str = ""
) -> tuple[Path, Path, str]:
    """The tests' proxy.toml (``head`` + PROXY_TOML + ``extra``) and a tokens file holding
    alice's token, for a test's own collector: (config, tokens file, alice's token)."""
    tokens = tmp_path / "tokens.toml"
    alice = add_token(tokens, "alice", ["endpoint:databricks-*"])
    config = tmp_path / "proxy.toml"
    config.write_text(head + PROXY_TOML.format(url=stub.url) + extra)
    return config, tokens, alice


def all_workers_started(proc: CollectorProcess, workers: int = 2) -> None:
    """CollectorProcess waits for one worker; a test of several waits for them all to listen."""
    deadline = time.monotonic() + 60
    while proc.logs().count('"collector started"') < workers:
        assert time.monotonic() < deadline, "the workers did not all start"
        time.sleep(0.1)


def test_rate_limits_hold_across_two_workers(tmp_path: Path) -> None:
    """Requests and tokens per minute are counted in the host's shared state: 20 calls at once
    on fresh connections, spread by the kernel over two workers, get exactly the 5 the limit
    allows; tokens one worker recorded refuse the next call on either; and 20 calls at once
    whose prompts' estimate alone fills a token limit get exactly one through."""
    stub = up.Stub()
    stub.start()
    config, tokens, alice = gateway_files(
        tmp_path, stub,
        '\n[endpoints.databricks-claude-five]\nupstream = "anthropic"\n'
        'model = "claude-opus-4-6"\nrequests_per_minute = 5\n'
        '\n[endpoints.databricks-claude-250-tokens]\nupstream = "anthropic"\n'
        'model = "claude-opus-4-6"\ntokens_per_minute = 250\n'
        '\n[endpoints.databricks-claude-80-tokens]\nupstream = "anthropic"\n'
        'model = "claude-opus-4-6"\ntokens_per_minute = 80\n',
    )  # fmt: skip
    proc = CollectorProcess(tmp_path / "warehouse", "--proxy-config", str(config),
                            "--tokens-file", str(tokens), "--workers", "2", env=KEYS)  # fmt: skip
    all_workers_started(proc)
    body = {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

    def call(model: str, prompt: str = "hi") -> int:
        with httpx.Client(timeout=30) as client:  # a connection of its own
            messages = [{"role": "user", "content": prompt}]
            response = client.post(
                proc.url("/anthropic/v1/messages"), json={**body, "model": model, "messages": messages},
                headers={"Authorization": f"Bearer {alice}", "anthropic-version": "2023-06-01"},
            )  # fmt: skip
            return response.status_code

    try:
        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(call, ["databricks-claude-five"] * 20))
        assert sorted(statuses) == [200] * 5 + [429] * 15
        # Each non-streamed answer counts 147 tokens (the stub's 25 input, 15 output, 100
        # cache-read and 7 cache-write): two calls fit under 250 a minute, the third is
        # refused, wherever each lands.
        assert [call("databricks-claude-250-tokens") for _ in range(3)] == [200, 200, 429]
        # A prompt of ~330 bytes is estimated at 80+ tokens: the first call admitted reserves
        # the whole limit, and the 19 others at once are refused while it is in flight.
        prompt = "Refactor the parser so that each token carries its line and column. " * 4
        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(call, ["databricks-claude-80-tokens"] * 20, [prompt] * 20))
        assert sorted(statuses) == [200] + [429] * 19
        workers = {json.loads(line).get("worker") for line in proc.logs().splitlines()
                   if '"proxy call"' in line}  # fmt: skip
        assert workers == {0, 1}, "the kernel gave every connection to one worker"
    finally:
        assert proc.stop() == 0
        stub.stop()


def test_budgets_hold_across_workers_and_are_rebuilt_from_the_usage_table(tmp_path: Path) -> None:
    """Two workers count one budget; a collector started on the same warehouse with a new WAL
    directory (another machine, say) reads this month's spend from the usage table first."""
    stub = up.Stub()
    stub.start()
    config, tokens, alice = gateway_files(
        tmp_path, stub, '\n[budgets.each-token]\neach = "token"\ndaily_usd = 0.0005\n'
    )
    args = ("--proxy-config", str(config), "--tokens-file", str(tokens), "--workers", "2")

    def calls(proc: CollectorProcess, n: int) -> list[int]:
        def one(_: int) -> int:
            with httpx.Client(timeout=30) as client:  # a connection of its own
                return client.post(
                    proc.url("/anthropic/v1/messages"),
                    json={"model": "databricks-claude-opus-4-6", "max_tokens": 8,
                          "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {alice}", "anthropic-version": "2023-06-01"},
                ).status_code  # fmt: skip

        with ThreadPoolExecutor(1) as pool:  # one after the other, each call's spend counted
            return list(pool.map(one, range(n)))

    first = CollectorProcess(tmp_path / "warehouse", *args, "--wal-dir", str(tmp_path / "wal1"),
                             env=KEYS)  # fmt: skip
    all_workers_started(first)
    try:
        # Each call costs $0.000594 (the stub's usage at opus' prices): the first fits under
        # $0.0005; whichever worker takes them, the rest are refused.
        assert calls(first, 8) == [200] + [429] * 7
        workers = {json.loads(line).get("worker") for line in first.logs().splitlines()
                   if '"proxy call"' in line}  # fmt: skip
        assert workers == {0, 1}
    finally:
        assert first.stop() == 0
    second = CollectorProcess(tmp_path / "warehouse", *args, "--wal-dir", str(tmp_path / "wal2"),
                              env=KEYS)  # fmt: skip
    try:
        assert calls(second, 2) == [429, 429]
        rebuilt = [json.loads(line) for line in second.logs().splitlines()
                   if "calls counted from the usage table" in line]  # fmt: skip
        assert [r["calls"] for r in rebuilt] == [1]
    finally:
        assert second.stop() == 0
        stub.stop()


def test_budgets_across_replicas_count_the_others_calls_from_the_usage_table(
    tmp_path: Path,
) -> None:
    """Two replicas on one warehouse, each with its own WAL directory (host state): B, which
    served nothing, refuses the token once its reading of the usage table (every
    budget_refresh seconds) has counted what A served."""
    stub = up.Stub()
    stub.start()
    config, tokens, alice = gateway_files(
        tmp_path, stub, '\n[budgets.each-token]\neach = "token"\ndaily_usd = 0.001\n',
        head="budget_refresh = 1\n",
    )  # fmt: skip
    replicas = [
        CollectorProcess(tmp_path / "warehouse", "--proxy-config", str(config), "--tokens-file",
                         str(tokens), "--wal-dir", str(tmp_path / f"wal-{name}"), env=KEYS,
                         log_dir=tmp_path / name)
        for name in ("a", "b") if (tmp_path / name).mkdir() is None
    ]  # fmt: skip
    a, b = replicas

    def call(proc: CollectorProcess) -> httpx.Response:
        return httpx.post(
            proc.url("/anthropic/v1/messages"), timeout=30,
            json={"model": "databricks-claude-opus-4-6", "max_tokens": 8,
                  "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {alice}", "anthropic-version": "2023-06-01"},
        )  # fmt: skip

    def counted(proc: CollectorProcess) -> list[int]:
        return [json.loads(line)["calls"] for line in proc.logs().splitlines()
                if "calls counted from the usage table" in line]  # fmt: skip

    try:
        # $0.000594 a call: two fit under $0.001 (the second crosses it), the third is refused.
        assert [call(a).status_code for _ in range(3)] == [200, 200, 429]
        deadline = time.monotonic() + 30
        while sum(counted(b)) < 2:
            assert time.monotonic() < deadline, b.logs()
            time.sleep(0.2)
        refused = call(b)
        assert refused.status_code == 429
        assert refused.json()["error"]["message"].startswith(
            "daily budget 'each-token' of $0.001 for token 'alice' is spent ($0.00118"
        )
        assert counted(a) == []  # A's reading finds only calls it counted itself
    finally:
        for proc in replicas:
            assert proc.stop() == 0
        stub.stop()


def test_a_malformed_proxy_config_stops_two_workers_at_once_with_its_error(
    tmp_path: Path,
) -> None:
    """A proxy.toml whose endpoint is not a table is one clear error from the supervisor
    (exit 2), not a worker that crashes and is restarted forever."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        'tables = "main.ai.agents"\n[upstreams.anthropic]\nbase_url = "http://127.0.0.1:9"\n'
        'api_key_env = "STUB_ANTHROPIC_KEY"\n[endpoints]\ndatabricks-claude = "claude-opus-4-6"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "collector", "serve", "--warehouse", str(tmp_path / "wh"),
         "--wal-dir", str(tmp_path / "wal"), "--http", f"127.0.0.1:{free_port()}", "--grpc", "off",
         "--workers", "2", "--proxy-config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **KEYS},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "endpoints.databricks-claude: must be a table, got 'claude-opus-4-6'" in done.stderr
    assert "restarting" not in done.stderr
