"""OTLP/JSON bodies → objects that read like the protobuf messages, for the same flatteners.

protobuf's own JSON mapping (``json_format.ParseDict``) is generic reflective Python and about
ten times slower than everything else a request goes through. This converter knows one thing,
OTLP's JSON, and builds plain objects whose attributes carry the field values: the flatteners
read them exactly as they read parsed protobuf (``record.time_unix_nano``,
``value.WhichOneof("value")``, ``point.HasField("sum")``…), so the mapping to rows is written
once. The classes are generated from the protobuf descriptors, so the field set is too.

OTLP/JSON rules (protocol.md): keys in lowerCamelCase or as in the .proto; 64-bit integers as
strings or numbers; enums as numbers or names; trace and span ids as hex; other bytes base64;
unknown fields ignored; ``null`` for a singular field means unset. Anything else is an error,
and so is a string holding a lone surrogate escape, which no UTF-8 column can store.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

__all__ = ["JsonError", "from_json", "native_schema"]

_HEX_IDS = frozenset({"trace_id", "span_id", "parent_span_id"})
F = FieldDescriptor


class JsonError(ValueError):
    """The JSON does not describe an OTLP message; ``str()`` says where, as a JSON path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []  # filled in on the way out: keys and [indexes]

    def __str__(self) -> str:
        where = "".join(p if p.startswith("[") else f".{p}" for p in self.path).lstrip(".")
        return f"{where}: {self.reason}" if where else self.reason


