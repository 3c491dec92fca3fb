//! ExportLogsServiceRequest bytes → the ``otel_logs`` columns: one row per LogRecord, in the
//! order and with the values collector/flatten/logs.py gives.

use crate::columns::{Counts, Limits, Maps, Numbers, Strings};
use crate::origins::{dropped_count, key_value, raw_attributes_row, too_large, Origins, Signal};
use crate::values::{merge_any, write_str, Any};
use crate::wire::{utf8, DecodeError, Fields, Result, Value, MAX_DEPTH};
use crate::{hex, id_problem, out_of_long, Deferred, Errors, Flat, Rejections};

#[derive(Default, Clone)]
struct Record<'a> {
    time: u64,
    observed: u64,
    severity: i32,
    severity_text: &'a str,
    body: Option<&'a [u8]>,
    more_bodies: Vec<&'a [u8]>, // a body sent in several occurrences (rare)
    attributes: (usize, usize), // a range of the scope's raw attributes
    dropped: u32,
    flags: u32,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    event_name: &'a str,
}

fn record<'a>(mut f: Fields<'a>, r: &mut Record<'a>, raw: &mut Vec<&'a [u8]>) -> Result<()> {
    r.attributes.0 = raw.len();
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Fixed64(x)) => r.time = x,
            (11, Value::Fixed64(x)) => r.observed = x,
            (2, Value::Varint(x)) => r.severity = x as i32,
            (3, Value::Len(b)) => r.severity_text = utf8(b)?,
            (3 | 12, Value::Overrun(b)) => _ = utf8(b)?,
            // Attributes and body are checked when converted (collector/wire.py leaves them
            // undecoded too): their errors are the flattener's, not the request's.
            (5, Value::Len(b)) if r.body.is_none() => r.body = Some(b),
            (5, Value::Len(b)) => r.more_bodies.push(b),
            (6, Value::Len(b)) => raw.push(b),
            (7, Value::Varint(x)) => r.dropped = x as u32,
            (8, Value::Fixed32(x)) => r.flags = x,
            (9, Value::Len(b)) => r.trace_id = b,
            (10, Value::Len(b)) => r.span_id = b,
            (12, Value::Len(b)) => r.event_name = utf8(b)?,
            _ => {}
        }
    }
    r.attributes.1 = raw.len();
    Ok(())
}

impl<'a> Record<'a> {
    fn bodies(&self) -> Vec<&'a [u8]> {
        self.body
            .iter()
            .copied()
            .chain(self.more_bodies.iter().copied())
            .collect()
    }
}

/// The columns of the table, in the order of otel_logs.sql.
#[derive(Default)]
struct Rows {
    event_name: Strings,
    trace_id: Strings,
    span_id: Strings,
    time: Numbers<i64>,
    observed: Numbers<i64>,
    severity_number: Strings,
    severity_text: Strings,
    body: Strings,
    attributes: Maps,
    dropped: Numbers<i32>,
    flags: Numbers<i32>,
}

// Errors found while flattening, in the order the Python flattener meets them.
const REJECTED: usize = 0; // attributes and body of a record rejected for its ids
const BODY: usize = 1;
const ORIGINS: usize = 2;
const ATTRIBUTES: usize = 3;
const TIME: usize = 4;
const OBSERVED: usize = 5;
const DROPPED: usize = 6;

pub struct LogsFlattener<'e, 'a> {
    pending: Vec<Record<'a>>, // the records of the ScopeLogs being read
    raw: Vec<&'a [u8]>,       // and their attributes
    limits: Limits,
    severities: &'e [Option<String>],
    rows: Rows,
    origins: Origins,
    counts: Counts,
    rejections: Rejections,
    errors: Errors<7>,
    records: usize,
    dropped_overflow: Option<u64>,
}

impl<'e, 'a> LogsFlattener<'e, 'a> {
    pub fn new(limits: Limits, severities: &'e [Option<String>]) -> Self {
        LogsFlattener {
            pending: Vec::new(),
            raw: Vec::new(),
            limits,
            severities,
            rows: Rows::default(),
            origins: Origins::new(limits),
            counts: Counts::default(),
            rejections: Rejections::default(),
            errors: Errors::default(),
            records: 0,
            dropped_overflow: None,
        }
    }
}

impl<'a> Signal<'a> for LogsFlattener<'_, 'a> {
    fn finish(self) -> Flat {
        self.into_flat()
    }

    fn origins(&mut self) -> (&mut Origins, &mut Counts) {
        (&mut self.origins, &mut self.counts)
    }

    fn item(&mut self, f: Fields<'a>) -> Result<()> {
        let mut r = Record::default();
        record(f, &mut r, &mut self.raw)?;
        self.pending.push(r);
        Ok(())
    }

