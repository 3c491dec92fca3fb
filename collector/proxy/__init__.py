"""The coding-agent proxy (an AI gateway): Claude Code, Codex CLI, Gemini CLI and Cursor call
their provider through it; it checks the caller's token and grants, applies rate limits,
forwards to the configured upstream with the provider's key, relays the answer as it streams,
and records usage and payloads in Delta tables through the collector's pipeline."""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web

from collector.hoststate import HostState
from collector.pipeline import Pipeline
from collector.prices import Prices
from collector.proxy.config import ProxyConfig, load_proxy_config
from collector.proxy.forward import Proxy

__all__ = ["Proxy", "ProxyConfig", "install_proxy", "load_proxy_config"]

log = structlog.get_logger("collector.proxy")


async def install_proxy(
    app: web.Application,
    pipeline: Pipeline,
    config_path: Path,
    host: HostState,
    read_timeout: float = 30.0,
    prices: Prices | None = None,
) -> None:
    """Add the proxy's routes to the collector's HTTP app; its client closes with the app.
    Calls are priced by ``prices`` (the --prices file's) unless an endpoint has its own; rate
    limits and spend are counted in ``host``'s shared state, with the other workers."""
    config = load_proxy_config(config_path)
    proxy = Proxy(pipeline, config, host, read_timeout, prices)
    await proxy.start()  # with budgets: the month's spend is known before the first call
    proxy.install(app)

    async def close(app: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(close)
    log.info(
        "proxy enabled",
        endpoints=len(config.endpoints),
        usage_table=str(config.usage_table),
        inference_table=str(config.inference_table),
    )
