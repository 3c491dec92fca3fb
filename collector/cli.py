"""``python -m collector``: ``serve`` and ``tables create``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from collector import process
from collector.auth import TokensError, add_token
from collector.config import ENV_PREFIX, Config, ConfigError
from collector.log import configure_logging
from collector.schema import SchemaMismatch
from collector.server import Collector
from collector.signals import SIGNALS
from collector.sink import DeltaSink
from collector.tables import InvalidTableName, prefix_table
from collector.wal import WalLocked
from collector.workers import START_FAILED, supervise

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
        flag = "--" + f.name.replace("_", "-")
        if f.metadata["metavar"] == "BOOL":
            serve.add_argument(flag, dest=f.name, action="store_const", const=True,
                               help=f.metadata["help"])  # fmt: skip
        else:
            serve.add_argument(
                flag,
                dest=f.name,
                metavar=f.metadata["metavar"],
                help=_help(f.metadata["help"], f.default),
            )
    tables = commands.add_parser("tables", help="manage tables").add_subparsers(
        dest="tables_command", required=True
    )
    create = tables.add_parser(
        "create", help="create the _otel_metrics, _otel_logs and _otel_spans tables of a prefix"
    )
    create.add_argument("prefix", metavar="CATALOG.SCHEMA.PREFIX")
    create.add_argument("--warehouse", type=Path, default=None, metavar="PATH")
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
        help="tables it may write, e.g. 'main.agents.*' or 'main.agents.*:logs,metrics', or proxy "
        "endpoints it may call, e.g. 'endpoint:databricks-claude-*' (repeatable)",
    )
    add.add_argument(
        "--tokens-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML or JSON (default: ${ENV_PREFIX}TOKENS_FILE, else tokens.toml)",
    )
    return parser


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
    worker = process.worker_index()
    if worker is None and config.workers > 1:
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
    token = add_token(path, args.name, args.grant)
    print(token)
    print(
        f"token {args.name!r} added to {path} (only its hash is stored: keep the token now, "
        "it cannot be shown again)",
        file=sys.stderr,
    )
    return 0


def _tables_create(args: argparse.Namespace) -> int:
    warehouse = args.warehouse or Config.load({}, os.environ).warehouse
    sink = DeltaSink(warehouse)
    for signal in SIGNALS:
        table = prefix_table(args.prefix, signal)
        created = sink.ensure(table, signal.schema)
        state = "created" if created else "exists, schema matches"
        print(f"{table}: {state} at {sink.location(table)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":
        process.release_signals()
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "tokens":
            return _tokens_add(args)
        return _tables_create(args)
    except (ConfigError, InvalidTableName, SchemaMismatch, TokensError, WalLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return START_FAILED
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
