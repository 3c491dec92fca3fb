"""``serve``'s maintenance: ``python -m collector maintain --background`` as a child process.

A process, not a thread of a worker: a compaction's Python work would hold the GIL that the
worker's requests and flushes need (measured: a maintenance thread beside the appends made each
append about 8 ms slower). The child runs at ``nice`` 19, dies with the worker that started it
(:mod:`collector.process`), is started again if it dies, and gets its settings from the
worker's resolved configuration.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import structlog

from collector import process
from collector.config import ENV_PREFIX, Config

__all__ = ["MAINTENANCE_SETTINGS", "MaintenanceProcess"]

log = structlog.get_logger("collector.maintenance")

MAINTENANCE_SETTINGS = (
    "warehouse",
    "storage_option",
    "target_file_size",
    "compact_min_age",
    "log_retention",
    "vacuum_retention",
    "retention",
    "maintenance_interval",
    "maintenance_lease",
    "log_format",
    "log_level",
)
_RESTART_AFTER = 5.0  # seconds


def _render(name: str, value: Any) -> str:
    if name == "storage_option":  # lines: a value may hold commas
        return "\n".join(f"{key}={v}" for key, v in value)
    if name == "retention":  # (kind, seconds) pairs
        return ",".join(f"{kind}={seconds:g}" for kind, seconds in value)
    return str(value)


class MaintenanceProcess:
    def __init__(self, config: Config) -> None:
        self.env = process.child_env(
            **{
                ENV_PREFIX + name.upper(): _render(name, getattr(config, name))
                for name in MAINTENANCE_SETTINGS
            }
        )
        self._child: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def start(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "collector", "maintain", "--background"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            process_group=0,  # as the workers: the worker that started it stops it
        )
        self._started = time.monotonic()
        log.info("maintenance process started", maintenance_pid=self._child.pid)

    def check(self) -> None:
        """Start it again if it died (not more often than every few seconds)."""
        if self._child is None or self._child.poll() is None:
            return
        if time.monotonic() - self._started < _RESTART_AFTER:
            return
        log.error("maintenance process exited, restarting", code=self._child.returncode)
        self.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._child is None:
            return
        if self._child.poll() is None:
            self._child.terminate()  # a pass stopped anywhere leaves the tables whole
            try:
                self._child.wait(timeout)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        self._child = None
