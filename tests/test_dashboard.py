"""The dashboard's JSON API against figures computed here with SQL (DuckDB's delta extension)
on the same tables: a collector fed the real captures of Claude Code, Codex and Gemini CLI and
Claude Code-shaped data from the OpenTelemetry SDK (several users, models and sessions, values
that vary per record, delta and cumulative sums), read with tokens of each kind."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from tests import upstream_stub as up
from tests.conftest import CAPTURES, CollectorProcess, free_port, wait_for_rows
from tests.readers import duckdb_with_delta
from tests.test_security import add_token

USERS = ("ana@example.com", "ben@example.com", "chen@example.com")
MODELS = ("claude-opus-4-6", "claude-haiku-4-5")
T0 = 1_796_119_200_000_000_000  # 2026-12-01T10:00:00Z, ns
SDK_CALLS = 60
FINETUNE = "databricks-my-finetune"  # an endpoint the prices file prices
KEYS = {"STUB_ANTHROPIC_KEY": "sk-ant-upstream", "STUB_OPENAI_KEY": "sk-openai-upstream",
        "STUB_GEMINI_KEY": "AIza-upstream"}  # fmt: skip
PROXY_TOML = """
tables = "main.agents.gw"

[upstreams.anthropic]
base_url = "{url}"
api_key_env = "STUB_ANTHROPIC_KEY"

[upstreams.openai]
base_url = "{url}"
api_key_env = "STUB_OPENAI_KEY"

[upstreams.gemini]
base_url = "{url}"
api_key_env = "STUB_GEMINI_KEY"

[endpoints.databricks-claude-opus-4-6]
upstream = "anthropic"
model = "claude-opus-4-6"

[endpoints.databricks-claude-overloaded]
upstream = "anthropic"
model = "claude-overloaded"

[endpoints.databricks-claude-limited]
upstream = "anthropic"
model = "claude-haiku-4-5"
requests_per_minute = 1

[endpoints.databricks-gpt-5-2]
upstream = "openai"
model = "gpt-5.2"

