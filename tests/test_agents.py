"""The real coding agents through the proxy: Claude Code, Codex CLI and Gemini CLI (from npm,
tests/agents), run headless as a user runs them, configured as the README says. Each gets its
answer and leaves its usage row and span; a token over its budget sees the refusal, which
names the budget and when it resets, at once (the agents would otherwise retry for hours:
Codex waits out Retry-After). The upstream is tests/upstream_stub.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from collector.auth import add_token
from tests import upstream_stub as up
from tests.conftest import ROOT, CollectorProcess, node_modules
from tests.readers import read_both
from tests.test_proxy import KEYS, SPANS_TABLE, USAGE_TABLE, all_workers_started, gateway_files

AGENTS_DIR = ROOT / "tests" / "agents"
BIN = AGENTS_DIR / "node_modules" / ".bin"
PROMPT = "Say hello"


@dataclass
class Fleet:
    proc: CollectorProcess
    alice: str  # may call every endpoint
    dave: str  # over his daily budget (PROXY_TOML's dave-daily, $0.0001)
    home: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    node_modules(AGENTS_DIR)
    stub = up.Stub()
    stub.start()
    d = tmp_path_factory.mktemp("agents")
    config, tokens, alice = gateway_files(d, stub)
    dave = add_token(tokens, "dave", ["endpoint:databricks-*"])
    proc = CollectorProcess(d / "warehouse", "--proxy-config", str(config), "--tokens-file",
                            str(tokens), "--workers", "2", env=KEYS)  # fmt: skip
    all_workers_started(proc)
    # dave spends his day's budget ($0.000594 of opus against $0.0001).
    spent = httpx.post(
        proc.url("/anthropic/v1/messages"), timeout=30,
        json={"model": "databricks-claude-opus-4-6", "max_tokens": 8,
              "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {dave}", "anthropic-version": "2023-06-01"},
    )  # fmt: skip
    assert spent.status_code == 200
    yield Fleet(proc, alice, dave, d)
    assert proc.stop() == 0
    stub.stop()


def run_agent(fleet: Fleet, agent: str, token: str) -> tuple[int, str]:
    """Run ``agent`` once, headless, in a home and working directory of its own; its exit
    status and what it printed (stdout and stderr)."""
    home = fleet.home / f"{agent}-{token[-6:]}-{time.monotonic_ns()}"
    (home / "work").mkdir(parents=True)
    base = fleet.proc.url("")
    # Nothing from the test's own environment: no provider key may reach an agent.
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb"}
    if agent == "claude":
        env |= {
            "ANTHROPIC_BASE_URL": f"{base}/anthropic",
            "ANTHROPIC_AUTH_TOKEN": token,
            "ANTHROPIC_MODEL": "databricks-claude-opus-4-6",
            "ANTHROPIC_SMALL_FAST_MODEL": "databricks-claude-cheap",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        args = [str(BIN / "claude"), "-p", PROMPT]
    elif agent == "codex":
        codex_home = home / ".codex"
        codex_home.mkdir()
        (codex_home / "config.toml").write_text(
            'model_provider = "proxy"\nmodel = "databricks-gpt-5-2"\n\n'
            '[model_providers.proxy]\nname = "Coding-agent proxy"\n'
            f'base_url = "{base}/openai/v1"\nenv_key = "GATEWAY_TOKEN"\nwire_api = "responses"\n'
        )
        env |= {"CODEX_HOME": str(codex_home), "GATEWAY_TOKEN": token}
        args = [str(BIN / "codex"), "exec", "--skip-git-repo-check", PROMPT]
    else:
        settings = home / ".gemini"
        settings.mkdir()
        (settings / "settings.json").write_text(json.dumps({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": False},
            "general": {"disableAutoUpdate": True},
        }))  # fmt: skip
        (settings / ".env").write_text(
            "GEMINI_MODEL=databricks-gemini-2-5-flash\n"
            f"GOOGLE_GEMINI_BASE_URL={base}/gemini\n"
            'GEMINI_API_KEY_AUTH_MECHANISM="bearer"\n'
            f"GEMINI_API_KEY={token}\n"
        )
        env |= {"GEMINI_CLI_TRUST_WORKSPACE": "true"}
        args = [str(BIN / "gemini"), "-p", PROMPT]
    # The timeout only ends a hung agent (an agent waiting out a Retry-After of hours).
    done = subprocess.run(args, cwd=home / "work", env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


ANSWERS = {
    "claude": "".join(up.ANTHROPIC_TEXT),
    "codex": "".join(up.RESPONSES_TEXT),
    "gemini": "".join(up.GEMINI_TEXT),
}
AGENT_ROWS = {  # the usage row's agent, route, operation and endpoint of each one's call
    "claude": ("claude-code", "anthropic", "messages", "databricks-claude-opus-4-6"),
    "codex": ("codex", "openai", "responses", "databricks-gpt-5-2"),
    "gemini": ("gemini-cli", "gemini", "streamGenerateContent", "databricks-gemini-2-5-flash"),
}


def rows(fleet: Fleet, table: str, where: object, count: int) -> list[dict]:
    path = fleet.proc.table_path(table)
    deadline = time.monotonic() + 30
    while True:
        found = [r for r in read_both(path, key=lambda r: r.get("request_id") or r["span_id"])
                 if where(r)]  # type: ignore[operator]  # fmt: skip
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_each_agent_gets_its_answer_through_the_proxy(fleet: Fleet, agent: str) -> None:
    status, printed = run_agent(fleet, agent, fleet.alice)
    assert status == 0, printed
    assert ANSWERS[agent] in printed
    name, route, operation, endpoint = AGENT_ROWS[agent]
    (row,) = rows(fleet, USAGE_TABLE,
                  lambda r: r["token_name"] == "alice" and r["agent"] == name, 1)  # fmt: skip
    assert (row["route"], row["operation"], row["endpoint"], row["status_code"]) == (
        route, operation, endpoint, 200,
    )  # fmt: skip
    assert row["input_tokens"] is not None and row["estimated_cost_usd"] is not None
    (span,) = rows(fleet, SPANS_TABLE,
                   lambda r: r["attributes"].get("gateway.request_id") == row["request_id"], 1)  # fmt: skip
    assert span["attributes"]["gateway.agent"] == name
    if agent != "gemini":  # Claude Code and Codex say which session a call is of
        session = span["attributes"]["session.id"]
        assert len(session) == 36 and span["attributes"]["gen_ai.conversation.id"] == session


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_each_agent_shows_its_user_the_budget_refusal(fleet: Fleet, agent: str) -> None:
    tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 86_400))
    said = (f"daily budget 'dave-daily' of $0.0001 for token 'dave' is spent ($0.000594); "
            f"it resets at {tomorrow}")  # fmt: skip
    status, printed = run_agent(fleet, agent, fleet.dave)
    assert status != 0, printed
    assert said in printed
    assert ANSWERS[agent] not in printed
    name = AGENT_ROWS[agent][0]
    refused = rows(fleet, USAGE_TABLE,
                   lambda r: r["token_name"] == "dave" and r["agent"] == name, 1)  # fmt: skip
    assert refused and {(r["status_code"], r["endpoint"]) for r in refused} == {
        (429, AGENT_ROWS[agent][3])
    }