class Node:
    """A message read from JSON. Fields it carried are in the instance; the rest read as the
    class's defaults, as unset protobuf fields do."""

    _oneofs: dict[str, tuple[str, ...]] = {}

    def WhichOneof(self, group: str) -> str | None:  # noqa: N802  (protobuf's spelling)
        present = self.__dict__
        for name in self._oneofs[group]:
            if name in present:
                return name
        return None

    def HasField(self, name: str) -> bool:  # noqa: N802
        return name in self.__dict__


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise JsonError(f"expected an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise JsonError(f"expected an integer, got {value!r}")
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise JsonError(f"expected an integer, got {value[:40]!r}") from None
        elif not isinstance(value, int):
            raise JsonError(f"expected an integer, got {type(value).__name__}")
        if not low <= value < high:
            raise JsonError(f"integer {value} is out of range")
        return value

    return convert


_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _double(value: Any) -> float:
    if isinstance(value, bool):
        raise JsonError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int past the largest double
            raise JsonError(f"number {str(value)[:40]}… is out of range for a double") from None
    if isinstance(value, str):
        if value in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[value]
        try:
            return float(value)
        except ValueError:
            pass
    raise JsonError(f"expected a number, got {str(value)[:40]!r}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise JsonError(f"expected a string, got {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # "\ud800" in the JSON: no character, no UTF-8
            code = ord(value[e.start])
            raise JsonError(f"a lone surrogate (\\u{code:04x}) is not a character") from None
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise JsonError(f"expected true or false, got {str(value)[:40]!r}")


def _hex(value: Any) -> bytes:
    text = _string(value)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise JsonError(f"{text[:64]!r} is not a hex string") from None


def _base64(value: Any) -> bytes:
    text = _string(value)
    try:
        # proto3 JSON takes standard and URL-safe alphabets, padding optional.
        return base64.urlsafe_b64decode(
            text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4)
        )
    except (binascii.Error, ValueError):
        raise JsonError(f"{text[:64]!r} is not base64") from None


_SCALARS: dict[int, Callable[[Any], Any]] = {
    F.TYPE_INT64: _integer(-(2**63), 2**63),
    F.TYPE_SFIXED64: _integer(-(2**63), 2**63),
    F.TYPE_SINT64: _integer(-(2**63), 2**63),
    F.TYPE_UINT64: _integer(0, 2**64),
    F.TYPE_FIXED64: _integer(0, 2**64),
    F.TYPE_INT32: _integer(-(2**31), 2**31),
    F.TYPE_SFIXED32: _integer(-(2**31), 2**31),
    F.TYPE_SINT32: _integer(-(2**31), 2**31),
    F.TYPE_UINT32: _integer(0, 2**32),
    F.TYPE_FIXED32: _integer(0, 2**32),
    F.TYPE_DOUBLE: _double,
    F.TYPE_FLOAT: _double,
    F.TYPE_STRING: _string,
    F.TYPE_BOOL: _bool,
}
_DEFAULTS = {F.TYPE_STRING: "", F.TYPE_BOOL: False, F.TYPE_BYTES: b"", F.TYPE_DOUBLE: 0.0}


def _enum(field: FieldDescriptor) -> Callable[[Any], int]:
    by_name = {v.name: v.number for v in field.enum_type.values}
    as_int = _integer(-(2**31), 2**31)

    def convert(value: Any) -> int:
        if isinstance(value, str) and value in by_name:
            return by_name[value]
        try:
            return as_int(value)  # proto3 enums are open: unknown numbers are kept
        except JsonError:
            raise JsonError(f"{str(value)[:40]!r} is not a {field.enum_type.name}") from None

    return convert


_classes: dict[str, type[Node]] = {}


def _class(descriptor: Descriptor) -> type[Node]:
    """The Node class of a message type: defaults as class attributes, a converter per key."""
    cls = _classes.get(descriptor.full_name)
    if cls is not None:
        return cls
    cls = type(descriptor.name, (Node,), {})
    _classes[descriptor.full_name] = cls
    keys: dict[str, tuple[str, Callable[[Any], Any]]] = {}
    for field in descriptor.fields:
        convert = _converter(field)
        keys[field.name] = keys[field.json_name] = (field.name, convert)
        if field.is_repeated:
            default: Any = ()
        elif field.type == F.TYPE_MESSAGE:
            default = None  # set below, once the class of the field's type exists
        else:
            default = _DEFAULTS.get(field.type, 0)
        setattr(cls, field.name, default)
    cls._keys = keys  # type: ignore[attr-defined]
    cls._oneofs = {o.name: tuple(f.name for f in o.fields) for o in descriptor.oneofs}
    for field in descriptor.fields:
        if field.type == F.TYPE_MESSAGE and not field.is_repeated:
            setattr(cls, field.name, _class(field.message_type)())
    return cls


def _converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    if field.type == F.TYPE_MESSAGE:
        resolved: list[type[Node]] = []  # the class, looked up on first use (types recurse)

        def one(value: Any) -> Node:
            if not resolved:
                resolved.append(_class(field.message_type))
            return _message(value, resolved[0])

    elif field.type == F.TYPE_ENUM:
        one = _enum(field)  # type: ignore[assignment]
    elif field.type == F.TYPE_BYTES:
        one = _hex if field.name in _HEX_IDS else _base64  # type: ignore[assignment]
    else:
        one = _SCALARS[field.type]  # type: ignore[assignment]
    if not field.is_repeated:
        return one

    def many(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise JsonError("must be a list")
        out = []
        for i, v in enumerate(value):
            try:
                if v is None:
                    raise JsonError("null is not allowed in a list")
                out.append(one(v))
            except JsonError as e:
                e.path.insert(0, f"[{i}]")
                raise
        return out

    return many


def _message(value: Any, cls: type[Node]) -> Node:
    if not isinstance(value, dict):
        raise JsonError(f"{cls.__name__} must be a JSON object, got {type(value).__name__}")
    node = cls()
    fields = node.__dict__
    keys = cls._keys  # type: ignore[attr-defined]
    for key, item in value.items():
        spec = keys.get(key)
        if spec is None or item is None:
            continue  # unknown fields are ignored; null is unset
        name, convert = spec
        try:
            fields[name] = convert(item)
        except JsonError as e:
            e.path.insert(0, key)
            raise
    return node


def from_json(tree: Any, descriptor: Descriptor) -> Node:
    """The request in ``tree`` (parsed JSON) as a :class:`Node`; raises :class:`JsonError`."""
    try:
        return _message(tree, _class(descriptor))
    except RecursionError:
        raise JsonError("the JSON nests too deeply") from None


_KINDS = {
    F.TYPE_INT64: "int64",
    F.TYPE_INT32: "int32",
    F.TYPE_UINT64: "uint64",
    F.TYPE_UINT32: "uint32",
    F.TYPE_SINT64: "sint64",
    F.TYPE_SINT32: "sint32",
    F.TYPE_FIXED64: "fixed64",
    F.TYPE_SFIXED64: "sfixed64",
    F.TYPE_FIXED32: "fixed32",
    F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_DOUBLE: "double",
    F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes",
    F.TYPE_ENUM: "enum",
    F.TYPE_MESSAGE: "message",
}

NativeField = tuple[str, str, int, str, bool, int, int]


def native_schema(
    roots: list[Descriptor],
) -> tuple[list[list[NativeField]], list[list[tuple[str, int]]]]:
    """The rules above, as the native core's JSON reading takes them (collector._native
    .set_json_schema): every message reachable from ``roots`` (which come first, in order),
    its fields as (name, JSON name, number, kind, repeated, oneof or -1, message or enum
    index or -1), and each enum's names and numbers."""
    messages: list[Descriptor] = []
    index: dict[str, int] = {}
    enums: list[list[tuple[str, int]]] = []
    enum_index: dict[str, int] = {}

    def message_index(descriptor: Descriptor) -> int:
        if descriptor.full_name not in index:
            index[descriptor.full_name] = len(messages)
            messages.append(descriptor)
        return index[descriptor.full_name]

    for root in roots:
        message_index(root)
    tables: list[list[NativeField]] = []
    while len(tables) < len(messages):  # messages grows as fields name new types
        descriptor = messages[len(tables)]
        fields: list[NativeField] = []
        for field in descriptor.fields:
            kind = "hex" if field.name in _HEX_IDS else _KINDS.get(field.type, "unknown")
            target = -1
            if field.type == F.TYPE_MESSAGE:
                target = message_index(field.message_type)
            elif field.type == F.TYPE_ENUM:
                enum = field.enum_type
                if enum.full_name not in enum_index:
                    enum_index[enum.full_name] = len(enums)
                    enums.append([(v.name, v.number) for v in enum.values])
                target = enum_index[enum.full_name]
            oneof = field.containing_oneof
            fields.append(
                (
                    field.name,
                    field.json_name,
                    field.number,
                    kind,
                    field.is_repeated,
                    -1 if oneof is None else oneof.index,
                    target,
                )
            )
        tables.append(fields)
    return tables, enums
