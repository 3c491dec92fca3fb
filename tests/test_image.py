"""The container image itself: built by ``make image`` with podman on a local Debian base, then
its entrypoint and default command run inside the image's filesystem, as the image's user, with
the image's environment; fed by a real OTLP exporter, health-checked by the image's own
HEALTHCHECK command, stopped by its STOPSIGNAL.

No container runtime starts here (``podman run`` fails: crun may not set rlimits), so the image
is mounted (``podman mount``) and run with ``chroot --userspec``, on the host's network; its
volume is a host directory bind-mounted onto it, as a runtime would. The base is Debian
bookworm made with ``debootstrap`` (its own python3 and python3-venv) and kept in podman's store
between runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.conftest import ROOT, free_port, wait_for_rows
from tests.readers import read_both

BASE = "localhost/otlp-delta-collector-base:bookworm"
IMAGE = "localhost/otlp-delta-collector:test"
MIRROR = "http://deb.debian.org/debian"


def _run(*args: str, timeout: float = 900, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def _mirror() -> str:
    """The Debian mirror apt on this machine uses."""
    for source in Path("/etc/apt").rglob("*.sources"):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "debian" in line and "security" not in line:
                return line.split()[1]
    return MIRROR


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian bookworm with its python3 and python3-venv, as an image in podman's store."""
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")
    exists = subprocess.run(["podman", "image", "exists", BASE], check=False)
    if exists.returncode != 0:
        root = tmp_path_factory.mktemp("debian") / "root"
        _run("debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm",
             str(root), _mirror())  # fmt: skip
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        _run("podman", "import", "-", BASE, stdin=tar.stdout)
        tar.wait()
    return BASE


@pytest.fixture(scope="module")
def image(base: str) -> dict[str, Any]:
    """The image, built by ``make image`` on the Debian base; its configuration."""
    _run("make", "image", f"BASE_IMAGE={base}", f"IMAGE={IMAGE}", cwd=ROOT)
    inspected = json.loads(_run("podman", "image", "inspect", IMAGE).stdout)[0]
    # podman gives the health check beside the configuration (kept only in docker format).
    return inspected["Config"] | {
        "Size": inspected["Size"],
        "Healthcheck": inspected["Healthcheck"],
    }


class Mounted:
    """The image's filesystem, writable (a container made from it, mounted), its volume a host
    directory, /proc mounted for the processes run in it."""

    def __init__(self, volume: Path) -> None:
        self.container = _run("podman", "create", IMAGE).stdout.strip()
        self.root = Path(_run("podman", "mount", self.container).stdout.strip())
        _run("mount", "-t", "proc", "proc", str(self.root / "proc"))
        _run("mount", "--bind", str(volume), str(self.root / "data"))

    def close(self) -> None:
        for target in ("data", "proc"):
            subprocess.run(["umount", "-l", str(self.root / target)], check=False)
        subprocess.run(["podman", "umount", self.container], check=False, capture_output=True)
        subprocess.run(["podman", "rm", "-f", self.container], check=False, capture_output=True)


def _in_image(
    config: dict[str, Any], root: Path, argv: list[str], env: dict[str, str]
) -> list[str]:
    """``argv`` run in the image as its user, in its working directory, with its environment
    and ``env`` over it."""
    user = config["User"]
    variables = dict(v.split("=", 1) for v in config["Env"]) | env
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    workdir = config.get("WorkingDir") or "/"
    return ["env", "-i", *(f"{k}={v}" for k, v in variables.items()), chroot,
            f"--userspec={user}", str(root), "/bin/sh", "-c",
            f'cd "{workdir}" && exec "$@"', "sh", *argv]  # fmt: skip


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Mounted, Path]]:
    volume = tmp_path / "data"
    volume.mkdir()
    os.chown(volume, 10001, 10001)  # as a runtime's fsGroup / a volume made for the image
    m = Mounted(volume)
    try:
        yield m, volume
    finally:
        m.close()


