"""Removing expired entries of a table's Delta log, outside the commit path.

delta-rs cleans up the log after commits by default, which lists the whole ``_delta_log`` each
time; the sink turns that off and maintenance does it here instead. Every log file kept also
slows each later commit a little (delta-rs lists the log to refresh a table), so the log is
kept for ``--log-retention`` only.

What may go: every log file (commit, checksum, checkpoint) of a version below the newest
checkpoint that is not newer than the oldest version still within the retention. Readers start
from that checkpoint, so every version from it on stays readable, and time travel reaches every
version committed within the retention.
"""

from __future__ import annotations

import re

from collector.storage import Files

__all__ = ["expired_log_files"]

_LOG_FILE = re.compile(r"(\d{20})\.(json|crc|checkpoint(\.\d+\.\d+)?\.parquet)")


def expired_log_files(log: Files, cutoff: float) -> list[str]:
    """The files of the log (``log`` is rooted at ``_delta_log``) that can go, for a retention
    that ends at ``cutoff`` (wall time)."""
    commits: dict[int, float] = {}
    checkpoints: set[int] = set()
    files: list[tuple[int, str]] = []
    for entry in log.children()[1]:
        m = _LOG_FILE.fullmatch(entry.path)
        if not m:
            continue  # _last_checkpoint, temporary files of commits in progress…
        version = int(m[1])
        files.append((version, entry.path))
        if m[2] == "json":
            commits[version] = entry.modified
        elif m[2].startswith("checkpoint") and m[3] is None:
            checkpoints.add(version)
    if not commits:
        return []
    recent = [v for v, mtime in commits.items() if mtime > cutoff]
    keep_from = min(recent) if recent else max(commits)
    floors = [c for c in checkpoints if c <= keep_from]
    if not floors:
        return []
    floor = max(floors)
    return sorted(path for version, path in files if version < floor)
