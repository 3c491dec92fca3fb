"""Reference rates measured on the same requests, one core, in process: what parsing alone,
writing Parquet alone, our decode+flatten, and the pipeline most people write first reach."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake
from google.protobuf.json_format import MessageToDict

from benchmarks.workloads import Request
from collector.codec import JSON, PROTOBUF, decode_request
from collector.pipeline import flatten_request
from collector.signals import LOGS, METRICS


def _rate(records_per_call: int, call: Callable[[], Any], seconds: float) -> float:
    """Records per second of ``call``, repeated for about ``seconds``."""
    call()  # warm
    n = 0
    began = time.perf_counter()
    while True:
        call()
        n += 1
        elapsed = time.perf_counter() - began
        if elapsed >= seconds:
            return n * records_per_call / elapsed


def _signal(r: Request):  # type: ignore[no-untyped-def]
    return LOGS if r.signal == "logs" else METRICS


def parse_only(requests: list[Request], seconds: float) -> float:
    bodies = [(r.message.__class__, r.message.SerializeToString()) for r in requests]
    records = sum(r.records for r in requests)
    return _rate(records, lambda: [cls.FromString(b) for cls, b in bodies], seconds)


def _decoding(
    requests: list[Request],
    seconds: float,
    body: Callable[[Request], bytes],
    decode: Callable[[Any, bytes], Any],
) -> float:
    """Records per second of ``decode`` and flatten of each request's ``body``."""
    bodies = [(_signal(r), body(r)) for r in requests]
    records = sum(r.records for r in requests)
    return _rate(records, lambda: [flatten_request(s, decode(s, b)) for s, b in bodies], seconds)


def _protobuf(r: Request) -> bytes:
    return r.message.SerializeToString()


def decode_flatten(requests: list[Request], seconds: float) -> float:
    """The collector's own decode (collector.codec) and flatten of each body: the native core
    where it is built."""
    return _decoding(requests, seconds, _protobuf, lambda s, b: decode_request(s, b, PROTOBUF))


def decode_flatten_python(requests: list[Request], seconds: float) -> float:
    """The same with the pure-Python fallback: the wire classes and the Python flatteners."""
    return _decoding(requests, seconds, _protobuf, lambda s, b: s.decode_wire(b))


def json_decode_flatten(requests: list[Request], seconds: float) -> float:
    """decode_flatten of the same requests sent as OTLP/JSON: the native core where built."""
    return _decoding(requests, seconds, Request.otlp_json, lambda s, b: decode_request(s, b, JSON))


def json_decode_flatten_python(requests: list[Request], seconds: float) -> float:
    """The same with the pure-Python reading (json.loads, collector.otlpjson, flatteners)."""
    return _decoding(
        requests, seconds, Request.otlp_json, lambda s, b: s.decode_json(b, native=False)
    )


def parquet_write(requests: list[Request], seconds: float) -> float:
    by_schema: dict[str, list[pa.RecordBatch]] = {}
    for r in requests:
        by_schema.setdefault(r.signal, []).append(flatten_request(_signal(r), r.message).batch)
    tables = [pa.Table.from_batches(b) for b in by_schema.values()]
    records = sum(t.num_rows for t in tables)
    return _rate(records, lambda: [pq.write_table(t, io.BytesIO()) for t in tables], seconds)


def _naive_rows(message: Any) -> list[dict[str, Any]]:
    """MessageToDict, then a dict per record with its resource and scope flattened in."""
    rows = []
    tree = MessageToDict(message)
    for resource in tree.get("resourceLogs", tree.get("resourceMetrics", [])):
        res = {
            a["key"]: str(a["value"]) for a in resource.get("resource", {}).get("attributes", [])
        }
        for scope in resource.get("scopeLogs", resource.get("scopeMetrics", [])):
            name = scope.get("scope", {}).get("name", "")
            for record in scope.get("logRecords", []):
                rows.append({
                    "time": int(record.get("timeUnixNano", 0)),
                    "body": str(record.get("body", "")),
                    "attributes": {a["key"]: str(a["value"]) for a in record.get("attributes", [])},
                    "resource": res,
                    "scope": name,
                })  # fmt: skip
            for metric in scope.get("metrics", []):
                kind = next(k for k in ("sum", "gauge", "histogram") if k in metric)
                for p in metric[kind].get("dataPoints", []):
                    rows.append({
                        "time": int(p.get("timeUnixNano", 0)),
                        "name": metric["name"],
                        "value": float(p.get("asDouble", p.get("asInt", p.get("sum", 0)))),
                        "attributes": {a["key"]: str(a["value"]) for a in p.get("attributes", [])},
                        "resource": res,
                        "scope": name,
                    })  # fmt: skip
    return rows


def naive_pipeline(requests: list[Request], seconds: float) -> float:
    """MessageToDict → rows → pyarrow → write_deltalake, one append per request."""
    with tempfile.TemporaryDirectory() as tmp:
        i = 0

        def one() -> None:
            nonlocal i
            r = requests[i % len(requests)]
            i += 1
            rows = [
                {
                    **row,
                    "attributes": list(row["attributes"].items()),
                    "resource": list(row["resource"].items()),
                }
                for row in _naive_rows(r.message)
            ]
            table = pa.Table.from_pylist(rows)
            write_deltalake(f"{tmp}/{r.signal}", table, mode="append")

        per_call = sum(r.records for r in requests) / len(requests)
        return _rate(int(per_call), one, seconds)
