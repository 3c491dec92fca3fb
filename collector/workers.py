"""``--workers N``: N collector processes sharing the listening ports (SO_REUSEPORT).

Each worker is a full collector with its own buffers, WAL (``<wal-dir>/worker-<i>``) and so its
own Delta transaction identity; Delta's blind appends from several writers do not conflict.
The supervisor starts them as fresh interpreters (never by forking: delta-rs's runtime does not
survive a fork), stops them on SIGTERM / SIGINT, and restarts a worker that dies.

A worker dies with its supervisor (:mod:`collector.process` ties it before its heavy imports),
so a killed supervisor leaves no orphan behind to hold a WAL that the next supervisor's worker
of the same index needs; that worker waits for the WAL's lock meanwhile (:mod:`collector.wal`).
A worker that exits with :data:`START_FAILED` could not start (a WAL owned by another process,
a table that cannot be checked); restarting it would fail the same way, so the supervisor
stops the others and exits with that code.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import structlog

from collector import process

__all__ = ["START_FAILED", "supervise"]

log = structlog.get_logger("collector.workers")

START_FAILED = 2  # the CLI's exit code for an error it reported (configuration, WAL owner…)


def _exit_status(code: int) -> int:
    """A worker's exit as the shell reports it; the signal we forwarded is a clean stop."""
    if code in (-signal.SIGTERM, -signal.SIGINT):
        return 0
    return 128 - code if code < 0 else code


def supervise(argv: Sequence[str], workers: int) -> int:
    """Run ``workers`` copies of ``python -m collector <argv>``; return the worst exit code."""
    stopping = process.stop_requested()
    children: dict[int, subprocess.Popen[bytes]] = {}
    codes: dict[int, int] = {}

    def start(i: int) -> None:
        env = process.child_env(**{process.WORKER_ENV: str(i)})
        # A process group of its own: a Ctrl-C at the terminal reaches the supervisor alone,
        # which stops the workers itself, rather than a worker still loading Python, which
        # would die of it with an error (before it can catch anything).
        children[i] = subprocess.Popen(
            [sys.executable, "-m", "collector", *argv], env=env, process_group=0
        )

    def stop_all(signum: int) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        # SIGTERM whatever came: a worker that has not set up its handlers yet dies of it
        # quietly (a clean stop: it acknowledged nothing yet), where SIGINT makes an error.
        stop_all(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(workers):
        if stopping:  # a stop came while we were starting: start nothing more
            break
        start(i)
    log.info("workers started", workers=len(children), pids=[c.pid for c in children.values()])
    restarts = dict.fromkeys(range(workers), 0.0)
    failed = 0
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
            if code == START_FAILED:
                log.error("worker could not start; stopping", worker=i, pid=child.pid)
                codes[i] = failed = code
                stopping = True
                stop_all(signal.SIGTERM)
                continue
            # A worker died on its own: its WAL keeps what it acknowledged; start it again.
            log.error("worker exited, restarting", worker=i, pid=child.pid, code=code)
            time.sleep(max(0.0, restarts[i] + 1.0 - time.monotonic()))
            if stopping:  # a signal came while we waited: do not start what nobody will stop
                codes[i] = code
                continue
            restarts[i] = time.monotonic()
            start(i)
            alive += 1
        if stopping and not alive:
            return failed or max((_exit_status(c) for c in codes.values()), default=0)
        time.sleep(0.1)
