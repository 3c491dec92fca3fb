"""A stand-in for the LLM providers' APIs (the one stub the proxy tests allow): Anthropic
Messages, OpenAI Responses and Chat Completions, Gemini generateContent and friends, answering
with the payloads and SSE sequences the real APIs send, usage included. It runs its own event
loop on a thread, records every request it gets, and notes streams its caller abandoned.

Models with special behaviour: ``*-overloaded`` answers 529 (Anthropic's overloaded error),
``*-unavailable`` 503, ``*-bad`` 400, ``*-slow`` streams an event every 50 ms for ten seconds,
``*-broken`` streams two events and then drops the connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ANTHROPIC_TEXT = ["Hello", ", world", "!"]
# What model "claude-leaky" streams: a (fake) key, written in pieces across three events.
LEAKED_KEY = "sk-ant-api03-" + "Q7x" * 10
LEAKY_TEXT = ["Your key is ", LEAKED_KEY[:9], LEAKED_KEY[9:25], LEAKED_KEY[25:], ", keep it safe."]
ANTHROPIC_USAGE_START = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 7,
    "cache_read_input_tokens": 100,
    "output_tokens": 1,
}
ANTHROPIC_OUTPUT_TOKENS = 15

RESPONSES_TEXT = ["The answer", " is 42."]
RESPONSES_USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 10},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 5},
    "total_tokens": 42,
}
CHAT_TEXT = ["Hi", " there"]
CHAT_USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 5,
    "total_tokens": 25,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
GEMINI_TEXT = ["Bonjour", " le monde"]
GEMINI_USAGE = {
    "promptTokenCount": 11,
    "candidatesTokenCount": 9,
    "cachedContentTokenCount": 3,
    "thoughtsTokenCount": 6,
    "totalTokenCount": 26,
}


def _sse(event: str | None, data: Any, crlf: bool = False) -> bytes:
    end = "\r\n" if crlf else "\n"
    head = f"event: {event}{end}" if event else ""
    return f"{head}data: {json.dumps(data)}{end}{end}".encode()


def anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(ANTHROPIC_TEXT)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {**ANTHROPIC_USAGE_START, "output_tokens": ANTHROPIC_OUTPUT_TOKENS},
    }


def anthropic_events(model: str) -> list[bytes]:
    start = anthropic_message(model) | {
        "content": [],
        "stop_reason": None,
        "usage": ANTHROPIC_USAGE_START,
    }
    events = [
        _sse("message_start", {"type": "message_start", "message": start}),
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _sse("ping", {"type": "ping"}),
    ]
    for text in LEAKY_TEXT if model == "claude-leaky" else ANTHROPIC_TEXT:
        delta = {"type": "text_delta", "text": text}
        events.append(
            _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": ANTHROPIC_OUTPUT_TOKENS},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return events


def openai_response(model: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "".join(RESPONSES_TEXT), "annotations": []}
                ],
            }
        ]
        if status == "completed"
        else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": RESPONSES_USAGE if status == "completed" else None,
        "user": None,
        "metadata": {},
    }


def responses_events(model: str) -> list[bytes]:
    item_id = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"
    n = iter(range(100))
    created = openai_response(model, "in_progress")
    events = [
        _sse(
            "response.created",
            {"type": "response.created", "sequence_number": next(n), "response": created},
        ),
        _sse(
            "response.in_progress",
            {"type": "response.in_progress", "sequence_number": next(n), "response": created},
        ),
        _sse(
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "sequence_number": next(n),
                "output_index": 0,
                "item": {
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
        ),
        _sse(
            "response.content_part.added",
            {
                "type": "response.content_part.added",
                "sequence_number": next(n),
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ),
    ]
    for text in RESPONSES_TEXT:
        events.append(
            _sse(
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": next(n),
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
            )
        )
    done = openai_response(model)
    events += [
        _sse(
            "response.output_text.done",
            {
                "type": "response.output_text.done",
                "sequence_number": next(n),
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "text": "".join(RESPONSES_TEXT),
                "logprobs": [],
            },
        ),
        _sse(
            "response.output_item.done",
            {
                "type": "response.output_item.done",
                "sequence_number": next(n),
                "output_index": 0,
                "item": done["output"][0],
            },
        ),
        _sse(
            "response.completed",
            {"type": "response.completed", "sequence_number": next(n), "response": done},
        ),
    ]
    return events


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(CHAT_TEXT), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": CHAT_USAGE,
        "system_fingerprint": "fp_06737a9306",
    }


def chat_events(model: str, include_usage: bool) -> list[bytes]:
    base = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": model,
        "system_fingerprint": "fp_06737a9306",
    }
    usage = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse(None, base | {"choices": [choice]} | usage)

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": text}) for text in CHAT_TEXT]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append(_sse(None, base | {"choices": [], "usage": CHAT_USAGE}))
    events.append(b"data: [DONE]\n\n")
    return events


def gemini_response(
    model: str, texts: list[str], usage: dict[str, Any], done: bool
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": "".join(texts)}], "role": "model"},
        "index": 0,
    }
    if done:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": "mJ4-aKWKJ5-Mz7IPhKvN0QU",
    }


def gemini_events(model: str) -> list[bytes]:
    # Gemini streams running usage totals on every chunk, and ends lines with CRLF.
    first = GEMINI_USAGE | {"candidatesTokenCount": 4, "totalTokenCount": 21}
    first.pop("thoughtsTokenCount")
    return [
        _sse(None, gemini_response(model, GEMINI_TEXT[:1], first, False), crlf=True),
        _sse(None, gemini_response(model, GEMINI_TEXT[1:], GEMINI_USAGE, True), crlf=True),
    ]


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lowercased
    body: Any


@dataclass
class Stub:
    requests: list[Seen] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    port: int = 0

    def start(self) -> None:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(self._app())
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1beta/models/{target}", self._gemini)
        return app

    async def _seen(self, request: web.Request) -> Any:
        body = await request.json()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Seen(request.path, dict(request.query), headers, body))
        return body

    async def _stream(
        self, request: web.Request, events: list[bytes], model: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "request-id": "req_stub"}
        )
        await response.prepare(request)
        try:
            if model.endswith("-broken"):
                await response.write(events[0] + events[1])
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.abort()  # mid-answer, as a provider's crash looks
                return response
            if model.endswith("-slow"):
                await response.write(events[0] + events[1])
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    await response.write(events[3])
                self.cancelled.append(f"{model}: not cancelled")
            else:
                for event in events:
                    await response.write(event)
                    await asyncio.sleep(0.005)  # separate chunks, as a real stream arrives
        except (ConnectionError, asyncio.CancelledError):
            self.cancelled.append(model)  # the proxy closed the connection: generation stops
            return response
        await response.write_eof()
        return response

    @staticmethod
    def _special(model: str, kind: str) -> web.Response | None:
        if model.endswith("-overloaded"):
            body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            return web.json_response(body, status=529, headers={"request-id": "req_overloaded"})
        if model.endswith("-unavailable"):
            body = {"error": {"code": 503, "message": "The service is unavailable."}}
            return web.json_response(body, status=503)
        if model.endswith("-bad"):
            if kind == "anthropic":
                body = {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "max_tokens: Field required",
                    },
                }
            elif kind == "openai":
                body = {
                    "error": {
                        "message": "Invalid 'input': empty.",
                        "type": "invalid_request_error",
                        "param": "input",
                        "code": None,
                    }
                }
            else:
                body = {
                    "error": {
                        "code": 400,
                        "message": "Invalid JSON payload received.",
                        "status": "INVALID_ARGUMENT",
                    }
                }
            return web.json_response(body, status=400)
        return None

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await self._seen(request)
        model = body["model"]
        special = self._special(model, "anthropic")
        if special is not None:
            return special
        if body.get("stream"):
            return await self._stream(request, anthropic_events(model), model)
        return web.json_response(anthropic_message(model), headers={"request-id": "req_stub"})

    async def _count_tokens(self, request: web.Request) -> web.Response:
        await self._seen(request)
        return web.json_response({"input_tokens": 42})

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._seen(request)
        model = body["model"]
        special = self._special(model, "openai")
        if special is not None:
            return special
        if body.get("stream"):
            return await self._stream(request, responses_events(model), model)
        return web.json_response(openai_response(model))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._seen(request)
        model = body["model"]
        special = self._special(model, "openai")
        if special is not None:
            return special
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, chat_events(model, include), model)
        return web.json_response(chat_completion(model))

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        await self._seen(request)
        model, _, method = request.match_info["target"].partition(":")
        special = self._special(model, "gemini")
        if special is not None:
            return special
        if method == "countTokens":
            return web.json_response({"totalTokens": 31})
        if method == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await self._stream(request, gemini_events(model), model)
        if method == "generateContent":
            return web.json_response(gemini_response(model, GEMINI_TEXT, GEMINI_USAGE, True))
        return web.json_response(
            {"error": {"code": 404, "message": "no", "status": "NOT_FOUND"}}, status=404
        )
