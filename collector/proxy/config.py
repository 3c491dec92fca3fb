"""The proxy's TOML file: upstreams, routes, endpoints and their limits, checked at startup."""

from __future__ import annotations

import difflib
import math
import os
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from collector.config import ConfigError, parse_size
from collector.prices import Price, PricesError
from collector.proxy.budgets import Budget, parse_budgets
from collector.proxy.redact import Redactor
from collector.tables import InvalidTableName, TableName

__all__ = [
    "API_OF_ROUTE",
    "Endpoint",
    "ProxyConfig",
    "Target",
    "TraceExport",
    "Upstream",
    "load_proxy_config",
]

# Each route speaks one provider's API; an endpoint may only be called on a route of its API.
API_OF_ROUTE = {
    "anthropic": "anthropic",
    "openai": "openai",
    "cursor": "openai",
    "gemini": "gemini",
}
_APIS = frozenset(API_OF_ROUTE.values())
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


@dataclass(frozen=True)
class Upstream:
    name: str
    api: str  # anthropic, openai or gemini
    base_url: str  # scheme://host[:port][/prefix]; the route's path after its prefix is appended
    api_key: str  # read from the environment at startup, never logged

    def __repr__(self) -> str:  # keeps the key out of tracebacks and debug output
        return f"Upstream({self.name!r}, api={self.api!r}, base_url={self.base_url!r})"

    @property
    def address(self) -> tuple[str, int]:
        """Its host and port (server.address and server.port of its calls' spans)."""
        url = URL(self.base_url)
        return url.host or "", url.port or 0


@dataclass(frozen=True)
class Target:
    """An upstream and the model it is asked for: one of the places an endpoint's calls go."""

    upstream: Upstream
    model: str
    weight: float | None = None  # None: tried in the order listed (a fallback)


@dataclass(frozen=True)
class Endpoint:
    name: str
    upstream: Upstream  # the first target's
    model: str  # the first target's
    requests_per_minute: int  # per token; 0: unlimited
    tokens_per_minute: int  # per token, all input (cached too) + output; 0: unlimited
    price_model: str = ""  # what its calls are priced as ([provider/]model); "" = as served
    price: Price | None = None  # its own price (negotiated), which wins over any price data
    targets: tuple[Target, ...] = ()  # where its calls go, the first included

    def __post_init__(self) -> None:
        if not self.targets:  # one upstream and model: the only target
            object.__setattr__(self, "targets", (Target(self.upstream, self.model),))

    def order(self, rnd: random.Random) -> list[Target]:
        """The targets in the order one call tries them: as listed, or with weights, drawn
        one after another in proportion to them (load balancing, then the rest as fallbacks)."""
        targets = list(self.targets)
        if any(t.weight is None for t in targets):
            return targets
        ordered = []
        while targets:
            pick = rnd.choices(range(len(targets)), [t.weight or 0.0 for t in targets])[0]
            ordered.append(targets.pop(pick))
        return ordered


@dataclass(frozen=True)
class TraceExport:
    """Where the calls' spans are also sent, over OTLP/HTTP (an MLflow server's /v1/traces)."""

    url: str
    headers: dict[str, str]  # values may be credentials (from the environment): never logged
    timeout: float
    own_traces: bool = True  # a call's span the root of its own trace, linked to the caller's

    def __repr__(self) -> str:
        return f"TraceExport({self.url!r}, headers={sorted(self.headers)!r})"


@dataclass(frozen=True)
class ProxyConfig:
    usage_table: TableName
    inference_table: TableName
    endpoints: dict[str, Endpoint]
    log_payloads: dict[str, bool]  # by route
    max_payload_bytes: int
    max_request_bytes: int
    connect_timeout: float
    idle_timeout: float
    redactor: Redactor | None = None  # None: payloads stored as sent ([redaction] enabled=false)
    budgets: tuple[Budget, ...] = ()
    spans_table: TableName | None = None  # None: no spans ([traces] enabled = false)
    trace_export: TraceExport | None = None
    budget_refresh: float = 60.0  # seconds between readings of the usage table; 0: at start


