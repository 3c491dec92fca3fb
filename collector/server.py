"""The running collector: receivers → pipeline → buffers → Delta sink, started and stopped as one."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal as signals
import ssl
import sys
import time

import grpc
import structlog
from aiohttp import web

from collector import process
from collector.auth import Authenticator
from collector.buffer import Buffers, FlushPolicy
from collector.config import Config, HostPort
from collector.dashboard import Dashboard
from collector.flatten import Limits, native
from collector.hoststate import REPORT_INTERVAL, HostState
from collector.maintenance.background import MaintenanceProcess
from collector.pipeline import Pipeline, stored_rows
from collector.proxy import install_proxy
from collector.receivers.grpc import build_server
from collector.receivers.http import build_app
from collector.sink import DeltaSink
from collector.wal import StoredRequest, WriteAheadLog

__all__ = ["Collector"]

MAINTENANCE_STATUS_EVERY = 10  # report intervals between reads of the maintenance reports

log = structlog.get_logger("collector")


class Collector:
    """Owns the stages of one collector process; ``async with Collector(config)`` runs it."""

    def __init__(self, config: Config, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        wal_dir = config.wal_directory / f"worker-{worker}"
        # Every line says which process of which worker, and which WAL, it concerns.
        structlog.contextvars.bind_contextvars(worker=worker, pid=os.getpid())
        if config.durability == "wal":
            structlog.contextvars.bind_contextvars(wal=str(wal_dir))
        self.host = HostState(config.wal_directory / "host.sqlite", config.dedup_window)
        self.wal = (
            WriteAheadLog(
                wal_dir,
                dedup_window=config.dedup_window,
                host=self.host,
                instance_id=None
                if config.instance_id is None
                else f"{config.instance_id}-{worker}",
            )
            if config.durability == "wal"
            else None
        )
        self.sink = DeltaSink(config.location, app_id=self.wal.instance_id if self.wal else None)
        policy = FlushPolicy(
            config.flush_interval, config.flush_rows, config.flush_bytes, config.max_buffer_bytes
        )
        if self.wal is not None:
            wal = self.wal
            self.buffers = Buffers(
                self.sink.append,
                policy,
                durable_lsn=lambda: wal.synced_lsn,
                committed=wal.committed,
            )
        else:
            self.buffers = Buffers(self.sink.append, policy)
        self.pipeline = Pipeline(
            self.sink,
            self.buffers,
            config.default_table,
            self.wal,
            auth=Authenticator(config.tokens_file),
            limits=Limits(config.max_attributes, config.max_value_bytes),
            max_records=config.max_records,
            max_concurrent=config.max_concurrent_requests,
            host=self.host,
            worker=worker,
        )
        self._reporter: asyncio.Task[None] | None = None
        self.flushed = True  # whether the last stop flushed every buffer
        # The first worker of each serve starts the maintenance process; the tables' leases
        # share the work out among all the maintainers of the warehouse.
        self.maintenance = (
            MaintenanceProcess(config) if config.maintenance and worker == 0 else None
        )
        self._http: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.http_address: HostPort | None = None
        self.grpc_address: HostPort | None = None

    def _replay(self) -> int:
        """Put what the WAL holds back in the buffers; records already in Delta are skipped
        when flushed (by their table's transaction version)."""
        if self.wal is None:
            return 0
        count = 0
        for record in self.wal.recover():
            rows = record.rows
            if isinstance(rows, StoredRequest):
                rows = stored_rows(rows)
            self.buffers.add(record.table, rows, record.lsn)
            count += 1
        return count

    def _share_retries(self) -> None:
        """Put in the host's retry index what every worker's WAL holds, before we accept
        anything: a sibling that crashed between its WAL write and its index insert, and has not
        started again yet, must not have its clients' retries stored twice by us."""
        if self.wal is None or self.wal.host is None:
            return
        horizon = time.time() - self.config.dedup_window
        self.wal.host.remember(self.wal.remembered())
        for sibling in self.config.wal_directory.glob("worker-*"):
            if sibling != self.wal.directory:
                self.wal.host.remember(WriteAheadLog.scan(sibling, horizon))

    async def _report(self) -> None:
        """Tell the other workers how this one is, for their /readyz (and keep the maintenance
        process running)."""
        self.host.withdraw(self.config.workers, and_above=True)  # left by a larger --workers
        reading: asyncio.Task[None] | None = None
        for beat in itertools.count():
            self.host.report(self.worker, os.getpid(), self.pipeline.own_health()[1])
            if self.maintenance is not None:
                self.maintenance.check()
            # The reports live in the warehouse (an object store, maybe): every few seconds,
            # in a thread, never two reads at once, so that /readyz answers at once, store or not.
            if beat % MAINTENANCE_STATUS_EVERY == 0 and (reading is None or reading.done()):
                reading = asyncio.create_task(
                    asyncio.to_thread(self.pipeline.read_maintenance_status)
                )
            await asyncio.sleep(REPORT_INTERVAL)

    async def start(self) -> None:
        if self.sink.warehouse.is_local:
            self.sink.warehouse.path.mkdir(parents=True, exist_ok=True)
        replayed = self._replay()
        if replayed:
            log.info("wal replayed", records=replayed, rows=self.buffers.buffered_rows)
        self._share_retries()
        self._reporter = asyncio.create_task(self._report(), name="worker-report")
        self.buffers.start()
        self.buffers.flush_soon()
        if self.maintenance is not None:
            self.maintenance.start()
        if self.config.http is not None:
            app = build_app(self.pipeline, self.config.max_request_bytes, self.config.read_timeout)
            if self.config.dashboard:
                Dashboard(self.config.location, self.pipeline.auth, self.config.price_list).install(
                    app
                )
            if self.config.proxy_config is not None:
                await install_proxy(
                    app,
                    self.pipeline,
                    self.config.proxy_config,
                    self.host,
                    self.config.read_timeout,
                    self.config.price_list,
                )
            self._http = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                max_line_size=self.config.max_header_bytes,
                max_field_size=self.config.max_header_bytes,
                # Bodies are decompressed by our own reader, which caps the inflated size.
                auto_decompress=False,
            )
            await self._http.setup()
            site = web.TCPSite(
                self._http,
                self.config.http.host,
                self.config.http.port,
                ssl_context=self._ssl_context(),
                reuse_port=self.config.workers > 1,
            )
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.http_address = HostPort(self.config.http.host, port)
        if self.config.grpc is not None:
            self._grpc = build_server(
                self.pipeline, self.config.max_request_bytes, reuse_port=self.config.workers > 1
            )
            if self.config.tls_cert is not None and self.config.tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(self.config.tls_key.read_bytes(), self.config.tls_cert.read_bytes())]
                )
                port = self._grpc.add_secure_port(str(self.config.grpc), credentials)
            else:
                port = self._grpc.add_insecure_port(str(self.config.grpc))
            await self._grpc.start()
            self.grpc_address = HostPort(self.config.grpc.host, port)
        if self.config.allow_unauthenticated and not self.pipeline.auth.enabled:
            log.warning(
                "AUTHENTICATION IS OFF: anyone who can reach the listeners can write to any "
                "table (--allow-unauthenticated)",
                http=str(self.http_address),
                grpc=str(self.grpc_address),
            )
        log.info(
            "collector started",
            http=str(self.http_address) if self.http_address else "off",
            grpc=str(self.grpc_address) if self.grpc_address else "off",
            warehouse=str(self.sink.warehouse),
            default_table=self.config.default_table,
            auth="tokens"
            if self.pipeline.auth.enabled
            else "none (--allow-unauthenticated)"
            if self.config.allow_unauthenticated
            else "none (loopback only)",
            tls=self.config.tls_cert is not None,
            durability=self.config.durability,
            decoder=native.ENGINE,
        )
        if native.FALLBACK_REASON:
            # Said once per worker: the pure-Python flatteners are complete but several times
            # slower (README, Performance).
            log.warning("decoding with the pure-Python flatteners", reason=native.FALLBACK_REASON)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish, flush every buffer."""
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
        self.host.withdraw(self.worker)  # a stopping worker is nobody's problem
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self._http is not None:
            await self._http.cleanup()
        if self.maintenance is not None:
            await asyncio.to_thread(self.maintenance.stop)
        flushed = self.flushed = await self.buffers.close(self.config.shutdown_timeout)
        if self.wal is not None:
            self.wal.close()
        self.host.close()
        log.info(
            "collector stopped",
            flushed=flushed,
            left_in_wal=self.buffers.buffered_rows if self.wal is not None else 0,
            lost=self.buffers.buffered_rows if self.wal is None else 0,
        )

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGTERM, signals.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if process.stop_requested():  # asked while we were loading: start, flush, stop
            stop.set()
        async with self:
            _settle_gc()
            await stop.wait()
            log.info("shutting down")
        if not self.flushed:
            # A flush still waits on the store, in a thread Python would wait for at exit (as
            # long as the store's client retries, minutes). What it holds is in the WAL.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _settle_gc() -> None:
    """Keep the cyclic garbage collector off the event loop's critical path while serving.

    What the collector makes per record is freed by reference counting; the collector's full
    passes only walked what start-up made (modules, protobuf descriptors, schemas): 20-35 ms
    each, about every half second at full load, stalling every request in flight (they were
    the outliers of the half-load p99). Frozen, that is out of every pass; collecting young
    objects every 10,000 allocations rather than 700 makes the passes rarer too.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)