[endpoints.databricks-gemini-2-5-flash]
upstream = "gemini"
model = "gemini-2.5-flash"
"""


def _estimate(model: str, input_: int, output: int, cache_read: int, cache_write: int) -> float:
    """What the test expects a call of ``model`` to cost: genai-prices' data, or the prices
    file's price."""
    if model == FINETUNE:
        return (input_ * 2.0 + output * 10.0 + cache_read * 0.5 + cache_write * 2.0) / 1e6
    ref = {"databricks-gpt-5-2": "gpt-5.2"}.get(model, model)
    usage = Usage(
        input_tokens=input_ + cache_read + cache_write,
        output_tokens=output,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    return float(calc_price(usage, model_ref=ref).total_price)


_PRICED = {"databricks-gpt-5-2", "gemini-2.5-flash", FINETUNE}


def _headers(table: str, token: str) -> dict[str, str]:
    return {"X-Databricks-UC-Table-Name": table, "Authorization": f"Bearer {token}"}


def _sdk_logs(proc: CollectorProcess, table: str, token: str) -> None:
    """Claude Code api_request and user_prompt events through the SDK's OTLP/HTTP exporter."""
    rnd = random.Random(17)
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource({"service.name": "claude-code"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("com.anthropic.claude_code.events")
    for i in range(SDK_CALLS):
        user = USERS[i % 3]
        common = {"user.email": user, "session.id": f"s-{user}-{i % 2}"}
        logger.emit(
            LogRecord(
                timestamp=T0 + i * 60_000_000_000,  # a call a minute
                body="claude_code.api_request",
                attributes={
                    **common,
                    "event.name": "api_request",
                    "model": MODELS[i % 2],
                    "input_tokens": rnd.randint(1, 5000),
                    "output_tokens": rnd.randint(1, 2000),
                    "cache_read_tokens": rnd.randint(0, 90_000),
                    "cache_creation_tokens": rnd.randint(0, 3000),
                    "cost_usd": round(rnd.uniform(0.001, 0.5), 6),
                    "duration_ms": rnd.randint(200, 9000),
                },
            )
        )
        logger.emit(
            LogRecord(
                timestamp=T0 + i * 60_000_000_000 + 1,
                body="claude_code.user_prompt",
                attributes={**common, "event.name": "user_prompt", "prompt_length": i},
            )
        )
        logger.emit(
            LogRecord(
                timestamp=T0 + i * 60_000_000_000 + 2,
                body="claude_code.tool_result",
                attributes={
                    **common,
                    "event.name": "tool_result",
                    "tool_name": ("Read", "Edit", "Bash")[i % 3],
                    "success": "true" if rnd.random() < 0.8 else "false",
                    "duration_ms": rnd.randint(1, 4000),
                },
            )
        )
        if i % 7 == 0:
            logger.emit(
                LogRecord(
                    timestamp=T0 + i * 60_000_000_000 + 3,
                    body="claude_code.api_error",
                    attributes={
                        **common,
                        "event.name": "api_error",
                        "model": MODELS[i % 2],
                        "status_code": (429, 500, 529)[i % 3],
                        "error": f"upstream said no ({i})",
                    },
                )
            )
    _export_logs(proc, table, token, memory)


def _export_logs(
    proc: CollectorProcess, table: str, token: str, memory: InMemoryLogRecordExporter
) -> None:
    exporter = OTLPLogExporter(endpoint=proc.url("/v1/logs"), headers=_headers(table, token))
    assert exporter.export(list(memory.get_finished_logs())).name == "SUCCESS"
    exporter.shutdown()


def _sdk_other_agents(proc: CollectorProcess, token: str) -> None:
    """Gemini CLI's tool calls and API errors, and Codex's failed requests, as they send them."""
    for service, session, table, events in [
        ("gemini-cli", "session.id", "main.agents.gsdk_otel_logs", [
            ("gemini_cli.tool_call", {"function_name": "read_file", "success": True,
                                      "duration_ms": 12}),
            ("gemini_cli.tool_call", {"function_name": "read_file", "success": False,
                                      "duration_ms": 30}),
            ("gemini_cli.tool_call", {"function_name": "run_shell_command", "success": True,
                                      "duration_ms": 900}),
            ("gemini_cli.api_error", {"model": "gemini-2.5-pro", "status_code": 503,
                                      "error": "overloaded", "duration_ms": 80}),
        ]),
        ("codex_cli_rs", "conversation.id", "main.agents.xsdk_otel_logs", [
            ("codex.api_request", {"model": "gpt-5", "http.response.status_code": 200,
                                   "duration_ms": 300}),
            ("codex.api_request", {"model": "gpt-5", "http.response.status_code": 500,
                                   "error.message": "internal error", "duration_ms": 20}),
            ("codex.tool_result", {"tool_name": "shell", "success": "true", "duration_ms": 41}),
            # calls of models priced by the prices file, and of one nobody prices
            ("codex.sse_event", {"event.kind": "response.completed", "model": FINETUNE,
                                 "input_token_count": 1000, "cached_token_count": 200,
                                 "output_token_count": 300}),
            ("codex.sse_event", {"event.kind": "response.completed", "model": "mystery-model",
                                 "input_token_count": 50, "output_token_count": 5}),
        ]),
    ]:  # fmt: skip
        memory = InMemoryLogRecordExporter()
        provider = LoggerProvider(resource=Resource({"service.name": service}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
        logger = provider.get_logger(service)
        for i, (name, attributes) in enumerate(events):
            logger.emit(
                LogRecord(
                    timestamp=T0 + 10**12 * (i + 1),
                    body=name,
                    attributes={"event.name": name, session: f"{service}-1", **attributes},
                )
            )
        _export_logs(proc, table, token, memory)


def _sdk_metrics(proc: CollectorProcess, table: str, token: str) -> None:
    """Lines and commits as delta sums (Claude Code's default) and pull requests as a
    cumulative sum exported twice (1, then 3): adding its points would count 4."""
    exporter = OTLPMetricExporter(endpoint=proc.url("/v1/metrics"), headers=_headers(table, token))
    resource = Resource({"service.name": "claude-code"})
    delta = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
    meter = MeterProvider(metric_readers=[delta], resource=resource).get_meter("claude")
    lines = meter.create_counter("claude_code.lines_of_code.count")
    commits = meter.create_counter("claude_code.commit.count")
    decisions = meter.create_counter("claude_code.code_edit_tool.decision")
    for i, (tool, language, decision) in enumerate(
        [("Edit", "Python", "accept")] * 5 + [("Edit", "Python", "reject")] * 2
        + [("Write", "TypeScript", "accept")] * 3 + [("Edit", "TypeScript", "reject")]
    ):  # fmt: skip
        decisions.add(1, {"tool_name": tool, "language": language, "decision": decision,
                          "user.email": USERS[i % 3]})  # fmt: skip
    for user in USERS:
        lines.add(120, {"type": "added", "user.email": user, "model": MODELS[0]})
        lines.add(30, {"type": "removed", "user.email": user, "model": MODELS[0]})
        commits.add(2, {"user.email": user})
    assert exporter.export(delta.get_metrics_data()).name == "SUCCESS"
    lines.add(7, {"type": "added", "user.email": USERS[0], "model": MODELS[1]})
    assert exporter.export(delta.get_metrics_data()).name == "SUCCESS"
    cumulative = InMemoryMetricReader()  # the SDK's default: cumulative
    meter = MeterProvider(metric_readers=[cumulative], resource=resource).get_meter("claude")
    prs = meter.create_counter("claude_code.pull_request.count")
    prs.add(1, {"user.email": USERS[1]})
    assert exporter.export(cumulative.get_metrics_data()).name == "SUCCESS"
    prs.add(2, {"user.email": USERS[1]})
    assert exporter.export(cumulative.get_metrics_data()).name == "SUCCESS"
    exporter.shutdown()


TABLES = {
    "main.agents.cc_otel_logs": ("claude-code-2.1.197.logs.pb", 8),
    "main.agents.cc_otel_metrics": ("claude-code-2.1.197.metrics.pb", 15),
    "main.agents.codex_otel_logs": ("codex-cli-0.169.0.logs.pb", 15),
    "main.agents.gemini_otel_logs": ("gemini-cli-0.61.0.logs.json", 10),
    "main.other.cc_otel_logs": ("claude-code-2.1.197.logs.pb", 8),
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, dict]]:
    root = tmp_path_factory.mktemp("dashboard")
    tokens_file = root / "tokens.toml"
    tokens = {
        "writer": add_token(tokens_file, "writer", "main.*.*"),
        "reader": add_token(tokens_file, "reader", "read:main.agents.*"),
        "other": add_token(tokens_file, "other", "read:main.other.*"),
        "caller": add_token(tokens_file, "caller", "endpoint:*"),
    }
    prices = root / "prices.toml"
    prices.write_text(
        f'[price."{FINETUNE}"]\ninput = 2.0\noutput = 10.0\ncache_read = 0.5\n'
        '[models]\n"databricks-gpt-5-2" = "openai/gpt-5.2"\n'
    )
    stub = up.Stub()
    stub.start()
    proxy = root / "proxy.toml"
    proxy.write_text(PROXY_TOML.format(url=stub.url))
    proc = CollectorProcess(
        root / "wh", "--tokens-file", str(tokens_file), "--prices", str(prices),
        "--proxy-config", str(proxy), env=KEYS,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {tokens['writer']}"}
    for table, (capture, _) in TABLES.items():
        signal = "logs" if "_logs" in table else "metrics"
        body = (CAPTURES / capture).read_bytes()
        media = "application/json" if capture.endswith(".json") else "application/x-protobuf"
        request = urllib.request.Request(
            proc.url(f"/v1/{signal}"),
            data=body,
            headers={"Content-Type": media, "X-Databricks-UC-Table-Name": table, **auth},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    _sdk_logs(proc, "main.agents.sdk_otel_logs", tokens["writer"])
    _sdk_metrics(proc, "main.agents.sdk_otel_metrics", tokens["writer"])
    _sdk_other_agents(proc, tokens["writer"])
    _proxied_calls(proc, tokens["caller"])
    for table, (_, rows) in TABLES.items():
        wait_for_rows(proc.table_path(table), rows)
    wait_for_rows(proc.table_path("main.agents.sdk_otel_logs"), 3 * SDK_CALLS + 9)
    wait_for_rows(proc.table_path("main.agents.gsdk_otel_logs"), 4)
    wait_for_rows(proc.table_path("main.agents.xsdk_otel_logs"), 5)
    wait_for_rows(proc.table_path("main.agents.sdk_otel_metrics"), 11 + 7)
    wait_for_rows(proc.table_path("main.agents.gw_usage"), PROXIED_CALLS)
    yield proc, tokens
    proc.stop()
    stub.stop()


PROXIED_CALLS = 8


def _proxied_calls(proc: CollectorProcess, token: str) -> None:
    """Claude Code, Codex and Gemini CLI calls through the proxy with the providers' SDKs:
    streamed and not, an upstream that is overloaded (529), a rate limit that refuses (429)."""
    import anthropic
    import openai
    from google import genai
    from google.genai import types

    claude = anthropic.Anthropic(
        base_url=proc.url("/anthropic"), api_key=None, auth_token=token, max_retries=0,
        default_headers={"User-Agent": "claude-cli/2.1.197 (external, cli)"},
    )  # fmt: skip
    message: Any = [{"role": "user", "content": "hi"}]
    claude.messages.create(model="databricks-claude-opus-4-6", max_tokens=50, messages=message)
    with claude.messages.stream(
        model="databricks-claude-opus-4-6", max_tokens=50, messages=message
    ) as stream:
        stream.get_final_message()
    with pytest.raises(anthropic.APIStatusError):
        claude.messages.create(model="databricks-claude-overloaded", max_tokens=5, messages=message)
    claude.messages.create(model="databricks-claude-limited", max_tokens=5, messages=message)
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="databricks-claude-limited", max_tokens=5, messages=message)
    codex = openai.OpenAI(
        base_url=proc.url("/openai/v1"), api_key=token, max_retries=0,
        default_headers={"User-Agent": "codex_cli_rs/0.169.0"},
    )  # fmt: skip
    codex.responses.create(model="databricks-gpt-5-2", input="hi")
    codex.responses.create(model="databricks-gpt-5-2", input="again")
    gemini = genai.Client(
        api_key="unused",
        http_options=types.HttpOptions(
            base_url=proc.url("/gemini"), api_version="v1beta",
            headers={"User-Agent": "GeminiCLI/0.61.0", "Authorization": f"Bearer {token}"},
        ),
    )  # fmt: skip
    gemini.models.generate_content(model="databricks-gemini-2-5-flash", contents="salut")


def _get(proc: CollectorProcess, path: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(proc.url(path), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(
            body
        ) if e.headers.get_content_type() == "application/json" else body


# --- the same figures, in SQL --------------------------------------------------------------

_CALLS = {  # per table: the agent, its user/session expressions, what a call is, its tokens
    "cc": "claude", "sdk": "claude", "codex": "codex", "xsdk": "codex", "gemini": "gemini",
    "gsdk": "gemini",
}  # fmt: skip
_SQL = {
    "claude": dict(
        user="coalesce(attributes['user.email'], attributes['user.account_uuid'], "
        "attributes['user.id'])",
        session="attributes['session.id']",
        call="attributes['event.name'] = 'api_request'",
        input="attributes['input_tokens']",
        cache_read="attributes['cache_read_tokens']",
        cache_creation="attributes['cache_creation_tokens']",
        output="attributes['output_tokens']",
        cost="attributes['cost_usd']",
        tool="attributes['event.name'] = 'tool_result'",
        tool_name="attributes['tool_name']",
        error="attributes['event.name'] = 'api_error'",
        status="attributes['status_code']",
        message="attributes['error']",
    ),
    "codex": dict(
        user="coalesce(attributes['user.email'], attributes['user.account_id'])",
        session="attributes['conversation.id']",
        call="attributes['event.name'] = 'codex.sse_event' AND attributes['event.kind'] = "
        "'response.completed' AND attributes['input_token_count'] IS NOT NULL",
        input="CAST(attributes['input_token_count'] AS BIGINT) - "
        "coalesce(CAST(attributes['cached_token_count'] AS BIGINT), 0)",
        cache_read="attributes['cached_token_count']",
        cache_creation="attributes['cache_write_token_count']",
        output="attributes['output_token_count']",
        cost="NULL",
        tool="attributes['event.name'] = 'codex.tool_result'",
        tool_name="attributes['tool_name']",
        error="attributes['event.name'] = 'codex.api_request' AND "
        "CAST(attributes['http.response.status_code'] AS INT) >= 400",
        status="attributes['http.response.status_code']",
        message="attributes['error.message']",
    ),
    "gemini": dict(
        user="coalesce(attributes['user.email'], attributes['installation.id'])",
        session="coalesce(attributes['session.id'], resource.attributes['session.id'])",
        call="attributes['event.name'] = 'gemini_cli.api_response'",
        input="CAST(attributes['input_token_count'] AS BIGINT) - "
        "coalesce(CAST(attributes['cached_content_token_count'] AS BIGINT), 0)",
        cache_read="attributes['cached_content_token_count']",
        cache_creation="NULL",
        output="attributes['output_token_count']",
        cost="NULL",
        tool="attributes['event.name'] = 'gemini_cli.tool_call'",
        tool_name="attributes['function_name']",
        error="attributes['event.name'] = 'gemini_cli.api_error'",
        status="attributes['status_code']",
        message="attributes['error']",
    ),
}


def _events_sql(root: Path, schemas: str) -> str:
    """One row per log record of every logs table of ``schemas`` (a glob): time, agent, user,
    session, model, is_call and the call's tokens, cost and duration."""
    selects = []
    for path in sorted(root.glob(f"{schemas}/*_otel_logs")):
        agent = _CALLS[path.name.split("_")[0]]
        q = _SQL[agent]
        key = {"claude": "claude-code", "codex": "codex", "gemini": "gemini-cli"}[agent]
        selects.append(
            "SELECT CASE WHEN time_unix_nano > 0 THEN time_unix_nano ELSE "
            f"observed_time_unix_nano END AS time, '{key}' AS agent, {q['user']} AS user, "
            f"{q['session']} AS session, attributes['model'] AS model, ({q['call']}) AS is_call, "
            f"CAST({q['input']} AS BIGINT) AS input, CAST({q['output']} AS BIGINT) AS output, "
            f"CAST({q['cache_read']} AS BIGINT) AS cache_read, "
            f"CAST({q['cache_creation']} AS BIGINT) AS cache_creation, "
            f"CAST({q['cost']} AS DOUBLE) AS cost, "
            f"CAST(attributes['duration_ms'] AS DOUBLE) AS duration, "
            f"coalesce({q['tool']}, FALSE) AS is_tool, {q['tool_name']} AS tool, "
            "lower(attributes['success']) = 'true' AS tool_success, "
            f"coalesce({q['error']}, FALSE) AS is_error, CAST({q['status']} AS BIGINT) AS status, "
            f"{q['message']} AS message FROM delta_scan('{path}')"
        )
    return " UNION ALL ".join(selects)


def _expected(proc: CollectorProcess, schemas: str, where: str = "TRUE") -> dict[str, Any]:
    """The tiles, by SQL over every logs and metrics table of ``schemas`` (a glob); ``where``
    filters the events (columns: time, agent, user, model)."""
    root = Path(proc.warehouse) / "main"
    events = _events_sql(root, schemas)
    con = duckdb_with_delta()
    try:
        row = con.execute(
            f"WITH e AS ({events}), f AS (SELECT * FROM e WHERE {where}) SELECT "
            "count(DISTINCT user), count(DISTINCT session), "
            "count(*) FILTER (WHERE is_call), "
            "coalesce(sum(input) FILTER (WHERE is_call), 0), "
            "coalesce(sum(output) FILTER (WHERE is_call), 0), "
            "coalesce(sum(cache_read) FILTER (WHERE is_call), 0), "
            "coalesce(sum(cache_creation) FILTER (WHERE is_call), 0), "
            "sum(cost) FILTER (WHERE is_call) FROM f"
        ).fetchone()
        assert row is not None
        unreported = con.execute(
            f"WITH e AS ({events}) SELECT model, coalesce(input, 0), coalesce(output, 0), "
            "coalesce(cache_read, 0), coalesce(cache_creation, 0) FROM e "
            f"WHERE is_call AND cost IS NULL AND {where}"
        ).fetchall()
        metrics = sorted(root.glob(f"{schemas}/*_otel_metrics"))
        figures = {k: 0.0 for k in ("lines_added", "lines_removed", "commits", "pull_requests",
                                    "active_time_s")}  # fmt: skip
        for path in metrics:
            points = (
                f"SELECT name, sum.value AS value, sum.aggregation_temporality AS temporality, "
                f"sum.time_unix_nano AS time, 'claude-code' AS agent, "
                f"coalesce(sum.attributes['user.email'], sum.attributes['user.id']) AS user, "
                f"sum.attributes['model'] AS model, sum.attributes['type'] AS type, "
                f"sum.start_time_unix_nano AS start, sum.attributes AS attrs "
                f"FROM delta_scan('{path}') WHERE metric_type = 'sum'"
            )
            for figure, name, kind in [
                ("lines_added", "claude_code.lines_of_code.count", "added"),
                ("lines_removed", "claude_code.lines_of_code.count", "removed"),
                ("commits", "claude_code.commit.count", None),
                ("pull_requests", "claude_code.pull_request.count", None),
                ("active_time_s", "claude_code.active_time.total", None),
            ]:
                chosen = f"name = '{name}'" + (f" AND type = '{kind}'" if kind else "")
                (value,) = con.execute(
                    f"WITH p AS ({points}), f AS (SELECT * FROM p WHERE {chosen} AND {where}) "
                    "SELECT coalesce((SELECT sum(value) FROM f WHERE temporality <> "
                    "'AGGREGATION_TEMPORALITY_CUMULATIVE'), 0) + coalesce((SELECT sum(last) "
                    "FROM (SELECT arg_max(value, time) AS last FROM f WHERE temporality = "
                    "'AGGREGATION_TEMPORALITY_CUMULATIVE' GROUP BY start, attrs)), 0)"
                ).fetchone()  # type: ignore[misc]
                figures[figure] += value
    finally:
        con.close()
    users, sessions, calls, input_, output, cache_read, cache_creation, cost = row
    prompt = input_ + cache_read + cache_creation
    estimates = [_estimate(*c) for c in unreported if c[0] in _PRICED]
    estimated = sum(estimates) if estimates else None
    return {
        "active_users": users,
        "sessions": sessions,
        "api_calls": calls,
        "tokens": {
            "input": input_,
            "output": output,
            "cache_read": cache_read,
            "cache_creation": cache_creation,
        },
        "cache_hit_ratio": cache_read / prompt if prompt else None,
        "reported_cost_usd": cost,
        "estimated_cost_usd": estimated,
        "cost_usd": None if cost is None and estimated is None else (cost or 0) + (estimated or 0),
        "unpriced_calls": len(unreported) - len(estimates),
        **figures,
    }


def _assert_tiles(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in ("reported_cost_usd", "estimated_cost_usd", "cost_usd", "cache_hit_ratio",
                "active_time_s"):  # fmt: skip
        if want[key] is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-9), key
    plain = {k: v for k, v in want.items() if k not in ("reported_cost_usd", "cache_hit_ratio",
             "active_time_s", "estimated_cost_usd", "cost_usd")}  # fmt: skip
    assert {k: got[k] for k in plain} == plain


def test_tiles_equal_sql_over_the_same_tables(fed: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = fed
    status, body = _get(proc, "/dashboard/api/tiles", tokens["reader"])
    assert status == 200, body
    assert body["tables"] == [
        "main.agents.cc_otel_logs", "main.agents.cc_otel_metrics", "main.agents.codex_otel_logs",
        "main.agents.gemini_otel_logs", "main.agents.gsdk_otel_logs", "main.agents.gw_inference",
        "main.agents.gw_otel_spans", "main.agents.gw_usage", "main.agents.sdk_otel_logs",
        "main.agents.sdk_otel_metrics",
        "main.agents.xsdk_otel_logs",
    ]  # fmt: skip
    want = _expected(proc, "agents")
    _assert_tiles(body, want)
    # The data is what the test sent: every agent's calls, the SDK's cumulative sum counted
    # by what it grew to (3), not by its points added up (4).
    assert want["api_calls"] == 3 + 1 + 1 + SDK_CALLS + 2
    assert body["unpriced_calls"] == 1  # the mystery model: no price, no made-up one
    assert body["estimated_cost_usd"] > 0 and body["cost_usd"] > body["reported_cost_usd"]
    assert body["pull_requests"] == 3
    assert body["commits"] == 6 and body["lines_added"] == 3 + 3 * 120 + 7


@pytest.mark.parametrize(
    "query, where",
    [
        ("agent=codex", "agent = 'codex'"),
        ("agent=claude-code", "agent = 'claude-code'"),
        (f"user={USERS[1]}", f"user = '{USERS[1]}'"),
        (f"model={MODELS[1]}", f"model = '{MODELS[1]}'"),
        (
            "from=2026-12-01T10:10:00Z&to=2026-12-01T10:40:00Z",
            "time >= epoch_ns(TIMESTAMPTZ '2026-12-01 10:10:00+00') "
            "AND time < epoch_ns(TIMESTAMPTZ '2026-12-01 10:40:00+00')",
        ),
    ],
)
def test_each_filter_changes_the_figures_as_sql_does(
    fed: tuple[CollectorProcess, dict], query: str, where: str
) -> None:
    proc, tokens = fed
    status, body = _get(proc, f"/dashboard/api/tiles?{query}", tokens["reader"])
    assert status == 200, body
    want = _expected(proc, "agents", where)
    _assert_tiles(body, want)
    everything = _get(proc, "/dashboard/api/tiles", tokens["reader"])[1]
    assert body["api_calls"] < everything["api_calls"]


def test_reading_is_a_grant_of_its_own(fed: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = fed
    assert _get(proc, "/dashboard/api/tiles", None)[0] == 401
    for name in ("writer", "caller"):
        status, body = _get(proc, "/dashboard/api/tiles", tokens[name])
        assert status == 403 and "no read grant" in body["error"], body
    status, body = _get(proc, "/dashboard/api/tiles", tokens["other"])
    assert status == 200 and body["tables"] == ["main.other.cc_otel_logs"]
    _assert_tiles(body, _expected(proc, "other"))
    assert _get(proc, "/dashboard/api/tables", tokens["other"])[1] == {
        "tables": ["main.other.cc_otel_logs"]
    }


def test_a_bad_filter_is_a_400_that_says_which(fed: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = fed
    for query, words in [
        ("agent=cursorx", "agent='cursorx': expected one of"),
        ("from=yesterday", "from='yesterday': expected an ISO 8601 time"),
        ("from=2026-12-02&to=2026-12-01", "to must be after from"),
    ]:
        status, body = _get(proc, f"/dashboard/api/tiles?{query}", tokens["reader"])
        assert status == 400 and words in body["error"], (query, body)


def test_the_dashboard_alone_reads_a_warehouse_written_elsewhere(
    fed: tuple[CollectorProcess, dict],
) -> None:
    """``python -m collector dashboard``: read-only, no tokens file, so loopback clients read
    every table; ``serve --dashboard off`` has no dashboard."""
    proc, _ = fed
    port = free_port()
    alone = subprocess.Popen(
        [sys.executable, "-m", "collector", "dashboard", "--warehouse", str(proc.warehouse),
         "--http", f"127.0.0.1:{port}", "--log-format", "json",
         "--prices", str(Path(proc.warehouse).parent / "prices.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/dashboard/api/tiles"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    body = json.loads(response.read())
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline and alone.poll() is None, "did not start"
                time.sleep(0.1)
        assert len(body["tables"]) == 12  # the fed tables, and the proxy's spans
        _assert_tiles(body, _expected(proc, "*"))
    finally:
        alone.terminate()
        assert alone.wait(30) == 0
    off = CollectorProcess(Path(proc.warehouse).parent / "off", "--dashboard", "off")
    try:
        assert _get(off, "/dashboard/api/tiles", None)[0] == 404
        assert _get(off, "/dashboard/api/tables", None)[0] == 404
    finally:
        off.stop()


@pytest.mark.parametrize("by", ["model", "day,user", "session", "agent,model", ""])
def test_calls_grouped_equal_sql(fed: tuple[CollectorProcess, dict], by: str) -> None:
    """Cost per user per day, cost and tokens by model, the top sessions, latency p50/p95."""
    proc, tokens = fed
    status, body = _get(proc, f"/dashboard/api/calls?by={by}&limit=50", tokens["reader"])
    assert status == 200, body
    dims = [d for d in by.split(",") if d]
    keys = [("strftime(make_timestamp(time // 1000), '%Y-%m-%d')" if d == "day" else d) + f" AS {d}"
            for d in dims]  # fmt: skip
    con = duckdb_with_delta()
    try:
        sql = (
            f"WITH e AS ({_events_sql(Path(proc.warehouse) / 'main', 'agents')}) "
            f"SELECT {', '.join([*keys, ''])}count(*), sum(input), sum(output), sum(cache_read), "
            "sum(cache_creation), sum(cost), quantile_cont(duration, 0.5), "
            "quantile_cont(duration, 0.95) FROM e WHERE is_call"
            + (f" GROUP BY {', '.join(dims)}" if dims else "")
        )
        want = {tuple(r[: len(dims)]): r[len(dims) :] for r in con.execute(sql).fetchall()}
    finally:
        con.close()
    got = {tuple(row[d] for d in dims): row for row in body["rows"]}
    assert set(got) == set(want)
    for key, (n, i, o, cr, cc, cost, p50, p95) in want.items():
        row = got[key]
        assert (row["calls"], row["input"], row["output"]) == (n, i, o)
        assert row["cache_read"] == (cr or 0)  # no cached tokens reported: none
        assert row["cache_creation"] == (cc or 0) or (cc is None and row["cache_creation"] is None)
        for name, value in (("reported_cost_usd", cost), ("duration_p50_ms", p50),
                            ("duration_p95_ms", p95)):  # fmt: skip
            assert row[name] == (None if value is None else pytest.approx(value)), (key, name)
    costs = [r["cost_usd"] for r in body["rows"] if r["cost_usd"] is not None]
    if "day" not in dims:
        assert costs == sorted(costs, reverse=True)  # the costliest first
    if dims == ["session"]:
        top = body["rows"][0]
        assert top["session_user"] in USERS and set(top["models"]) <= set(MODELS)


def test_options_list_what_the_range_holds(fed: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = fed
    status, body = _get(proc, "/dashboard/api/options", tokens["reader"])
    assert status == 200
    assert body["agent"] == ["claude-code", "codex", "gemini-cli"]
    assert set(USERS) <= set(body["user"]) and set(MODELS) <= set(body["model"])
    late = _get(proc, "/dashboard/api/options?from=2026-12-01T11:30:00Z", tokens["reader"])[1]
    assert late["agent"] == ["gemini-cli"]  # its capture is of the evening; the rest earlier
    assert "gemini-2.5-flash" in late["model"] and MODELS[0] not in late["model"]


# --- the page, in a real browser ------------------------------------------------------------

_CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
_TILES = ("active_users", "sessions", "api_calls", "cost_usd", "reported_cost_usd",
          "estimated_cost_usd", "unpriced_calls", "cache_hit_ratio",
          "lines_added", "lines_removed", "commits", "pull_requests", "active_time_s")  # fmt: skip


def _page_tiles(page: Any) -> dict[str, float | None]:
    values = {}
    for name in _TILES:
        text = page.get_attribute(f'[data-tile="{name}"]', "data-value")
        values[name] = float(text) if text else None
    return values


def _assert_page_shows(page: Any, api: dict[str, Any]) -> None:
    shown = _page_tiles(page)
    for name in _TILES:
        if api[name] is None:
            assert shown[name] is None, name
        else:
            assert shown[name] == pytest.approx(api[name]), name


def test_the_page_in_a_browser_shows_what_the_api_says(
    fed: tuple[CollectorProcess, dict], tmp_path: Path
) -> None:
    """Debian's chromium, driven by Playwright: the reader signs in with a token, the tiles and
    a sample of each chart's data equal the API's figures (which equal SQL, above), a filter
    changes them as the API does, nothing goes to the console, no request leaves the
    collector, and a screenshot is saved (DASHBOARD_SCREENSHOT=path keeps a copy)."""
    from playwright.sync_api import sync_playwright

    proc, tokens = fed
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; .ci/run does)"
    origin = proc.url("")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=_CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(proc.url("/dashboard"))
            page.wait_for_selector("#login:not([hidden])")  # a tokens file: sign in first
            page.fill("#token input", tokens["reader"])
            page.click("#token button")
            page.wait_for_selector("body[data-state=ready]")
            _assert_page_shows(page, _get(proc, "/dashboard/api/tiles", tokens["reader"])[1])

            by_model = _get(proc, "/dashboard/api/calls?by=model", tokens["reader"])[1]["rows"]
            traces = json.loads(page.get_attribute("#tokens-by-model", "data-traces") or "[]")
            output = next(t for t in traces if t["name"] == "output")
            assert output["x"] == [r["model"] for r in by_model]
            assert output["y"] == [r["output"] for r in by_model]
            latency = json.loads(page.get_attribute("#latency-by-model", "data-traces") or "[]")
            assert latency[1]["y"] == [r["duration_p95_ms"] for r in by_model]
            per_day = _get(proc, "/dashboard/api/calls?by=day,user", tokens["reader"])[1]["rows"]
            bars = json.loads(page.get_attribute("#cost-per-user-day", "data-traces") or "[]")
            assert sum(sum(t["y"]) for t in bars) == pytest.approx(
                sum(r["cost_usd"] or 0 for r in per_day)
            )
            top = _get(proc, "/dashboard/api/calls?by=session&limit=10", tokens["reader"])[1]
            first_row = page.inner_text("#sessions tbody tr:first-child td:first-child")
            assert first_row == top["rows"][0]["session"]
            assert page.locator("#sessions tbody tr").count() == len(top["rows"])
            tools = _get(proc, "/dashboard/api/tools", tokens["reader"])[1]["rows"]
            assert page.locator("#tools tbody tr").count() == len(tools)
            cells = page.locator("#tools tbody tr:first-child td").all_inner_texts()
            assert cells[:3] == [tools[0]["agent"], tools[0]["tool"], str(tools[0]["calls"])]
            failed = _get(proc, "/dashboard/api/errors?limit=20", tokens["reader"])[1]
            bars = json.loads(page.get_attribute("#errors-by-status", "data-traces") or "[]")
            assert sum(sum(t["y"]) for t in bars) == sum(r["errors"] for r in failed["by_status"])
            messages = page.locator("#errors tbody tr td:last-child").all_inner_texts()
            assert messages == [r["message"] or "\u2013" for r in failed["recent"]]  # or a dash
            with page.expect_download() as download:
                page.click("a.csv[data-table=tools]")
            lines = Path(download.value.path()).read_text().splitlines()
            assert lines[0] == "agent,tool,calls,success_rate,duration_p50_ms,duration_p95_ms"
            assert len(lines) == 1 + len(tools)
            days = _get(proc, "/dashboard/api/productivity", tokens["reader"])[1]["rows"]
            lines = json.loads(page.get_attribute("#lines-per-day", "data-traces") or "[]")
            assert lines[0]["x"] == [r["day"] for r in days]
            assert lines[0]["y"] == [r["lines_added"] for r in days]
            decided = _get(proc, "/dashboard/api/edits", tokens["reader"])[1]["rows"]
            first = page.locator("#edits tbody tr:first-child td").all_inner_texts()
            assert first[:4] == [decided[0]["tool"], decided[0]["language"],
                                 f"{decided[0]['accepted']:g}", f"{decided[0]['rejected']:g}"]  # fmt: skip
            gw = _get(proc, "/dashboard/api/gateway", tokens["reader"])[1]
            statuses = json.loads(page.get_attribute("#gateway-status", "data-traces") or "[]")
            assert sum(sum(t["y"]) for t in statuses) == sum(r["requests"] for r in gw["by_status"])
            shown = page.locator("#endpoints tbody tr td:first-child").all_inner_texts()
            assert shown == [r["endpoint"] for r in gw["endpoints"]]
            assert page.locator("#refusals tbody tr").all_inner_texts() == ["caller\t1"]
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            if os.environ.get("DASHBOARD_SCREENSHOT"):
                shutil.copy(tmp_path / "dashboard.png", os.environ["DASHBOARD_SCREENSHOT"])

            assert page.locator("#setup").is_hidden()  # every agent has sent data
            for agent in ("codex", "gemini-cli", "claude-code"):
                page.select_option("select[name=agent]", agent)
                page.wait_for_selector("body[data-state=ready]")
                api = _get(proc, f"/dashboard/api/tiles?agent={agent}", tokens["reader"])[1]
                _assert_page_shows(page, api)
            page.select_option("select[name=agent]", "")
            page.select_option("select[name=model]", MODELS[1])
            page.wait_for_selector("body[data-state=ready]")
            api = _get(proc, f"/dashboard/api/tiles?model={MODELS[1]}", tokens["reader"])[1]
            _assert_page_shows(page, api)
            # A reader of main.other, where only Claude Code's capture is: the page says how
            # to point the other two agents at this collector.
            other = browser.new_page()
            other.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            other.on("request", lambda r: requests.append(r.url))
            other.goto(proc.url("/dashboard"))
            other.fill("#token input", tokens["other"])
            other.click("#token button")
            other.wait_for_selector("body[data-state=ready]")
            hints = other.locator("#setup p")
            assert [hints.nth(i).get_attribute("data-agent") for i in range(hints.count())] == [
                "codex",
                "gemini-cli",
            ]
            assert f'endpoint = "{origin}/v1/logs"' in hints.nth(0).inner_text()
        finally:
            browser.close()
    assert not errors, errors
    assert requests and all(url.startswith(origin) for url in requests), requests


def _sql(proc: CollectorProcess, query: str) -> list[tuple[Any, ...]]:
    con = duckdb_with_delta()
    try:
        events = _events_sql(Path(proc.warehouse) / "main", "agents")
        return con.execute(f"WITH e AS ({events}) {query}").fetchall()
    finally:
        con.close()


def test_tool_calls_equal_sql(fed: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = fed
    status, body = _get(proc, "/dashboard/api/tools", tokens["reader"])
    assert status == 200, body
    want = {
        (agent, tool): (n, rate, p50, p95)
        for agent, tool, n, rate, p50, p95 in _sql(
            proc,
            "SELECT agent, tool, count(*), avg(CAST(tool_success AS INT)), "
            "quantile_cont(duration, 0.5), quantile_cont(duration, 0.95) FROM e WHERE is_tool "
            "GROUP BY agent, tool",
        )
    }
    got = {(r["agent"], r["tool"]): r for r in body["rows"]}
    assert (
        set(got) == set(want) and len(want) == 3 + 1 + 2 + 1
    )  # Claude, its capture, Gemini, Codex
    for key, (n, rate, p50, p95) in want.items():
        row = got[key]
        assert row["calls"] == n
        assert row["success_rate"] == pytest.approx(rate)
        assert (row["duration_p50_ms"], row["duration_p95_ms"]) == (
            pytest.approx(p50), pytest.approx(p95))  # fmt: skip
    assert [r["calls"] for r in body["rows"]] == sorted((r["calls"] for r in body["rows"]),
                                                        reverse=True)  # fmt: skip


def test_errors_by_status_and_the_recent_ones_equal_sql(
    fed: tuple[CollectorProcess, dict],
) -> None:
    proc, tokens = fed
    status, body = _get(proc, "/dashboard/api/errors?limit=5", tokens["reader"])
    assert status == 200, body
    want = {
        (agent, code, model): n
        for agent, code, model, n in _sql(
            proc,
            "SELECT agent, status, model, count(*) FROM e WHERE is_error "
            "GROUP BY agent, status, model",
        )
    }
    got = {(r["agent"], r["error_status"], r["model"]): r["errors"] for r in body["by_status"]}
    assert got == want
    assert ("codex", 500, "gpt-5") in got and ("gemini-cli", 503, "gemini-2.5-pro") in got
    assert ("codex", 200, "gpt-5") not in got  # a request that succeeded is no error
    recent = _sql(
        proc, "SELECT agent, status, message FROM e WHERE is_error ORDER BY time DESC LIMIT 5"
    )
    assert [(r["agent"], r["status"], r["message"]) for r in body["recent"]] == recent


def _points_sql(schemas: str, root: Path) -> str:
    """The sum points of every metrics table of ``schemas`` with what each adds: a delta
    point its value, a cumulative one its growth since the series' previous point."""
    selects = [
        f"SELECT name, sum.value AS value, sum.aggregation_temporality AS temporality, "
        f"sum.time_unix_nano AS time, sum.start_time_unix_nano AS start, sum.attributes AS attrs, "
        f"'{path.name}' AS tbl FROM delta_scan('{path}') WHERE metric_type = 'sum'"
        for path in sorted(root.glob(f"{schemas}/*_otel_metrics"))
    ]
    return (
        f"WITH p AS ({' UNION ALL '.join(selects)}) SELECT *, CASE WHEN temporality = "
        "'AGGREGATION_TEMPORALITY_CUMULATIVE' THEN value - coalesce(lag(value) OVER (PARTITION "
        "BY tbl, name, start, attrs ORDER BY time), 0) ELSE value END AS increment FROM p"
    )


def test_productivity_per_day_equals_sql(fed: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = fed
    status, body = _get(proc, "/dashboard/api/productivity", tokens["reader"])
    assert status == 200, body
    con = duckdb_with_delta()
    try:
        rows = con.execute(
            f"WITH i AS ({_points_sql('agents', Path(proc.warehouse) / 'main')}) "
            "SELECT strftime(make_timestamp(time // 1000), '%Y-%m-%d') AS day, "
            "sum(increment) FILTER (WHERE name = 'claude_code.lines_of_code.count' "
            "AND attrs['type'] = 'added'), "
            "sum(increment) FILTER (WHERE name = 'claude_code.pull_request.count') "
            "FROM i GROUP BY day ORDER BY day"
        ).fetchall()
    finally:
        con.close()
    assert [(r["day"], r["lines_added"], r["pull_requests"]) for r in body["rows"]] == [
        (day, added or 0.0, prs or 0.0) for day, added, prs in rows
    ]
    assert sum(r["pull_requests"] for r in body["rows"]) == 3  # cumulative: 1, then 3


def test_edit_acceptance_by_tool_and_language_equals_sql(
    fed: tuple[CollectorProcess, dict],
) -> None:
    proc, tokens = fed
    status, body = _get(proc, "/dashboard/api/edits", tokens["reader"])
    assert status == 200, body
    con = duckdb_with_delta()
    try:
        rows = con.execute(
            f"WITH i AS ({_points_sql('agents', Path(proc.warehouse) / 'main')}) "
            "SELECT attrs['tool_name'], attrs['language'], "
            "coalesce(sum(increment) FILTER (WHERE attrs['decision'] = 'accept'), 0), "
            "coalesce(sum(increment) FILTER (WHERE attrs['decision'] = 'reject'), 0) "
            "FROM i WHERE name = 'claude_code.code_edit_tool.decision' GROUP BY ALL"
        ).fetchall()
    finally:
        con.close()
    want = {(tool, lang): (acc, rej) for tool, lang, acc, rej in rows}
    got = {(r["tool"], r["language"]): r for r in body["rows"]}
    assert set(got) == set(want)
    for key, (accepted, rejected) in want.items():
        assert (got[key]["accepted"], got[key]["rejected"]) == (accepted, rejected)
        assert got[key]["acceptance_rate"] == pytest.approx(accepted / (accepted + rejected))
    assert got[("Edit", "Python")]["accepted"] == 5 and got[("Edit", "Python")]["rejected"] == 2


def test_gateway_panels_equal_sql_over_the_usage_table(fed: tuple[CollectorProcess, dict]) -> None:
    proc, tokens = fed
    status, body = _get(proc, "/dashboard/api/gateway", tokens["reader"])
    assert status == 200, body
    path = Path(proc.warehouse) / "main" / "agents" / "gw_usage"
    con = duckdb_with_delta()
    try:
        scan = f"delta_scan('{path}')"
        by_status = con.execute(
            "SELECT strftime(make_timestamp(request_time_unix_nano // 1000), '%Y-%m-%d'), "
            f"status_code, count(*) FROM {scan} GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        endpoints = con.execute(
            "SELECT endpoint, count(*), count(*) FILTER (WHERE status_code >= 400), "
            "quantile_cont(latency_ms, 0.5), quantile_cont(time_to_first_token_ms, 0.95), "
            f"sum(output_tokens) FROM {scan} GROUP BY endpoint"
        ).fetchall()
        refusals = con.execute(
            f"SELECT token_name, count(*) FROM {scan} WHERE status_code = 429 GROUP BY ALL"
        ).fetchall()
        priced = con.execute(
            "SELECT endpoint, upstream_model, route, coalesce(input_tokens, 0), "
            "coalesce(output_tokens, 0), coalesce(cache_read_input_tokens, 0), "
            f"coalesce(cache_creation_input_tokens, 0) FROM {scan} "
            "WHERE upstream_model IN ('claude-opus-4-6', 'gpt-5.2')"
        ).fetchall()
    finally:
        con.close()
    assert [(r["day"], r["status_code"], r["requests"]) for r in body["by_status"]] == by_status
    assert {429, 529, 200} <= {r["status_code"] for r in body["by_status"]}
    got = {r["endpoint"]: r for r in body["endpoints"]}
    assert set(got) == {e[0] for e in endpoints}
    for endpoint, n, failed, p50, ttft95, output in endpoints:
        row = got[endpoint]
        assert (row["requests"], row["errors"], row["output"]) == (n, failed, output)
        assert row["latency_p50_ms"] == pytest.approx(p50)
        assert row["ttft_p95_ms"] == (None if ttft95 is None else pytest.approx(ttft95))
    assert [(r["token_name"], r["refusals"]) for r in body["refusals"]] == refusals
    assert refusals == [("caller", 1)]
    # Estimated cost per endpoint: the usage's tokens times genai-prices' (OpenAI counts the
    # cached input inside the input; Anthropic does not).
    want: dict[str, float] = {}
    for endpoint, model, route, inp, out, read, write in priced:
        uncached = inp - read if route == "openai" else inp
        want[endpoint] = want.get(endpoint, 0.0) + _estimate(model, uncached, out, read, write)
    assert set(want) == {"databricks-claude-opus-4-6", "databricks-gpt-5-2"}
    for endpoint, cost in want.items():
        assert got[endpoint]["estimated_cost_usd"] == pytest.approx(cost) and cost > 0
    filtered = _get(proc, "/dashboard/api/gateway?endpoint=databricks-gpt-5-2", tokens["reader"])
    assert [r["endpoint"] for r in filtered[1]["endpoints"]] == ["databricks-gpt-5-2"]
    # The model filter reads the model the endpoint serves; the token filter the caller's name.
    served = _get(proc, "/dashboard/api/gateway?model=gpt-5.2", tokens["reader"])[1]
    assert served["endpoints"] == filtered[1]["endpoints"]
    refused = _get(proc, "/dashboard/api/gateway?token=caller", tokens["reader"])[1]
    assert refused["refusals"] == [{"token_name": "caller", "refusals": 1}]
    assert {r["token_name"] for r in refused["tokens"]} == {"caller"}
    nobody = _get(proc, "/dashboard/api/gateway?token=nobody", tokens["reader"])[1]
    assert nobody == {"by_status": [], "tokens": [], "endpoints": [], "refusals": []}
    options = _get(proc, "/dashboard/api/options", tokens["reader"])[1]
    assert options["endpoint"] == sorted(got) and "caller" in options["token"]