    fn end_scope(&mut self) -> usize {
        let records = std::mem::take(&mut self.pending);
        let raw = std::mem::take(&mut self.raw);
        self.records += records.len();
        let mut kept = 0;
        for r in &records {
            let bad = id_problem(r.trace_id, 16, "trace_id")
                .or_else(|| id_problem(r.span_id, 8, "span_id"));
            match bad {
                Some(reason) => {
                    self.rejections.add("log record", &reason, 0);
                    self.check_rejected(r, &raw[r.attributes.0..r.attributes.1]);
                }
                None => {
                    self.add(r, &raw[r.attributes.0..r.attributes.1]);
                    kept += 1;
                }
            }
        }
        self.pending = records;
        self.pending.clear();
        self.raw = raw;
        self.raw.clear();
        kept
    }
}

impl LogsFlattener<'_, '_> {
    /// A rejected record's attributes and body must decode all the same: a malformed one fails
    /// the request, as a full parse would have.
    fn check_rejected(&mut self, r: &Record<'_>, attributes: &[&[u8]]) {
        for kv in attributes {
            if let Err(e) = key_value(Fields::new(kv, MAX_DEPTH)) {
                return self.errors.set(REJECTED, Deferred::attribute(e));
            }
        }
        if let Err(e) = body_text(r, &mut Vec::new()) {
            self.errors.set(REJECTED, Deferred::body(e));
        }
    }

    fn add(&mut self, r: &Record<'_>, attributes: &[&[u8]]) {
        let rows = &mut self.rows;
        let limits = &self.limits;
        rows.event_name
            .push_opt((!r.event_name.is_empty()).then_some(r.event_name.as_bytes()));
        hex(&mut rows.trace_id, r.trace_id);
        hex(&mut rows.span_id, r.span_id);
        if r.time > i64::MAX as u64 {
            self.errors.set(TIME, out_of_long(r.time));
        }
        rows.time.push(r.time as i64);
        if r.observed > i64::MAX as u64 {
            self.errors.set(OBSERVED, out_of_long(r.observed));
        }
        rows.observed.push(r.observed as i64);
        match usize::try_from(r.severity)
            .ok()
            .and_then(|i| self.severities.get(i)?.as_ref())
        {
            Some(name) => rows.severity_number.push(name.as_bytes()),
            None => {
                let s = &mut rows.severity_number;
                crate::values::write_int(r.severity as i64, &mut s.data);
                s.end_value();
            }
        }
        rows.severity_text.push(r.severity_text.as_bytes());
        let s = &mut rows.body;
        let start = s.value_start();
        match body_text(r, &mut s.data) {
            Ok(true) => {
                self.counts.truncated += limits.clip(&mut s.data, start) as u64;
                s.end_value();
            }
            Ok(false) => s.push_null(),
            Err(e) => {
                self.errors.set(BODY, Deferred::body(e));
                s.data.truncate(start);
                s.push_null();
            }
        }
        let (extra, error) =
            raw_attributes_row(&mut rows.attributes, attributes, limits, &mut self.counts);
        if let Some(e) = error {
            self.errors.set(ATTRIBUTES, Deferred::attribute(e));
        }
        rows.dropped.push(dropped_count(
            r.dropped as u64 + extra,
            &mut self.dropped_overflow,
        ));
        rows.flags.push(r.flags as i32);
    }

    fn into_flat(mut self) -> Flat {
        if let Some(v) = self.dropped_overflow {
            self.errors.set(DROPPED, too_large(v));
        }
        let origins = match self.origins.finish() {
            Ok(nodes) => Some(nodes),
            Err(e) => {
                self.errors.set(ORIGINS, e);
                None
            }
        };
        let rows = self.rows;
        let mut flat = Flat::new(self.records, self.rejections, self.counts);
        if let Some(e) = self.errors.first() {
            flat.error = Some(e);
            return flat;
        }
        let [resource, resource_url, scope, scope_url] = origins.unwrap();
        flat.columns = vec![
            ("event_name", rows.event_name.node()),
            ("trace_id", rows.trace_id.node()),
            ("span_id", rows.span_id.node()),
            ("time_unix_nano", rows.time.node()),
            ("observed_time_unix_nano", rows.observed.node()),
            ("severity_number", rows.severity_number.node()),
            ("severity_text", rows.severity_text.node()),
            ("body", rows.body.node()),
            ("attributes", rows.attributes.node()),
            ("dropped_attributes_count", rows.dropped.node()),
            ("flags", rows.flags.node()),
            ("resource", resource),
            ("resource_schema_url", resource_url),
            ("instrumentation_scope", scope),
            ("log_schema_url", scope_url),
        ];
        flat
    }
}

/// A record's body, as the STRING it is stored as, appended to ``out``; false if it holds no
/// value. Its occurrences merge, as their concatenated bytes do.
fn body_text(r: &Record<'_>, out: &mut Vec<u8>) -> std::result::Result<bool, DecodeError> {
    let mut v = Any::Unset;
    let joined;
    match (r.body, r.more_bodies.is_empty()) {
        (None, _) => {}
        (Some(one), true) => merge_any(Fields::new(one, MAX_DEPTH), &mut v)?,
        _ => {
            joined = r.bodies().concat();
            merge_any(Fields::new(&joined, MAX_DEPTH), &mut v)?;
        }
    }
    if v.is_set() {
        write_str(&v, out);
    }
    Ok(v.is_set())
}