def _number(data: dict[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{where}: {key} must be a number ≥ 0, got {value!r}")
    return float(value)


def _table(value: Any, at: str, keys: frozenset[str]) -> dict[str, Any]:
    """``value`` as a TOML table holding only ``keys``: a misspelt key is an error, since
    ignoring it would quietly switch off what it sets (a limit, a weight, a price)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{at}: must be a table, got {value!r}")
    for key in value:
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{at}: unknown key {key!r}{hint}; known: {', '.join(sorted(keys))}")
    return value


def _tables(value: Any, at: str, keys: frozenset[str]) -> dict[str, dict[str, Any]]:
    """``[at.NAME]`` tables, each holding only ``keys``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{at}: must be tables [{at.rpartition(' ')[2]}.NAME], got {value!r}")
    return {name: _table(v, f"{at}.{name}", keys) for name, v in value.items()}


_TOP = frozenset({"tables", "max_payload_bytes", "max_request_bytes", "connect_timeout",
                  "idle_timeout", "requests_per_minute", "tokens_per_minute", "budget_refresh",
                  "upstreams", "routes", "endpoints", "redaction", "budgets", "traces"})  # fmt: skip
_UPSTREAM = frozenset({"api", "base_url", "api_key_env"})
_ENDPOINT = frozenset({"upstream", "model", "targets", "requests_per_minute",
                       "tokens_per_minute", "price_model", "price"})  # fmt: skip
_TARGET = frozenset({"upstream", "model", "weight"})
_PRICE = frozenset({"input", "output", "cache_read", "cache_write"})


def _count(data: dict[str, Any], key: str, default: int, where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: {key} must be a whole number ≥ 0, got {value!r}")
    return value


def parse_proxy_config(data: dict[str, Any], env: dict[str, str], where: str) -> ProxyConfig:
    _table(data, where, _TOP)
    try:
        prefix = str(data["tables"])
        usage_table = TableName.parse(prefix + "_usage")
        inference_table = TableName.parse(prefix + "_inference")
        spans_table = TableName.parse(prefix + "_otel_spans")
    except KeyError:
        raise ConfigError(f"{where}: tables = 'catalog.schema.prefix' is required") from None
    except InvalidTableName as e:
        raise ConfigError(f"{where}: tables: {e.message}") from None

    upstreams = {}
    for name, u in _tables(data.get("upstreams", {}), f"{where}: upstreams", _UPSTREAM).items():
        at = f"{where}: upstreams.{name}"
        api = u.get("api", name)
        if api not in _APIS:
            raise ConfigError(f"{at}: api must be one of {', '.join(sorted(_APIS))}, got {api!r}")
        base_url = str(u.get("base_url", "")).rstrip("/")
        if not re.match(r"https?://[^/]+", base_url):
            raise ConfigError(f"{at}: base_url must be an http(s) URL, got {base_url!r}")
        key_env = u.get("api_key_env")
        if not key_env:
            raise ConfigError(f"{at}: api_key_env (the NAME of the variable holding the key)")
        key = env.get(str(key_env), "")
        if not key:
            raise ConfigError(f"{at}: the environment variable {key_env} is not set")
        upstreams[name] = Upstream(name, api, base_url, key)

    default_rpm = _count(data, "requests_per_minute", 0, where)
    default_tpm = _count(data, "tokens_per_minute", 0, where)
    endpoints = {}
    for name, e in _tables(data.get("endpoints", {}), f"{where}: endpoints", _ENDPOINT).items():
        at = f"{where}: endpoints.{name}"
        if not _ENDPOINT_NAME.fullmatch(name):
            raise ConfigError(f"{at}: endpoint names are letters, digits and . _ -")
        targets = _targets(e, name, upstreams, at)
        upstream = targets[0].upstream
        try:
            price = None
            if "price" in e:
                price = Price.from_toml(_table(e["price"], f"{at}.price", _PRICE), f"{at}.price")
        except PricesError as error:
            raise ConfigError(str(error)) from None
        if not isinstance(e.get("price_model", ""), str):
            raise ConfigError(f'{at}: price_model is a "provider/model" string')
        endpoints[name] = Endpoint(
            name,
            upstream,
            targets[0].model,
            _count(e, "requests_per_minute", default_rpm, at),
            _count(e, "tokens_per_minute", default_tpm, at),
            str(e.get("price_model", "")),
            price,
            targets,
        )

    routes = _tables(data.get("routes", {}), f"{where}: routes", frozenset({"log_payloads"}))
    unknown = set(routes) - set(API_OF_ROUTE)
    if unknown:
        raise ConfigError(f"{where}: unknown route(s) {', '.join(sorted(unknown))}")
    log_payloads = {r: routes.get(r, {}).get("log_payloads", True) for r in API_OF_ROUTE}
    if not all(isinstance(v, bool) for v in log_payloads.values()):
        raise ConfigError(f"{where}: routes.*.log_payloads is true or false")
    try:
        max_payload = parse_size(data.get("max_payload_bytes", "64KiB"))
        max_request = parse_size(data.get("max_request_bytes", "32MiB"))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    redaction = _table(data.get("redaction", {}), f"{where}: redaction",
                       frozenset({"enabled", "patterns"}))  # fmt: skip
    patterns = redaction.get("patterns", {})
    if not isinstance(patterns, dict) or not all(isinstance(v, str) for v in patterns.values()):
        raise ConfigError(f'{where}: [redaction] patterns maps kinds to "regular expressions"')
    try:
        redactor = Redactor(patterns) if redaction.get("enabled", True) else None
    except ValueError as e:
        raise ConfigError(f"{where}: [redaction] {e} (flags scoped, as (?i:…))") from None
    try:
        budgets = parse_budgets(data.get("budgets", {}), endpoints, where)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    traces = data.get("traces", {})
    if not isinstance(traces, dict):
        raise ConfigError(f"{where}: [traces] is a table")
    return ProxyConfig(
        usage_table,
        inference_table,
        endpoints,
        log_payloads,
        max_payload,
        max_request,
        _number(data, "connect_timeout", 10.0, where),
        _number(data, "idle_timeout", 600.0, where),
        redactor,
        budgets,
        spans_table if traces.get("enabled", True) else None,
        _trace_export(traces, env, f"{where}: [traces]"),
        _number(data, "budget_refresh", 60.0, where),
    )


def _trace_export(traces: dict[str, Any], env: dict[str, str], at: str) -> TraceExport | None:
    """``export_url``, with ``export_headers`` as given and ``export_headers_env`` read from
    the environment (a header's NAME → the variable holding its value, e.g. a bearer token)."""
    unknown = set(traces) - {"enabled", "export_url", "export_headers", "export_headers_env",
                             "export_timeout", "export_caller_trace"}  # fmt: skip
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
    url = traces.get("export_url")
    if url is None:
        if "export_headers" in traces or "export_headers_env" in traces:
            raise ConfigError(f"{at}: export headers are given but no export_url")
        return None
    if not isinstance(url, str) or not re.match(r"https?://[^/]+", url):
        raise ConfigError(f"{at}: export_url must be an http(s) URL, got {url!r}")
    headers: dict[str, str] = {}
    for key in ("export_headers", "export_headers_env"):
        given = traces.get(key, {})
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise ConfigError(f'{at}: {key} maps header names to "strings"')
        for name, value in given.items():
            if key == "export_headers_env":
                if not env.get(value):
                    raise ConfigError(f"{at}: the environment variable {value} is not set")
                value = env[value]
            headers[name] = value
    caller_trace = traces.get("export_caller_trace", False)
    if not isinstance(caller_trace, bool):
        raise ConfigError(f"{at}: export_caller_trace is true or false")
    timeout = _number(traces, "export_timeout", 10.0, at) or 10.0
    return TraceExport(url, headers, timeout, own_traces=not caller_trace)


def _targets(
    e: dict[str, Any], name: str, upstreams: dict[str, Upstream], at: str
) -> tuple[Target, ...]:
    """An endpoint's targets: its ``upstream`` and ``model``, or its ``targets`` list, each
    an upstream of the same API with its model and, for load balancing, a weight."""
    listed = e.get("targets")
    if listed is None:
        listed = [{"upstream": e.get("upstream", ""), "model": e.get("model", name)}]
    elif "upstream" in e or "model" in e:
        raise ConfigError(f"{at}: give upstream and model, or targets, not both")
    if not isinstance(listed, list) or not listed or not all(isinstance(t, dict) for t in listed):
        raise ConfigError(f"{at}: targets is a list of {{ upstream, model, weight }} tables")
    targets = []
    for i, t in enumerate(listed):
        where = at if "targets" not in e else f"{at}.targets[{i}]"
        _table(t, where, _TARGET)
        upstream = upstreams.get(str(t.get("upstream", "")))
        if upstream is None:
            raise ConfigError(f"{where}: upstream must name one of [upstreams.*]")
        weight = t.get("weight")
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0
        ):
            raise ConfigError(f"{where}: weight must be a number > 0, got {weight!r}")
        targets.append(Target(upstream, str(t.get("model", name)), weight))
    if len({t.upstream.api for t in targets}) > 1:
        raise ConfigError(f"{at}: its targets' upstreams must all speak one API")
    if len({t.weight is None for t in targets}) > 1:
        raise ConfigError(f"{at}: give every target a weight, or none (tried in order)")
    return tuple(targets)


def load_proxy_config(path: Path, env: dict[str, str] | None = None) -> ProxyConfig:
    """Read and check the proxy's TOML file; API keys come from ``env`` (the process's)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"proxy config {path}: {e}") from None
    return parse_proxy_config(
        data, dict(os.environ) if env is None else env, f"proxy config {path}"
    )
