"""Object-store emulators the tests run on loopback: moto's S3 server, Azurite (Azure Blob)
and fake-gcs-server (GCS), each seen through a :class:`Store`: the variables a process needs to
reach it, a new empty bucket or container per warehouse, and the secret that must never show.

moto's own server is threaded, and its check of ``If-None-Match: *`` and the write after it are
not under one lock: two concurrent conditional puts can both succeed. Served single-threaded, as
here, requests are handled one at a time and the check holds. Azurite is one Node.js process,
which handles a conditional Put Blob whole. fake-gcs-server speaks GCS's JSON API only, while
object_store writes through the XML API: ``tests/gcs`` builds it (the released Go module) with
the XML writes, listings and multipart uploads object_store makes translated onto it. It serves
one writer's tests only: nothing here shows how GCS itself orders concurrent writes.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import NODE_DIR, ROOT, SECRETS, free_port, node_modules

_MOTO = """
import sys
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server
server = make_server("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
                     threaded=False)
print("ready", flush=True)
server.serve_forever()
"""
# The delta extension of DuckDB reaches Azurite only under the emulator's own account name.
AZURITE_ACCOUNT = "devstoreaccount1"


@dataclass
class Store:
    """A running emulator."""

    kind: str  # "s3", "azure" or "gcs"
    scheme: str  # of the warehouse URIs on it
    port: int
    env: dict[str, str]  # what a process needs to reach it: the standard variables
    secret: str  # a value to grep for: it must never appear in a log line, an error or an answer
    pid: int = 0  # the emulator's process

    def warehouse(self, prefix: str = "wh") -> str:
        """A warehouse URI in a new, empty bucket or container."""
        name = f"wh-{uuid.uuid4().hex[:12]}"
        self._create(name)
        return f"{self.scheme}://{name}/{prefix}"

    def via(self, port: int) -> dict[str, str]:
        """``env``, reaching the store through ``port`` on loopback (a proxy) instead."""
        assert self.kind in ("s3", "azure"), "the GCS emulator's URL is in its account file"
        key = "AWS_ENDPOINT_URL" if self.kind == "s3" else "AZURITE_BLOB_STORAGE_URL"
        return {**self.env, key: f"http://127.0.0.1:{port}"}

    def _create(self, name: str) -> None:
        if self.kind == "s3":
            import boto3

            boto3.client(
                "s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=self.secret,
            ).create_bucket(Bucket=name)  # fmt: skip
        elif self.kind == "gcs":
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/storage/v1/b?project=tests",
                data=json.dumps({"name": name}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=10).close()
        else:
            from azure.storage.blob import BlobServiceClient

            BlobServiceClient.from_connection_string(azure_connection_string(self.env)) \
                .create_container(name)  # fmt: skip


def azure_connection_string(env: dict[str, str]) -> str:
    """The connection string of the account the AZURE_* variables name, at Azurite's URL."""
    account = env["AZURE_STORAGE_ACCOUNT_NAME"]
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account};"
        f"AccountKey={env['AZURE_STORAGE_ACCOUNT_KEY']};"
        f"BlobEndpoint={env['AZURITE_BLOB_STORAGE_URL']}/{account};"
    )


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def moto_s3() -> Iterator[Store]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _MOTO, str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        endpoint = f"http://127.0.0.1:{port}"
        _wait_http(endpoint + "/moto-api/")
        secret = f"moto-secret-{uuid.uuid4().hex}"
        SECRETS.add(secret)
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "moto-access-key",
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
        yield Store("s3", "s3", port, env, secret, proc.pid)
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def azurite() -> Iterator[Store]:
    """Azurite's blob service from ``tests/node`` (installed by ``npm ci`` when missing), with a
    key of its own for the emulator account, data in a temporary directory."""
    node = node_modules()
    port = free_port()
    key = base64.b64encode(os.urandom(32)).decode()
    SECRETS.add(key)
    with tempfile.TemporaryDirectory(prefix="azurite-") as data:
        proc = subprocess.Popen(
            [node, str(NODE_DIR / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"),
             "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", data,
             "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "AZURITE_ACCOUNTS": f"{AZURITE_ACCOUNT}:{key}"},
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(url)
            env = {
                "AZURE_STORAGE_USE_EMULATOR": "true",
                "AZURITE_BLOB_STORAGE_URL": url,
                "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
                "AZURE_STORAGE_ACCOUNT_KEY": key,
            }
            yield Store("azure", "az", port, env, key, proc.pid)
        finally:
            proc.kill()
            proc.wait()


GCS_DIR = ROOT / "tests" / "gcs"


def _fake_gcs_binary() -> Path:
    """tests/gcs built with ``go build`` (modules from the Go proxy) when missing or stale."""
    binary = GCS_DIR / "bin" / "fake-gcs-xml"
    newest = max((GCS_DIR / n).stat().st_mtime for n in ("main.go", "go.mod", "go.sum"))
    if not binary.exists() or binary.stat().st_mtime < newest:
        go = shutil.which("go")
        if go is None:
            pytest.fail("go must be on PATH to build tests/gcs (CI has it)")
        done = subprocess.run(
            [go, "build", "-o", str(binary), "."],
            cwd=GCS_DIR, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"go build of tests/gcs failed:\n{done.stdout}\n{done.stderr}")
    return binary


@contextmanager
def fake_gcs() -> Iterator[Store]:
    """fake-gcs-server with object_store's XML API (see the module's docstring), in memory; a
    service-account file that names its URL and turns OAuth off, as object_store reads it."""
    binary = _fake_gcs_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as directory:
        secret = f"gcs-key-{uuid.uuid4().hex}"
        SECRETS.add(secret)
        account = Path(directory) / "service-account.json"
        account.write_text(json.dumps({
            "gcs_base_url": f"http://127.0.0.1:{port}", "disable_oauth": True,
            "client_email": "", "private_key": "", "private_key_id": secret,
        }))  # fmt: skip
        proc = subprocess.Popen(
            [str(binary), "-host", "127.0.0.1", "-port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_http(f"http://127.0.0.1:{port}/storage/v1/b")
            yield Store(
                "gcs", "gs", port, {"GOOGLE_SERVICE_ACCOUNT": str(account)}, secret, proc.pid
            )
        finally:
            proc.kill()
            proc.wait()


def emulator(kind: str) -> contextlib.AbstractContextManager[Store]:
    """The emulator of ``kind``: "s3" (moto), "azure" (Azurite) or "gcs" (fake-gcs-server)."""
    return {"s3": moto_s3, "azure": azurite, "gcs": fake_gcs}[kind]()


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process (for the readers and the sink used in the test itself)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TcpProxy:
    """A TCP relay on loopback to ``port``: ``down()`` closes the listener and every relayed
    connection, as a store that goes away does; ``up()`` listens again on the same port."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


# What each store answers when credentials are refused, when it throttles, when the bucket or
# container is gone: (status, error code, message), in its own error format.
FAULTS = {
    ("s3", "credentials"): (403, "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records."),
    ("s3", "throttling"): (503, "SlowDown", "Please reduce your request rate."),
    ("s3", "bucket"): (404, "NoSuchBucket", "The specified bucket does not exist"),
    ("azure", "credentials"): (403, "AuthenticationFailed",
                               "Server failed to authenticate the request."),
    ("azure", "throttling"): (503, "ServerBusy", "The server is currently unable to receive "
                              "requests. Please retry your request."),
    ("azure", "bucket"): (404, "ContainerNotFound", "The specified container does not exist."),
}  # fmt: skip
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-connection"}  # fmt: skip


class HttpProxy:
    """An HTTP relay on loopback to a store at ``port``, which can turn the store bad:
    ``fail(kind, cause)`` answers every request with that store's error for ``cause`` (see
    ``FAULTS``) until ``heal()``; with ``ignore_conditions`` it drops ``If-None-Match`` and
    ``If-Match``, so that the store behind it overwrites where it should refuse (S3 only:
    Azure signs those headers)."""

    def __init__(self, port: int, ignore_conditions: bool = False) -> None:
        self.target = port
        self.ignore_conditions = ignore_conditions
        self.fault: tuple[int, str, str] | None = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def relay(self) -> None:
                proxy._relay(self)

            # The names http.server looks up.
            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = relay  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fail(self, kind: str, cause: str) -> None:
        self.fault = FAULTS[(kind, cause)]

    def heal(self) -> None:
        self.fault = None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _relay(self, request: http.server.BaseHTTPRequestHandler) -> None:
        body = _read_body(request)
        if self.fault is not None:
            status, code, message = self.fault
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                       f"<Message>{message}</Message></Error>").encode()  # fmt: skip
            request.send_response(status)
            request.send_header("Content-Type", "application/xml")
            request.send_header("x-ms-error-code", code)
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(payload)
            return
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP_BY_HOP
            and k.lower() != "content-length"
            and not (self.ignore_conditions and k.lower() in ("if-none-match", "if-match"))
        }
        if body or request.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", self.target, timeout=60)
        try:
            upstream.request(request.command, request.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        except OSError:
            request.close_connection = True
            return
        finally:
            upstream.close()
        request.send_response(answer.status, answer.reason)
        for k, v in answer.getheaders():
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                request.send_header(k, v)
        length = answer.getheader("Content-Length") if request.command == "HEAD" else len(data)
        request.send_header("Content-Length", str(length or 0))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


def _read_body(request: http.server.BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while size := int(request.rfile.readline().split(b";")[0], 16):
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
        request.rfile.readline()
        return b"".join(chunks)
    return request.rfile.read(int(request.headers.get("Content-Length") or 0))
