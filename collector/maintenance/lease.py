"""One maintainer per table at a time, among every process and host that shares a warehouse.

A lease is a series of epoch files, ``<name>.<epoch>``, each holding its owner and expiry time.
The newest epoch is the lease. Its owner renews it by rewriting its own file; anyone may take
an expired lease by creating the next epoch, and creation is exclusive (``O_EXCL`` here; a
conditional put, ``If-None-Match: *``, on object storage), so of two maintainers that find the
lease expired at once, one wins. A maintainer that dies stops renewing and loses the lease
after ``ttl`` seconds. Clocks of hosts sharing a warehouse must agree within a fraction of it.

The lease keeps maintainers from doing the same work twice; it is not what keeps the data
right. Two rewrites of the same files cannot both commit (see :mod:`.compaction`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Lease", "LeaseLost"]


class LeaseLost(Exception):
    """Another maintainer holds the table now."""


class Lease:
    def __init__(self, directory: Path, name: str, owner: str, ttl: float) -> None:
        self.directory = directory
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self._epoch: int | None = None  # the epoch we hold, if any
        self._lost = threading.Event()

    def _epochs(self) -> list[int]:
        prefix = self.name + "."
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                tail = entry.name[len(prefix) :]
                if entry.name.startswith(prefix) and tail.isdigit():
                    found.append(int(tail))
        return sorted(found)

    def _path(self, epoch: int) -> Path:
        return self.directory / f"{self.name}.{epoch:012d}"

    def _read(self, epoch: int) -> dict[str, object] | None:
        try:
            return json.loads(self._path(epoch).read_text())
        except (FileNotFoundError, ValueError):
            return None  # being written: taken as held (it was created a moment ago)

    def _body(self) -> str:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.ttl})

    def acquire(self) -> bool:
        """Take or renew the lease; False if another maintainer holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        epochs = self._epochs()
        newest = epochs[-1] if epochs else 0
        if newest:
            held = self._read(newest)
            if held is None or held["owner"] != self.owner:
                if held is None or float(held["expires"]) > time.time():  # type: ignore[arg-type]
                    return False
            elif newest == self._epoch:
                return self.renew()
        try:
            fd = os.open(self._path(newest + 1), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False  # another maintainer took it first
        with os.fdopen(fd, "w") as f:
            f.write(self._body())
        self._epoch = newest + 1
        self._lost.clear()
        for old in epochs:  # the lease's history is of no use to anyone
            with contextlib.suppress(FileNotFoundError):
                self._path(old).unlink()
        return True

    def renew(self) -> bool:
        """Extend our lease; False (and lost) if a newer epoch exists."""
        if self._epoch is None or self._epochs()[-1:] != [self._epoch]:
            self._lost.set()
            return False
        tmp = self._path(self._epoch).with_suffix(".renewing")
        tmp.write_text(self._body())
        os.replace(tmp, self._path(self._epoch))
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still ours (before a commit)."""
        if self._lost.is_set() or not self.renew():
            raise LeaseLost(f"lease {self.name} was taken over")

    def release(self) -> None:
        """Let the next maintainer take it at once: our epoch, expired."""
        if self._epoch is not None and self._epochs()[-1:] == [self._epoch]:
            self._path(self._epoch).write_text(json.dumps({"owner": self.owner, "expires": 0}))
        self._epoch = None

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """``with lease.held() as mine:`` renewed in the background while the block runs."""
        if not self.acquire():
            yield False
            return
        done = threading.Event()

        def renewing() -> None:
            while not done.wait(self.ttl / 3):
                if not self.renew():
                    return

        thread = threading.Thread(target=renewing, name=f"lease {self.name}", daemon=True)
        thread.start()
        try:
            yield True
        finally:
            done.set()
            thread.join()
            self.release()
