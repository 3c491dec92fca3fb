//! ``collector._native``: OTLP protobuf request bytes → the Arrow columns of the otel_* tables,
//! with no Python object per record, attribute or value. The Python package owns the API and
//! the pipeline (collector/flatten/native.py wraps this module); the pure-Python flatteners are
//! the reference this module is tested against, byte for byte.

mod columns;
mod json;
mod logs;
mod metrics;
mod origins;
mod spans;
mod values;
mod wire;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyTuple};
use pyo3::{ffi, IntoPyObjectExt};

use columns::{Counts, Limits, Node, Strings};
use origins::Signal;
use wire::DecodeError;

/// An error the Python flattener raises only once it converts a column: the request decoded,
/// but cannot be stored.
pub enum Deferred {
    /// An attribute or body left undecoded by the request's parse is malformed.
    Malformed(String),
    /// A value does not fit its column (pyarrow's message for the same value).
    OutOfRange(String),
}

impl Deferred {
    pub fn attribute(e: DecodeError) -> Self {
        Deferred::Malformed(format!(
            "an attribute is not a valid OTLP KeyValue: Error parsing message with type \
             'opentelemetry.proto.common.v1.KeyValue': {}",
            e.text()
        ))
    }

    pub fn body(e: DecodeError) -> Self {
        Deferred::Malformed(format!(
            "a log body is not a valid OTLP AnyValue: Error parsing message with type \
             'opentelemetry.proto.common.v1.AnyValue': {}",
            e.text()
        ))
    }
}

/// The first error of each kind, kinds in the order the Python flattener would meet them.
pub struct Errors<const N: usize>([Option<Deferred>; N]);

impl<const N: usize> Default for Errors<N> {
    fn default() -> Self {
        Errors(std::array::from_fn(|_| None))
    }
}

impl<const N: usize> Errors<N> {
    pub fn set(&mut self, kind: usize, e: Deferred) {
        if self.0[kind].is_none() {
            self.0[kind] = Some(e);
        }
    }

    pub fn first(&mut self) -> Option<Deferred> {
        self.0.iter_mut().find_map(Option::take)
    }
}

/// Records that cannot be stored (OTLP partial success) and the reason of the first; ``at``
/// orders them when they are not met in request order.
#[derive(Default)]
pub struct Rejections {
    count: u64,
    /// What was rejected, its name if it has one (Python quotes it), and why.
    first: Option<(&'static str, Option<String>, String)>,
    first_at: usize,
}

impl Rejections {
    pub fn add(&mut self, what: &'static str, reason: &str, at: usize) {
        self.add_named(what, None, reason, at);
    }

    pub fn add_metric(&mut self, name: &str, reason: &str, at: usize) {
        self.add_named("metric", Some(name), reason, at);
    }

