"""The proxy's pure parts: SSE splitting, usage folding, truncation, limits, grants, config."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from collector.auth import ANONYMOUS, Authenticator, EndpointGrant, TokensError, add_token
from collector.config import ConfigError
from collector.errors import PermissionDenied
from collector.hoststate import HostState
from collector.prices import Price, Prices
from collector.proxy.budgets import BudgetSpent, Spend, parse_budgets, period_start
from collector.proxy.call import Call, TraceContext, session_of
from collector.proxy.config import load_proxy_config, parse_proxy_config
from collector.proxy.providers import (
    Answer,
    Usage,
    answer_from,
    error_of,
    request_options,
    stream_text,
    usage_from,
)
from collector.proxy.ratelimit import RateLimited, RateLimiter
from collector.proxy.records import Cost, agent_of, cost_of, inference_batch, truncate
from collector.proxy.redact import Redactor
from collector.proxy.spans import as_own_trace, call_span
from collector.proxy.sse import SseParser
from tests import upstream_stub as up


def test_sse_events_split_anywhere_even_inside_crlf() -> None:
    stream = b"".join(up.gemini_events("gemini-2.5-flash"))  # CRLF line ends
    whole = list(SseParser().feed(stream))
    assert len(whole) == 2 and whole[-1]["usageMetadata"] == up.GEMINI_USAGE
    for cut in range(1, len(stream)):
        parser = SseParser()
        assert [*parser.feed(stream[:cut]), *parser.feed(stream[cut:]), *parser.close()] == whole


def test_usage_folded_from_each_providers_stream() -> None:
    def fold(api: str, events: list[bytes]) -> Usage | None:
        parser, usage = SseParser(), None
        for event in parser.feed(b"".join(events)):
            usage = usage_from(api, event, usage)
        return usage

    assert fold("anthropic", up.anthropic_events("m")) == Usage(25, 15, 100, 7, 0)
    assert fold("openai", up.responses_events("m")) == Usage(30, 12, 10, 0, 5)
    assert fold("openai", up.chat_events("m", include_usage=True)) == Usage(20, 5, 4, 0, 2)
    assert fold("openai", up.chat_events("m", include_usage=False)) is None
    assert fold("gemini", up.gemini_events("m")) == Usage(11, 9, 3, 0, 6)


def test_truncation_keeps_whole_characters() -> None:
    assert truncate("héllo".encode(), 100) == ("héllo", False)
    assert truncate("héllo".encode(), 2) == ("h", True)  # é is two bytes: not cut in half
    assert truncate(b"abc", 3) == ("abc", False)


def test_agents_from_user_agents() -> None:
    assert agent_of("claude-cli/2.1.197 (external, cli)", "anthropic") == "claude-code"
    assert agent_of("codex_cli_rs/0.169.0 (Debian 13; x86_64)", "openai") == "codex"
    assert agent_of("GeminiCLI/0.61.0/gemini-2.5-flash (linux; x64)", "gemini") == "gemini-cli"
    assert agent_of("Go-http-client/2.0", "cursor") == "cursor"
    assert agent_of("curl/8.5.0", "openai") == "other"


def test_rate_limiter_windows(tmp_path: Path) -> None:
    now = [1000.0]
    limiter = RateLimiter(HostState(tmp_path / "host.sqlite", 0), clock=lambda: now[0])
    limiter.admit("a", "e", rpm=2, tpm=0)
    now[0] += 10
    limiter.admit("a", "e", rpm=2, tpm=0)
    with pytest.raises(RateLimited) as e:
        limiter.admit("a", "e", rpm=2, tpm=0)
    assert e.value.retry_after == pytest.approx(50)
    limiter.admit("b", "e", rpm=2, tpm=0)  # per token
    now[0] += 50
    limiter.admit("a", "e", rpm=2, tpm=0)  # the first request left the window

    limiter.settle(limiter.admit("a", "t", rpm=0, tpm=50, estimate=10), 30)
    now[0] += 20
    limiter.settle(limiter.admit("a", "t", rpm=0, tpm=50, estimate=10), 30)
    with pytest.raises(RateLimited) as e:
        limiter.admit("a", "t", rpm=0, tpm=50)
    assert e.value.retry_after == pytest.approx(40)  # when the first 30 tokens expire

    # A call in flight counts at its estimate until it settles; one that failed counts none.
    now[0] += 100
    in_flight = limiter.admit("a", "t", rpm=0, tpm=50, estimate=60)
    with pytest.raises(RateLimited):
        limiter.admit("a", "t", rpm=0, tpm=50, estimate=1)
    limiter.settle(in_flight, 0)
    limiter.settle(limiter.admit("a", "t", rpm=0, tpm=50, estimate=1), 50)
    with pytest.raises(RateLimited):
        limiter.admit("a", "t", rpm=0, tpm=50)
    # A call longer than the window: its reservation was swept, its tokens still count.
    long_call = limiter.admit("b", "t", rpm=0, tpm=50, estimate=1)
    now[0] += 61
    limiter.admit("c", "t", rpm=1, tpm=0)  # a sweep
    now[0] += 10
    limiter.settle(long_call, 50)
    with pytest.raises(RateLimited):
        limiter.admit("b", "t", rpm=0, tpm=50)


def test_endpoint_grants(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = add_token(path, "alice", ["main.agents.*", "endpoint:databricks-claude-*"])
    principal = Authenticator(path).authenticate(f"Bearer {token}")
    principal.authorize_endpoint("databricks-claude-opus-4-6")
    with pytest.raises(PermissionDenied):
        principal.authorize_endpoint("databricks-gpt-5-2")
    assert 'grants = ["main.agents.*", "endpoint:databricks-claude-*"]' in path.read_text()
    ANONYMOUS.authorize_endpoint("anything")
    assert EndpointGrant("*").allows_endpoint("x")
    with pytest.raises(TokensError):
        add_token(path, "bob", ["endpoint:"])
    with pytest.raises(TokensError):
        add_token(path, "bob", ["endpoint:a/b"])


def test_example_config_and_its_errors(tmp_path: Path) -> None:
    env = {"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "b", "GEMINI_API_KEY": "c"}
    example = Path(__file__).resolve().parent.parent / "examples" / "proxy.toml"
    config = load_proxy_config(example, env)
    assert str(config.inference_table) == "main.ai_gateway.agents_inference"
    assert config.endpoints["databricks-claude-opus-4-6"].model == "claude-opus-4-6"
    assert "'a'" not in repr(config.endpoints["databricks-claude-opus-4-6"].upstream)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        load_proxy_config(example, {"ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "c"})
    with pytest.raises(ConfigError, match="tables"):
        parse_proxy_config({}, env, "x")
    with pytest.raises(ConfigError, match="unknown route"):
        parse_proxy_config({"tables": "a.b.c", "routes": {"bedrock": {}}}, env, "x")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"endpoints": {"e": "x"}}, "x: endpoints.e: must be a table, got 'x'"),
        ({"routes": 1}, "x: routes: must be tables [routes.NAME], got 1"),
        ({"upstreams": {"anthropic": "http://x"}}, "upstreams.anthropic: must be a table"),
        ({"endpoints": {"e": {"upstream": "anthropic", "request_per_minute": 5}}},
         "endpoints.e: unknown key 'request_per_minute' (did you mean requests_per_minute?)"),
        ({"endpoints": {"e": {"targets": [{"upstream": "anthropic", "wieght": 3}]}}},
         "endpoints.e.targets[0]: unknown key 'wieght' (did you mean weight?)"),
        ({"endpoints": {"e": {"upstream": "anthropic",
                              "price": {"input": 1, "output": 2, "cache_creation": 5}}}},
         "endpoints.e.price: unknown key 'cache_creation'"),
        ({"endpoints": {"e": {"upstream": "anthropic", "price": {"input": -1, "output": 2}}}},
         "endpoints.e.price: prices are USD per million tokens, ≥ 0"),
        ({"endpoints": {"e": {"upstream": "anthropic", "price_model": 3}}},
         'endpoints.e: price_model is a "provider/model" string'),
        ({"idle_timout": 5}, "x: unknown key 'idle_timout' (did you mean idle_timeout?)"),
        ({"idle_timeout": float("nan")}, "idle_timeout must be a number ≥ 0, got nan"),
        ({"routes": {"cursor": {"log_payload": False}}}, "routes.cursor: unknown key"),
        ({"routes": {"cursor": {"log_payloads": "no"}}}, "log_payloads is true or false"),
        ({"redaction": {"enable": False}}, "redaction: unknown key 'enable'"),
        ({"budgets": {"b": {"each": "token", "daily_usd": float("nan")}}},
         "budgets.b: daily_usd must be a number of USD ≥ 0, got nan"),
    ],
)  # fmt: skip
def test_a_malformed_proxy_config_says_what_is_wrong(change: dict[str, Any], words: str) -> None:
    """Every table is checked as one, and every key: a misspelt limit or weight would
    otherwise switch what it sets off without a word."""
    base = {"tables": "a.b.c",
            "upstreams": {"anthropic": {"base_url": "http://x", "api_key_env": "K"}}}  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        parse_proxy_config({**base, **change}, {"K": "k"}, "x")
    assert words in str(raised.value)


def test_each_providers_billed_tokens_and_a_calls_cost() -> None:
    """Anthropic counts cached input apart, OpenAI and Gemini inside the input; Gemini bills
    its thoughts as output. The cost is each kind times its price; none without a price or
    without usage."""
    usage = Usage(1000, 200, 300, 40, 50)
    assert usage.billed("anthropic") == (1000, 200, 300, 40)
    assert usage.billed("openai") == (700, 200, 300, 40)
    assert usage.billed("gemini") == (700, 250, 300, 40)
    price = Price(input=2.0, output=10.0, cache_read=0.5, cache_write=2.5)
    call = Call("r", 0, "gemini", "generateContent", "GeminiCLI/0.61.0", usage=usage)
    cost = cost_of(call, "gemini", "gemini-2.5-pro", price)
    assert cost == Cost("gemini-2.5-pro", 700 * 2e-6, 250 * 10e-6, 300 * 0.5e-6, 40 * 2.5e-6)
    assert cost is not None and cost.total == pytest.approx(0.0014 + 0.0025 + 0.00015 + 0.0001)
    assert cost_of(call, "gemini", "unknown-model", None) is None
    no_usage = Call("r", 0, "gemini", "generateContent", "GeminiCLI/0.61.0")
    assert cost_of(no_usage, "gemini", "gemini-2.5-pro", price) is None


def test_an_endpoints_own_price_and_the_model_it_is_priced_as() -> None:
    env = {"K": "k"}
    base = {
        "tables": "a.b.c",
        "upstreams": {"anthropic": {"base_url": "http://x", "api_key_env": "K"}},
    }
    config = parse_proxy_config(
        {**base, "endpoints": {
            "team-claude": {"upstream": "anthropic", "model": "claude-x-internal",
                            "price_model": "anthropic/claude-haiku-4-5"},
            "negotiated": {"upstream": "anthropic", "model": "claude-opus-4-6",
                           "price": {"input": 4, "output": 20}},
        }},
        env, "x",
    )  # fmt: skip
    haiku = config.endpoints["team-claude"]
    assert (haiku.price_model, haiku.price) == ("anthropic/claude-haiku-4-5", None)
    assert Prices().price(haiku.price_model) == Prices().price("claude-haiku-4-5")
    negotiated = config.endpoints["negotiated"]
    assert negotiated.price_model == ""  # priced as the model that serves
    assert negotiated.price == Price(4.0, 20.0, 4.0, 4.0)  # cache prices default to the input's
    with pytest.raises(ConfigError, match=r"endpoints\.bad\.price: needs input and output"):
        parse_proxy_config(
            {**base, "endpoints": {"bad": {"upstream": "anthropic", "price": {"input": 1}}}},
            env, "x",
        )  # fmt: skip


def test_each_default_credential_kind_is_found_and_ordinary_text_is_not() -> None:
    samples = {
        "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "anthropic_key": "sk-ant-api03-" + "a1" * 20,
        "openai_key": "sk-proj-" + "b2" * 16,
        "google_api_key": "AIza" + "c" * 35,
        "aws_access_key_id": "ASIA" + "D4" * 8,
        "aws_secret_access_key": 'aws_secret_access_key = "' + "e/5+" * 10 + '"',
        "azure_storage_key": "AccountKey=" + "f6" * 32 + "==",
        "github_token": "ghp_" + "g7" * 18,
        "slack_token": "xoxb-1234567890-abcdef",
        "stripe_key": "sk_live_" + "h8" * 12,
        "collector_token": "odc_" + "i9" * 16,
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "bearer_token": "Authorization: Bearer " + "j0" * 15,
        "google_oauth_token": "ya29.a0AfH6SMB" + "k1" * 12,
        "aws_session_token": "aws_session_token=IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUC",
        "basic_auth": "Authorization: Basic dXNlcjpodW50ZXIyc2VjcmV0",
        "url_password": "postgres://app:hunter2secret@db.internal:5432/app",
    }
    redactor = Redactor()
    for kind, sample in samples.items():
        text, found = redactor.redact(f"before {sample} after")
        assert found == {kind: 1}, (kind, found)
        assert text.startswith("before ") and text.endswith(" after") and "[REDACTED:" in text
    ordinary = ("Ask the sk-8 team; the bearer of bad news; AKIA is a prefix; ghp_short; "
                "-----BEGIN CERTIFICATE----- is public; eyJ alone")  # fmt: skip
    assert redactor.redact(ordinary) == (ordinary, {})


def test_credentials_are_found_in_payloads_as_json_writes_them() -> None:
    """Payloads are searched as stored, JSON: a key at the start of a pasted file's line
    follows the two characters ``\\n``; quotes are escaped; a name stays readable."""
    anthropic_key, secret = "sk-ant-api03-" + "k9" * 20, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    creds = f"[default]\naws_secret_access_key = {secret}\n{anthropic_key}\n"
    body = json.dumps({"content": [{"type": "tool_result", "content": creds}]})
    text, found = Redactor().redact(body)
    assert found == {"aws_secret_access_key": 1, "anthropic_key": 1}
    assert json.loads(text)["content"][0]["content"] == (
        "[default]\naws_secret_access_key = [REDACTED:aws_secret_access_key]\n"
        "[REDACTED:anthropic_key]\n"
    )
    config = json.dumps({"env": json.dumps({"AWS_SECRET_ACCESS_KEY": secret})})  # twice escaped
    assert secret not in Redactor().redact(config)[0]
    assert Redactor().redact("see postgres://app:hunter2secret@db:5432/app") == (
        "see postgres://app:[REDACTED:url_password]@db:5432/app",
        {"url_password": 1},
    )
    # A private key block cut short (pasted in part, or at the payload's cut) goes whole.
    cut = json.dumps({"c": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA"})
    assert Redactor().redact(cut) == ('{"c": "[REDACTED:private_key]"}', {"private_key": 1})


def test_a_credential_streamed_in_pieces_withholds_the_stored_answer() -> None:
    """Codex's stream repeats its text whole in its closing events: those are redacted, but
    its deltas would still join into the key, so the answer is withheld."""
    key = "sk-proj-" + "Ab3x" * 20
    events = [{"type": "response.output_text.delta", "delta": p}
              for p in ("Use ", key[:10], key[10:40], key[40:])]  # fmt: skip
    events.append({"type": "response.output_text.done", "text": "Use " + key})
    raw = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    call = Call("r", 0, "openai", "responses", "codex_exec/0.171.0")
    call.streamed, call.response_body = True, bytearray(raw.encode())
    call.streamed_pieces = [stream_text("openai", e) for e in SseParser().feed(raw.encode())]
    row = inference_batch(call, 65536, Redactor()).to_pylist()[0]
    assert row["response_body"].startswith("[response withheld")
    assert (row["redactions"], row["redacted_kinds"]) == (1, ["openai_key"])
    # The same key written whole in one event is only redacted.
    call.streamed_pieces = ["Use " + key]
    one = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events[-1:])
    call.response_body = bytearray(one.encode())
    row = inference_batch(call, 65536, Redactor()).to_pylist()[0]
    assert "[REDACTED:openai_key]" in row["response_body"] and key not in row["response_body"]
    assert (row["redactions"], row["redacted_kinds"]) == (1, ["openai_key"])


def test_a_streamed_events_text_in_each_providers_shape() -> None:
    assert stream_text("anthropic", {"type": "content_block_delta",
                                     "delta": {"type": "text_delta", "text": "ab"}}) == "ab"  # fmt: skip
    assert stream_text("anthropic", {"type": "message_delta", "delta": {"stop_reason": "x"}}) == ""
    assert stream_text("openai", {"type": "response.output_text.delta", "delta": "cd"}) == "cd"
    chunk = {
        "choices": [{"delta": {"content": "e", "tool_calls": [{"function": {"arguments": "f"}}]}}]
    }
    assert stream_text("openai", chunk) == "ef"
    parts = {"candidates": [{"content": {"parts": [{"text": "g"}, {"text": "h"}]}}]}
    assert stream_text("gemini", parts) == "gh"
    assert stream_text("gemini", "not an object") == ""


def test_redaction_patterns_from_the_proxy_config() -> None:
    env = {"K": "k"}
    base = {
        "tables": "a.b.c",
        "upstreams": {"anthropic": {"base_url": "http://x", "api_key_env": "K"}},
    }
    config = parse_proxy_config(
        {**base, "redaction": {"patterns": {"ticket": "T-[0-9]{4}"}}}, env, "x"
    )
    assert config.redactor is not None
    assert config.redactor.redact("see T-1234") == ("see [REDACTED:ticket]", {"ticket": 1})
    assert parse_proxy_config({**base, "redaction": {"enabled": False}}, env, "x").redactor is None
    with pytest.raises(ConfigError, match=r"\[redaction\] patterns.bad: "):
        parse_proxy_config({**base, "redaction": {"patterns": {"bad": "(unclosed"}}}, env, "x")
    with pytest.raises(ConfigError, match=r"\[redaction\] patterns maps kinds"):
        parse_proxy_config({**base, "redaction": {"patterns": {"n": 1}}}, env, "x")
    with pytest.raises(ConfigError, match=r"\[redaction\] patterns.any: matches the empty"):
        parse_proxy_config({**base, "redaction": {"patterns": {"any": "x*"}}}, env, "x")
    # Each pattern on its own: a backreference means its own group.
    quoted = Redactor({"quoted": r"(['\"])tok-[0-9]{4}\1"})
    assert quoted.redact("x 'tok-1234' y") == ("x [REDACTED:quoted] y", {"quoted": 1})
    secret = Redactor({"db": r"DB_PASSWORD=(?P<secret>\S+)"})
    assert secret.redact("DB_PASSWORD=pw1") == ("DB_PASSWORD=[REDACTED:db]", {"db": 1})


def test_an_endpoints_targets_and_their_order() -> None:
    env = {"K": "k"}
    up_ = {"base_url": "http://x", "api_key_env": "K"}
    base = {"tables": "a.b.c", "upstreams": {"a": {**up_, "api": "anthropic"},
                                             "b": {**up_, "api": "anthropic"},
                                             "o": {**up_, "api": "openai"}}}  # fmt: skip

    def endpoint(**e: Any) -> Any:
        return parse_proxy_config({**base, "endpoints": {"e": e}}, env, "x").endpoints["e"]

    listed = endpoint(targets=[{"upstream": "a", "model": "m1"}, {"upstream": "b", "model": "m2"}])
    assert [(t.upstream.name, t.model) for t in listed.order(random.Random(1))] == [
        ("a", "m1"), ("b", "m2"),
    ]  # fmt: skip
    assert (listed.upstream.name, listed.model) == ("a", "m1")
    weighted = endpoint(targets=[{"upstream": "a", "weight": 3}, {"upstream": "b", "weight": 1}])
    firsts = Counter(weighted.order(random.Random(i))[0].upstream.name for i in range(2000))
    assert 0.70 < firsts["a"] / 2000 < 0.80  # three to one
    assert {len(weighted.order(random.Random(i))) for i in range(50)} == {2}
    for bad, message in [
        ({"upstream": "a", "targets": [{"upstream": "b"}]}, "not both"),
        ({"targets": [{"upstream": "a"}, {"upstream": "o"}]}, "speak one API"),
        ({"targets": [{"upstream": "a", "weight": 1}, {"upstream": "b"}]}, "every target a weight"),
        ({"targets": [{"upstream": "a", "weight": 0}]}, r"targets\[0\]: weight must be"),
        ({"targets": [{"upstream": "z"}]}, r"targets\[0\]: upstream must name"),
        ({"targets": []}, "targets is a list"),
    ]:
        with pytest.raises(ConfigError, match=message):
            endpoint(**bad)


def test_budgets_and_their_periods() -> None:
    endpoints = ["databricks-claude-opus-4-6", "cheap"]
    (each, team) = parse_budgets(
        {"per-person": {"each": "token", "daily_usd": 20, "monthly_usd": 300.5},
         "ops": {"team": "ops", "monthly_usd": 1000, "endpoints": "databricks-claude-*",
                 "fallback": "cheap"}},
        endpoints, "x",
    )  # fmt: skip
    assert each.limits == (("day", 20.0), ("month", 300.5))
    assert each.holds("alice", None, "anything") == "alice"
    assert team.holds("alice", "ops", "databricks-claude-opus-4-6") == "ops"
    assert team.holds("alice", "ops", "cheap") is None  # not an endpoint it holds
    assert team.holds("alice", "dev", "databricks-claude-opus-4-6") is None
    now = 1_764_700_000.0  # 2025-12-02T18:26:40Z
    assert period_start("day", now) == 1_764_633_600.0  # 2025-12-02T00:00Z
    assert period_start("month", now) == 1_764_547_200.0  # 2025-12-01T00:00Z
    for bad, message in [
        ({"b": {"daily_usd": 1}}, "give one of each"),
        ({"b": {"each": "person", "daily_usd": 1}}, 'each must be "token" or "team"'),
        ({"b": {"token": "a"}}, "give daily_usd, monthly_usd or both"),
        ({"b": {"token": "a", "daily_usd": -1}}, "daily_usd must be a number"),
        ({"b": {"token": "a", "daily_usd": 1, "fallback": "nope"}}, "fallback 'nope' is not"),
        ({"b": {"token": "a", "daily_usd": 1, "weekly_usd": 1}}, "unknown key"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_budgets(bad, endpoints, "x")


def test_a_refusal_names_the_limit_spent_longest_and_patterns_count_as_they_hold(
    tmp_path: Path,
) -> None:
    spend = Spend(HostState(tmp_path / "host.sqlite", 0))
    (both, not_x) = parse_budgets(
        {"both": {"token": "alice", "daily_usd": 1, "monthly_usd": 5},
         "not-x": {"token": "bob", "daily_usd": 1, "endpoints": "[!x]*"}},
        ["a", "x"], "x",
    )  # fmt: skip
    now = 1_764_700_000.0  # 2025-12-02T18:26:40Z
    spend.add((now - 60, "alice", None, "a", 6.0, "r1"))
    with pytest.raises(BudgetSpent) as spent:
        spend.check([both], "alice", None, "a", now)
    assert spent.value.message == (
        "monthly budget 'both' of $5.00 for token 'alice' is spent ($6.00); "
        "it resets at 2026-01-01T00:00:00Z"
    )
    assert spent.value.resets_at == 1_767_225_600.0
    spend.add((now - 60, "bob", None, "a", 2.0, "r2"))
    spend.add((now - 60, "bob", None, "x", 9.0, "r3"))
    with pytest.raises(BudgetSpent, match=r"is spent \(\$2\.00\)"):
        spend.check([not_x], "bob", None, "a", now)
    spend.check([not_x], "bob", None, "x", now)  # not an endpoint it holds


def test_trace_context_from_traceparent() -> None:
    """W3C Trace Context: a valid traceparent makes the call's span its child; an invalid one
    (and its tracestate) is ignored, and the span starts a trace of its own."""
    tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    context = TraceContext.from_headers(
        {"traceparent": f"00-{tid}-{pid}-01", "tracestate": "rojo=00f067aa0ba902b7"}
    )
    assert context == TraceContext(
        bytes.fromhex(tid), bytes.fromhex(pid), "rojo=00f067aa0ba902b7", 1
    )
    # A later version may add fields after the four it shares with 00.
    assert TraceContext.from_headers({"traceparent": f"01-{tid}-{pid}-00-extra"}).trace_flags == 0
    for bad in [
        f"ff-{tid}-{pid}-01",  # version ff is invalid
        f"00-{'0' * 32}-{pid}-01",  # ids of zeros
        f"00-{tid}-{'0' * 16}-01",
        f"00-{tid.upper()}-{pid}-01",  # lowercase hex only
        f"00-{tid}-{pid}-01-extra",  # version 00 has exactly four fields
        f"00-{tid[:-1]}-{pid}-01",
        "",
    ]:
        context = TraceContext.from_headers({"traceparent": bad, "tracestate": "rojo=1"})
        assert (context.parent_span_id, context.trace_state, len(context.trace_id)) == (b"", "", 16)
        assert context.trace_id != bytes.fromhex(tid)
    assert TraceContext.new().trace_id != TraceContext.new().trace_id
    assert session_of({"X-Claude-Code-Session-Id": " s-1 "}) == "s-1"
    assert session_of({"session_id": "codex-2"}) == "codex-2"
    assert session_of({"session-id": "codex-3", "session_id": "x"}) == "codex-3"
    assert session_of({}) is None


def test_request_options_and_answers_in_each_providers_shape() -> None:
    claude_code = {"max_tokens": 9, "temperature": 0.5, "stream": True}
    assert request_options("anthropic", "messages", claude_code) == claude_code
    assert request_options("openai", "responses", {"max_output_tokens": 7, "top_p": True}) == {
        "max_tokens": 7, "stream": False,  # a boolean is no top_p
    }  # fmt: skip
    assert request_options("openai", "chat.completions", {"max_completion_tokens": 5}) == {
        "max_tokens": 5, "stream": False,
    }  # fmt: skip
    assert request_options(
        "gemini", "streamGenerateContent", {"generationConfig": {"maxOutputTokens": 3, "topP": 1}}
    ) == {"max_tokens": 3, "top_p": 1, "stream": True}
    assert request_options("gemini", "generateContent", []) == {}

    def folded(api: str, events: list[Any]) -> Answer:
        answer = Answer()
        for event in events:
            answer_from(api, event, answer)
        return answer

    streamed = [json.loads(e.split(b"data: ", 1)[1]) for e in up.anthropic_events("m")]
    assert folded("anthropic", streamed) == Answer(
        "msg_01XFDUDYJgAACzvnptvVoYEL", "m", ["end_turn"]
    )
    assert folded("anthropic", [up.anthropic_message("m")]) == Answer(
        "msg_01XFDUDYJgAACzvnptvVoYEL", "m", ["end_turn"]
    )
    chat = folded("openai", [up.chat_completion("g")])
    assert (chat.model, chat.finish_reasons) == ("g", ["stop"])
    incomplete = {"object": "response", "id": "r", "model": "g", "status": "incomplete",
                  "incomplete_details": {"reason": "max_output_tokens"}}  # fmt: skip
    assert folded("openai", [{"type": "response.incomplete", "response": incomplete}]) == Answer(
        "r", "g", ["max_output_tokens"]
    )
    assert folded("gemini", [{"responseId": "x", "modelVersion": "v",
                              "candidates": [{"finishReason": "MAX_TOKENS"}]}]) == Answer(
        "x", "v", ["MAX_TOKENS"]
    )  # fmt: skip
    assert error_of("anthropic", b'{"type":"error","error":{"type":"overloaded_error",'
                    b'"message":"Overloaded"}}') == ("overloaded_error", "Overloaded")  # fmt: skip
    assert error_of("openai", b'{"error":{"code":null,"type":"server_error","message":"m"}}') == (
        "server_error", "m",
    )  # fmt: skip
    assert error_of("gemini", b'{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}') == (
        "RESOURCE_EXHAUSTED", "",
    )  # fmt: skip
    assert error_of("openai", b"<html>502</html>") == (None, "")


def test_trace_export_config_and_its_errors() -> None:
    env = {"K": "k", "MLFLOW_TOKEN": "Bearer t"}
    base = {"tables": "a.b.c",
            "upstreams": {"anthropic": {"base_url": "http://x", "api_key_env": "K"}}}  # fmt: skip
    config = parse_proxy_config(base, env, "x")
    assert (str(config.spans_table), config.trace_export) == ("a.b.c_otel_spans", None)
    assert parse_proxy_config({**base, "traces": {"enabled": False}}, env, "x").spans_table is None
    traces = {"export_url": "http://127.0.0.1:5000/v1/traces",
              "export_headers": {"x-mlflow-experiment-id": "3"},
              "export_headers_env": {"Authorization": "MLFLOW_TOKEN"}}  # fmt: skip
    export = parse_proxy_config({**base, "traces": traces}, env, "x").trace_export
    assert export is not None
    assert export.headers == {"x-mlflow-experiment-id": "3", "Authorization": "Bearer t"}
    assert (export.url, export.timeout, export.own_traces) == (
        "http://127.0.0.1:5000/v1/traces",
        10.0,
        True,
    )
    assert "Bearer t" not in repr(export)
    caller = {**traces, "export_caller_trace": True}
    assert parse_proxy_config({**base, "traces": caller}, env, "x").trace_export.own_traces is False
    for bad, message in [
        ({"export_url": "localhost:5000"}, "export_url must be an http"),
        ({"export_headers": {"a": "b"}}, "no export_url"),
        ({**traces, "export_headers_env": {"Authorization": "NOPE"}}, "NOPE is not set"),
        ({**traces, "export_headers": {"a": 1}}, "maps header names"),
        ({"exporturl": "http://x"}, r"unknown key\(s\) exporturl"),
        ({**traces, "export_timeout": -1}, "export_timeout must be a number"),
        ({**traces, "export_caller_trace": "yes"}, "export_caller_trace is true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_proxy_config({**base, "traces": bad}, env, "x")


def test_an_exported_call_of_an_agents_trace_is_a_trace_of_its_own_linked_to_it() -> None:
    call = Call("r", 1_000, "anthropic", "messages", "claude-cli/2.1.197")
    call.trace = TraceContext.from_headers(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "tracestate": "vendor=1"}
    )  # fmt: skip
    span = call_span(call, "anthropic", None)
    own = as_own_trace(span)
    assert (own.trace_id, own.parent_span_id, own.span_id) == (span.span_id * 2, b"", span.span_id)
    (link,) = own.links
    assert (link.trace_id.hex(), link.span_id.hex(), link.trace_state) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "vendor=1",
    )
    assert own.flags == 0x101 and span.flags == 0x301  # sampled; its parent no longer remote
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"  # the table's copy is the child
    root = call_span(Call("s", 1_000, "anthropic", "messages", "x"), "anthropic", None)
    assert as_own_trace(root) is root


def test_a_stream_that_ends_in_an_error_event_is_an_error_span() -> None:
    """A 200 whose stream fails midway: the span says what the provider's error event said
    (its message redacted as payloads are), in each provider's shape."""
    events = {
        "anthropic": {"type": "error", "error": {"type": "overloaded_error",
                                                  "message": "Overloaded"}},
        "openai": {"type": "error", "code": "server_error", "message": "Overloaded",
                   "sequence_number": 3},
        "gemini": {"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}},
    }  # fmt: skip
    kinds = {"anthropic": "overloaded_error", "openai": "server_error", "gemini": "UNAVAILABLE"}
    for api, event in events.items():
        call = Call("r", 1_000, api, "x", "ua")
        call.status, call.streamed = 200, True
        answer_from(api, event, call.answer)
        span = call_span(call, api, None, Redactor())
        attributes = {kv.key: kv.value.string_value for kv in span.attributes}
        assert attributes["error.type"] == kinds[api], api
        assert (span.status.code, span.status.message) == (2, "Overloaded")  # ERROR
    failed = {"type": "response.failed", "response": {"object": "response", "status": "failed",
              "error": {"code": "server_error", "message": "key sk-ant-api03-" + "z" * 30}}}  # fmt: skip
    call = Call("r", 1_000, "openai", "responses", "ua")
    call.status = 200
    answer_from("openai", failed, call.answer)
    span = call_span(call, "openai", None, Redactor())
    assert span.status.message == "key [REDACTED:anthropic_key]"
    ok = {"type": "response.completed", "response": {"object": "response", "status": "completed",
          "error": None}}  # fmt: skip
    call = Call("r", 1_000, "openai", "responses", "ua")
    call.status = 200
    answer_from("openai", ok, call.answer)
    assert call_span(call, "openai", None).status.code == 0  # UNSET


def test_spend_is_kept_by_request_id_and_read_by_one_worker_at_a_time(tmp_path: Path) -> None:
    host = HostState(tmp_path / "host.sqlite", 0)
    mine, others = Spend(host), Spend(host)  # two workers of one host
    mine.add((1000.0, "alice", "ops", "e", 0.25, "r1"))
    # The usage table's reading: r1 again (this host's), r2 another replica's.
    assert mine.merge([(1000.0, "alice", "ops", "e", 0.25, "r1"),
                       (1001.0, "alice", "ops", "e", 0.5, "r2")]) == 1  # fmt: skip
    budget = parse_budgets({"b": {"each": "token", "daily_usd": 1}}, ["e"], "x")[0]
    assert others.spent(budget, "alice", 0) == 0.75
    assert others.merge([(1001.0, "alice", "ops", "e", 0.5, "r2")]) == 0  # a compaction's copy
    assert not others.ever_read()  # the host's first reading is under way: others wait
    assert mine.due(5000.0, 60) and not others.due(5030.0, 60) and others.due(5061.0, 60)
    mine.read_done(5001.0)
    assert others.ever_read()


def test_spend_kept_without_request_ids_is_counted_again_from_the_usage_table(
    tmp_path: Path,
) -> None:
    host = HostState(tmp_path / "host.sqlite", 0)
    with host.connect() as db:  # as an earlier version left it
        db.executescript(
            "CREATE TABLE spend (at REAL NOT NULL, token TEXT NOT NULL, team TEXT, "
            "endpoint TEXT NOT NULL, usd REAL NOT NULL);"
            "CREATE TABLE spend_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO spend VALUES (1000, 'alice', NULL, 'e', 0.25);"
            "INSERT INTO spend_meta VALUES ('rebuilt', '2026-12-01');"
        )
    spend = Spend(host)
    budget = parse_budgets({"b": {"each": "token", "daily_usd": 1}}, ["e"], "x")[0]
    assert spend.spent(budget, "alice", 0) == 0  # until the table is read: due at once
    assert spend.due(2000.0, 60)
    assert spend.merge([(1000.0, "alice", None, "e", 0.25, "r1")]) == 1
    assert spend.spent(budget, "alice", 0) == 0.25