def test_the_image_runs_as_its_user_takes_otlp_and_stops_cleanly(
    image: dict[str, Any], mounted: tuple[Mounted, Path]
) -> None:
    m, volume = mounted
    assert image["User"] == "10001:10001"
    assert set(image["ExposedPorts"]) == {"4317/tcp", "4318/tcp"}
    assert set(image["Volumes"]) == {"/data"}
    assert image["StopSignal"] == "SIGTERM"
    assert image["Entrypoint"] == ["otlp-delta-collector"] and image["Cmd"] == ["serve"]
    # The default listens on loopback only: a sidecar's agents reach it, nobody else writes.
    env = dict(v.split("=", 1) for v in image["Env"])
    assert env["COLLECTOR_HTTP"] == "127.0.0.1:4318" and env["COLLECTOR_GRPC"] == "127.0.0.1:4317"
    # The host's network is shared here: free ports instead of 4317/4318.
    http, grpc = free_port(), free_port()
    ports = {"COLLECTOR_HTTP": f"127.0.0.1:{http}", "COLLECTOR_GRPC": f"127.0.0.1:{grpc}"}
    log = (volume.parent / "image.log").open("wb")
    proc = subprocess.Popen(
        _in_image(image, m.root, [*image["Entrypoint"], *image["Cmd"]], ports),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=2) as r:
                    assert json.loads(r.read())["status"] == "ok"
                break
            except OSError:
                assert proc.poll() is None, (volume.parent / "image.log").read_text()
                assert time.monotonic() < deadline, (volume.parent / "image.log").read_text()
                time.sleep(0.2)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {"10001"}, uids  # not root, by any of its ids

        provider = LoggerProvider(resource=Resource({"service.name": "claude-code"}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
            endpoint=f"http://127.0.0.1:{http}/v1/logs",
            headers={"X-Databricks-UC-Table-Name": "main.image.cc_otel_logs"},
        )))  # fmt: skip
        logger = provider.get_logger("com.anthropic.claude_code.events")
        for i in range(5):
            logger.emit(LogRecord(body="claude_code.api_request", timestamp=1_000 + i,
                                  attributes={"event.sequence": i, "cost_usd": 0.25 * i}))  # fmt: skip
        provider.shutdown()

        check = image["Healthcheck"]["Test"]
        assert check[0] == "CMD"
        health = subprocess.run(
            _in_image(image, m.root, check[1:], ports), capture_output=True, text=True, timeout=60
        )
        assert (health.returncode, health.stdout) == (0, "ready: ok\n"), health.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    text = (volume.parent / "image.log").read_text()
    assert code == 0, text
    assert '"flushed": true' in text and '"lost": 0' in text
    table = volume / "warehouse" / "main" / "image" / "cc_otel_logs"
    rows = sorted(wait_for_rows(table, 5), key=lambda r: r["time_unix_nano"])
    assert rows == sorted(read_both(table), key=lambda r: r["time_unix_nano"])
    assert [(r["time_unix_nano"], r["body"], r["attributes"]["event.sequence"],
             r["attributes"]["cost_usd"]) for r in rows] == [
        (1_000 + i, "claude_code.api_request", str(i), cost)
        for i, cost in enumerate(["0", "0.25", "0.5", "0.75", "1"])  # shortest round-trip
    ]  # fmt: skip
    assert all(r["resource"]["attributes"]["service.name"] == "claude-code" for r in rows)
    assert all(
        r["instrumentation_scope"]["name"] == "com.anthropic.claude_code.events" for r in rows
    )
    # Its files belong to the image's user, in the volume.
    assert {p.stat().st_uid for p in (volume / "wal").rglob("*")} == {10001}
    print(f"\nimage {IMAGE}: {image['Size'] / 1e6:.0f} MB")


def test_the_dockerfile_builds_alone_from_a_package_index(base: str, tmp_path: Path) -> None:
    """``docker build .`` without the wheels make image adds: the build stage builds the
    package from its source, with what it needs from an index (a mirror on loopback here, named
    by the PIP_* build arguments, since a build here cannot reach PyPI's TLS)."""
    index = tmp_path / "index"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "hatchling", str(ROOT), "-w", str(index))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=index, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tag = "localhost/otlp-delta-collector:from-index"
    try:
        assert not (ROOT / "wheels").exists()
        _run("podman", "build", "--isolation", "chroot", "--format", "docker",
             "--build-arg", f"BASE_IMAGE={base}", "--build-arg", "PIP_NO_INDEX=1",
             "--build-arg", f"PIP_FIND_LINKS=http://127.0.0.1:{port}/", "-t", tag, ".",
             cwd=ROOT)  # fmt: skip
        container = _run("podman", "create", tag).stdout.strip()
        root = Path(_run("podman", "mount", container).stdout.strip())
        try:
            config = json.loads(_run("podman", "image", "inspect", tag).stdout)[0]["Config"]
            made = subprocess.run(
                _in_image(config, root, ["otlp-delta-collector", "tables", "create",
                                         "main.image.x", "--warehouse", "/data/warehouse"], {}),
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
            assert (
                "main.image.x_otel_logs: created at /data/warehouse/main/image/x_otel_logs"
                in made.stdout
            )
        finally:
            subprocess.run(["podman", "umount", container], check=False, capture_output=True)
            subprocess.run(["podman", "rm", "-f", container], check=False, capture_output=True)
    finally:
        server.kill()
        server.wait()
        subprocess.run(["podman", "rmi", "-f", tag], check=False, capture_output=True)
