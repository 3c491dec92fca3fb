"""--workers: several processes share the ports, each with its own WAL, all writing one table."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

from tests.conftest import CAPTURES, CollectorProcess, distinct_logs, free_port, wait_for_rows
from tests.readers import read_both

LOGS = (CAPTURES / "claude-code-2.1.197.logs.pb").read_bytes()
TABLE = "main.agents.cc_otel_logs"


def _post(proc: CollectorProcess, body: bytes) -> int:
    request = urllib.request.Request(
        proc.url("/v1/logs"),
        data=body,
        headers={"Content-Type": "application/x-protobuf", "X-Databricks-UC-Table-Name": TABLE},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _wait_workers(proc: CollectorProcess, n: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = _children(proc.proc.pid)
        if len(pids) == n and proc.logs().count('"collector started"') >= n:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{n} workers did not start:\n{proc.logs()}")


def test_two_workers_share_the_port_and_the_table(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    proc = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=ports)
    try:
        pids = _wait_workers(proc, 2)
        for i in range(40):  # a new connection each time: the kernel spreads them over workers
            assert _post(proc, distinct_logs(LOGS, i)) == 200
        rows = wait_for_rows(proc.table_path(TABLE), 320)
        assert len(rows) == 320
        wals = sorted(p.name for p in (tmp_path / "wh" / "_wal").iterdir())
        assert wals == ["worker-0", "worker-1"]
        ids = {(tmp_path / "wh" / "_wal" / w / "instance-id").read_text() for w in wals}
        assert len(ids) == 2  # two Delta transaction identities
        served = {json.loads(line).get("worker") for line in proc.logs().splitlines()
                  if '"flushed"' in line}  # fmt: skip
        assert served == {0, 1}, "both workers should have flushed rows"

        # A worker that dies is started again; what it acknowledged is in its WAL.
        starts = proc.logs().count('"collector started"')
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pids[0] in _children(proc.proc.pid):
            time.sleep(0.1)
        _wait_workers(proc, 2)
        while proc.logs().count('"collector started"') <= starts and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _post(proc, distinct_logs(LOGS, 99)) == 200
        assert len(wait_for_rows(proc.table_path(TABLE), 328)) == 328
    finally:
        assert proc.stop() == 0
    assert len(read_both(proc.table_path(TABLE))) == 328


def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    proc = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=ports)
    pids = _wait_workers(proc, 2)
    proc.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}/stat").exists() and "Z" not in
                   Path(f"/proc/{p}/stat").read_text().split()[2] for p in pids)  # fmt: skip
    # The ports are free for a restart.
    again = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=ports)
    try:
        _wait_workers(again, 2)
        assert _post(again, LOGS) == 200
    finally:
        assert again.stop() == 0
