"""Who may write where: bearer tokens (stored hashed) and their table grants.

A tokens file (TOML or JSON) lists each token's SHA-256, a name, and grants. A grant is a
``catalog.schema.table`` pattern where ``*`` stands for a whole segment (``main.agents.*``),
optionally limited to signals: ``main.agents.*:logs,metrics``. A grant ``endpoint:PATTERN``
instead lets the token call the proxy's model endpoints whose name matches the fnmatch-style
pattern (``endpoint:databricks-claude-*``), and ``read:PATTERN`` (a table pattern) lets it read
those tables through the dashboard; each kind of grant allows only its own kind of access, so
a writer's token does not read, nor a reader's write.
Tokens are random (``tokens add`` makes 32 bytes), so a plain SHA-256 is as good as a slow hash
and keeps checking cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from collector.errors import PermissionDenied, Unauthenticated
from collector.signals import SIGNALS, Signal
from collector.tables import TableName

__all__ = [
    "ANONYMOUS",
    "Authenticator",
    "EndpointGrant",
    "Grant",
    "Principal",
    "ReadGrant",
    "TokensError",
    "add_token",
    "parse_grant",
]

_SIGNAL_NAMES = {s.name: s for s in SIGNALS} | {"spans": SIGNALS[2]}
_SEGMENT = re.compile(r"\*|[a-z0-9_]{1,255}")
_ENDPOINT_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,255}")
_ENDPOINT_PREFIX = "endpoint:"
_READ_PREFIX = "read:"


class TokensError(ValueError):
    """The tokens file or a grant cannot be read."""


@dataclass(frozen=True)
class Grant:
    parts: tuple[str, str, str]  # each an identifier or "*"
    signals: frozenset[str] | None = None  # None: every signal

    @classmethod
    def parse(cls, text: str) -> Grant:
        pattern, _, signals = text.strip().partition(":")
        parts = tuple(p.strip().lower() for p in pattern.split("."))
        if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
            raise TokensError(
                f"grant {text!r}: expected catalog.schema.table, each an identifier or *"
            )
        names = None
        if signals:
            names = frozenset(s.strip().lower() for s in signals.split(","))
            unknown = names - set(_SIGNAL_NAMES)
            if unknown:
                raise TokensError(f"grant {text!r}: unknown signal(s) {', '.join(sorted(unknown))}")
            names = frozenset(_SIGNAL_NAMES[n].name for n in names)
        return cls(parts, names)  # type: ignore[arg-type]

    def allows(self, table: TableName, signal: Signal) -> bool:
        if self.signals is not None and signal.name not in self.signals:
            return False
        return self.matches(table)

    def allows_endpoint(self, endpoint: str) -> bool:
        return False

    def allows_reading(self, table: TableName) -> bool:
        return False

    def matches(self, table: TableName) -> bool:
        return all(p == "*" or p == t for p, t in zip(self.parts, table.parts(), strict=True))

    def __str__(self) -> str:
        text = ".".join(self.parts)
        return f"{text}:{','.join(sorted(self.signals))}" if self.signals else text


@dataclass(frozen=True)
class EndpointGrant:
    """``endpoint:PATTERN``: may call the proxy's model endpoints matching PATTERN (fnmatch)."""

    pattern: str

    @classmethod
    def parse(cls, text: str) -> EndpointGrant:
        pattern = text.strip()[len(_ENDPOINT_PREFIX) :].strip()
        if not _ENDPOINT_PATTERN.fullmatch(pattern):
            raise TokensError(
                f"grant {text!r}: expected endpoint:PATTERN, a name or fnmatch pattern of "
                "letters, digits and . _ - * ? [ ] !"
            )
        return cls(pattern)

    def allows(self, table: TableName, signal: Signal) -> bool:
        return False

    def allows_endpoint(self, endpoint: str) -> bool:
        # Case-sensitive on every platform: endpoint names are compared as the client sends them.
        return fnmatchcase(endpoint, self.pattern)

    def allows_reading(self, table: TableName) -> bool:
        return False

    def __str__(self) -> str:
        return _ENDPOINT_PREFIX + self.pattern


@dataclass(frozen=True)
class ReadGrant:
    """``read:catalog.schema.table`` (``*`` for a whole segment): may read those tables."""

    tables: Grant

    @classmethod
    def parse(cls, text: str) -> ReadGrant:
        pattern = text.strip()[len(_READ_PREFIX) :].strip()
        if ":" in pattern:
            raise TokensError(f"grant {text!r}: a read grant names tables, not signals")
        try:
            return cls(Grant.parse(pattern))
        except TokensError:
            raise TokensError(
                f"grant {text!r}: expected read:catalog.schema.table, each an identifier or *"
            ) from None

    def allows(self, table: TableName, signal: Signal) -> bool:
        return False

    def allows_endpoint(self, endpoint: str) -> bool:
        return False

    def allows_reading(self, table: TableName) -> bool:
        return self.tables.matches(table)

    def __str__(self) -> str:
        return _READ_PREFIX + str(self.tables)


