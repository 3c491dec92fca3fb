"""The dashboard's JSON API on the collector's HTTP listener (``/dashboard/api/...``): who may
read, which of the warehouse's tables they see, and the figures under the query's filters.

Reading is a permission of its own: with a tokens file only tokens with a ``read:`` grant read,
and only the tables it names; without one, only clients on loopback, as for writes. Errors are
``{"error": "..."}`` with 400 (a filter), 401 (no or an unknown token) or 403.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import threading
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from collector.auth import Authenticator, Principal
from collector.errors import ExportError, PermissionDenied
from collector.prices import Prices
from collector.storage import Warehouse
from collector.tables import TableName

__all__ = ["Dashboard"]

log = structlog.get_logger("collector.dashboard")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return remote == "unix"  # a Unix socket peer is local


class Dashboard:
    """The dashboard of a warehouse, read-only: its tables as the reader may see them."""

    def __init__(
        self, warehouse: Warehouse, auth: Authenticator, prices: Prices | None = None
    ) -> None:
        self.warehouse = warehouse
        self.auth = auth
        self.prices = prices or Prices()
        self._engine: tuple[Any, Any] | None = None
        self._loading = threading.Lock()
        self._results: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        self._results_lock = threading.Lock()

    def engine(self) -> tuple[Any, Any]:
        """The reading side, (collector.dashboard.data.Tables, collector.dashboard.figures),
        imported on first use: polars takes most of a second to import, and a collector whose
        dashboard nobody reads starts (and restarts after a crash) without it."""
        with self._loading:
            if self._engine is None:
                from collector.dashboard import data, figures

                self._engine = (data.Tables(self.warehouse, self.prices), figures)
            return self._engine

    def install(self, app: web.Application) -> None:
        app.router.add_get("/dashboard", self._page)
        app.router.add_get("/dashboard/", self._page)
        app.router.add_get("/dashboard/static/{name}", self._static)
        app.router.add_get("/dashboard/api/access", self._access)
        for name in _FIGURES:
            app.router.add_get(f"/dashboard/api/{name}", functools.partial(self._answer, name))

    def _figures(self, fig: Any) -> dict[str, Any]:
        """Each API path's figures: (the names of the tables the reader may read, those of
        them the dashboard reads as read, the filters, the query) → its JSON body, from the
        tables of one kind (by suffix); ``fig`` is the module collector.dashboard.figures."""
        logs, metrics, usage = "_otel_logs", "_otel_metrics", "_usage"

        def frames(read: dict[TableName, Any], suffix: str) -> list[Any]:
            return [frame for t, (_, frame) in read.items() if t.table.endswith(suffix)]

        def rows(figure: Any, suffix: str) -> Any:
            return lambda n, t, f, q: {"rows": figure(frames(t, suffix), f, q)}

        return {
            "tiles": lambda n, t, f, q: {
                "tables": [str(name) for name in n],
                **fig.tiles(frames(t, logs), frames(t, metrics), f),
            },
            "tables": lambda n, t, f, q: {"tables": [str(name) for name in n]},
            "calls": rows(fig.calls, logs),
            "options": lambda n, t, f, q: fig.options(frames(t, logs), frames(t, usage), f),
            "tools": rows(lambda e, f, q: fig.tools(e, f), logs),
            "errors": lambda n, t, f, q: fig.errors(frames(t, logs), f, q),
            "productivity": rows(lambda m, f, q: fig.productivity(m, f), metrics),
            "edits": rows(lambda m, f, q: fig.edits(m, f), metrics),
            "gateway": lambda n, t, f, q: fig.gateway(frames(t, usage), f),
        }

    async def _page(self, request: web.Request) -> web.Response:
        # The page holds no data (the API checks who reads): it is served to anyone, with a
        # policy that keeps every request on this origin.
        return web.Response(
            body=_asset("index.html"), content_type="text/html", headers=_PAGE_HEADERS
        )

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            body=_asset(name),
            content_type=_ASSETS[name],
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    def reader(self, request: web.Request) -> Principal:
        """Who asks; PermissionDenied or Unauthenticated if they may not read at all."""
        if not self.auth.enabled:
            if not _loopback(request.remote):
                raise PermissionDenied(
                    "without a tokens file the dashboard answers clients on loopback only"
                )
        principal = self.auth.authenticate(request.headers.get("Authorization"))
        if not principal.reads:
            raise PermissionDenied(f"token {principal.name!r} has no read grant (read:PATTERN)")
        return principal

    async def _access(self, request: web.Request) -> web.Response:
        """Whether the caller may read, and if not why, always as a 200: the page asks before
        it reads, and signs in rather than fail."""
        try:
            principal = self.reader(request)
        except ExportError as e:
            return web.json_response(
                {"reads": False, "reason": e.message, "tokens": self.auth.enabled}
            )
        return web.json_response({"reads": True, "as": principal.name, "tokens": self.auth.enabled})

    def readable(self, principal: Principal) -> list[TableName]:
        return [t for t in self.engine()[0].names() if principal.may_read(t)]

    async def _answer(self, name: str, request: web.Request) -> web.Response:
        try:
            principal = self.reader(request)
        except ExportError as e:
            return _error(e.http_status, e.message)
        _, fig = await asyncio.to_thread(self.engine)
        try:
            filters = fig.Filters.from_query(request.query)
            compute = self._figures(fig)[name]
            body = await asyncio.to_thread(self._answered, name, compute, principal, filters,
                                           request.query)  # fmt: skip
        except fig.FilterError as e:
            return _error(400, str(e))
        return web.json_response(body)

    def _answered(
        self, name: str, compute: Any, principal: Principal, filters: Any, query: Any
    ) -> Any:
        """The figures of one API request, from the results cache while none of the tables
        they are made from has moved: a page is read again and again (reloads, filters set
        back, other readers) between two flushes of a collector."""
        names = self.readable(principal)
        read = self.engine()[0].snapshot(names)
        versions = tuple((t, v) for t, (v, _) in read.items())
        key = (name, tuple(sorted(query.items())), tuple(names), versions)
        with self._results_lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
        body = compute(names, read, filters, query)
        with self._results_lock:
            self._results[key] = body
            while len(self._results) > _RESULTS_KEPT:
                self._results.popitem(last=False)
        return body


# Answers kept (least recently used out): a page is 11 of them; the results are small.
_RESULTS_KEPT = 512
_FIGURES = ("tiles", "tables", "calls", "options", "tools", "errors", "productivity", "edits",
            "gateway")  # fmt: skip
_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
    "plotly.min.js": "text/javascript",
}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@functools.cache
def _asset(name: str) -> bytes:
    """A file of the page: ours from the package, plotly.js from the plotly package, which
    ships it (no CDN: the page works offline and no request leaves the host)."""
    if name == "plotly.min.js":
        from plotly.offline import get_plotlyjs

        return get_plotlyjs().encode()
    return (resources.files("collector.dashboard") / "static" / name).read_bytes()
