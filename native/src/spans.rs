//! ExportTraceServiceRequest bytes → the ``otel_spans`` columns: one row per Span, as
//! collector/flatten/spans.py gives them.

use crate::columns::{struct_node, Counts, Limits, Maps, Numbers, Offsets, Strings};
use crate::origins::{dropped_count, key_value, raw_attributes_row, too_large, Origins, Signal};
use crate::wire::{utf8, Fields, Result, Value, MAX_DEPTH};
use crate::{enum_name, hex, id_problem, out_of_long, Deferred, Enums, Errors, Flat, Rejections};

#[derive(Default)]
struct Event<'a> {
    time: u64,
    name: &'a str,
    attributes: Vec<&'a [u8]>,
    dropped: u32,
}

#[derive(Default)]
struct Link<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a str,
    attributes: Vec<&'a [u8]>,
    dropped: u32,
    flags: u32,
}

#[derive(Default)]
struct Span<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a str,
    parent_span_id: &'a [u8],
    flags: u32,
    name: &'a str,
    kind: i32,
    start: u64,
    end: u64,
    attributes: Vec<&'a [u8]>,
    dropped_attributes: u32,
    events: Vec<Event<'a>>,
    dropped_events: u32,
    links: Vec<Link<'a>>,
    dropped_links: u32,
    status_message: &'a str,
    status_code: i32,
}

