"""The collector's configuration: one typed object, from flags, ``COLLECTOR_*`` variables and TOML.

Precedence, highest first: command-line flag, environment variable, config file, default. The
fields below are the single list of settings: the CLI flags, the variable names and the TOML
keys are generated from them, and a test holds the README's configuration table to them.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.prices import Prices, PricesError
from collector.schema import schemas_by_suffix
from collector.storage import Warehouse
from collector.tables import InvalidTableName, TableName

__all__ = ["Config", "ConfigError", "HostPort", "parse_duration", "parse_size"]

ENV_PREFIX = "COLLECTOR_"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text.strip())
        if not m:
            raise ConfigError(f"{text!r} is not HOST:PORT")
        host = m.group(1) or m.group(3) or "127.0.0.1"
        port = int(m.group(2) or m.group(4))
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?", re.I)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str | int) -> int:
    """Bytes, from ``1048576``, ``64MiB``, ``64MB``, ``1g``…"""
    if isinstance(text, int):
        return text
    m = _SIZE.fullmatch(str(text).strip())
    if not m:
        raise ConfigError(f"{text!r} is not a size in bytes (e.g. 67108864, 64MiB, 100MB)")
    unit = (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    power = "bkmgt".index(unit[0]) if unit else 0
    return int(float(m.group(1)) * base**power)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float) -> float:
    """Seconds, from ``90``, ``90s``, ``5m``, ``1h``, ``90d``, ``2w``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = _DURATION.fullmatch(str(text).strip())
    if not m:
        raise ConfigError(f"{text!r} is not a duration (e.g. 300, 90s, 5m, 1h, 90d)")
    return float(m.group(1)) * _SECONDS[(m.group(2) or "").lower()]


def _pairs(value: Any, malformed: Callable[[str], str]) -> list[tuple[str, Any]]:
    """``KEY=VALUE`` pairs from a TOML table, a list (a flag given several times), or text:
    one pair a line, or pairs split by commas when it has one line."""
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list | tuple):
        items = [str(i) for i in value]
    else:
        text = str(value)
        items = text.split("\n" if "\n" in text else ",")
    pairs = []
    for item in filter(None, (i.strip() for i in items)):
        key, sep, v = item.partition("=")
        if not sep:
            raise ConfigError(malformed(item))
        pairs.append((key.strip(), v.strip()))
    return pairs


def _retention(value: Any) -> tuple[tuple[str, float], ...]:
    """``logs=90d,metrics=400d`` (or a TOML table of the same): (table kind, seconds) pairs."""
    pairs = _pairs(value, lambda part: f"{part!r} is not KIND=DURATION (e.g. logs=90d)")
    kinds = sorted(s.kind for s in schemas_by_suffix().values())
    out: dict[str, float] = {}
    for kind, duration in pairs:
        if kind not in kinds:
            raise ConfigError(
                f"unknown table kind {kind!r} in --retention: one of {', '.join(kinds)}"
            )
        seconds = _positive(parse_duration)(duration)
        if seconds < 3600:
            raise ConfigError(f"--retention {kind}={duration}: less than one hour is refused")
        out[kind] = seconds
    return tuple(sorted(out.items()))


def _storage_options(value: Any) -> tuple[tuple[str, str], ...]:
    # The text is not echoed: a value given alone may be a secret.
    pairs = _pairs(value, lambda _: "a storage option is KEY=VALUE (e.g. aws_region=eu-west-1)")
    for key, _ in pairs:
        if not key:
            raise ConfigError("a storage option is KEY=VALUE: the key is empty")
    return tuple((key, str(v)) for key, v in pairs)


def _instance_id(value: Any) -> str | None:
    if value is None or str(value) == "":
        return None
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        raise ConfigError(
            f"{text!r} is not an instance id: letters, digits, '.', '_' and '-', at most 100"
        )
    return text


def _positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        # TOML gives typed values: a bool is an int to Python, and int(10.7) would truncate.
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ConfigError(f"must be a whole number, got {value!r}")
        v = kind(value)
        if not v > 0 or v == float("inf"):  # `not v > 0` also refuses NaN
            raise ConfigError(f"must be a positive finite number, got {value!r}")
        return v

    return parse


