"""Type stub of the native core (native/, Rust): see collector/flatten/native.py, its only user."""

from collections.abc import Sequence

# An array's buffers as pa.Array.from_buffers takes them: (length, null count, buffers,
# children); or (length, None) for a column that is all nulls, which pyarrow makes.
Node = tuple[int, int, list["Buffer | None"], list["Node"]] | tuple[int, None]
# (what, its name if it has one, why): the first record the request could not store.
Rejection = tuple[str, str | None, str]
# (records, [(column, node)], rejected, first rejection, values truncated, attributes dropped,
#  (kind, message) of an error the Python flatteners raise when they build the columns)
Flat = tuple[
    int,
    list[tuple[str, Node]],
    int,
    Rejection | None,
    int,
    int,
    tuple[str, str] | None,
]

class Buffer:
    """The memory of one Arrow buffer, lent through the buffer protocol."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

def set_enums(
    severity: Sequence[str | None],
    temporality: Sequence[str | None],
    span_kind: Sequence[str | None],
    status_code: Sequence[str | None],
) -> None:
    """The enums' names by number, from the protobuf descriptors (once, at import)."""

def flatten_logs(body: bytes | bytearray, max_attributes: int, max_value_bytes: int) -> Flat:
    """An ExportLogsServiceRequest's rows; ValueError with upb's reason if it does not parse."""

def flatten_metrics(body: bytes | bytearray, max_attributes: int, max_value_bytes: int) -> Flat:
    """An ExportMetricsServiceRequest's rows, as flatten_logs."""

def flatten_spans(body: bytes | bytearray, max_attributes: int, max_value_bytes: int) -> Flat:
    """An ExportTraceServiceRequest's rows, as flatten_logs."""

# (name, JSON name, number, kind, repeated, oneof group or -1, message or enum index or -1)
JsonField = tuple[str, str, int, str, bool, int, int]

def set_json_schema(
    messages: Sequence[Sequence[JsonField]], enums: Sequence[Sequence[tuple[str, int]]]
) -> None:
    """The OTLP messages for the JSON reading (collector.otlpjson.native_schema), once."""

def transcode_json(body: bytes | bytearray, root: int) -> bytes | None:
    """An OTLP/JSON request (message ``root`` of the schema) as protobuf bytes, or None when
    the Python reading is to decide (an error, or a form the core does not check)."""