    fn add_named(&mut self, what: &'static str, name: Option<&str>, reason: &str, at: usize) {
        self.count += 1;
        if self.first.is_none() || at < self.first_at {
            self.first = Some((what, name.map(str::to_owned), reason.to_owned()));
            self.first_at = at;
        }
    }
}

/// What one request flattened to.
pub struct Flat {
    records: usize,
    columns: Vec<(&'static str, Node)>,
    rejections: Rejections,
    counts: Counts,
    error: Option<Deferred>,
}

impl Flat {
    pub fn new(records: usize, rejections: Rejections, counts: Counts) -> Self {
        Flat {
            records,
            columns: vec![],
            rejections,
            counts,
            error: None,
        }
    }
}

/// A trace or span id as lowercase hex; empty → null (lengths are checked before).
pub fn hex(out: &mut Strings, raw: &[u8]) {
    if raw.is_empty() {
        return out.push_null();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in raw {
        out.data.push(HEX[(b >> 4) as usize]);
        out.data.push(HEX[(b & 15) as usize]);
    }
    out.end_value();
}

/// Why a trace or span id cannot be stored, if it cannot: set, but not of its length.
pub fn id_problem(raw: &[u8], length: usize, what: &str) -> Option<String> {
    (!raw.is_empty() && raw.len() != length)
        .then(|| format!("{what} must be {length} bytes, got {}", raw.len()))
}

/// A uint64 past the LONG range, in pyarrow's words for the same cast.
pub fn out_of_long(v: u64) -> Deferred {
    Deferred::OutOfRange(format!(
        "Integer value {v} not in range: 0 to 9223372036854775807"
    ))
}

/// The names of the OTLP enums the tables hold, by number (unknown numbers are written as
/// their decimal value).
#[derive(Default)]
pub struct Enums {
    pub severity: Vec<Option<String>>,
    pub temporality: Vec<Option<String>>,
    pub span_kind: Vec<Option<String>>,
    pub status_code: Vec<Option<String>>,
}

static ENUMS: OnceLock<Enums> = OnceLock::new();

/// Append the name of enum value ``n`` (or its number) to ``out``.
pub fn enum_name(names: &[Option<String>], n: i32, out: &mut Strings) {
    match usize::try_from(n).ok().and_then(|i| names.get(i)?.as_ref()) {
        Some(name) => out.push(name.as_bytes()),
        None => {
            values::write_int(n as i64, &mut out.data);
            out.end_value();
        }
    }
}

/// The enums' names, from the protobuf descriptors Python has (one source of truth), each a
/// list indexed by number.
#[pyfunction]
fn set_enums(
    severity: Vec<Option<String>>,
    temporality: Vec<Option<String>>,
    span_kind: Vec<Option<String>>,
    status_code: Vec<Option<String>>,
) {
    let _ = ENUMS.set(Enums {
        severity,
        temporality,
        span_kind,
        status_code,
    });
}

fn enums() -> &'static Enums {
    ENUMS.get_or_init(Enums::default)
}

/// The memory of one Arrow buffer, lent to pyarrow through the buffer protocol.
#[pyclass(frozen, module = "collector._native")]
struct Buffer(columns::Buffer);

#[pymethods]
impl Buffer {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let bytes = slf.get().0.bytes();
        let done = ffi::PyBuffer_FillInfo(
            view,
            slf.as_ptr(),
            bytes.as_ptr() as *mut std::os::raw::c_void,
            bytes.len() as ffi::Py_ssize_t,
            1,
            flags,
        );
        if done == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.0.bytes().len()
    }
}

fn node_to_py(py: Python<'_>, node: Node) -> PyResult<PyObject> {
    if node.is_all_null() {
        return (node.len, py.None()).into_py_any(py);
    }
    let buffers = PyList::empty(py);
    for b in node.buffers {
        match b {
            Some(mut b) => {
                b.shrink();
                buffers.append(Bound::new(py, Buffer(b))?)?
            }
            None => buffers.append(py.None())?,
        }
    }
    let children = PyList::empty(py);
    for c in node.children {
        children.append(node_to_py(py, c)?)?;
    }
    (node.len, node.nulls, buffers, children).into_py_any(py)
}

fn body_bytes<'a>(body: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(b) = body.downcast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    if let Ok(b) = body.downcast::<PyByteArray>() {
        // SAFETY: the GIL is held and nothing here runs Python code that could resize it.
        return Ok(unsafe { b.as_bytes() });
    }
    Err(PyValueError::new_err(
        "the body must be bytes or a bytearray",
    ))
}

/// Flatten an ExportLogsServiceRequest. Returns (records, columns, rejected, first rejection,
/// truncated values, dropped attributes, deferred error); a request that does not parse
/// raises ValueError with upb's reason, and so does a panic, which never unwinds into Python.
#[pyfunction]
fn flatten_logs(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    max_attributes: usize,
    max_value_bytes: usize,
) -> PyResult<PyObject> {
    flatten(
        py,
        body,
        max_attributes,
        max_value_bytes,
        |limits, bytes| logs::LogsFlattener::new(limits, &enums().severity).run(bytes),
    )
}

/// Flatten an ExportMetricsServiceRequest, as ``flatten_logs`` does a logs request.
#[pyfunction]
fn flatten_metrics(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    max_attributes: usize,
    max_value_bytes: usize,
) -> PyResult<PyObject> {
    flatten(
        py,
        body,
        max_attributes,
        max_value_bytes,
        |limits, bytes| metrics::MetricsFlattener::new(limits, enums()).run(bytes),
    )
}

/// Flatten an ExportTraceServiceRequest, as ``flatten_logs`` does a logs request.
#[pyfunction]
fn flatten_spans(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    max_attributes: usize,
    max_value_bytes: usize,
) -> PyResult<PyObject> {
    flatten(
        py,
        body,
        max_attributes,
        max_value_bytes,
        |limits, bytes| spans::SpansFlattener::new(limits, enums()).run(bytes),
    )
}