AnyGrant = Grant | EndpointGrant | ReadGrant


def parse_grant(text: str) -> AnyGrant:
    """A table grant (``catalog.schema.table[:signals]``), an ``endpoint:PATTERN`` grant or a
    ``read:catalog.schema.table`` grant."""
    lowered = text.strip().lower()
    if lowered.startswith(_ENDPOINT_PREFIX):
        return EndpointGrant.parse(text)
    if lowered.startswith(_READ_PREFIX):
        return ReadGrant.parse(text)
    return Grant.parse(text)


@dataclass(frozen=True)
class Principal:
    name: str
    grants: tuple[AnyGrant, ...]
    team: str | None = None  # the tokens file's team: the proxy's team budgets count by it

    def authorize(self, table: TableName, signal: Signal) -> None:
        if not any(g.allows(table, signal) for g in self.grants):
            raise PermissionDenied(
                f"token {self.name!r} may not write {signal.name} to table {table}"
            )

    def authorize_endpoint(self, endpoint: str) -> None:
        if not any(g.allows_endpoint(endpoint) for g in self.grants):
            raise PermissionDenied(f"token {self.name!r} may not call endpoint {endpoint!r}")

    def may_read(self, table: TableName) -> bool:
        return any(g.allows_reading(table) for g in self.grants)

    @property
    def reads(self) -> bool:
        """Whether any read grant is among its grants."""
        return any(isinstance(g, ReadGrant) for g in self.grants)


_EVERY_TABLE = Grant(("*", "*", "*"))
ANONYMOUS = Principal("anonymous", (_EVERY_TABLE, EndpointGrant("*"), ReadGrant(_EVERY_TABLE)))


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _load(path: Path) -> list[_Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TokensError(f"cannot read tokens file {path}: {e}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise TokensError(f"tokens file {path}: {e}") from None
    entries = []
    names = set()
    for i, item in enumerate(data.get("token", data.get("tokens", []))):
        where = f"tokens file {path}, token {i + 1}"
        try:
            name = str(item["name"])
            digest = bytes.fromhex(item["sha256"])
            grants = tuple(parse_grant(g) for g in item.get("grants", []))
            team = _team(item.get("team"))
        except (KeyError, TypeError, ValueError) as e:
            raise TokensError(f"{where}: {e}") from None
        if len(digest) != 32:
            raise TokensError(f"{where}: sha256 must be 64 hex digits")
        if name in names:
            raise TokensError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        entries.append(_Entry(digest, Principal(name, grants, team)))
    return entries


_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,128}")


def _team(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"team {value!r}: use letters, digits and . _ @ - (at most 128)")
    return value


class Authenticator:
    """Maps an ``Authorization`` value to the principal it proves, or refuses it."""

    def __init__(self, tokens_file: Path | None) -> None:
        self.tokens_file = tokens_file
        self._entries = _load(tokens_file) if tokens_file is not None else None

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    def teams(self) -> dict[str, str | None]:
        """Each token's team, by token name."""
        return {e.principal.name: e.principal.team for e in self._entries or ()}

    def authenticate(self, authorization: str | None) -> Principal:
        if self._entries is None:
            return ANONYMOUS
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = _hash(token.strip())
        found = None
        # Compare with every entry, without stopping early: the time taken says nothing.
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        if found is None:
            raise Unauthenticated("unknown bearer token")
        return found


def add_token(path: Path, name: str, grants: list[str], team: str | None = None) -> str:
    """Append a new random token's hash to ``path`` (with its ``team``, if any); return the
    token (shown once)."""
    parsed = [parse_grant(g) for g in grants]
    if not _NAME.fullmatch(name):
        raise TokensError(f"token name {name!r}: use letters, digits and . _ @ - (at most 128)")
    try:
        _team(team)
    except ValueError as e:
        raise TokensError(str(e)) from None
    existing = _load(path) if path.exists() else []
    if any(e.principal.name == name for e in existing):
        raise TokensError(f"a token named {name!r} is already in {path}")
    token = "odc_" + secrets.token_urlsafe(32)
    digest = _hash(token).hex()
    if path.suffix == ".json":
        data = json.loads(path.read_text()) if path.exists() else {"tokens": []}
        entry = {"name": name, "sha256": digest, "grants": [str(g) for g in parsed]}
        data.setdefault("tokens", []).append(entry | ({"team": team} if team else {}))
        text = json.dumps(data, indent=2) + "\n"
    else:
        old = path.read_text() if path.exists() else ""
        grants_toml = ", ".join(json.dumps(str(g)) for g in parsed)
        block = f'[[token]]\nname = "{name}"\nsha256 = "{digest}"\ngrants = [{grants_toml}]\n'
        block += f'team = "{team}"\n' if team else ""
        text = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return token
