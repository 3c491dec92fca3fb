"""``--workers N``: N collector processes sharing the listening ports (SO_REUSEPORT).

Each worker is a full collector with its own buffers, WAL (``<wal-dir>/worker-<i>``) and so its
own Delta transaction identity; Delta's blind appends from several writers do not conflict.
The supervisor starts them as fresh interpreters (never by forking: delta-rs's runtime does not
survive a fork), forwards SIGTERM / SIGINT, and restarts a worker that dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import structlog

__all__ = ["WORKER_ENV", "become_worker", "supervise"]

log = structlog.get_logger("collector.workers")

WORKER_ENV = "COLLECTOR_WORKER_INDEX"
_PR_SET_PDEATHSIG = 1


def become_worker() -> int | None:
    """In a worker process: its index, after arranging to die with the supervisor."""
    index = os.environ.get(WORKER_ENV)
    if index is None:
        return None
    try:
        # If the supervisor is killed outright (SIGKILL), the kernel kills us too, so that no
        # orphan keeps the ports from the supervisor's restart.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    return int(index)


def _exit_status(code: int) -> int:
    """A worker's exit as the shell reports it; the signal we forwarded is a clean stop (a
    worker still starting has no handler for it yet)."""
    if code in (-signal.SIGTERM, -signal.SIGINT):
        return 0
    return 128 - code if code < 0 else code


def supervise(argv: Sequence[str], workers: int) -> int:
    """Run ``workers`` copies of ``python -m collector <argv>``; return the worst exit code."""
    stopping = False
    children: dict[int, subprocess.Popen[bytes]] = {}
    codes: dict[int, int] = {}

    def start(i: int) -> None:
        env = {**os.environ, WORKER_ENV: str(i)}
        children[i] = subprocess.Popen([sys.executable, "-m", "collector", *argv], env=env)

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(workers):
        start(i)
    log.info("workers started", workers=workers, pids=[c.pid for c in children.values()])
    restarts = dict.fromkeys(range(workers), 0.0)
    while True:
        alive = 0
        for i, child in list(children.items()):
            code = child.poll()
            if code is None:
                alive += 1
                continue
            if stopping:
                codes[i] = code
                continue
            # A worker died on its own: its WAL keeps what it acknowledged; start it again.
            log.error("worker exited, restarting", worker=i, code=code)
            time.sleep(max(0.0, restarts[i] + 1.0 - time.monotonic()))
            if stopping:  # a signal came while we waited: do not start what nobody will stop
                codes[i] = code
                continue
            restarts[i] = time.monotonic()
            start(i)
            alive += 1
        if stopping and not alive:
            return max((_exit_status(c) for c in codes.values()), default=0)
        time.sleep(0.1)
