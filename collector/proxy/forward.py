"""The proxy's routes: authenticate, govern, forward to the endpoint's upstream and relay the
answer as it arrives, then record one usage row (and the payloads) per call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pyarrow as pa
import structlog
from aiohttp import web
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.auth import Principal
from collector.errors import ExportError, PermissionDenied, Unauthenticated, Unavailable
from collector.hoststate import HostState
from collector.pipeline import Pipeline, flatten_request
from collector.prices import Price, Prices
from collector.proxy.budgets import BudgetSpent, Spend, UsageSpend
from collector.proxy.call import Call, TraceContext, session_of
from collector.proxy.config import API_OF_ROUTE, Endpoint, ProxyConfig, Target
from collector.proxy.export import TraceExporter
from collector.proxy.providers import (
    answer_from,
    caller_token,
    error_body,
    request_options,
    stream_text,
    upstream_auth,
    usage_from,
)
from collector.proxy.ratelimit import RateLimited, RateLimiter
from collector.proxy.records import (
    REDACTION_MARGIN,
    Cost,
    cost_of,
    inference_batch,
    usage_batch,
)
from collector.proxy.spans import call_span, export_request
from collector.proxy.sse import SseParser
from collector.receivers.http import read_body
from collector.signals import SPANS
from collector.tables import TableName

__all__ = ["Proxy"]

log = structlog.get_logger("collector.proxy")

# (route, operation, path). Gemini's operation is the method after the model in its path.
ROUTES = (
    ("anthropic", "messages", "/anthropic/v1/messages"),
    ("anthropic", "count_tokens", "/anthropic/v1/messages/count_tokens"),
    ("openai", "responses", "/openai/v1/responses"),
    ("openai", "chat.completions", "/openai/v1/chat/completions"),
    ("cursor", "chat.completions", "/cursor/v1/chat/completions"),
    ("gemini", "", "/gemini/{version:v1beta|v1|v1alpha}/models/{target}"),
)
_GEMINI_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})

# Request headers the agents rely on upstream. Everything else stays here: above all the
# caller's credentials, and the caller's OpenAI organisation / project, which are not ours.
# Answers after which an endpoint's next target is tried (when nothing was relayed yet):
# rate limited, overloaded (Anthropic's 529) or failing.
_RETRIED = frozenset({429, 500, 502, 503, 504, 529})
# An endpoint has no release date: its model objects give the epoch, a valid RFC 3339 time.
_EPOCH = "1970-01-01T00:00:00Z"
_FORWARD = frozenset(
    {
        "accept",
        "content-type",
        "user-agent",
        "openai-beta",
        "originator",
        "session_id",
        "session-id",  # Codex 0.170 on
        "conversation_id",
        "x-goog-api-client",
    }
)
_FORWARD_PREFIXES = ("anthropic-", "x-stainless-")
# Response headers that describe the upstream connection, not the answer.
_HOP = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "date",
        "keep-alive",
        "server",
        "set-cookie",
        "transfer-encoding",
    }
)
_CLIENT_CLOSED = 499  # the status recorded when the caller went away mid-answer
_MAX_PARSED_BODY = 64 * 1024 * 1024  # a non-streamed answer is held this far to read its usage

_SPEND_READ_WAIT = 30.0  # seconds a worker waits for another's first reading of the spend


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        retry_after: float | None = None,
        resets_at: float | None = None,  # a spent budget's: when it resets (Unix seconds)
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.resets_at = resets_at


def _forwarded_headers(headers: Any) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FORWARD or lower.startswith(_FORWARD_PREFIXES):
            out[name] = value
    return out


async def _client_gone(request: web.Request) -> None:
    """Returns once the caller's connection is closed. aiohttp does not cancel handlers on a
    disconnect (handler_cancellation is off for the collector), so the relay watches for it:
    an upstream that is slow to send its next event would otherwise run on for nobody."""
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.1)


class Proxy:
    def __init__(
        self,
        pipeline: Pipeline,
        config: ProxyConfig,
        host: HostState,
        read_timeout: float = 30.0,
        prices: Prices | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.read_timeout = read_timeout
        self.limiter = RateLimiter(host)  # counts shared with the host's other workers
        self.spend = Spend(host)  # so are the budgets' sums
        self._usage = UsageSpend(pipeline.sink.warehouse, config.usage_table)
        self._refreshing: asyncio.Task[None] | None = None
        self._random = random.Random()  # the order of an endpoint's weighted targets
        # Each endpoint's prices, looked up once: its own (proxy.toml), else the price data's
        # for the model it is priced as, or each of its targets' (with --prices' mapping).
        prices = prices or Prices()
        self.prices: dict[tuple[str, str], Price | None] = {}
        for name, e in config.endpoints.items():
            for target in e.targets:
                priced_as = e.price_model or target.model
                price = e.price or prices.price(priced_as)
                self.prices[name, target.model] = price
                if price is None:
                    log.warning("no price known: calls will have no estimated cost",
                                endpoint=name, priced_as=priced_as)  # fmt: skip
        self._session: aiohttp.ClientSession | None = None
        self._recording: set[asyncio.Task[None]] = set()
        export = config.trace_export
        self.exporter = TraceExporter(export, pipeline.metrics) if export else None
        self._spans = config.spans_table is not None or self.exporter is not None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total timeout: an agent's answer may stream for many minutes. Only connecting
            # and silence between two reads are bounded.
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.config.connect_timeout or None,
                sock_read=self.config.idle_timeout or None,
            )
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)
        return self._session

    async def refresh_spend(self, force: bool = False) -> None:
        """Count the calls in the usage table that this host has not (other replicas', or all
        of the month's on a new host), if it is this worker's turn to read it."""
        now = time.time()
        if not self.spend.due(now, self.config.budget_refresh) and not force:
            return
        try:
            teams = self.pipeline.auth.teams()
            rows = await asyncio.to_thread(self._usage.new_rows, teams, now)
            added = self.spend.merge(rows)
        finally:
            self.spend.read_done(time.time())
        if added:
            log.info("budgets: calls counted from the usage table", calls=added)

    async def _refresh_spend_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.budget_refresh)
            try:
                await self.refresh_spend()
            except Exception as e:  # the next reading may succeed; calls go on meanwhile
                log.warning("budgets: the usage table could not be read",
                            error=f"{type(e).__name__}: {e}")  # fmt: skip

    async def start(self) -> None:
        """Read the month's spend first, then keep it current (when there are budgets)."""
        if not self.config.budgets:
            return
        await self.refresh_spend()
        # Another worker of the host may be reading the month's spend: serve once it has.
        waited = 0.0
        while not self.spend.ever_read():
            if waited >= _SPEND_READ_WAIT:  # that worker died reading, say: read it here
                log.warning("budgets: no other worker read the usage table; reading it")
                await self.refresh_spend(force=True)
                break
            await asyncio.sleep(0.1)
            waited += 0.1
        if self.config.budget_refresh:
            self._refreshing = asyncio.get_running_loop().create_task(
                self._refresh_spend_periodically()
            )

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        if self._recording:
            await asyncio.gather(*self._recording, return_exceptions=True)
        if self.exporter is not None:
            await self.exporter.close()
        if self._session is not None:
            await self._session.close()

    def install(self, app: web.Application) -> None:
        for route, operation, path in ROUTES:
            app.router.add_post(path, self._handler(route, operation))
        for route in ("openai", "cursor"):
            app.router.add_get(f"/{route}/v1/models", self._models(route))
        app.router.add_get("/anthropic/v1/models", self._anthropic_models)
        app.router.add_get("/anthropic/v1/models/{model}", self._anthropic_model)

    def _handler(self, route: str, operation: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, route, operation)

        return handle

    def _models(self, route: str) -> Any:
        """The endpoints this token may call, in OpenAI's list format (Cursor checks it)."""

        async def models(request: web.Request) -> web.StreamResponse:
            api = API_OF_ROUTE[route]
            principal = self._lister(api, request)
            if isinstance(principal, web.Response):
                return principal
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": e.upstream.name}
                for name, e in self._callable(principal, api)
            ]
            return web.json_response({"object": "list", "data": data})

        return models

    def _lister(self, api: str, request: web.Request) -> Principal | web.Response:
        """Who asks for a model list, or the 401 in the provider's format to answer."""
        try:
            return self.pipeline.authenticate(self._authorization(api, request))
        except Unauthenticated as e:
            return self._error_response(api, 401, e.message)

    def _callable(self, principal: Principal, api: str) -> list[tuple[str, Endpoint]]:
        """The endpoints of ``api`` that ``principal`` may call, by name."""
        return [
            (name, e)
            for name, e in sorted(self.config.endpoints.items())
            if e.upstream.api == api and any(g.allows_endpoint(name) for g in principal.grants)
        ]

    @staticmethod
    def _model_object(name: str) -> dict[str, Any]:
        # Anthropic's model object; the endpoint is what the caller names, so it is the id.
        return {"type": "model", "id": name, "display_name": name, "created_at": _EPOCH}

    async def _anthropic_models(self, request: web.Request) -> web.StreamResponse:
        """The endpoints this token may call, as Anthropic's ``GET /v1/models`` lists models
        (paged by ``limit``, ``after_id``, ``before_id``): Claude Code's model picker asks a
        gateway for them."""
        principal = self._lister("anthropic", request)
        if isinstance(principal, web.Response):
            return principal
        names = [name for name, _ in self._callable(principal, "anthropic")]
        query = request.query
        limit = query.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return self._error_response("anthropic", 400, "limit: a whole number from 1 to 1000")
        start, end = 0, len(names)
        if "after_id" in query:
            start = names.index(query["after_id"]) + 1 if query["after_id"] in names else end
        if "before_id" in query:
            end = names.index(query["before_id"]) if query["before_id"] in names else 0
            start = max(0, end - int(limit))
        page = names[start:end][: int(limit)]
        return web.json_response({
            "data": [self._model_object(n) for n in page],
            "has_more": (start + len(page) < end) if "before_id" not in query else start > 0,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        })  # fmt: skip

    async def _anthropic_model(self, request: web.Request) -> web.StreamResponse:
        principal = self._lister("anthropic", request)
        if isinstance(principal, web.Response):
            return principal
        name = request.match_info["model"]
        if name not in dict(self._callable(principal, "anthropic")):
            return self._error_response("anthropic", 404, f"model: {name}")
        return web.json_response(self._model_object(name))

    @staticmethod
    def _authorization(api: str, request: web.Request) -> str | None:
        token = caller_token(api, request.headers, request.query)
        return f"Bearer {token}" if token else None

    async def handle(self, request: web.Request, route: str, operation: str) -> web.StreamResponse:
        api = API_OF_ROUTE[route]
        call = Call(
            uuid.uuid4().hex,
            time.time_ns(),
            route,
            operation,
            request.headers.get("User-Agent", ""),
            trace=TraceContext.from_headers(request.headers),
            session_id=session_of(request.headers),
        )
        started = time.perf_counter()
        try:
            principal = self.pipeline.authenticate(self._authorization(api, request))
        except Unauthenticated as e:
            # Not recorded: rows are written for known callers only, so that anyone who can
            # reach the port cannot fill the usage table.
            log.info("proxy call refused", route=route, status=401, reason=e.message)
            response = self._error_response(api, 401, e.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="proxy"'
            return response
        call.token_name, call.team = principal.name, principal.team
        try:
            return await self._call(request, call, api, principal, started)
        except _Refusal as e:
            call.status = e.status
            body = error_body(api, e.status, e.message, e.resets_at)
            call.response_body += body
            log.info("proxy call refused", route=route, status=e.status, reason=e.message)
            response = self._error_response(api, e.status, e.message, e.retry_after, body)
            if e.resets_at is not None:
                # Not worth a retry before it resets: the providers' SDKs (and Claude Code)
                # retry a 429 unless told; Codex shows this header's text with its "usage
                # limit" error (the budget, and when it resets).
                response.headers["x-should-retry"] = "false"
                if api == "openai":
                    response.headers["x-codex-promo-message"] = e.message
            return response
        finally:
            call.latency_ms = (time.perf_counter() - started) * 1000
            self._record(call)

    def _error_response(
        self,
        api: str,
        status: int,
        message: str,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> web.Response:
        headers = {}
        if retry_after is not None:
            seconds = max(1, math.ceil(retry_after))
            headers["Retry-After"] = str(seconds)
            if api == "gemini":  # Google clients read the delay from the status details
                payload = json.loads(body or error_body(api, status, message))
                payload["error"]["details"] = [
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{seconds}s",
                    }
                ]
                body = json.dumps(payload).encode()
        return web.Response(
            status=status,
            body=body or error_body(api, status, message),
            content_type="application/json",
            headers=headers,
        )

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return bytes(await read_body(request, self.config.max_request_bytes, self.read_timeout))
        except ExportError as e:
            raise _Refusal(e.http_status, e.message) from None

    def _endpoint(self, api: str, name: Any, principal: Any) -> Endpoint:
        if not isinstance(name, str) or not name:
            raise _Refusal(400, "the request names no model endpoint")
        try:
            principal.authorize_endpoint(name)
        except PermissionDenied as e:
            raise _Refusal(403, e.message) from None
        endpoint = self.config.endpoints.get(name)
        if endpoint is None or endpoint.upstream.api != api:
            raise _Refusal(404, f"endpoint {name!r} does not exist on this route")
        return endpoint

    async def _call(
        self, request: web.Request, call: Call, api: str, principal: Any, started: float
    ) -> web.StreamResponse:
        try:
            # When the collector cannot take more rows, refuse before spending the caller's
            # tokens upstream: a call whose usage could not be recorded must not happen.
            self.pipeline.admit()
        except Unavailable as e:
            raise _Refusal(503, e.message, e.retry_after) from None
        body = await self._read_body(request)
        call.request_body = body
        if api == "gemini":
            model, _, method = request.match_info["target"].partition(":")
            call.operation = method
            if method not in _GEMINI_METHODS:
                raise _Refusal(404, f"method {method!r} is not served by this proxy")
            endpoint = self._endpoint(api, model, principal)
            if self._spans:  # forwarded as it came: read only for the span's options
                with contextlib.suppress(ValueError):
                    call.options = request_options(api, method, json.loads(body))

            def upstream_request(target: Target) -> tuple[str, bytes]:
                return f"/{request.match_info['version']}/models/{target.model}:{method}", body
        else:
            try:
                payload = json.loads(body)
            except ValueError:
                raise _Refusal(400, "the request body is not JSON") from None
            if not isinstance(payload, dict):
                raise _Refusal(400, "the request body is not a JSON object")
            endpoint = self._endpoint(api, payload.get("model"), principal)
            call.options = request_options(api, call.operation, payload)
            if call.operation == "chat.completions" and payload.get("stream") is True:
                # Chat Completions streams report usage only when asked to.
                options = payload.get("stream_options")
                options = options if isinstance(options, dict) else {}
                payload["stream_options"] = {**options, "include_usage": True}
            path = request.path[len(call.route) + 1 :]

            def upstream_request(target: Target) -> tuple[str, bytes]:
                payload["model"] = target.model
                return path, json.dumps(payload, ensure_ascii=False).encode()

        call.endpoint, call.upstream_model = endpoint.name, endpoint.model  # if refused: asked
        endpoint = self._within_budget(principal, endpoint, api)
        call.endpoint, call.upstream_model = endpoint.name, endpoint.model
        try:
            reservation = self.limiter.admit(
                principal.name,
                endpoint.name,
                endpoint.requests_per_minute,
                endpoint.tokens_per_minute,
                # The prompt is most of a coding agent's tokens; ~4 bytes of JSON a token.
                estimate=len(body) // 4,
            )
        except RateLimited as e:
            raise _Refusal(429, e.message, e.retry_after) from None

        forwarded = _forwarded_headers(request.headers)
        query = [(k, v) for k, v in request.query.items() if k != "key"]
        targets = endpoint.order(self._random)
        try:
            for tried, target in enumerate(targets, 1):
                upstream, last = target.upstream, tried == len(targets)
                call.upstream, call.upstream_model, call.attempts = (
                    upstream.name,
                    target.model,
                    tried,
                )
                call.server = upstream.address
                upstream_path, upstream_body = upstream_request(target)
                headers = forwarded | upstream_auth(upstream.api, upstream.api_key)
                headers["Content-Type"] = "application/json"
                try:
                    # Never follow a redirect: aiohttp would carry x-api-key / x-goog-api-key
                    # and the prompt to wherever it points. A 3xx is relayed as it is.
                    async with self.session.post(
                        upstream.base_url + upstream_path,
                        params=query,
                        data=upstream_body,
                        headers=headers,
                        allow_redirects=False,
                    ) as answer:
                        if not last and answer.status in _RETRIED:
                            # Nothing reached the caller yet: the next target may serve.
                            log.info("upstream refused; trying the next", endpoint=endpoint.name,
                                     upstream=upstream.name, status=answer.status)  # fmt: skip
                            call.failed_attempts.append(
                                (time.time_ns(), upstream.name, str(answer.status))
                            )
                            continue
                        return await self._relay(request, answer, call, api, started)
                except (aiohttp.ClientError, TimeoutError) as e:
                    if call.status:  # the answer had begun: its status is sent, nothing more
                        raise
                    if not last:
                        log.info("upstream unreachable; trying the next", endpoint=endpoint.name,
                                 upstream=upstream.name, error=type(e).__name__)  # fmt: skip
                        call.failed_attempts.append(
                            (time.time_ns(), upstream.name, type(e).__name__)
                        )
                        continue
                    call.error_type = type(e).__name__
                    raise _Refusal(
                        502, f"upstream {upstream.name} unreachable: {type(e).__name__}"
                    ) from None
            raise AssertionError("an endpoint has at least one target")
        finally:
            self.limiter.settle(reservation, call.usage.tokens(api) if call.usage else 0)

    async def _relay(
        self,
        request: web.Request,
        answer: aiohttp.ClientResponse,
        call: Call,
        api: str,
        started: float,
    ) -> web.StreamResponse:
        call.status = answer.status
        call.streamed = answer.content_type == "text/event-stream"
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for name, value in answer.headers.items():
            if name.lower() not in _HOP:
                response.headers.add(name, value)
        await response.prepare(request)
        pump = asyncio.ensure_future(self._pump(answer, response, call, api, started))
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                call.status = _CLIENT_CLOSED
                answer.close()  # closes the upstream connection: the provider stops generating
        if call.status == _CLIENT_CLOSED:
            call.error_type = "client_closed"
            log.info("proxy caller went away", request_id=call.request_id, route=call.route)
            return response
        try:
            pump.result()
        except ConnectionError:
            call.status, call.error_type = _CLIENT_CLOSED, "client_closed"
            answer.close()
            log.info("proxy caller went away", request_id=call.request_id, route=call.route)
            return response
        except (aiohttp.ClientError, TimeoutError) as e:
            # Headers are sent: the caller's connection is cut as the upstream's was, so that
            # its client sees a broken answer (and may retry), not a short one that looks whole.
            # Not retried on another target: part of the answer has reached the caller.
            log.warning(
                "proxy upstream failed mid-answer",
                request_id=call.request_id,
                error=type(e).__name__,
            )
            call.status = 504 if isinstance(e, TimeoutError) else 502
            call.error_type = type(e).__name__
            if request.transport is not None:
                request.transport.abort()
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _pump(
        self,
        answer: aiohttp.ClientResponse,
        response: web.StreamResponse,
        call: Call,
        api: str,
        started: float,
    ) -> None:
        parser = SseParser() if call.streamed else None
        whole = bytearray()
        # One more byte says it was cut; the margin is searched for credentials (records.py).
        keep = self.config.max_payload_bytes + 1 + REDACTION_MARGIN
        written: list[str] = []  # a stream's text, as long as the payload kept
        written_length = 0
        redacting = self.config.redactor is not None

        def events(found: list[Any]) -> None:
            nonlocal written_length
            for event in found:
                call.usage = usage_from(api, event, call.usage)
                answer_from(api, event, call.answer)
                if redacting and written_length < keep:
                    text = stream_text(api, event)
                    written.append(text)
                    written_length += len(text)

        async for chunk in answer.content.iter_any():
            if call.first_byte_ms is None:
                call.first_byte_ms = (time.perf_counter() - started) * 1000
            await response.write(chunk)
            if len(call.response_body) < keep:
                call.response_body += chunk[: keep - len(call.response_body)]
            if parser is not None:
                events(parser.feed(chunk))
            elif len(whole) < _MAX_PARSED_BODY:
                whole += chunk
        if parser is not None:
            events(parser.close())
            call.streamed_pieces = written
        elif whole and call.status < 400:
            with contextlib.suppress(ValueError):
                whole_answer = json.loads(whole)
                call.usage = usage_from(api, whole_answer, call.usage)
                answer_from(api, whole_answer, call.answer)

    def _within_budget(self, principal: Principal, endpoint: Endpoint, api: str) -> Endpoint:
        """``endpoint``, or the fallback of a budget it is over (and so on), or a 429 naming
        the budget and when it resets."""
        tried = {endpoint.name}
        while True:
            try:
                self.spend.check(self.config.budgets, principal.name, principal.team,
                                 endpoint.name, time.time())  # fmt: skip
                return endpoint
            except BudgetSpent as e:
                fallback = self.config.endpoints.get(e.budget.fallback or "")
                if (
                    fallback is None
                    or fallback.name in tried
                    or fallback.upstream.api != api
                    or not any(g.allows_endpoint(fallback.name) for g in principal.grants)
                ):
                    raise _Refusal(429, e.message, e.retry_after, e.resets_at) from None
                log.info("budget spent: the call goes to its fallback", budget=e.budget.name,
                         endpoint=endpoint.name, fallback=fallback.name)  # fmt: skip
                tried.add(fallback.name)
                endpoint = fallback

    def _record(self, call: Call) -> None:
        """Count the call's spend, and store its rows in the background: the answer is not
        held up by the WAL."""
        cost = self._cost(call)
        if cost is not None and call.token_name is not None and call.endpoint is not None:
            self.spend.add((call.time_unix_nano / 1e9, call.token_name, call.team,
                            call.endpoint, cost.total, call.request_id))  # fmt: skip
        log.info(
            "proxy call",
            request_id=call.request_id,
            route=call.route,
            endpoint=call.endpoint,
            status=call.status,
            latency_ms=round(call.latency_ms, 1),
            streamed=call.streamed,
        )
        span = (
            call_span(call, API_OF_ROUTE[call.route], cost, self.config.redactor)
            if self._spans
            else None
        )
        if span is not None and self.exporter is not None:
            self.exporter.add(span)
        task = asyncio.get_running_loop().create_task(self._store(call, cost, span))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def _cost(self, call: Call) -> Cost | None:
        """The call's cost at the price of the model that served it (or the endpoint's)."""
        endpoint = self.config.endpoints.get(call.endpoint or "")
        if endpoint is None or call.upstream_model is None:
            return None
        price = self.prices.get((endpoint.name, call.upstream_model))
        priced_as = endpoint.price_model or call.upstream_model
        return cost_of(call, endpoint.upstream.api, priced_as, price)

    async def _store(self, call: Call, cost: Cost | None, span: Span | None) -> None:
        """The call's usage row, payloads and span, each stored apart: one that cannot be
        (a table refused, say) loses none of the others."""
        await self._store_one(
            call, "usage", self.config.usage_table, lambda: usage_batch(call, cost)
        )
        if self.config.log_payloads[call.route]:
            await self._store_one(call, "inference", self.config.inference_table,
                                  lambda: self._payloads(call))  # fmt: skip
        if span is not None and self.config.spans_table is not None:

            def rows() -> pa.RecordBatch:  # as an exporter's span is: its OTLP bytes decoded
                body = export_request([span]).SerializeToString()
                return flatten_request(SPANS, SPANS.decode_protobuf(body)).batch

            await self._store_one(call, "span", self.config.spans_table, rows)

    async def _store_one(
        self, call: Call, what: str, table: TableName, batch: Callable[[], pa.RecordBatch]
    ) -> None:
        try:
            await self.pipeline.store(table, batch())
        except Exception as e:
            log.warning(
                "proxy rows not stored",
                request_id=call.request_id,
                rows=what,
                error=f"{type(e).__name__}: {e}",
            )

    def _payloads(self, call: Call) -> pa.RecordBatch:
        payloads = inference_batch(call, self.config.max_payload_bytes, self.config.redactor)
        redacted = payloads.column("redactions")[0].as_py()
        if redacted:  # how many and of what kind: never the credentials themselves
            log.info(
                "credentials redacted from payloads",
                request_id=call.request_id,
                redactions=redacted,
                kinds=payloads.column("redacted_kinds")[0].as_py(),
            )
        return payloads
