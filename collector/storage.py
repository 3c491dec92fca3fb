"""Where the warehouse lives: a local directory or a bucket, and the few file operations the
collector does beside Delta's own.

``--warehouse`` takes a local path or ``s3://bucket/prefix``, ``az://container/prefix``,
``abfss://container@account.dfs.core.windows.net/prefix`` or ``gs://bucket/prefix``. Delta
tables are read and written by delta-rs; everything else the collector keeps in the warehouse
(maintenance leases, reports, vacuum ledgers, listings of the log and the data files) goes
through obstore, the Python face of the same Rust ``object_store`` crate, so that both read the
same variables (``AWS_*``, ``AZURE_STORAGE_*``, ``GOOGLE_*``) and the same ``--storage-option
KEY=VALUE`` pairs with the same meaning.

Option values may be secrets: they are never logged, and :mod:`collector.redaction` removes
them from any error text before it is shown.
"""

from __future__ import annotations

import io
import json
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError
from obstore.store import LocalStore, from_url

from collector.redaction import error_text, register_secrets

__all__ = ["Entry", "Files", "Warehouse"]

_REMOTE_SCHEMES = {"s3", "s3a", "az", "azure", "abfs", "abfss", "adl", "gs"}
# object_store's HTTP client settings: obstore takes them apart from the store's own keys.
_CLIENT_KEYS = {
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "http1_only", "http2_keep_alive_interval", "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle", "http2_max_frame_size", "http2_only", "pool_idle_timeout",
    "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate", "proxy_excludes",
    "randomize_addresses", "timeout", "user_agent",
}  # fmt: skip
# Keys delta-rs reads itself, which object_store (so obstore) does not know.
_DELTA_ONLY_KEYS = {
    "aws_s3_allow_unsafe_rename", "aws_s3_locking_provider", "delta_dynamo_table_name",
    "aws_s3_pool_idle_timeout_seconds", "aws_sts_pool_idle_timeout_seconds",
    "aws_s3_get_internal_server_error_retries", "aws_force_credential_load", "aws_profile",
    "max_retries", "retry_timeout", "mount_allow_unsafe_rename",
}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root it was listed under
    size: int
    modified: float  # wall time


@dataclass(frozen=True)
class Warehouse:
    """The warehouse root, with the storage options for delta-rs and obstore."""

    uri: str  # a local absolute path, or a URI without a trailing slash
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | os.PathLike[str], options: Mapping[str, str] = {}) -> Warehouse:
        """The warehouse named by ``value``; ``ValueError`` saying what is wrong with it."""
        text = os.fspath(value).strip()
        if not text:
            raise ValueError("the warehouse is empty: give a directory or a URI such as s3://b/p")
        parts = urllib.parse.urlsplit(text)
        scheme = parts.scheme.lower() if "://" in text else ""
        if scheme in ("", "file"):
            if options:
                raise ValueError("storage options apply to object storage, not a local warehouse")
            path = text.removeprefix("file://") if scheme else text
            return cls(str(Path(path).expanduser().resolve()))
        if scheme not in _REMOTE_SCHEMES:
            raise ValueError(
                f"unknown warehouse scheme {scheme}:// (use a path, s3://, az://, abfss:// or gs://)"
            )
        if not parts.netloc:
            raise ValueError(f"the warehouse URI {text} names no bucket or container")
        if parts.query or parts.fragment:
            raise ValueError(
                f"the warehouse URI {text} has a query or fragment; options go in "
                "--storage-option KEY=VALUE"
            )
        warehouse = cls(text.rstrip("/"), dict(options))
        register_secrets(options)
        try:
            warehouse.store()  # an option with a typo, a malformed account name…
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # obstore reports some bad options by a Rust panic
            raise ValueError(f"warehouse {text}: {error_text(e, first_line=True)}") from None
        return warehouse

    @classmethod
    def of(cls, value: Warehouse | str | os.PathLike[str]) -> Warehouse:
        """``value`` itself if it is a Warehouse, else the one it names."""
        return value if isinstance(value, Warehouse) else cls.parse(value)

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def path(self) -> Path:
        """The directory of a local warehouse."""
        assert self.is_local, self.uri
        return Path(self.uri)

    def join(self, *parts: str) -> str:
        """The location of ``parts`` under the root, as delta-rs takes it."""
        return "/".join([self.uri, *parts])

    def __str__(self) -> str:
        return self.uri

    def store(self, *parts: str) -> Any:
        """An obstore store rooted at ``parts`` under the warehouse root."""
        if self.is_local:
            root = self.path.joinpath(*parts)
            root.mkdir(parents=True, exist_ok=True)
            return LocalStore(root)
        config: dict[str, str] = {}
        client: dict[str, str] = {}
        for key, value in self.options.items():
            name = key.lower()
            bare = (
                name.split("_", 1)[-1] if name.startswith(("aws_", "azure_", "google_")) else name
            )
            if name in _CLIENT_KEYS or bare in _CLIENT_KEYS:
                client[bare if bare in _CLIENT_KEYS else name] = value
            elif name not in _DELTA_ONLY_KEYS:
                config[key] = value
        return from_url(self.join(*parts), config=config or None, client_options=client or None)

    def probe(self) -> str | None:
        """Reach the store once. A bucket or container that does not exist is a configuration
        error (``ValueError``); any other failure (the endpoint down, credentials refused) may
        pass, and is returned, without secrets, for the caller to report."""
        if self.is_local:
            return None
        try:
            Files(self).children()
        except Exception as e:
            text = error_text(e, first_line=True)
            if re.search(r"NoSuchBucket|ContainerNotFound|bucket does not exist|"
                         r"specified container does not exist", str(e), re.I):  # fmt: skip
                raise ValueError(f"the bucket or container of {self.uri} does not exist") from None
            return text
        return None

    def delta_options(self) -> dict[str, str] | None:
        return dict(self.options) or None


