"""What each coding agent calls things, in one place: how its telemetry names the user, the
session, a finished model call with its tokens, cost and duration, and its productivity
metrics. Everything else in the dashboard reads these names from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["AGENTS", "Agent", "agent_of", "attribute_keys"]


@dataclass(frozen=True)
class Agent:
    key: str  # the filter value: claude-code, codex, gemini-cli, other
    title: str
    # resource service.name values (or their prefixes) the agent exports with
    service_prefixes: tuple[str, ...]
    session: tuple[str, ...]  # attribute keys holding the session id; the first present wins
    user: tuple[str, ...]  # attribute keys identifying the user, best first
    # A finished model call: the log event (attributes['event.name']) and, if the agent sends
    # that event for other things too, the attribute and value that single calls out.
    call_event: str | None = None
    call_when: tuple[str, str] | None = None
    call_has: str | None = None  # an attribute the call's event carries, where others lack it
    tokens: Mapping[str, str] = field(default_factory=dict)  # input/output/cache_* → attribute
    # OpenAI's and Gemini's input counts include the cached input; Anthropic's do not.
    input_includes_cache_read: bool = False
    cost: str | None = None  # attribute of the agent's own cost estimate, USD
    duration: str | None = None  # attribute of the call's duration, ms
    # A finished tool call: its event and the attributes of the tool's name, whether it
    # succeeded ("true"/"false") and its duration in ms.
    tool_event: str | None = None
    tool: tuple[str, str, str] = ("tool_name", "success", "duration_ms")
    # Failed model requests: (event, status attribute, message attribute, whether the event
    # is sent for every request, and only a status of 400 or above makes it an error).
    errors: tuple[tuple[str, str, str, bool], ...] = ()
    # Productivity metrics (sums): figure → (metric name, attribute and value selecting it).
    metrics: Mapping[str, tuple[str, tuple[str, str] | None]] = field(default_factory=dict)
    # Edit suggestions decided (a sum): the metric, and its attributes naming the tool, the
    # language and the decision ("accept" or "reject").
    edit_decisions: tuple[str, str, str, str] | None = None


AGENTS: tuple[Agent, ...] = (
    Agent(
        key="claude-code",
        title="Claude Code",
        service_prefixes=("claude-code",),
        session=("session.id",),
        user=("user.email", "user.account_uuid", "user.id"),
        call_event="api_request",
        tokens={
            "input": "input_tokens",
            "output": "output_tokens",
            "cache_read": "cache_read_tokens",
            "cache_creation": "cache_creation_tokens",
        },
        cost="cost_usd",
        duration="duration_ms",
        tool_event="tool_result",
        errors=(("api_error", "status_code", "error", False),),
        metrics={
            "lines_added": ("claude_code.lines_of_code.count", ("type", "added")),
            "lines_removed": ("claude_code.lines_of_code.count", ("type", "removed")),
            "commits": ("claude_code.commit.count", None),
            "pull_requests": ("claude_code.pull_request.count", None),
            "active_time_s": ("claude_code.active_time.total", None),
        },
        edit_decisions=("claude_code.code_edit_tool.decision", "tool_name", "language", "decision"),
    ),
    Agent(
        key="codex",
        title="Codex CLI",
        service_prefixes=("codex",),  # codex_exec, codex_cli_rs, codex-tui…
        session=("conversation.id",),
        user=("user.email", "user.account_id"),
        call_event="codex.sse_event",
        call_when=("event.kind", "response.completed"),
        # It logs every SSE event, the completion twice: once with its duration, once with
        # the tokens; the call is the second.
        call_has="input_token_count",
        tokens={
            "input": "input_token_count",
            "output": "output_token_count",
            "cache_read": "cached_token_count",
            "cache_creation": "cache_write_token_count",
        },
        input_includes_cache_read=True,
        duration="duration_ms",
        tool_event="codex.tool_result",
        errors=(("codex.api_request", "http.response.status_code", "error.message", True),),
    ),
    Agent(
        key="gemini-cli",
        title="Gemini CLI",
        service_prefixes=("gemini-cli", "gemini_cli"),
        session=("session.id",),
        user=("user.email", "installation.id"),
        call_event="gemini_cli.api_response",
        tokens={
            "input": "input_token_count",
            "output": "output_token_count",
            "cache_read": "cached_content_token_count",
        },
        input_includes_cache_read=True,
        duration="duration_ms",
        tool_event="gemini_cli.tool_call",
        tool=("function_name", "success", "duration_ms"),
        errors=(("gemini_cli.api_error", "status_code", "error", False),),
    ),
)
OTHER = Agent(
    key="other",
    title="Other OTLP senders",
    service_prefixes=(),
    session=("session.id", "conversation.id"),
    user=("user.email", "user.id", "enduser.id"),
)


def agent_of(service_name: str | None) -> Agent:
    """The agent that exports under ``service_name`` (resource attribute service.name)."""
    for agent in AGENTS:
        if service_name and service_name.startswith(agent.service_prefixes):
            return agent
    return OTHER


def attribute_keys() -> frozenset[str]:
    """Every record attribute any agent's figures are read from."""
    keys = {"event.name", "model"}
    for agent in (*AGENTS, OTHER):
        keys.update(agent.session, agent.user, agent.tokens.values())
        keys.update(k for k in (agent.cost, agent.duration) if k)
        if agent.call_when:
            keys.add(agent.call_when[0])
        if agent.call_has:
            keys.add(agent.call_has)
        keys.update(when[0] for _, when in agent.metrics.values() if when)
        keys.update(agent.tool)
        keys.update(k for _, status, message, _ in agent.errors for k in (status, message))
    return frozenset(keys)
