"""Two independent readers of a Delta table, giving rows as plain Python values.

polars (over delta-rs) and DuckDB's delta extension share no code with each other or with the
collector. Both are normalised to the same shape: structs as dicts, MAP columns as dicts, arrays
as lists, so that a test can assert exact rows and that the readers agree.
"""

from __future__ import annotations

import glob
import json
import os
import sysconfig
import urllib.parse
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from deltalake import DeltaTable


def _normalise(value: Any, delta_type: Any) -> Any:
    """polars gives a MAP as a list of {key, value} structs (or a dict, by version): make a dict."""
    if value is None or isinstance(delta_type, str):
        return value
    kind = delta_type["type"]
    if kind == "map":
        pairs = (
            value.items() if isinstance(value, dict) else ((e["key"], e["value"]) for e in value)
        )
        return {k: _normalise(v, delta_type["valueType"]) for k, v in pairs}
    if kind == "array":
        return [_normalise(v, delta_type["elementType"]) for v in value]
    if kind == "struct":
        return {f["name"]: _normalise(value[f["name"]], f["type"]) for f in delta_type["fields"]}
    return value


def polars_credentials(path: Path | str) -> Any:
    """polars' ``credential_provider`` for ``path``: on GCS it would ask google-auth for
    credentials of its own, while the GOOGLE_* variables hold them."""
    return None if str(path).startswith("gs://") else "auto"


def read_polars(path: Path | str) -> list[dict[str, Any]]:
    """``path``: a table's directory, or its s3://, az:// or gs:// URI (credentials from the
    environment)."""
    schema = json.loads(DeltaTable(str(path)).schema().to_json())
    frame = pl.read_delta(str(path), credential_provider=polars_credentials(path))
    return [_normalise(row, schema) for row in frame.to_dicts()]


def _extension(name: str) -> str:
    site = sysconfig.get_paths()["purelib"]
    found = glob.glob(f"{site}/duckdb_extension_{name}/extensions/*/{name}.duckdb_extension")
    if not found:
        raise RuntimeError(f"duckdb-extension-{name} is not installed")
    return found[0]


def duckdb_with_delta(location: str = "") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta extension loaded (from the pip package), and for a
    table on object storage the extension and secret that reach it: httpfs and the AWS_*
    variables for s3:// (moto's endpoint), azure and Azurite's connection string for az://."""
    scheme = location.split("://", 1)[0] if "://" in location else ""
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    store_extension = {"s3": ["httpfs"], "az": ["azure"]}.get(scheme, [])
    for name in [*store_extension, "delta"]:
        con.execute(f"LOAD '{_extension(name)}'")
    if scheme == "s3":
        endpoint = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"])
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID $key, SECRET $secret, REGION $region, "
            "ENDPOINT $endpoint, URL_STYLE 'path', USE_SSL $ssl)",
            {
                "key": os.environ["AWS_ACCESS_KEY_ID"],
                "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
                "region": os.environ.get("AWS_REGION", "us-east-1"),
                "endpoint": endpoint.netloc,
                "ssl": endpoint.scheme == "https",
            },
        )
    elif scheme == "az":
        from tests.emulators import azure_connection_string

        con.execute(
            "CREATE SECRET (TYPE azure, CONNECTION_STRING $c)",
            {"c": azure_connection_string(dict(os.environ))},
        )
    return con


def read_duckdb(path: Path | str) -> list[dict[str, Any]]:
    con = duckdb_with_delta(str(path))
    try:
        cursor = con.execute("SELECT * FROM delta_scan(?)", [str(path)])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def read_both(path: Path | str, key: Any = None) -> list[dict[str, Any]]:
    """Rows read by both readers, asserted equal; sorted by ``key`` (file order is not stable).

    A table a running collector writes to may gain a commit between the two reads: then the
    readers saw different versions, and both read again, until no commit came between."""
    while True:
        before = DeltaTable(str(path)).version()
        a = read_polars(path)
        b = read_duckdb(path)
        if key is not None:
            a.sort(key=key)
            b.sort(key=key)
        if a == b or DeltaTable(str(path)).version() == before:
            break
    assert a == b, "polars and DuckDB read different rows"
    return a