class Files:
    """Small files under one root of the warehouse: whole-object reads and writes."""

    def __init__(self, warehouse: Warehouse, *parts: str) -> None:
        self.warehouse = warehouse
        self._store = warehouse.store(*parts)

    def read(self, path: str) -> bytes | None:
        try:
            return bytes(obstore.get(self._store, path).bytes())
        except (NotFoundError, FileNotFoundError):
            return None

    def read_json(self, path: str) -> Any:
        """The JSON document at ``path``; None if there is none, or not a whole one yet."""
        try:
            return json.loads(self.read(path) or b"")
        except ValueError:
            return None

    def write(self, path: str, data: bytes) -> None:
        obstore.put(self._store, path, data)

    def create(self, path: str, data: bytes) -> bool:
        """Write ``path`` only if it does not exist yet: of several creators, one wins."""
        try:
            obstore.put(self._store, path, data, mode="create")
        except (AlreadyExistsError, FileExistsError):
            return False
        return True

    def delete(self, path: str) -> None:
        try:
            obstore.delete(self._store, path)
        except (NotFoundError, FileNotFoundError):
            pass

    def list(self, prefix: str | None = None) -> Iterator[Entry]:
        """Every object under ``prefix``, at any depth."""
        for batch in obstore.list(self._store, prefix):
            for meta in batch:
                yield _entry(meta)

    def children(self, prefix: str | None = None) -> tuple[list[str], list[Entry]]:
        """The "directories" (names) and objects right under ``prefix``."""
        found = obstore.list_with_delimiter(self._store, prefix)
        dirs = [p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]]
        return dirs, [_entry(meta) for meta in found["objects"]]

    def reader(self, path: str) -> io.RawIOBase:
        """A seekable file: a Parquet reader fetches the footer and the columns it needs."""
        return _Reader(obstore.open_reader(self._store, path))

    def writer(self, path: str) -> io.RawIOBase:
        """A file that appears whole at ``path`` when closed (uploaded in parts as it grows)."""
        return _Writer(obstore.open_writer(self._store, path))


def _entry(meta: Any) -> Entry:
    modified: datetime = meta["last_modified"]
    return Entry(meta["path"], int(meta["size"]), modified.timestamp())


class _Reader(io.RawIOBase):
    """obstore's readable file as the file object pyarrow expects."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def read(self, size: int = -1) -> bytes:
        return bytes(self._file.read(size) if size is not None and size >= 0 else self._file.read())

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class _Writer(io.RawIOBase):
    def __init__(self, file: Any) -> None:
        self._file = file
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._file.write(data)
        n = memoryview(data).nbytes
        self._written += n
        return n

    def tell(self) -> int:
        return self._written

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
