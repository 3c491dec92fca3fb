"""A span per proxied call, as OpenTelemetry's GenAI semantic conventions describe a model
call. It is made as an OTLP span, so that the spans table gets it through the same decode and
flatten as any exporter's spans, and an OTLP/HTTP traces endpoint (MLflow) takes it as it is."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from collector.proxy.call import Call
from collector.proxy.providers import PROVIDER_NAME, error_of
from collector.proxy.records import Cost, agent_of
from collector.proxy.redact import Redactor

__all__ = ["as_own_trace", "call_span", "export_request"]

# gen_ai.operation.name by the proxy's operation (the provider's API method).
_OPERATIONS = {
    "messages": "chat",
    "responses": "chat",
    "chat.completions": "chat",
    "generateContent": "generate_content",
    "streamGenerateContent": "generate_content",
    "count_tokens": "count_tokens",
    "countTokens": "count_tokens",
}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # OTLP's Span.flags bits 8 and 9
_MAX_STATUS_MESSAGE = 1024


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_value(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def _attributes(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in values.items() if v is not None]


def call_span(call: Call, api: str, cost: Cost | None, redactor: Redactor | None = None) -> Span:
    """The call's span: named ``{gen_ai.operation.name} {gen_ai.request.model}``, kind CLIENT
    (a call to the provider), timed from the request's arrival to the answer's end."""
    operation = _OPERATIONS.get(call.operation, call.operation or call.route)
    error_type, message = None, ""
    if call.status >= 400 or call.error_type:
        error_type, message = error_of(api, call.response_body)
        error_type = call.error_type or error_type or str(call.status)
    elif call.answer.error is not None:  # a 200 whose stream ended in an error event
        error_type, message = call.answer.error
        error_type = error_type or "stream_error"
    if redactor is not None:  # the provider's message may quote the prompt
        message = redactor.redact(message)[0]
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER_NAME[api],
        "gen_ai.request.model": call.upstream_model,
    }
    attributes |= {f"gen_ai.request.{k}": v for k, v in call.options.items()}
    attributes |= {
        "gen_ai.response.id": call.answer.id,
        "gen_ai.response.model": call.answer.model,
        "gen_ai.response.finish_reasons": call.answer.finish_reasons or None,
        "gen_ai.conversation.id": call.session_id,
        "session.id": call.session_id,  # as the agents' own events have it: they join
        "server.address": call.server[0] if call.server else None,
        "server.port": call.server[1] if call.server else None,
        "http.response.status_code": call.status or None,
        "error.type": error_type,
        "user_agent.original": call.user_agent or None,
    }
    if call.usage is not None:
        uncached, output, cache_read, cache_write = call.usage.billed(api)
        attributes |= {
            # All the input, cached or not, as the conventions count it; Gemini's thoughts
            # are output (billed as such), and so are OpenAI's reasoning tokens already.
            "gen_ai.usage.input_tokens": uncached + cache_read + cache_write,
            "gen_ai.usage.output_tokens": output,
            "gen_ai.usage.cache_read.input_tokens": cache_read,
            "gen_ai.usage.cache_creation.input_tokens": cache_write,
            "gen_ai.usage.reasoning.output_tokens": call.usage.reasoning_tokens,
        }
    attributes |= {
        "gateway.request_id": call.request_id,  # the usage and inference rows' request_id
        "gateway.route": call.route,
        "gateway.agent": agent_of(call.user_agent, call.route),
        "gateway.token": call.token_name,
        "gateway.team": call.team,
        "gateway.endpoint": call.endpoint,
        "gateway.upstream": call.upstream,
        "gateway.attempts": call.attempts or None,
        "gateway.estimated_cost_usd": cost.total if cost else None,
    }
    trace = call.trace
    span = Span(
        trace_id=trace.trace_id,
        span_id=call.span_id,
        trace_state=trace.trace_state,
        parent_span_id=trace.parent_span_id,
        flags=trace.trace_flags | _HAS_IS_REMOTE | (_IS_REMOTE if trace.parent_span_id else 0),
        name=f"{operation} {call.upstream_model}" if call.upstream_model else operation,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=call.time_unix_nano,
        end_time_unix_nano=call.time_unix_nano + round(call.latency_ms * 1e6),
        attributes=_attributes(attributes),
    )
    for time_unix_nano, upstream, failure in call.failed_attempts:
        span.events.add(
            time_unix_nano=time_unix_nano,
            name="gateway.upstream_failed",  # and the next target was tried
            attributes=_attributes({"gateway.upstream": upstream, "error.type": failure}),
        )
    if error_type is not None:
        span.status.CopyFrom(
            Status(code=Status.STATUS_CODE_ERROR, message=message[:_MAX_STATUS_MESSAGE])
        )
    return span


def as_own_trace(span: Span) -> Span:
    """``span`` as the root of a trace of its own, linked to the caller's span it was a child
    of: a traces endpoint that never gets the caller's spans (MLflow) would otherwise hold
    its calls as one trace without a root, never complete."""
    if not span.parent_span_id:
        return span
    own = Span()
    own.CopyFrom(span)
    own.links.add(trace_id=span.trace_id, span_id=span.parent_span_id,
                  trace_state=span.trace_state, flags=span.flags)  # fmt: skip
    own.trace_id = span.span_id * 2  # unique as the span id is, and the same in every copy
    own.parent_span_id = b""
    own.trace_state = ""
    own.flags = span.flags & ~_IS_REMOTE
    return own


def _version() -> str:
    try:
        return importlib.metadata.version("otlp-delta-collector")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout not installed
        return ""


_RESOURCE = Resource(
    attributes=_attributes({"service.name": "otlp-delta-collector", "service.version": _version()})
)
_SCOPE = InstrumentationScope(name="collector.proxy", version=_version())


def export_request(spans: list[Span]) -> ExportTraceServiceRequest:
    """The spans as one OTLP export request, with the collector as their resource."""
    scope_spans = ScopeSpans(scope=_SCOPE, spans=spans)
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=_RESOURCE, scope_spans=[scope_spans])]
    )
