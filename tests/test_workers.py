"""--workers: several processes share the ports, each with its own WAL, all writing one table."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.hoststate import REPORT_INTERVAL
from tests.conftest import CAPTURES, CollectorProcess, distinct_logs, free_port, wait_for_rows
from tests.readers import read_both
from tests.test_durability import readyz, wait_until

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
        wals = sorted(p.name for p in (tmp_path / "wh" / "_wal").iterdir() if p.is_dir())
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


def _workers_of(supervisor: int) -> list[int]:
    """Live processes started by ``supervisor``, and by those (worker 0's maintenance process),
    found by their environment, so that one whose parent died, and which is now the child of
    init, is found too."""
    parents = {f"COLLECTOR_SUPERVISOR_PID={supervisor}".encode()}
    found: list[int] = []
    while True:
        more = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in found:
                continue
            try:
                if not parents & set((entry / "environ").read_bytes().split(b"\0")):
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                more.append(int(entry.name))
        if not more:
            return found
        found += more
        parents = {f"COLLECTOR_SUPERVISOR_PID={pid}".encode() for pid in more}


def _orphans(supervisor: int, timeout: float = 10.0) -> list[int]:
    """The workers of a supervisor that has exited still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while _workers_of(supervisor) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _workers_of(supervisor)


def test_no_kill_of_the_supervisor_leaves_a_worker_behind(tmp_path: Path) -> None:
    """SIGKILL at any moment of the start-up, the worker's imports included, which take longer
    than the supervisor's: no worker outlives the supervisor, and a restart gets the ports and
    the WALs at once."""
    ports = (free_port(), free_port())
    rnd = random.Random(12)
    for _ in range(12):
        proc = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=ports, wait=False)
        time.sleep(rnd.uniform(0.0, 2.5))
        proc.stop(signal.SIGKILL)
        assert not _orphans(proc.proc.pid), "a worker outlived its supervisor"
    again = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=ports)
    try:
        _wait_workers(again, 2)
        assert _post(again, LOGS) == 200
    finally:
        assert again.stop() == 0
    assert len(read_both(again.table_path(TABLE))) == 8


def _catches_stop_signals(pid: int) -> bool:
    """Whether the process has handlers for SIGTERM and SIGINT (before them, in its first
    milliseconds, Python itself cannot help dying of either)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            caught = int(line.split()[1], 16)
            return all(caught >> (s - 1) & 1 for s in (signal.SIGTERM, signal.SIGINT))
    return False


def test_a_stop_while_starting_stops_everything_and_exits_0(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    rnd = random.Random(13)
    for sig in [signal.SIGTERM, signal.SIGINT] * 4:
        proc = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=ports, wait=False)
        while not _catches_stop_signals(proc.proc.pid):
            time.sleep(0.001)
        time.sleep(rnd.uniform(0.0, 2.5))  # from the supervisor's imports to serving
        assert proc.stop(sig) == 0, proc.logs()[-2000:]
        assert not _orphans(proc.proc.pid)


def test_a_second_serve_on_the_same_wal_is_refused_and_the_first_keeps_working(
    tmp_path: Path,
) -> None:
    first = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=(free_port(), free_port()))
    try:
        pids = _wait_workers(first, 2)
        second = CollectorProcess(
            tmp_path / "other",
            "--workers",
            "2",
            "--wal-dir",
            str(tmp_path / "wh" / "_wal"),
            ports=(free_port(), free_port()),
            wait=False,
        )
        assert second.proc.wait(60) == 2
        message = re.search(r"the write-ahead log (\S+) is in use by another process \(pid (\d+)\)",
                            second.logs())  # fmt: skip
        assert message, second.logs()
        assert Path(message[1]).parent == tmp_path / "wh" / "_wal"
        assert int(message[2]) in pids
        assert not (tmp_path / "other").exists() or not list(
            (tmp_path / "other").rglob("*.parquet")
        )
        assert _post(first, distinct_logs(LOGS, 1)) == 200
        assert len(wait_for_rows(first.table_path(TABLE), 8)) == 8
    finally:
        assert first.stop() == 0


def test_a_retry_on_the_other_worker_is_acknowledged_and_not_stored_twice(tmp_path: Path) -> None:
    """The same request on 30 new connections, which the kernel spreads over both workers: the
    first stores it, every other is taken as its retry, whichever worker gets it."""
    proc = CollectorProcess(tmp_path / "wh", "--workers", "2", ports=(free_port(), free_port()))
    try:
        _wait_workers(proc, 2)
        body = distinct_logs(LOGS, 7)
        for _ in range(30):
            assert _post(proc, body) == 200
        rows = wait_for_rows(proc.table_path(TABLE), 8)
        retries = [json.loads(line) for line in proc.logs().splitlines()
                   if '"retry of an accepted request, not stored again"' in line]  # fmt: skip
        assert len(retries) == 29
        assert {r["worker"] for r in retries} == {0, 1}, "the retries should reach both workers"
        time.sleep(0.5)  # a second flush would have come by now
    finally:
        assert proc.stop() == 0
    rows = read_both(proc.table_path(TABLE))
    assert len(rows) == 8
    assert sorted(r["observed_time_unix_nano"] for r in rows) == sorted(
        r.observed_time_unix_nano
        for rl in ExportLogsServiceRequest.FromString(body).resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    )


def test_readyz_on_any_worker_reports_a_worker_whose_flushes_fail(tmp_path: Path) -> None:
    proc = CollectorProcess(
        tmp_path / "wh",
        "--workers",
        "2",
        "--flush-interval",
        "0.1",
        ports=(free_port(), free_port()),
    )
    table_dir = proc.table_path(TABLE)
    try:
        _wait_workers(proc, 2)
        assert _post(proc, distinct_logs(LOGS, 0)) == 200
        wait_for_rows(table_dir, 8)
        locked = [str(table_dir), str(table_dir / "_delta_log")]
        subprocess.run(["chattr", "+i", *locked], check=True)  # every flush to it fails
        try:
            for i in range(1, 21):  # new connections: both workers hold rows they cannot flush
                assert _post(proc, distinct_logs(LOGS, i)) == 200
            answers: dict[int, dict] = {}

            def both_answered_with_a_sibling() -> bool:
                body = readyz(proc)[1]
                answers[body["worker"]] = body
                return len(answers) == 2 and all("workers" in b for b in answers.values())

            wait_until(both_answered_with_a_sibling)
            time.sleep(REPORT_INTERVAL * 2)  # reports of the failures, not of the start
            answers.clear()
            wait_until(both_answered_with_a_sibling)
            failing = {w for w, b in answers.items() if b["tables"].get(TABLE, {}).get("failures")}
            assert failing
            for worker, body in answers.items():
                assert body["status"] == "degraded"
                for other in failing - {worker}:
                    sibling = body["workers"][str(other)]
                    assert sibling["status"] == "degraded"
                    assert (
                        f"worker {other} (pid {sibling['pid']}): flushes to {TABLE} are failing"
                        in body["problems"]
                    )
        finally:
            subprocess.run(["chattr", "-i", *locked], check=True)
        wait_for_rows(table_dir, 168)
        wait_until(lambda: readyz(proc)[1]["status"] == "ok")
    finally:
        assert proc.stop() == 0
    assert len(read_both(table_dir)) == 168
