"""Fuzzing the decode paths with mutated real payloads (the captures).

In process: a mutated body either decodes and flattens, or is refused with InvalidArgument;
nothing else may escape. Against a running collector: no mutated request gets a 500, the
process stays up, and every accepted request lands whole (its exact row count), every refused
one not at all. The budget is small in ``make test``; ``make fuzz`` runs a long one (and the
atheris harness in tests/fuzz_atheris.py).
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.codec import JSON, PROTOBUF, decode_request
from collector.errors import InvalidArgument
from collector.pipeline import flatten_request
from collector.signals import LOGS, METRICS, Signal
from tests.conftest import CAPTURES, CollectorProcess, wait_for_rows
from tests.readers import read_polars
from tests.test_json_equivalence import to_otlp_json

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SEEDS: list[tuple[Signal, bytes]] = [
    (METRICS if ".metrics." in p.name else LOGS, p.read_bytes())
    for p in sorted(CAPTURES.glob("*.pb"))
]


def _mutate(body: bytes, rnd: random.Random) -> bytes:
    """A few byte-level mutations: flips, overwrites, cuts, insertions, splices of captures."""
    data = bytearray(body)
    for _ in range(rnd.randint(1, 8)):
        kind = rnd.choice(["flip", "set", "cut", "insert", "delete", "splice"])
        at = rnd.randint(0, max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= 1 << rnd.randint(0, 7)
        elif kind == "set" and data:
            data[at] = rnd.randint(0, 255)
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = rnd.randbytes(rnd.randint(1, 16))
        elif kind == "delete":
            del data[at : at + rnd.randint(1, 64)]
        else:
            other = rnd.choice(SEEDS)[1]
            start = rnd.randint(0, len(other) - 1)
            data[at:] = other[start : start + rnd.randint(1, 2048)]
    return bytes(data)


def _mutated_json(signal: Signal, rnd: random.Random) -> bytes:
    body = rnd.choice([b for s, b in SEEDS if s is signal])
    tree = json.loads(to_otlp_json(signal.request_type.FromString(body), rnd))
    return json.dumps(_json_mutations(tree, rnd)).encode()


def _json_mutations(tree: object, rnd: random.Random) -> object:
    """Replace, drop or retype a few values deep in an OTLP/JSON document."""
    nodes: list[tuple[object, object]] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                nodes.append((node, k))
                collect(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                nodes.append((node, i))
                collect(v)

    collect(tree)
    junk = [None, 0, -1, 2**64, 1.5, "x", "zz", "", [], {}, True, "-1", "1e400", {"a": [1]}]
    for _ in range(rnd.randint(1, 6)):
        if not nodes:
            break
        parent, key = rnd.choice(nodes)
        if isinstance(parent, dict) and rnd.random() < 0.3:
            parent.pop(key, None)
        else:
            try:
                parent[key] = rnd.choice(junk)  # type: ignore[index]
            except (IndexError, KeyError):
                pass
    return tree


def _outcome(signal: Signal, body: bytes, media: str) -> int | None:
    """Rows the request would store, or None if it is refused; anything else is a bug."""
    try:
        return flatten_request(signal, decode_request(signal, body, media)).batch.num_rows
    except InvalidArgument:
        return None


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False))
def test_mutated_protobuf_is_decoded_or_refused(
    seed: tuple[Signal, bytes], rnd: random.Random
) -> None:
    signal, body = seed
    _outcome(signal, _mutate(body, rnd), PROTOBUF)


@FUZZ
@given(st.sampled_from([LOGS, METRICS]), st.randoms(use_true_random=False))
def test_mutated_json_is_decoded_or_refused(signal: Signal, rnd: random.Random) -> None:
    _outcome(signal, _mutated_json(signal, rnd), JSON)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> CollectorProcess:
    proc = CollectorProcess(tmp_path_factory.mktemp("fuzz") / "wh", "--dedup-window", "0")
    yield proc  # type: ignore[misc]
    assert proc.stop() == 0


def test_mutated_requests_never_crash_the_server_or_half_write(target: CollectorProcess) -> None:
    rnd = random.Random(1126)
    expected = {LOGS.name: 0, METRICS.name: 0}
    answers: dict[int, int] = {}
    for i in range(max(EXAMPLES // 3, 30)):
        signal, body = rnd.choice(SEEDS)
        media = PROTOBUF
        if i % 5 == 0:
            media, body = JSON, _mutated_json(signal, rnd)
        elif i % 4:  # a few requests go through unharmed, so that something is stored
            body = _mutate(body, rnd)
        request = urllib.request.Request(
            target.url(f"/v1/{signal.name}"),
            data=body,
            headers={
                "Content-Type": media,
                "X-Databricks-UC-Table-Name": f"main.fuzz.f_otel_{signal.name}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status = answer.status
        except urllib.error.HTTPError as e:
            status = e.code
        answers[status] = answers.get(status, 0) + 1
        assert status in (200, 400), f"request {i}: {status}"
        rows = _outcome(signal, body, media)
        assert (status == 200) == (rows is not None), f"request {i}"
        expected[signal.name] += rows or 0
        assert target.proc.poll() is None, "the collector died"
    print(f"\nfuzz over HTTP: answers={answers} expected rows={expected}")
    for name, rows in expected.items():
        path = target.table_path(f"main.fuzz.f_otel_{name}")
        if rows:
            wait_for_rows(path, rows)
        time.sleep(0.5)  # anything half-written would have been flushed by now
        assert len(read_polars(path)) == rows if Path(path).exists() else rows == 0
