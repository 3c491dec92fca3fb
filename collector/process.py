"""What ``python -m collector`` arranges before its heavy imports, which take a second or more:
a worker's (or maintenance process's) tie to the process that started it, and a stop that is
asked for while the process is starting.

Light on purpose: only the standard library, and nothing of the package that loads pyarrow.
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = [
    "SUPERVISOR_ENV",
    "WORKER_ENV",
    "child_env",
    "prepare",
    "release_signals",
    "stop_requested",
    "worker_index",
]

WORKER_ENV = "COLLECTOR_WORKER_INDEX"
SUPERVISOR_ENV = "COLLECTOR_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_stop: int | None = None
_prepared = False


def _note(signum: int, frame: object) -> None:
    global _stop
    _stop = signum


def prepare() -> None:
    """First thing in the process: remember SIGTERM / SIGINT until the collector can stop on
    them (a clean stop, exit 0, rather than death by the signal) and, in a worker, die with the
    supervisor."""
    global _prepared
    _prepared = True
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _note)
    parent = os.environ.get(SUPERVISOR_ENV)
    if parent is not None:  # a worker, or serve's maintenance process
        _tie_to_supervisor(int(parent))


def _tie_to_supervisor(supervisor: int) -> None:
    # From here on, if the supervisor dies (even by SIGKILL) the kernel kills us: no orphan
    # keeps serving on the shared ports or writing to the WAL that the next supervisor's
    # worker of the same index needs.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: there is no such tie
        pass
    # The supervisor may have died between our start and the prctl, which then came too late.
    if os.getppid() != supervisor:
        os._exit(1)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child that must die with this process (see :func:`prepare`)."""
    env = {k: v for k, v in os.environ.items() if k not in (WORKER_ENV, SUPERVISOR_ENV)}
    return {**env, SUPERVISOR_ENV: str(os.getpid()), **extra}


def worker_index() -> int | None:
    """This process's worker index, or None when it is not a supervisor's worker."""
    index = os.environ.get(WORKER_ENV)
    if index is None or SUPERVISOR_ENV not in os.environ:
        return None
    return int(index)


def stop_requested() -> bool:
    """Whether SIGTERM or SIGINT came before the collector installed its own handlers."""
    return _stop is not None


def release_signals() -> None:
    """For commands that do not serve: the default handlers back, and a stop already asked for
    delivered now."""
    if not _prepared:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _stop is not None:
        signal.raise_signal(_stop)