fn span<'a>(mut f: Fields<'a>, s: &mut Span<'a>) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Len(b)) => s.trace_id = b,
            (2, Value::Len(b)) => s.span_id = b,
            (3, Value::Len(b)) => s.trace_state = utf8(b)?,
            (4, Value::Len(b)) => s.parent_span_id = b,
            (16, Value::Fixed32(x)) => s.flags = x,
            (5, Value::Len(b)) => s.name = utf8(b)?,
            (3 | 5, Value::Overrun(b)) => _ = utf8(b)?,
            (6, Value::Varint(x)) => s.kind = x as i32,
            (7, Value::Fixed64(x)) => s.start = x,
            (8, Value::Fixed64(x)) => s.end = x,
            (9, Value::Len(b)) => s.attributes.push(b),
            (10, Value::Varint(x)) => s.dropped_attributes = x as u32,
            (11, Value::Len(b)) => {
                let mut e = Event::default();
                let mut g = f.child(b)?;
                while let Some((n, v)) = g.next()? {
                    match (n, v) {
                        (1, Value::Fixed64(x)) => e.time = x,
                        (2, Value::Len(b)) => e.name = utf8(b)?,
                        (2, Value::Overrun(b)) => _ = utf8(b)?,
                        (3, Value::Len(b)) => e.attributes.push(b),
                        (4, Value::Varint(x)) => e.dropped = x as u32,
                        _ => {}
                    }
                }
                s.events.push(e);
            }
            (12, Value::Varint(x)) => s.dropped_events = x as u32,
            (13, Value::Len(b)) => {
                let mut l = Link::default();
                let mut g = f.child(b)?;
                while let Some((n, v)) = g.next()? {
                    match (n, v) {
                        (1, Value::Len(b)) => l.trace_id = b,
                        (2, Value::Len(b)) => l.span_id = b,
                        (3, Value::Len(b)) => l.trace_state = utf8(b)?,
                        (3, Value::Overrun(b)) => _ = utf8(b)?,
                        (4, Value::Len(b)) => l.attributes.push(b),
                        (5, Value::Varint(x)) => l.dropped = x as u32,
                        (6, Value::Fixed32(x)) => l.flags = x,
                        _ => {}
                    }
                }
                s.links.push(l);
            }
            (14, Value::Varint(x)) => s.dropped_links = x as u32,
            (15, Value::Len(b)) => {
                // A singular message: its occurrences merge.
                let mut g = f.child(b)?;
                while let Some((n, v)) = g.next()? {
                    match (n, v) {
                        (2, Value::Len(b)) => s.status_message = utf8(b)?,
                        (2, Value::Overrun(b)) => _ = utf8(b)?,
                        (3, Value::Varint(x)) => s.status_code = x as i32,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[derive(Default)]
struct Rows {
    trace_id: Strings,
    span_id: Strings,
    trace_state: Strings,
    parent_span_id: Strings,
    flags: Numbers<i32>,
    name: Strings,
    kind: Strings,
    start: Numbers<i64>,
    end: Numbers<i64>,
    attributes: Maps,
    dropped: Numbers<i32>,
    events: Offsets,
    event_time: Numbers<i64>,
    event_name: Strings,
    event_attributes: Maps,
    event_dropped: Numbers<i32>,
    dropped_events: Numbers<i32>,
    links: Offsets,
    link_trace_id: Strings,
    link_span_id: Strings,
    link_trace_state: Strings,
    link_attributes: Maps,
    link_dropped: Numbers<i32>,
    link_flags: Numbers<i32>,
    dropped_links: Numbers<i32>,
    status_message: Strings,
    status_code: Strings,
}

// Errors in the order the Python flattener meets them: a rejected span's attributes while it
// reads the spans; then the origins; then the columns, each struct's attributes first.
const REJECTED: usize = 0;
const ORIGINS: usize = 1;
const ATTRIBUTES: usize = 2;
const START: usize = 3;
const END: usize = 4;
const DROPPED: usize = 5;
const EVENT_ATTRIBUTES: usize = 6;
const EVENT_TIME: usize = 7;
const EVENT_DROPPED: usize = 8;
const LINK_ATTRIBUTES: usize = 9;
const LINK_DROPPED: usize = 10;

pub struct SpansFlattener<'e, 'a> {
    pending: Vec<Span<'a>>, // the spans of the ScopeSpans being read
    limits: Limits,
    enums: &'e Enums,
    rows: Rows,
    origins: Origins,
    counts: Counts,
    rejections: Rejections,
    errors: Errors<11>,
    records: usize,
    overflow: [Option<u64>; 3],
}

impl<'e, 'a> SpansFlattener<'e, 'a> {
    pub fn new(limits: Limits, enums: &'e Enums) -> Self {
        SpansFlattener {
            pending: Vec::new(),
            limits,
            enums,
            rows: Rows::default(),
            origins: Origins::new(limits),
            counts: Counts::default(),
            rejections: Rejections::default(),
            errors: Errors::default(),
            records: 0,
            overflow: [None; 3],
        }
    }
}

impl<'a> Signal<'a> for SpansFlattener<'_, 'a> {
    fn finish(self) -> Flat {
        self.into_flat()
    }

    fn origins(&mut self) -> (&mut Origins, &mut Counts) {
        (&mut self.origins, &mut self.counts)
    }

    fn item(&mut self, f: Fields<'a>) -> Result<()> {
        let mut s = Span::default();
        span(f, &mut s)?;
        self.pending.push(s);
        Ok(())
    }

    fn end_scope(&mut self) -> usize {
        let spans = std::mem::take(&mut self.pending);
        self.records += spans.len();
        let mut kept = 0;
        for s in &spans {
            let problem = id_problem(s.trace_id, 16, "trace_id")
                .or_else(|| id_problem(s.span_id, 8, "span_id"))
                .or_else(|| id_problem(s.parent_span_id, 8, "parent_span_id"))
                .or_else(|| {
                    s.links.iter().find_map(|l| {
                        id_problem(l.trace_id, 16, "link trace_id")
                            .or_else(|| id_problem(l.span_id, 8, "link span_id"))
                    })
                });
            match problem {
                Some(reason) => {
                    self.rejections.add("span", &reason, 0);
                    self.check_rejected(s);
                }
                None => {
                    self.add(s);
                    kept += 1;
                }
            }
        }
        self.pending = spans;
        self.pending.clear();
        kept
    }
}

impl SpansFlattener<'_, '_> {
    fn check_rejected(&mut self, s: &Span<'_>) {
        let raw = s
            .attributes
            .iter()
            .chain(s.events.iter().flat_map(|e| &e.attributes))
            .chain(s.links.iter().flat_map(|l| &l.attributes));
        for kv in raw {
            if let Err(e) = key_value(Fields::new(kv, MAX_DEPTH)) {
                return self.errors.set(REJECTED, Deferred::attribute(e));
            }
        }
    }

    fn long(&mut self, slot: usize, v: u64) -> i64 {
        if v > i64::MAX as u64 {
            self.errors.set(slot, out_of_long(v));
        }
        v as i64
    }

    /// Decode and append one row of attributes; what the limit dropped of it.
    fn attributes(&mut self, slot: usize, raw: &[&[u8]], maps: fn(&mut Rows) -> &mut Maps) -> u64 {
        let (extra, error) =
            raw_attributes_row(maps(&mut self.rows), raw, &self.limits, &mut self.counts);
        if let Some(e) = error {
            self.errors.set(slot, Deferred::attribute(e));
        }
        extra
    }

    fn add(&mut self, s: &Span<'_>) {
        let start = self.long(START, s.start);
        let end = self.long(END, s.end);
        let extra = self.attributes(ATTRIBUTES, &s.attributes, |r| &mut r.attributes);
        let dropped = dropped_count(s.dropped_attributes as u64 + extra, &mut self.overflow[0]);
        for e in &s.events {
            let time = self.long(EVENT_TIME, e.time);
            let extra =
                self.attributes(EVENT_ATTRIBUTES, &e.attributes, |r| &mut r.event_attributes);
            let d = dropped_count(e.dropped as u64 + extra, &mut self.overflow[1]);
            let r = &mut self.rows;
            r.event_time.push(time);
            r.event_name.push(e.name.as_bytes());
            r.event_dropped.push(d);
        }
        for l in &s.links {
            let extra = self.attributes(LINK_ATTRIBUTES, &l.attributes, |r| &mut r.link_attributes);
            let d = dropped_count(l.dropped as u64 + extra, &mut self.overflow[2]);
            let r = &mut self.rows;
            hex(&mut r.link_trace_id, l.trace_id);
            hex(&mut r.link_span_id, l.span_id);
            r.link_trace_state.push(l.trace_state.as_bytes());
            r.link_dropped.push(d);
            r.link_flags.push(l.flags as i32);
        }
        let r = &mut self.rows;
        hex(&mut r.trace_id, s.trace_id);
        hex(&mut r.span_id, s.span_id);
        r.trace_state.push(s.trace_state.as_bytes());
        hex(&mut r.parent_span_id, s.parent_span_id);
        r.flags.push(s.flags as i32);
        r.name.push(s.name.as_bytes());
        enum_name(&self.enums.span_kind, s.kind, &mut r.kind);
        r.start.push(start);
        r.end.push(end);
        r.dropped.push(dropped);
        r.events.end_row(r.event_time.values.len());
        r.dropped_events.push(s.dropped_events as i32);
        r.links.end_row(r.link_flags.values.len());
        r.dropped_links.push(s.dropped_links as i32);
        r.status_message.push(s.status_message.as_bytes());
        enum_name(&self.enums.status_code, s.status_code, &mut r.status_code);
    }

    fn into_flat(mut self) -> Flat {
        for (value, slot) in self
            .overflow
            .into_iter()
            .zip([DROPPED, EVENT_DROPPED, LINK_DROPPED])
        {
            if let Some(v) = value {
                self.errors.set(slot, too_large(v));
            }
        }
        let origins = match self.origins.finish() {
            Ok(nodes) => Some(nodes),
            Err(e) => {
                self.errors.set(ORIGINS, e);
                None
            }
        };
        let mut flat = Flat::new(self.records, self.rejections, self.counts);
        if let Some(e) = self.errors.first() {
            flat.error = Some(e);
            return flat;
        }
        let [resource, resource_url, scope, scope_url] = origins.unwrap();
        let r = self.rows;
        let events = struct_node(
            r.event_time.values.len(),
            None,
            vec![
                r.event_time.node(),
                r.event_name.node(),
                r.event_attributes.node(),
                r.event_dropped.node(),
            ],
        );
        let links = struct_node(
            r.link_flags.values.len(),
            None,
            vec![
                r.link_trace_id.node(),
                r.link_span_id.node(),
                r.link_trace_state.node(),
                r.link_attributes.node(),
                r.link_dropped.node(),
                r.link_flags.node(),
            ],
        );
        let n = r.name.len();
        flat.columns = vec![
            ("trace_id", r.trace_id.node()),
            ("span_id", r.span_id.node()),
            ("trace_state", r.trace_state.node()),
            ("parent_span_id", r.parent_span_id.node()),
            ("flags", r.flags.node()),
            ("name", r.name.node()),
            ("kind", r.kind.node()),
            ("start_time_unix_nano", r.start.node()),
            ("end_time_unix_nano", r.end.node()),
            ("attributes", r.attributes.node()),
            ("dropped_attributes_count", r.dropped.node()),
            ("events", r.events.node(events)),
            ("dropped_events_count", r.dropped_events.node()),
            ("links", r.links.node(links)),
            ("dropped_links_count", r.dropped_links.node()),
            (
                "status",
                struct_node(n, None, vec![r.status_message.node(), r.status_code.node()]),
            ),
            ("resource", resource),
            ("resource_schema_url", resource_url),
            ("instrumentation_scope", scope),
            ("span_schema_url", scope_url),
        ];
        flat
    }
}
