"""``python -m collector``: ``serve``, ``maintain``, ``tables create``, ``tokens add`` and
``health``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import structlog
from aiohttp import web

from collector import process
from collector.auth import Authenticator, TokensError, add_token
from collector.config import ENV_PREFIX, Config, ConfigError
from collector.dashboard import Dashboard
from collector.health import HEALTH_SETTINGS, check_ready, readiness_url
from collector.log import configure_logging
from collector.maintenance import Maintainer, MaintenancePolicy, TableReport
from collector.maintenance.background import MAINTENANCE_SETTINGS
from collector.proxy import load_proxy_config
from collector.schema import SchemaMismatch
from collector.server import Collector
from collector.signals import SIGNALS
from collector.sink import DeltaSink
from collector.tables import InvalidTableName, TableName, prefix_table
from collector.wal import WalIdentityMismatch, WalLocked, WalUnreadable
from collector.workers import START_FAILED, supervise

log = structlog.get_logger("collector")

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collector",
        description="OTLP collector that lands coding-agent telemetry in Delta tables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the collector",
        description=f"Every flag can also be set as {ENV_PREFIX}<FLAG> or in a TOML --config file.",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    for f in Config.settings():
        _add_setting(serve, f)
    tables = commands.add_parser("tables", help="manage tables").add_subparsers(
        dest="tables_command", required=True
    )
    create = tables.add_parser(
        "create", help="create the _otel_metrics, _otel_logs and _otel_spans tables of a prefix"
    )
    create.add_argument("prefix", metavar="CATALOG.SCHEMA.PREFIX")
    create.add_argument("--warehouse", default=None, metavar="URI")
    create.add_argument("--storage-option", dest="storage_option", action="append",
                        metavar="KEY=VALUE", help="an object-store option (repeatable)")  # fmt: skip
    maintain = commands.add_parser(
        "maintain",
        help="compact, checkpoint, clean up, vacuum (and apply retention to) the tables",
        description="What serve does in the background, by hand or from cron. Tables another "
        "maintainer is working on are skipped.",
    )
    maintain.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    maintain.add_argument("--once", action="store_true", help="one pass, then exit")
    maintain.add_argument(
        "--background",
        action="store_true",
        help="as serve runs it: at the lowest CPU priority, passes logged but not printed",
    )
    maintain.add_argument(
        "--table", action="append", default=[], metavar="CATALOG.SCHEMA.TABLE",
        help="only this table (repeatable; default: every table in the warehouse)",
    )  # fmt: skip
    for f in Config.settings():
        if f.name in MAINTENANCE_SETTINGS:
            _add_setting(maintain, f)
    health = commands.add_parser(
        "health",
        help="exit 0 if the collector on this host is ready (a container's health check)",
        description="Asks /readyz of the OTLP/HTTP listener that serve's settings name (the same "
        f"flags, {ENV_PREFIX}* variables and --config file), on loopback.",
    )
    health.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    health.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the answer (default: 5)")  # fmt: skip
    for f in Config.settings():
        if f.name in HEALTH_SETTINGS:
            _add_setting(health, f)
    dashboard = commands.add_parser(
        "dashboard",
        help="serve the usage dashboard alone, read-only, for a warehouse written elsewhere",
        description="The dashboard's API (/dashboard/api/...) over the tables of --warehouse, "
        "on --http; reading needs a read: grant with a tokens file, else a loopback client.",
    )
    dashboard.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    for f in Config.settings():
        if f.name in DASHBOARD_SETTINGS:
            _add_setting(dashboard, f)
    tokens = commands.add_parser("tokens", help="manage access tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    add = tokens.add_parser(
        "add", help="create a token, print it once, and store only its hash in the tokens file"
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="PATTERN[:SIGNALS]",
        help="tables it may write, e.g. 'main.agents.*' or 'main.agents.*:logs,metrics', proxy "
        "endpoints it may call, e.g. 'endpoint:databricks-claude-*', or tables it may read "
        "through the dashboard, e.g. 'read:main.agents.*' (repeatable)",
    )
    add.add_argument(
        "--team",
        default=None,
        metavar="TEAM",
        help="the team the token belongs to: the proxy's team budgets count its spend",
    )
    add.add_argument(
        "--tokens-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML or JSON (default: ${ENV_PREFIX}TOKENS_FILE, else tokens.toml)",
    )
    return parser


def _maintain(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in MAINTENANCE_SETTINGS}
    config = Config.load(flags, os.environ, args.config or os.environ.get(ENV_PREFIX + "CONFIG"))
    config.check(serving=False)
    configure_logging(config.log_format, config.log_level)
    config.probe_warehouse()
    maintainer = Maintainer(config.location, MaintenancePolicy.from_config(config))
    tables = [TableName.parse(t) for t in args.table] or None
    if args.background:
        os.nice(19)
        while True:
            time.sleep(config.maintenance_interval)
            maintainer.run_once(tables)

    def progress(report: TableReport) -> None:
        print(report.line(), flush=True)

    while True:
        started = time.perf_counter()
        reports = maintainer.run_once(tables, progress)
        print(
            f"maintained {len(reports)} tables: files "
            f"{sum(r.files_before for r in reports)} → {sum(r.files_after for r in reports)}, "
            f"{sum(r.bytes_after for r in reports) / 2**20:.1f} MiB, "
            f"{sum(r.rows_deleted for r in reports)} rows past retention deleted, "
            f"{sum(1 for r in reports if r.error)} failed, "
            f"{(time.perf_counter() - started) * 1000:.0f} ms",
            flush=True,
        )
        if args.once:
            return 1 if any(r.error for r in reports) else 0
        time.sleep(config.maintenance_interval)


def _add_setting(parser: argparse.ArgumentParser, f: dataclasses.Field[Any]) -> None:
    """The flag of a setting; one of KEY=VALUE pairs is given once per pair."""
    flag, metavar, text = "--" + f.name.replace("_", "-"), f.metadata["metavar"], f.metadata["help"]
    if metavar == "BOOL":
        parser.add_argument(flag, dest=f.name, action="store_const", const=True, help=text)
    elif metavar == "KEY=VALUE":
        parser.add_argument(flag, dest=f.name, action="append", metavar=metavar, help=text)
    else:
        parser.add_argument(flag, dest=f.name, metavar=metavar, help=_help(text, f.default))


def _help(text: str, default: object) -> str:
    if "default:" in text:
        return text
    return f"{text} (default: {'off' if default is None else default})"


def _serve(args: argparse.Namespace) -> int:
    flags = {f.name: getattr(args, f.name) for f in Config.settings()}
    config_file = args.config or os.environ.get(ENV_PREFIX + "CONFIG")
    config = Config.load(flags, os.environ, config_file)
    config.check()
    configure_logging(config.log_format, config.log_level)
    unreachable = config.probe_warehouse()
    if unreachable:  # rows wait in the WAL until it can be written; /readyz says why
        log.warning("warehouse unreachable at start", warehouse=str(config.location),
                    error=unreachable)  # fmt: skip
    worker = process.worker_index()
    if worker is None and config.workers > 1:
        if config.proxy_config is not None:  # once, before N workers each fail on it
            load_proxy_config(config.proxy_config)
        return supervise(sys.argv[1:], config.workers)
    if process.stop_requested():  # stopped while still loading: nothing was started
        return 0
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        # jemalloc (pyarrow's default) keeps the pages of each flushed buffer for a while:
        # ~60 MiB more peak RSS per worker under load, for no measurable speed.
        pa.set_memory_pool(pa.system_memory_pool())
    asyncio.run(Collector(config, worker=worker or 0).serve_until_signalled())
    return 0


def _tokens_add(args: argparse.Namespace) -> int:
    path = args.tokens_file or Path(os.environ.get(ENV_PREFIX + "TOKENS_FILE", "tokens.toml"))
    if not args.grant:
        print("error: give at least one --grant", file=sys.stderr)
        return 2
    token = add_token(path, args.name, args.grant, args.team)
    print(token)
    print(
        f"token {args.name!r} added to {path} (only its hash is stored: keep the token now, "
        "it cannot be shown again)",
        file=sys.stderr,
    )
    return 0


def _health(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in HEALTH_SETTINGS}
    config = Config.load(flags, os.environ, args.config or os.environ.get(ENV_PREFIX + "CONFIG"))
    url = readiness_url(config)
    if url is None:
        print("error: the OTLP/HTTP listener is off (--http off): nothing to ask", file=sys.stderr)
        return START_FAILED
    ready, said = check_ready(url, args.timeout)
    print(said)
    return 0 if ready else 1


DASHBOARD_SETTINGS = frozenset(
    {"warehouse", "storage_option", "http", "tokens_file", "allow_unauthenticated", "prices",
     "log_format", "log_level"}
)  # fmt: skip


def _dashboard(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in DASHBOARD_SETTINGS}
    config = Config.load(flags, os.environ, args.config or os.environ.get(ENV_PREFIX + "CONFIG"))
    config.check(serving=False)
    configure_logging(config.log_format, config.log_level)
    config.probe_warehouse()
    if config.http is None:
        raise ConfigError("--http off: the dashboard has nothing to listen on")
    app = web.Application()
    Dashboard(config.location, Authenticator(config.tokens_file), config.price_list).install(app)
    log = structlog.get_logger("collector.dashboard")
    log.info("dashboard started", http=str(config.http), warehouse=str(config.location))
    web.run_app(app, host=config.http.host, port=config.http.port, access_log=None, print=None)
    return 0


def _tables_create(args: argparse.Namespace) -> int:
    flags = {"warehouse": args.warehouse, "storage_option": args.storage_option}
    config = Config.load(flags, os.environ)
    config.probe_warehouse()
    sink = DeltaSink(config.location)
    for signal in SIGNALS:
        table = prefix_table(args.prefix, signal)
        created = sink.ensure(table, signal.schema)
        state = "created" if created else "exists, schema matches"
        print(f"{table}: {state} at {sink.uri(table)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":  # maintain too: a pass stopped anywhere leaves the tables whole
        process.release_signals()
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "tokens":
            return _tokens_add(args)
        if args.command == "maintain":
            return _maintain(args)
        if args.command == "health":
            return _health(args)
        if args.command == "dashboard":
            return _dashboard(args)
        return _tables_create(args)
    except (
        ConfigError,
        InvalidTableName,
        SchemaMismatch,
        TokensError,
        WalLocked,
        WalIdentityMismatch,
        WalUnreadable,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return START_FAILED
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
