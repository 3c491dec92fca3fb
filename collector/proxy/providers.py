"""What differs between the providers' APIs: where the caller's token and the model are, how
errors look, which header carries the provider's key, and where usage is reported."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "INPUT_INCLUDES_CACHE_READ",
    "PROVIDER_NAME",
    "Answer",
    "Usage",
    "answer_from",
    "caller_token",
    "error_body",
    "error_in",
    "error_of",
    "request_options",
    "stream_text",
    "upstream_auth",
    "usage_from",
]

# gen_ai.provider.name of each API (OpenTelemetry's GenAI semantic conventions).
PROVIDER_NAME = {"anthropic": "anthropic", "openai": "openai", "gemini": "gcp.gemini"}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("server_error", "upstream_error"),
    503: ("server_error", "unavailable"),
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}


def error_body(api: str, status: int, message: str, resets_at: float | None = None) -> bytes:
    """An error of the proxy's own, in the JSON shape the provider's SDKs parse; ``resets_at``
    for a spent budget (OpenAI's shape then is the usage-limit error Codex stops at)."""
    body: dict[str, Any]
    if api == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif api == "openai":
        kind, code = _OPENAI_ERRORS.get(status, ("server_error", "internal_error"))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        if resets_at is not None:
            body["error"] |= {"type": "usage_limit_reached", "code": "budget_exceeded",
                              "resets_at": math.ceil(resets_at)}  # fmt: skip
    else:
        body = {
            "error": {
                "code": status,
                "message": message,
                "status": _GEMINI_STATUS.get(status, "INTERNAL"),
            }
        }
    return json.dumps(body).encode()


def error_of(api: str, body: bytes | bytearray) -> tuple[str | None, str]:
    """The provider's name for the error an answer's body reports (Anthropic's error type,
    OpenAI's code or type, Google's status) and its message; (None, "") when it says none."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None, ""
    return error_in(api, obj) or (None, "")


def error_in(api: str, obj: Any) -> tuple[str | None, str] | None:
    """The error one JSON object reports: a whole body, or one streamed event (Anthropic's
    ``error`` event, OpenAI's ``error`` and ``response.failed``, Google's error object),
    as :func:`error_of` names it; None when it reports none."""
    if not isinstance(obj, dict):
        return None
    error = obj.get("error")
    if api == "openai":
        response = obj.get("response")
        if obj.get("type") == "error" and not isinstance(error, dict):
            error = obj  # a Responses stream's error event: code and message at its top
        elif isinstance(response, dict) and response.get("status") == "failed":
            error = response.get("error") if isinstance(response.get("error"), dict) else {}
            error = {"code": "response_failed", **error}
    if not isinstance(error, dict):
        return None
    if api == "anthropic":
        kind = error.get("type")
    elif api == "openai":
        kind = error.get("code") or error.get("type")
    else:
        kind = error.get("status")
    message = error.get("message")
    return (str(kind) if kind else None), (message if isinstance(message, str) else "")


def caller_token(api: str, headers: Any, query: Any) -> str | None:
    """The caller's credential, wherever its agent puts it. Claude Code sends
    ``Authorization: Bearer`` (ANTHROPIC_AUTH_TOKEN) or ``x-api-key`` (ANTHROPIC_API_KEY);
    Gemini clients send ``x-goog-api-key`` or, with the bearer mechanism, ``Authorization``."""
    scheme, _, value = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if api == "anthropic":
        return headers.get("x-api-key") or None
    if api == "gemini":
        return headers.get("x-goog-api-key") or query.get("key") or None
    return None


def upstream_auth(api: str, key: str) -> dict[str, str]:
    if api == "anthropic":
        return {"x-api-key": key}
    if api == "openai":
        return {"Authorization": f"Bearer {key}"}
    return {"x-goog-api-key": key}


# The APIs whose input token count includes the cached input (Anthropic's does not).
INPUT_INCLUDES_CACHE_READ = frozenset({"openai", "gemini"})


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    def tokens(self, api: str) -> int:
        """All the call's tokens, each once: input cached or not, and output (rate limits)."""
        return sum(self.billed(api))

    def billed(self, api: str) -> tuple[int, int, int, int]:
        """The tokens a provider bills, each kind once: uncached input, output (with
        Gemini's thoughts, which it counts apart and bills as output; OpenAI's output already
        holds its reasoning), cache reads, cache writes."""
        cache_read = self.cache_read_input_tokens
        uncached = self.input_tokens - cache_read if api in INPUT_INCLUDES_CACHE_READ else None
        output = self.output_tokens + (self.reasoning_tokens if api == "gemini" else 0)
        return (
            max(self.input_tokens if uncached is None else uncached, 0),
            output,
            cache_read,
            self.cache_creation_input_tokens,
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _set(usage: Usage, field: str, value: Any) -> None:
    v = _int(value)
    if v is not None:
        setattr(usage, field, v)


def usage_from(api: str, obj: Any, usage: Usage | None) -> Usage | None:
    """Fold what one JSON object (a whole response body or one SSE event's data) says about
    usage into ``usage``; None while nothing has said anything."""
    if not isinstance(obj, dict):
        return usage
    if api == "anthropic":
        # message_start carries input and cache counts, message_delta the final output count
        # (and, lately, the input counts again); a non-streamed message has them all.
        message = obj.get("message") if obj.get("type") == "message_start" else None
        found = message.get("usage") if isinstance(message, dict) else obj.get("usage")
        if not isinstance(found, dict):
            return usage
        usage = usage or Usage()
        _set(usage, "input_tokens", found.get("input_tokens"))
        _set(usage, "output_tokens", found.get("output_tokens"))
        _set(usage, "cache_read_input_tokens", found.get("cache_read_input_tokens"))
        _set(usage, "cache_creation_input_tokens", found.get("cache_creation_input_tokens"))
        return usage
    if api == "openai":
        # Responses: `usage` on the response, streamed in response.completed (or .incomplete);
        # Chat Completions: `usage` on the body, or on the last chunk of a stream.
        response = obj.get("response")
        found = response.get("usage") if isinstance(response, dict) else obj.get("usage")
        if not isinstance(found, dict):
            return usage
        usage = Usage()
        if "input_tokens" in found:
            _set(usage, "input_tokens", found.get("input_tokens"))
            _set(usage, "output_tokens", found.get("output_tokens"))
            in_details = found.get("input_tokens_details") or {}
            out_details = found.get("output_tokens_details") or {}
        else:
            _set(usage, "input_tokens", found.get("prompt_tokens"))
            _set(usage, "output_tokens", found.get("completion_tokens"))
            in_details = found.get("prompt_tokens_details") or {}
            out_details = found.get("completion_tokens_details") or {}
        _set(usage, "cache_read_input_tokens", in_details.get("cached_tokens"))
        _set(usage, "reasoning_tokens", out_details.get("reasoning_tokens"))
        return usage
    found = obj.get("usageMetadata")
    if not isinstance(found, dict):
        return usage
    # Each streamed chunk repeats the running totals: the last one is the answer.
    usage = Usage()
    _set(usage, "input_tokens", found.get("promptTokenCount"))
    _set(usage, "output_tokens", found.get("candidatesTokenCount"))
    _set(usage, "cache_read_input_tokens", found.get("cachedContentTokenCount"))
    _set(usage, "reasoning_tokens", found.get("thoughtsTokenCount"))
    return usage


@dataclass
class Answer:
    """What an answer says of itself: its id, the model that wrote it, why it stopped."""

    id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    error: tuple[str | None, str] | None = None  # what a stream that failed midway said


def answer_from(api: str, obj: Any, answer: Answer) -> None:
    """Fold what one JSON object (a whole body or one SSE event's data) says of the answer into
    ``answer``: Anthropic's message (message_start, and message_delta's stop_reason), OpenAI's
    response (in its events) or completion (each chunk), Gemini's responseId, modelVersion and
    candidates' finishReason."""
    if not isinstance(obj, dict):
        return
    answer.error = error_in(api, obj) or answer.error
    reasons: list[Any] = []
    if api == "anthropic":
        message = obj.get("message") if obj.get("type") == "message_start" else obj
        delta = obj.get("delta") if obj.get("type") == "message_delta" else None
        if isinstance(message, dict) and message.get("type") == "message":
            answer.id, answer.model = message.get("id"), message.get("model")
            reasons = [message.get("stop_reason")]
        if isinstance(delta, dict):
            reasons = [delta.get("stop_reason")]
    elif api == "openai":
        response = obj.get("response") if isinstance(obj.get("response"), dict) else obj
        if response.get("object") in ("response", "chat.completion", "chat.completion.chunk"):
            answer.id, answer.model = response.get("id"), response.get("model")
        if response.get("object") == "response" and response.get("status") != "in_progress":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            reasons = [reason or response.get("status")]
        reasons += [c.get("finish_reason") for c in obj.get("choices") or [] if isinstance(c, dict)]
    else:
        answer.id = obj.get("responseId", answer.id)
        answer.model = obj.get("modelVersion", answer.model)
        for candidate in obj.get("candidates") or []:
            if isinstance(candidate, dict):
                reasons.append(candidate.get("finishReason"))
    found = [r for r in reasons if isinstance(r, str) and r]
    if found:
        answer.finish_reasons = found


def request_options(api: str, operation: str, payload: Any) -> dict[str, Any]:
    """The sampling options a request asks for, under GenAI semantic-convention names
    (``max_tokens``, ``temperature``, ``top_p``, ``stream``), as far as it gives them."""
    if not isinstance(payload, dict):
        return {}
    if api == "gemini":
        config = payload.get("generationConfig")
        config = config if isinstance(config, dict) else {}
        found = {
            "max_tokens": config.get("maxOutputTokens"),
            "temperature": config.get("temperature"),
            "top_p": config.get("topP"),
            "stream": operation == "streamGenerateContent",
        }
    else:
        found = {
            "max_tokens": payload.get("max_tokens", payload.get("max_output_tokens")),
            "temperature": payload.get("temperature"),
            "top_p": payload.get("top_p"),
            "stream": payload.get("stream") is True,
        }
        found["max_tokens"] = found["max_tokens"] or payload.get("max_completion_tokens")
    numbers = {k: v for k, v in found.items() if k != "stream" and _number(v) is not None}
    return numbers | {"stream": found["stream"]}


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def stream_text(api: str, obj: Any) -> str:
    """The text one streamed event adds to the answer (its text, thinking or tool-call
    argument deltas), as the model wrote it: a credential the model writes arrives in pieces
    across events, whole only here."""
    if not isinstance(obj, dict):
        return ""
    pieces: list[Any] = []
    if api == "anthropic":
        delta = obj.get("delta")
        if obj.get("type") == "content_block_delta" and isinstance(delta, dict):
            pieces = [delta.get("text"), delta.get("thinking"), delta.get("partial_json")]
    elif api == "openai":
        if str(obj.get("type", "")).endswith(".delta"):  # Responses
            pieces = [obj.get("delta")]
        for choice in obj.get("choices") or []:  # Chat Completions
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                pieces.append(delta.get("content"))
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        pieces.append(function.get("arguments"))
    else:
        for candidate in obj.get("candidates") or []:
            content = candidate.get("content") if isinstance(candidate, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts or []:
                if isinstance(part, dict):
                    pieces.append(part.get("text"))
    return "".join(p for p in pieces if isinstance(p, str))