fn flatten(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    max_attributes: usize,
    max_value_bytes: usize,
    run: impl FnOnce(Limits, &[u8]) -> wire::Result<Flat>,
) -> PyResult<PyObject> {
    let bytes = body_bytes(body)?;
    let limits = Limits {
        max_attributes,
        max_value_bytes,
    };
    columns::take_outgrown();
    let mut result = catch_unwind(AssertUnwindSafe(|| run(limits, bytes)));
    if columns::take_outgrown() {
        if let Ok(Ok(flat)) = &mut result {
            flat.columns.clear();
            flat.error = Some(Deferred::OutOfRange(
                "a column of the request's rows would hold more than 2 GiB of strings (Arrow's \
                 limit for one array): send smaller batches"
                    .into(),
            ));
        }
    }
    flat_to_py(py, result)
}

fn flat_to_py(
    py: Python<'_>,
    result: std::thread::Result<wire::Result<Flat>>,
) -> PyResult<PyObject> {
    let flat = match result {
        Ok(Ok(flat)) => flat,
        Ok(Err(e)) => return Err(PyValueError::new_err(e.text())),
        Err(panic) => return Err(panic_error(panic)),
    };
    let error: PyObject = match flat.error {
        None => py.None(),
        Some(Deferred::Malformed(m)) => ("malformed", m).into_py_any(py)?,
        Some(Deferred::OutOfRange(m)) => ("out_of_range", m).into_py_any(py)?,
    };
    let columns = PyList::empty(py);
    for (name, node) in flat.columns {
        columns.append(PyTuple::new(
            py,
            [name.into_py_any(py)?, node_to_py(py, node)?],
        )?)?;
    }
    (
        flat.records,
        columns,
        flat.rejections.count,
        flat.rejections.first,
        flat.counts.truncated,
        flat.counts.dropped,
        error,
    )
        .into_py_any(py)
}

/// A field of the OTLP/JSON reading: (name, JSON name, number, kind, repeated, oneof group or
/// -1, message or enum index or -1).
type JsonField = (String, String, u32, String, bool, i32, i64);

/// The OTLP messages as the JSON reading needs them, from the protobuf descriptors Python has
/// (collector.otlpjson.native_schema); ValueError if the core cannot read them.
#[pyfunction]
fn set_json_schema(messages: Vec<Vec<JsonField>>, enums: Vec<Vec<(String, i32)>>) -> PyResult<()> {
    let mut schema = json::Schema {
        messages: Vec::with_capacity(messages.len()),
        enums,
    };
    for fields in messages {
        let mut message = json::Message { fields: vec![] };
        for (name, json_name, number, kind, repeated, oneof, target) in fields {
            let parsed = json::Kind::parse(&kind, usize::try_from(target).unwrap_or(usize::MAX));
            let kind = parsed.ok_or_else(|| {
                PyValueError::new_err(format!("field {name}: the core reads no {kind} fields"))
            })?;
            message.fields.push(json::Field {
                name,
                json_name,
                number,
                kind,
                repeated,
                oneof: u8::try_from(oneof).ok(),
            });
        }
        schema.messages.push(message);
    }
    json::set_schema(schema).map_err(PyValueError::new_err)
}

/// The OTLP/JSON request in ``body`` (its message is ``root`` of the schema) as protobuf bytes
/// for the flatteners, or None when the Python reading is to decide (an error, or a form this
/// reading does not check).
#[pyfunction]
fn transcode_json(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    root: usize,
) -> PyResult<Option<Py<PyBytes>>> {
    let bytes = body_bytes(body)?;
    match catch_unwind(|| json::transcode(bytes, root)) {
        Ok(Ok(out)) => Ok(Some(PyBytes::new(py, &out).unbind())),
        Ok(Err(json::Defer)) => Ok(None),
        Err(panic) => Err(panic_error(panic)),
    }
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    PyValueError::new_err(format!("the native decoder failed: {what}"))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_enums, m)?)?;
    m.add_function(wrap_pyfunction!(flatten_logs, m)?)?;
    m.add_function(wrap_pyfunction!(flatten_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(flatten_spans, m)?)?;
    m.add_function(wrap_pyfunction!(set_json_schema, m)?)?;
    m.add_function(wrap_pyfunction!(transcode_json, m)?)?;
    m.add_class::<Buffer>()?;
    Ok(())
}
