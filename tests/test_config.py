"""Unit tests for collector/config.py: sources, precedence, parsing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import Config, ConfigError, HostPort, parse_duration, parse_size
from collector.storage import Warehouse

MiB = 1024 * 1024


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**sources: object) -> str:
    with pytest.raises(ConfigError) as info:
        Config.load(**sources)  # type: ignore[arg-type]
    return str(info.value)


# --- defaults --------------------------------------------------------------------------------


def test_defaults() -> None:
    config = Config.load()
    assert config == Config()
    assert config.http == HostPort("127.0.0.1", 4318)
    assert config.grpc == HostPort("127.0.0.1", 4317)
    assert config.warehouse == "warehouse"
    assert config.location == Warehouse(str(Path("warehouse").resolve()))
    assert config.default_table == "main.default.agents"
    assert config.flush_interval == 5.0
    assert config.flush_rows == 100_000
    assert config.flush_bytes == 64 * MiB
    assert config.max_request_bytes == 64 * MiB
    assert config.log_format == "auto"
    assert config.log_level == "info"


def test_empty_sources_give_defaults(tmp_path: Path) -> None:
    assert Config.load({}, {}, toml(tmp_path, "")) == Config()


def test_flag_none_means_not_given() -> None:
    assert Config.load({"flush_interval": None, "http": None}) == Config()


def test_unrelated_environment_is_ignored() -> None:
    env = {"FLUSH_INTERVAL": "1", "COLLECTOR_NOPE": "x", "collector_flush_interval": "2"}
    assert Config.load(env=env) == Config()


# --- precedence ------------------------------------------------------------------------------


def test_precedence(tmp_path: Path) -> None:
    file = toml(tmp_path, "flush-interval = 1.0\n")
    env = {"COLLECTOR_FLUSH_INTERVAL": "2"}
    flags = {"flush_interval": "3"}
    assert Config.load(flags, env, file).flush_interval == 3.0
    assert Config.load({}, env, file).flush_interval == 2.0
    assert Config.load({}, {}, file).flush_interval == 1.0
    assert Config.load({}, {}, None).flush_interval == 5.0


def test_precedence_is_per_setting(tmp_path: Path) -> None:
    file = toml(tmp_path, 'flush-rows = 10\nlog-level = "debug"\nflush_interval = 1\n')
    env = {"COLLECTOR_FLUSH_ROWS": "20", "COLLECTOR_LOG_FORMAT": "json"}
    flags = {"log_format": "console"}
    config = Config.load(flags, env, file)
    assert config.flush_rows == 20
    assert config.log_level == "debug"
    assert config.log_format == "console"
    assert config.flush_interval == 1.0
    assert config.flush_bytes == 64 * MiB


def test_toml_keys_with_dashes_or_underscores(tmp_path: Path) -> None:
    file = toml(
        tmp_path,
        "\n".join(
            [
                'http = "0.0.0.0:14318"',
                'grpc = "off"',
                'warehouse = "/data/wh"',
                'default-table = "Cat.Sch.Pre"',
                "flush_interval = 0.5",
                "flush-rows = 1000",
                'flush_bytes = "8MiB"',
                "max-request-bytes = 1048576",
                'log_format = "JSON"',
                'log-level = "WARNING"',
            ]
        ),
    )
    assert Config.load(file=file) == Config(
        http=HostPort("0.0.0.0", 14318),
        grpc=None,
        warehouse="/data/wh",
        default_table="cat.sch.pre",
        flush_interval=0.5,
        flush_rows=1000,
        flush_bytes=8 * MiB,
        max_request_bytes=MiB,
        log_format="json",
        log_level="warning",
    )


def test_every_setting_from_environment() -> None:
    env = {
        "COLLECTOR_HTTP": ":9000",
        "COLLECTOR_GRPC": "[::1]:9001",
        "COLLECTOR_WAREHOUSE": "/tmp/w",
        "COLLECTOR_DEFAULT_TABLE": "a.b.c",
        "COLLECTOR_FLUSH_INTERVAL": "0.25",
        "COLLECTOR_FLUSH_ROWS": "7",
        "COLLECTOR_FLUSH_BYTES": "1k",
        "COLLECTOR_MAX_REQUEST_BYTES": "2KiB",
        "COLLECTOR_LOG_FORMAT": "console",
        "COLLECTOR_LOG_LEVEL": "error",
    }
    assert Config.load(env=env) == Config(
        http=HostPort("127.0.0.1", 9000),
        grpc=HostPort("::1", 9001),
        warehouse="/tmp/w",
        default_table="a.b.c",
        flush_interval=0.25,
        flush_rows=7,
        flush_bytes=1000,
        max_request_bytes=2048,
        log_format="console",
        log_level="error",
    )


@pytest.mark.parametrize("value", ["off", "OFF", " Off "])
def test_listeners_off(tmp_path: Path, value: str) -> None:
    assert Config.load({"http": value}).http is None
    assert Config.load(env={"COLLECTOR_GRPC": value}).grpc is None
    file = toml(tmp_path, f'http = "{value}"\ngrpc = "{value}"\n')
    config = Config.load(file=file)
    assert (config.http, config.grpc) == (None, None)


def test_setting_names() -> None:
    assert [f.name for f in Config.settings()] == [
        "http",
        "grpc",
        "warehouse",
        "storage_option",
        "default_table",
        "flush_interval",
        "flush_rows",
        "flush_bytes",
        "max_request_bytes",
        "max_buffer_bytes",
        "durability",
        "wal_dir",
        "instance_id",
        "dedup_window",
        "shutdown_timeout",
        "tokens_file",
        "allow_unauthenticated",
        "tls_cert",
        "tls_key",
        "max_attributes",
        "max_value_bytes",
        "max_records",
        "max_concurrent_requests",
        "read_timeout",
        "max_header_bytes",
        "workers",
        "dashboard",
        "prices",
        "maintenance",
        "target_file_size",
        "compact_min_age",
        "log_retention",
        "vacuum_retention",
        "retention",
        "maintenance_interval",
        "maintenance_lease",
        "proxy_config",
        "log_format",
        "log_level",
    ]


# --- HostPort --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "rendered"),
    [
        ("127.0.0.1:4318", HostPort("127.0.0.1", 4318), "127.0.0.1:4318"),
        (":4318", HostPort("127.0.0.1", 4318), "127.0.0.1:4318"),
        ("0.0.0.0:0", HostPort("0.0.0.0", 0), "0.0.0.0:0"),
        ("localhost:65535", HostPort("localhost", 65535), "localhost:65535"),
        ("  example.com:80 ", HostPort("example.com", 80), "example.com:80"),
        ("[::1]:4317", HostPort("::1", 4317), "[::1]:4317"),
        ("[::]:4317", HostPort("::", 4317), "[::]:4317"),
        ("[::ffff:10.0.0.1]:1", HostPort("::ffff:10.0.0.1", 1), "[::ffff:10.0.0.1]:1"),
    ],
)
def test_hostport_parse(text: str, expected: HostPort, rendered: str) -> None:
    parsed = HostPort.parse(text)
    assert parsed == expected
    assert str(parsed) == rendered


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4318", "'4318' is not HOST:PORT"),
        ("localhost", "'localhost' is not HOST:PORT"),
        ("host:", "'host:' is not HOST:PORT"),
        ("host:port", "'host:port' is not HOST:PORT"),
        ("::1:4317", "'::1:4317' is not HOST:PORT"),
        ("[::1]", "'[::1]' is not HOST:PORT"),
        ("", "'' is not HOST:PORT"),
        ("host:65536", "port 65536 is out of range"),
        ("host:-1", "'host:-1' is not HOST:PORT"),
    ],
)
def test_hostport_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        HostPort.parse(text)
    assert str(info.value) == message


# --- parse_size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MiB", 67_108_864),
        ("64mib", 67_108_864),
        ("100MB", 100_000_000),
        ("100M", 100_000_000),
        ("1k", 1000),
        ("1K", 1000),
        ("1kb", 1000),
        ("1Ki", 1024),
        ("1KiB", 1024),
        ("2GiB", 2 * 1024**3),
        ("1g", 1_000_000_000),
        ("1TB", 1_000_000_000_000),
        ("1TiB", 1024**4),
        ("1.5k", 1500),
        ("0.5MiB", 524_288),
        ("10 KB", 10_000),
        (" 12b ", 12),
        ("1048576", 1_048_576),
        ("0", 0),
        (1_048_576, 1_048_576),
        (0, 0),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "64 XB", "1.2.3", "-1", "1e6", "1 MiBs", "ten"])
def test_parse_size_invalid(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(text)
    assert str(info.value) == f"{text!r} is not a size in bytes (e.g. 67108864, 64MiB, 100MB)"


# --- invalid values name their source --------------------------------------------------------


def test_invalid_env_names_variable() -> None:
    assert (
        config_error(env={"COLLECTOR_FLUSH_INTERVAL": "abc"})
        == "COLLECTOR_FLUSH_INTERVAL: could not convert string to float: 'abc'"
    )
    assert config_error(env={"COLLECTOR_HTTP": "nope"}) == "COLLECTOR_HTTP: 'nope' is not HOST:PORT"
    assert (
        config_error(env={"COLLECTOR_FLUSH_BYTES": "lots"})
        == "COLLECTOR_FLUSH_BYTES: 'lots' is not a size in bytes (e.g. 67108864, 64MiB, 100MB)"
    )


def test_invalid_flag_names_flag() -> None:
    assert (
        config_error(flags={"flush_rows": "0"})
        == "--flush-rows: must be a positive finite number, got '0'"
    )
    assert (
        config_error(flags={"flush_rows": "1.5"})
        == "--flush-rows: invalid literal for int() with base 10: '1.5'"
    )
    assert (
        config_error(flags={"flush_interval": "-1"})
        == "--flush-interval: must be a positive finite number, got '-1'"
    )
    assert (
        config_error(flags={"max_request_bytes": "0MiB"})
        == "--max-request-bytes: must be a positive finite number, got '0MiB'"
    )
    assert (
        config_error(flags={"log_format": "xml"})
        == "--log-format: must be one of auto, json, console, got 'xml'"
    )
    assert (
        config_error(flags={"log_level": "trace"})
        == "--log-level: must be one of debug, info, warning, error, got 'trace'"
    )
    assert config_error(flags={"grpc": "[::1]:99999"}) == "--grpc: port 99999 is out of range"


def test_invalid_file_value_names_file_and_key(tmp_path: Path) -> None:
    file = toml(tmp_path, "flush_rows = -5\n")
    assert (
        config_error(file=file) == f"{file}: flush_rows: must be a positive finite number, got -5"
    )
    file = toml(tmp_path, "flush-rows = -5\n")
    assert (
        config_error(file=file) == f"{file}: flush-rows: must be a positive finite number, got -5"
    )
    file = toml(tmp_path, 'log_level = "loud"\n')
    assert (
        config_error(file=file)
        == f"{file}: log_level: must be one of debug, info, warning, error, got 'loud'"
    )


def test_invalid_flag_wins_over_valid_env() -> None:
    message = config_error(flags={"flush_interval": "soon"}, env={"COLLECTOR_FLUSH_INTERVAL": "1"})
    assert message == "--flush-interval: could not convert string to float: 'soon'"


def test_valid_flag_hides_invalid_env() -> None:
    config = Config.load({"flush_interval": "1"}, {"COLLECTOR_FLUSH_INTERVAL": "soon"})
    assert config.flush_interval == 1.0


def test_unknown_toml_key(tmp_path: Path) -> None:
    file = toml(tmp_path, "flush-interval = 1\nflush-everything = true\n")
    assert config_error(file=file) == f"{file}: unknown setting 'flush-everything'"


def test_toml_table_is_unknown_key(tmp_path: Path) -> None:
    file = toml(tmp_path, "[server]\nhttp = ':1'\n")
    assert config_error(file=file) == f"{file}: unknown setting 'server'"


def test_malformed_toml(tmp_path: Path) -> None:
    file = toml(tmp_path, "flush-interval = \n")
    assert config_error(file=file).startswith(f"cannot read config file {file}: ")


def test_missing_file(tmp_path: Path) -> None:
    file = tmp_path / "absent.toml"
    assert config_error(file=file).startswith(f"cannot read config file {file}: ")


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- default_table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("main.default.agents", "main.default.agents"),
        ("Main.Default.Agents", "main.default.agents"),
        (" c1.s_2.p3 ", "c1.s_2.p3"),
    ],
)
def test_default_table_valid(value: str, expected: str) -> None:
    assert Config.load({"default_table": value}).default_table == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "a.b",
            "--default-table: default table prefix 'a.b' must have three parts, "
            "catalog.schema.table, found 2",
        ),
        (
            "a.b.c.d",
            "--default-table: default table prefix 'a.b.c.d' must have three parts, "
            "catalog.schema.table, found 4",
        ),
        (
            "a.b-c.d",
            "--default-table: default table prefix 'a.b-c.d': 'b-c' is not an identifier "
            "(1 to 255 ASCII letters, digits or underscores)",
        ),
        (
            "a..c",
            "--default-table: default table prefix 'a..c': '' is not an identifier "
            "(1 to 255 ASCII letters, digits or underscores)",
        ),
    ],
)
def test_default_table_invalid(value: str, message: str) -> None:
    assert config_error(flags={"default_table": value}) == message


def test_default_table_invalid_from_env() -> None:
    assert config_error(env={"COLLECTOR_DEFAULT_TABLE": "a.b"}) == (
        "COLLECTOR_DEFAULT_TABLE: default table prefix 'a.b' must have three parts, "
        "catalog.schema.table, found 2"
    )


# --- known bugs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line", ["max-request-bytes = true", "flush-rows = true", "flush-interval = true"]
)
def test_toml_boolean_is_not_a_number(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError):
        Config.load(file=toml(tmp_path, line + "\n"))


def test_toml_float_for_integer_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Config.load(file=toml(tmp_path, "flush-rows = 10.7\n"))


def test_flush_interval_nan_is_refused() -> None:
    with pytest.raises(ConfigError):
        Config.load({"flush_interval": "nan"})


# --- maintenance settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300.0), (90, 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("1.5h", 5400.0),
     ("90d", 90 * 86400.0), ("2w", 14 * 86400.0), (" 7D ", 7 * 86400.0)],
)  # fmt: skip
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-1h", "h", "1y"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text)


def test_retention_per_table_kind() -> None:
    config = Config.load({"retention": "logs=90d, metrics=400d,usage=30d"})
    assert dict(config.retention) == {
        "logs": 90 * 86400,
        "metrics": 400 * 86400,
        "usage": 30 * 86400,
    }
    assert Config.load().retention == ()


def test_retention_from_a_toml_table(tmp_path: Path) -> None:
    file = toml(tmp_path, "[retention]\nlogs = '90d'\ninference = '14d'\n")
    assert dict(Config.load(file=file).retention) == {"logs": 90 * 86400, "inference": 14 * 86400}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "traces=9d",
            "--retention: unknown table kind 'traces' in --retention: one of inference, logs, metrics, spans, usage",
        ),
        ("logs", "--retention: 'logs' is not KIND=DURATION (e.g. logs=90d)"),
        ("logs=30m", "--retention: --retention logs=30m: less than one hour is refused"),
        ("logs=soon", "--retention: 'soon' is not a duration (e.g. 300, 90s, 5m, 1h, 90d)"),
    ],
)
def test_retention_invalid(value: str, message: str) -> None:
    assert config_error(flags={"retention": value}) == message


def test_vacuum_retention_under_an_hour_is_refused() -> None:
    config = Config.load({"vacuum_retention": "30m"})
    with pytest.raises(ConfigError, match="--vacuum-retention under one hour is refused"):
        config.check()
    Config.load({"vacuum_retention": "1h"}).check()


def test_maintenance_can_be_turned_off() -> None:
    assert Config.load({"maintenance": "off"}).maintenance is False
    assert Config.load().maintenance is True


def test_storage_options_from_flags_variables_and_toml(tmp_path: Path) -> None:
    flags = Config.load({"storage_option": ["aws_region=eu-west-1", "aws_sas=a=b,c"]})
    assert flags.storage_option == (("aws_region", "eu-west-1"), ("aws_sas", "a=b,c"))
    env = Config.load({}, {"COLLECTOR_STORAGE_OPTION": "aws_region=eu-west-1,timeout=5s"})
    assert env.storage_option == (("aws_region", "eu-west-1"), ("timeout", "5s"))
    lines = Config.load({}, {"COLLECTOR_STORAGE_OPTION": "aws_region=eu-west-1\nsas=x,y"})
    assert lines.storage_option == (("aws_region", "eu-west-1"), ("sas", "x,y"))
    path = tmp_path / "c.toml"
    path.write_text('storage_option = { aws_region = "eu-west-1", allow_http = "true" }\n')
    toml = Config.load({}, {}, path)
    assert toml.storage_option == (("aws_region", "eu-west-1"), ("allow_http", "true"))
    with pytest.raises(ConfigError, match="COLLECTOR_STORAGE_OPTION: a storage option is KEY"):
        Config.load({}, {"COLLECTOR_STORAGE_OPTION": "region"})


def test_a_remote_warehouse_needs_a_local_wal_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--wal-dir is required with a warehouse on object"):
        Config.load({"warehouse": "s3://bucket/wh"}).check()
    Config.load({"warehouse": "s3://bucket/wh", "durability": "none"}).check()
    config = Config.load({"warehouse": "s3://bucket/wh/", "wal_dir": str(tmp_path)})
    config.check()
    assert config.location.uri == "s3://bucket/wh" and config.wal_directory == tmp_path
    local = Config.load({"warehouse": str(tmp_path / "wh")})
    assert local.wal_directory == tmp_path / "wh" / "_wal"
