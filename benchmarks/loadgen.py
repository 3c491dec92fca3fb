"""A load generator process: sends pre-encoded OTLP requests and times the answers.

Run in its own process (``multiprocessing`` with spawn) so that its CPU is not the
collector's. Closed loop (``concurrency`` requests in flight) or open loop at ``rate``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import aiohttp
import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc


@dataclass
class Job:
    transport: str  # http | json | grpc
    http_url: str
    grpc_target: str
    bodies: list[tuple[str, str, bytes, int]]  # (signal, table, body, records)
    concurrency: int
    duration: float
    rate: float | None = None  # requests per second, open loop; None: closed loop


@dataclass
class Result:
    requests: int = 0
    records: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    started: float = 0.0  # wall clock of the first request
    finished: float = 0.0  # wall clock of the last answer


_GRPC = {
    "logs": (logs_service_pb2_grpc.LogsServiceStub, logs_service_pb2.ExportLogsServiceRequest),
    "metrics": (
        metrics_service_pb2_grpc.MetricsServiceStub,
        metrics_service_pb2.ExportMetricsServiceRequest,
    ),
}


async def _run(job: Job) -> Result:
    result = Result()
    work = itertools.cycle(job.bodies)
    deadline = time.monotonic() + job.duration
    media = "application/json" if job.transport == "json" else "application/x-protobuf"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=job.concurrency + 4),
        timeout=aiohttp.ClientTimeout(total=60),
    )
    channel = grpc.aio.insecure_channel(
        job.grpc_target, options=[("grpc.max_send_message_length", 64 << 20)]
    )
    stubs = {s: (stub(channel), cls) for s, (stub, cls) in _GRPC.items()}
    messages = (
        {id(b): _GRPC[s][1].FromString(b) for s, _, b, _ in job.bodies}
        if job.transport == "grpc"
        else {}
    )

    async def send(signal: str, table: str, body: bytes, records: int) -> None:
        began = time.monotonic()
        try:
            if job.transport == "grpc":
                stub, _ = stubs[signal]
                await stub.Export(
                    messages[id(body)], metadata=(("x-databricks-uc-table-name", table),)
                )
                status = "200"
            else:
                async with session.post(
                    f"{job.http_url}/v1/{signal}",
                    data=body,
                    headers={"Content-Type": media, "X-Databricks-UC-Table-Name": table},
                ) as answer:
                    await answer.read()
                    status = str(answer.status)
        except Exception as e:  # a benchmark counts failures, it does not stop on them
            status = type(e).__name__
        if status == "200":
            result.requests += 1
            result.records += records
            result.latencies_ms.append((time.monotonic() - began) * 1000)
        else:
            result.errors[status] = result.errors.get(status, 0) + 1
        result.finished = time.time()

    result.started = time.time()
    if job.rate is None:

        async def loop() -> None:
            while time.monotonic() < deadline:
                await send(*next(work))

        await asyncio.gather(*(loop() for _ in range(job.concurrency)))
    else:
        interval = 1.0 / job.rate
        tasks = set()
        at = time.monotonic()
        while at < deadline:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            task = asyncio.create_task(send(*next(work)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            at += interval
        await asyncio.gather(*tasks)
    await session.close()
    await channel.close()
    return result


def run(job: Job) -> Result:
    return asyncio.run(_run(job))
