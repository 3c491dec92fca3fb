"""One maintainer per table at a time, among every process and host that shares a warehouse.

A lease is a series of epoch files, ``<name>.<epoch>``, each holding its owner and expiry time.
The newest epoch is the lease. Its owner renews it by rewriting its own file; anyone may take
an expired lease by creating the next epoch, and creation is exclusive (a conditional put,
``If-None-Match: *``, on object storage; an exclusive link on a local disk), so of two
maintainers that find the lease expired at once, one wins. A maintainer that dies stops renewing and loses the lease
after ``ttl`` seconds. Clocks of hosts sharing a warehouse must agree within a fraction of it.

The lease keeps maintainers from doing the same work twice; it is not what keeps the data
right. Two rewrites of the same files cannot both commit (see :mod:`.compaction`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

from collector.storage import Files

__all__ = ["Lease", "LeaseLost"]


class LeaseLost(Exception):
    """Another maintainer holds the table now."""


class Lease:
    def __init__(self, files: Files, name: str, owner: str, ttl: float) -> None:
        self.files = files
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self._epoch: int | None = None  # the epoch we hold, if any
        self._lost = threading.Event()

    def _epochs(self) -> list[int]:
        prefix = self.name + "."
        found = []
        for entry in self.files.children()[1]:
            tail = entry.path[len(prefix) :]
            if entry.path.startswith(prefix) and tail.isdigit():
                found.append(int(tail))
        return sorted(found)

    def _path(self, epoch: int) -> str:
        return f"{self.name}.{epoch:012d}"

    def _read(self, epoch: int) -> dict[str, object] | None:
        return self.files.read_json(self._path(epoch))  # None: being written, or just removed

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.ttl}).encode()

    def acquire(self) -> bool:
        """Take or renew the lease; False if another maintainer holds it."""
        epochs = self._epochs()
        newest = epochs[-1] if epochs else 0
        if newest:
            held = self._read(newest)
            if held is None or held["owner"] != self.owner:
                if held is None or float(held["expires"]) > time.time():  # type: ignore[arg-type]
                    return False
            elif newest == self._epoch:
                return self.renew()
        if not self.files.create(self._path(newest + 1), self._body()):
            return False  # another maintainer took it first
        self._epoch = newest + 1
        self._lost.clear()
        for old in epochs:  # the lease's history is of no use to anyone
            self.files.delete(self._path(old))
        return True

    def renew(self) -> bool:
        """Extend our lease; False (and lost) if a newer epoch exists."""
        if self._epoch is None or self._epochs()[-1:] != [self._epoch]:
            self._lost.set()
            return False
        self.files.write(self._path(self._epoch), self._body())  # whole or not at all
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still ours (before a commit)."""
        if self._lost.is_set() or not self.renew():
            raise LeaseLost(f"lease {self.name} was taken over")

    def release(self) -> None:
        """Let the next maintainer take it at once: our epoch, expired."""
        if self._epoch is not None and self._epochs()[-1:] == [self._epoch]:
            body = json.dumps({"owner": self.owner, "expires": 0}).encode()
            self.files.write(self._path(self._epoch), body)
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
