"""Shared fixtures: a real collector process, and two independent readers of its Delta tables."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.readers import read_duckdb, read_polars  # noqa: F401  (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT.parent / "shared" / "captures"
# The explicit bucket bounds OpenTelemetry SDKs use by default (Codex CLI too, for most metrics).
DEFAULT_BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0,
                  1000.0, 2500.0, 5000.0, 7500.0, 10000.0]  # fmt: skip


NODE_DIR = ROOT / "tests" / "node"
# Credentials of the emulators the suite started (tests/emulators.py): none may appear in any
# log a collector wrote, in any test.
SECRETS: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    leaked = [
        str(path)
        for path in tmp_path_factory.getbasetemp().rglob("*.log")
        if any(secret in path.read_text(errors="replace") for secret in SECRETS)
    ]
    assert not leaked, f"a storage secret is in these logs: {leaked}"


def node_modules(directory: Path = NODE_DIR) -> str:
    """``node``, with ``directory``'s node_modules installed from its lock file by ``npm ci``
    when missing or stale (tests/node: the OpenTelemetry JS SDK, Azurite; tests/agents: the
    coding-agent CLIs)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm must be on PATH (CI has them)")
    lock = directory / "package-lock.json"
    # npm rewrites node_modules/.package-lock.json on every install: its age is the install's.
    installed = directory / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=directory, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectorProcess:
    """``python -m collector serve`` in a subprocess, on free ports and its own warehouse."""

    def __init__(
        self,
        warehouse: Path | str,
        *extra: str,
        env: dict[str, str] | None = None,
        ports: tuple[int, int] | None = None,
        wait: bool = True,
        log_dir: Path | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.http_port, self.grpc_port = ports or (free_port(), free_port())
        home = log_dir or Path(warehouse).parent  # a URI warehouse needs a log_dir
        self.log_path = home / f"collector-{self.http_port}.log"
        self._starts = self.logs().count('"collector started"') if self.log_path.exists() else 0
        args = [
            sys.executable,
            "-m",
            "collector",
            "serve",
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--grpc",
            f"127.0.0.1:{self.grpc_port}",
            "--warehouse",
            str(warehouse),
            "--log-format",
            "json",
            *extra,
        ]
        if "--flush-interval" not in extra:
            args += ["--flush-interval", "0.2"]
        if "--workers" not in extra:
            args += ["--workers", "1"]
        self._log = open(self.log_path, "ab")  # a restart appends to the same log
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        if wait:
            self.wait_listening()

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited {self.proc.returncode}:\n{self.logs()}")
            if self.logs().count('"collector started"') > self._starts:
                return
            time.sleep(0.05)
        raise RuntimeError(f"collector did not start:\n{self.logs()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def table_path(self, table: str) -> Path:
        assert isinstance(self.warehouse, Path), "a local warehouse"
        return self.warehouse.joinpath(*table.split("."))

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log.close()
        return code


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector for the session; tests keep apart by writing to tables of their own."""
    proc = CollectorProcess(tmp_path_factory.mktemp("shared") / "warehouse")
    yield proc
    proc.stop()


@pytest.fixture
def table_prefix() -> str:
    """A fresh ``catalog.schema.prefix`` so that each test reads only its own rows."""
    return f"main.tests.t{uuid.uuid4().hex[:12]}"


def wait_for_rows(path: Path, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll a Delta table until it holds ``count`` rows; return them (read with polars)."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if (path / "_delta_log").is_dir():
            rows = read_polars(path)
            if len(rows) >= count:
                return rows
        time.sleep(0.1)
    raise AssertionError(f"{path}: expected {count} rows, found {len(rows)}")


def distinct_logs(body: bytes, n: int) -> bytes:
    """The logs request ``body`` with every record's observed time moved by ``n`` ns.

    The collector takes a request identical to a recent one as the client's retry and stores it
    once; tests that mean to send the same data several times send these variants instead.
    """
    request = ExportLogsServiceRequest.FromString(body)
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                record.observed_time_unix_nano += n
    return request.SerializeToString()


def undecodable_logs(field: str, how: str) -> bytes:
    """A logs request of 3 records whose last record's attribute or body (``field``) cannot be
    decoded: a string that is not UTF-8 (``how="utf-8"``), or one whose length runs past the
    end of its message (``how="length"``)."""
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for i in range(3):
        record = records.add(time_unix_nano=i + 1)
        record.attributes.add(key="k").value.string_value = "ATTRIB"
        record.body.string_value = "A-BODY"
    body = request.SerializeToString()
    cut = body.rindex(b"ATTRIB" if field == "attribute" else b"A-BODY")
    if how == "utf-8":  # proto3 strings must be UTF-8
        return body[:cut] + b"\xff" * 6 + body[cut + 6 :]
    return body[: cut - 2] + b"\x0a\x7f" + body[cut:]