def _non_negative(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ConfigError(f"must be a number, got {value!r}")
        v = kind(value)
        if not 0 <= v < float("inf"):
            raise ConfigError(f"must be zero or a positive finite number, got {value!r}")
        return v

    return parse


def _workers(value: Any) -> int:
    if str(value).strip().lower() == "auto":
        return os.cpu_count() or 1
    return _positive(int)(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"must be true or false, got {value!r}")


def _optional_path(value: Any) -> Path | None:
    return None if value is None or str(value) == "" else Path(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        v = str(value).lower()
        if v not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}, got {value!r}")
        return v

    return parse


def _listen(value: Any) -> HostPort | None:
    if isinstance(value, HostPort) or value is None:
        return value
    return None if str(value).strip().lower() == "off" else HostPort.parse(str(value))


def _prefix(value: Any) -> str:
    try:
        return str(TableName.parse(str(value)))
    except InvalidTableName as e:
        raise ConfigError(e.message.replace("table name", "default table prefix")) from None


def _setting(default: Any, parse: Callable[[Any], Any], help: str, metavar: str) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help, "metavar": metavar})


MiB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    http: HostPort | None = _setting(
        HostPort("127.0.0.1", 4318), _listen, "OTLP/HTTP listen address, or off", "HOST:PORT"
    )
    grpc: HostPort | None = _setting(
        HostPort("127.0.0.1", 4317), _listen, "OTLP/gRPC listen address, or off", "HOST:PORT"
    )
    warehouse: str = _setting(
        "warehouse",
        str,
        "where the <catalog>/<schema>/<table> Delta tables live: a directory, or s3://, az://, "
        "abfss:// or gs:// bucket/prefix",
        "URI",
    )
    storage_option: tuple[tuple[str, str], ...] = _setting(
        (),
        _storage_options,
        "an object-store option for delta-rs and obstore, KEY=VALUE (repeatable), beside the "
        "AWS_*, AZURE_STORAGE_* and GOOGLE_* variables",
        "KEY=VALUE",
    )
    default_table: str = _setting(
        "main.default.agents",
        _prefix,
        "CATALOG.SCHEMA.PREFIX for requests without X-Databricks-UC-Table-Name",
        "C.S.PREFIX",
    )
    flush_interval: float = _setting(
        5.0, _positive(float), "flush a table when its oldest buffered row is this old", "SECONDS"
    )
    flush_rows: int = _setting(
        100_000, _positive(int), "flush a table at once when it buffers this many rows", "N"
    )
    flush_bytes: int = _setting(
        64 * MiB, _positive(parse_size), "flush a table at once when it buffers this much", "BYTES"
    )
    max_request_bytes: int = _setting(
        64 * MiB, _positive(parse_size), "largest request body, after decompression", "BYTES"
    )
    max_buffer_bytes: int = _setting(
        256 * MiB,
        _positive(parse_size),
        "above this much buffered data, requests get 503 / UNAVAILABLE with a retry delay",
        "BYTES",
    )
    durability: str = _setting(
        "wal",
        _choice("wal", "none"),
        "wal: acknowledge once fsynced to the write-ahead log; none: once buffered (a crash "
        "loses the buffers)",
        "MODE",
    )
    wal_dir: Path | None = _setting(
        None,
        _optional_path,
        "write-ahead log directory, on local disk (default: <warehouse>/_wal; required with "
        "a warehouse on object storage)",
        "PATH",
    )
    instance_id: str | None = _setting(
        None,
        _instance_id,
        "this collector's identity among the replicas sharing a warehouse: worker N commits "
        "as ID-N (default: an id each WAL makes up once and keeps)",
        "ID",
    )
    dedup_window: float = _setting(
        600.0,
        _non_negative(float),
        "a request identical to one accepted this many seconds ago is taken as the client's "
        "retry and not stored again; 0 turns this off",
        "SECONDS",
    )
    shutdown_timeout: float = _setting(
        30.0,
        _positive(float),
        "on SIGTERM, how long to keep trying to flush; what is left stays in the WAL",
        "SECONDS",
    )
    tokens_file: Path | None = _setting(
        None,
        _optional_path,
        "TOML or JSON file of token hashes and grants; without it, writes are unauthenticated "
        "and only loopback listeners are allowed",
        "FILE",
    )
    allow_unauthenticated: bool = _setting(
        False, _boolean, "listen beyond loopback without a tokens file (not recommended)", "BOOL"
    )
    tls_cert: Path | None = _setting(
        None, _optional_path, "PEM certificate (chain) for HTTPS and gRPC TLS", "FILE"
    )
    tls_key: Path | None = _setting(None, _optional_path, "PEM private key for --tls-cert", "FILE")
    max_attributes: int = _setting(
        128,
        _positive(int),
        "attributes kept per record (and resource, scope, event, link); the rest are dropped "
        "and counted in dropped_attributes_count",
        "N",
    )
    max_value_bytes: int = _setting(
        64 * 1024,
        _positive(parse_size),
        "longest string value kept whole; longer ones are cut and marked '…[truncated]'",
        "BYTES",
    )
    max_records: int = _setting(
        100_000, _positive(int), "most records (data points, logs, spans) in one request", "N"
    )
    max_concurrent_requests: int = _setting(
        256, _positive(int), "requests handled at once; more get 503 / UNAVAILABLE", "N"
    )
    read_timeout: float = _setting(
        30.0, _positive(float), "seconds a client may take to send its request body", "SECONDS"
    )
    max_header_bytes: int = _setting(
        16 * 1024, _positive(parse_size), "longest HTTP request line or header field", "BYTES"
    )
    workers: int = _setting(
        os.cpu_count() or 1,
        _workers,
        "collector processes sharing the ports (SO_REUSEPORT), each with its own WAL; "
        "auto: one per core",
        "N",
    )
    dashboard: bool = _setting(
        True,
        _boolean,
        "on: serve the usage dashboard at /dashboard (read: grants, or loopback)",
        "on|off",
    )
    prices: Path | None = _setting(
        None,
        _optional_path,
        "TOML file mapping endpoint names to models ([models]) and overriding prices per "
        "million tokens ([price.NAME]), for estimated costs",
        "FILE",
    )
    maintenance: bool = _setting(
        True,
        _boolean,
        "on: serve compacts, checkpoints, cleans up and vacuums the tables in the background",
        "on|off",
    )
    target_file_size: int = _setting(
        128 * MiB,
        _positive(parse_size),
        "compaction rewrites smaller files into files of about this size",
        "BYTES",
    )
    compact_min_age: float = _setting(
        30.0,
        _non_negative(parse_duration),
        "files younger than this are left alone by compaction",
        "DURATION",
    )
    log_retention: float = _setting(
        1800.0,
        _positive(parse_duration),
        "Delta log entries older than this are removed (every retained entry slows each "
        "commit a little); time travel reaches back this far",
        "DURATION",
    )
    vacuum_retention: float = _setting(
        7 * 86400.0,
        _positive(parse_duration),
        "data files no longer in the table are deleted once they have been out of it this "
        "long (at least 1h)",
        "DURATION",
    )
    retention: tuple[tuple[str, float], ...] = _setting(
        (),
        _retention,
        "opt-in: delete rows older than this per table kind, e.g. logs=90d,metrics=400d "
        "(kinds: logs, metrics, spans, usage, inference)",
        "KIND=DURATION,…",
    )
    maintenance_interval: float = _setting(
        30.0,
        _positive(parse_duration),
        "time between maintenance passes over the tables",
        "DURATION",
    )
    maintenance_lease: float = _setting(
        60.0,
        _positive(parse_duration),
        "how long a maintainer's claim on a table lasts unless renewed; another takes over "
        "after it",
        "DURATION",
    )
    proxy_config: Path | None = _setting(
        None,
        _optional_path,
        "TOML file of the coding-agent proxy (upstreams, endpoints, limits); serves the "
        "proxy routes on the HTTP listener",
        "FILE",
    )
    log_format: str = _setting(
        "auto",
        _choice("auto", "json", "console"),
        "auto: console on a terminal, else JSON",
        "FORMAT",
    )
    log_level: str = _setting(
        "info", _choice("debug", "info", "warning", "error"), "least severe level logged", "LEVEL"
    )

    def check(self, serving: bool = True) -> None:
        """Refuse settings that would run insecurely or cannot work together; ``serving``:
        for ``serve``, which keeps a WAL (``maintain`` keeps none)."""
        self.location  # noqa: B018 (raises on a warehouse it cannot use)
        self.price_list  # noqa: B018 (raises on a prices file it cannot read)
        if serving and self.durability == "wal":
            self.wal_directory  # noqa: B018 (raises when a remote warehouse has no --wal-dir)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        exposed = [
            str(a) for a in (self.http, self.grpc) if a is not None and not _is_loopback(a.host)
        ]
        if exposed and self.tokens_file is None and not self.allow_unauthenticated:
            raise ConfigError(
                f"refusing to listen on {', '.join(exposed)} without authentication: anyone who "
                "can reach it could write to your tables. Create tokens with "
                "`python -m collector tokens add NAME --grant 'CATALOG.SCHEMA.*' --tokens-file "
                "tokens.toml` and pass --tokens-file tokens.toml, or listen on 127.0.0.1, or "
                "pass --allow-unauthenticated if a proxy in front authenticates"
            )
        if self.vacuum_retention < 3600:
            raise ConfigError(
                "--vacuum-retention under one hour is refused: a reader or a commit in progress "
                "may still need the files it would delete"
            )
        if self.workers > 1 and any(a is not None and a.port == 0 for a in (self.http, self.grpc)):
            raise ConfigError(
                "--workers above 1 share fixed ports: give --http and --grpc a port, not 0"
            )

    def probe_warehouse(self) -> str | None:
        """ConfigError if the warehouse's bucket does not exist; the cause, if it cannot be
        reached now (it may come back)."""
        try:
            return self.location.probe()
        except ValueError as e:
            raise ConfigError(f"--warehouse: {e}") from None

    @functools.cached_property
    def price_list(self) -> Prices:
        """The prices for estimated costs (genai-prices' with --prices' mapping and
        overrides); ConfigError saying what is wrong with the file."""
        try:
            return Prices.load(self.prices)
        except PricesError as e:
            raise ConfigError(f"--prices: {e}") from None

    @functools.cached_property
    def location(self) -> Warehouse:
        """The warehouse, parsed; ConfigError saying what is wrong with it."""
        try:
            return Warehouse.parse(self.warehouse, dict(self.storage_option))
        except ValueError as e:
            raise ConfigError(f"--warehouse: {e}") from None

    @property
    def wal_directory(self) -> Path:
        if self.wal_dir is not None:
            return self.wal_dir
        location = self.location
        if not location.is_local:
            raise ConfigError(
                f"--wal-dir is required with a warehouse on object storage ({location}): the "
                "write-ahead log stays on local disk (in a cluster, a persistent volume)"
            )
        return location.path / "_wal"

    @classmethod
    def settings(cls) -> list[dataclasses.Field[Any]]:
        return list(dataclasses.fields(cls))

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        file: str | Path | None = None,
    ) -> Config:
        """Merge the sources; ``flags`` holds only the flags actually given."""
        values: dict[str, tuple[Any, str]] = {}
        if file is not None:
            for name, (key, value) in _read_toml(Path(file)).items():
                values[name] = (value, f"{file}: {key}")
        for f in cls.settings():
            name = ENV_PREFIX + f.name.upper()
            if env and name in env:
                values[f.name] = (env[name], name)
        for key, value in (flags or {}).items():
            if value is not None:
                values[key] = (value, "--" + key.replace("_", "-"))
        kwargs = {}
        meta = {f.name: f.metadata for f in cls.settings()}
        for key, (value, source) in values.items():
            try:
                kwargs[key] = meta[key]["parse"](value)
            except (ConfigError, ValueError, TypeError) as e:
                raise ConfigError(f"{source}: {e}") from None
        return cls(**kwargs)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_toml(path: Path) -> dict[str, tuple[str, Any]]:
    """Setting name → (the key as the file spells it, value)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    known = {f.name for f in Config.settings()}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        out[name] = (key, value)
    return out
