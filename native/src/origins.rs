//! The resource and scope of each row: parsed and converted once per ResourceX / ScopeX (agents
//! send one or two per request), then repeated on the rows that came from them.

use crate::columns::{struct_node, Counts, Limits, Maps, Node, Numbers, Strings};
use crate::values::{merge_key_value, plain_key_value, Any};
use crate::wire::{utf8, DecodeError, Fields, Result, Value, MAX_DEPTH};
use crate::{Deferred, Flat};

/// A Resource message, merged over its occurrences.
#[derive(Default)]
pub struct Resource<'a> {
    pub attributes: Vec<(&'a str, Any<'a>)>,
    pub dropped: u32,
}

impl<'a> Resource<'a> {
    pub fn merge(&mut self, mut f: Fields<'a>) -> Result<()> {
        while let Some((field, v)) = f.next()? {
            match (field, v) {
                (1, Value::Len(b)) => self.attributes.push(key_value(f.child(b)?)?),
                (2, Value::Varint(x)) => self.dropped = x as u32,
                (3, Value::Len(b)) => entity_ref(f.child(b)?)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// An InstrumentationScope message, merged over its occurrences.
#[derive(Default)]
pub struct Scope<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub attributes: Vec<(&'a str, Any<'a>)>,
    pub dropped: u32,
}

impl<'a> Scope<'a> {
    pub fn merge(&mut self, mut f: Fields<'a>) -> Result<()> {
        while let Some((field, v)) = f.next()? {
            match (field, v) {
                (1, Value::Len(b)) => self.name = utf8(b)?,
                (2, Value::Len(b)) => self.version = utf8(b)?,
                (1 | 2, Value::Overrun(b)) => _ = utf8(b)?,
                (3, Value::Len(b)) => self.attributes.push(key_value(f.child(b)?)?),
                (4, Value::Varint(x)) => self.dropped = x as u32,
                _ => {}
            }
        }
        Ok(())
    }
}

pub fn key_value(f: Fields<'_>) -> Result<(&str, Any<'_>)> {
    let mut key = "";
    let mut value = Any::Unset;
    merge_key_value(f, &mut key, &mut value)?;
    Ok((key, value))
}

/// An EntityRef: nothing of it is stored, but its strings must be UTF-8 all the same.
fn entity_ref(mut f: Fields<'_>) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        if let (1..=4, Value::Len(b) | Value::Overrun(b)) = (field, v) {
            utf8(b)?;
        }
    }
    Ok(())
}

/// Append one row of attributes to ``maps`` under the limits; what the limit dropped from it.
pub fn attributes_row<'a>(
    maps: &mut Maps,
    attributes: impl IntoIterator<Item = &'a (&'a str, Any<'a>)>,
    limits: &Limits,
    counts: &mut Counts,
) -> u64 {
    let first = maps.entries();
    let mut n = 0usize;
    for (k, v) in attributes {
        if n < limits.max_attributes {
            maps.push(k, v, limits, counts);
        }
        n += 1;
    }
    maps.end_row(first);
    let extra = n.saturating_sub(limits.max_attributes) as u64;
    counts.dropped += extra;
    extra
}

/// Decode raw KeyValues (left undecoded by the request's parse) and append them as one row of
/// attributes under the limits: what the limit dropped, and the first KeyValue that does not
/// decode, if one does not (the row then holds those before it; the request fails anyway).
pub fn raw_attributes_row(
    maps: &mut Maps,
    raw: &[&[u8]],
    limits: &Limits,
    counts: &mut Counts,
) -> (u64, Option<DecodeError>) {
    let first = maps.entries();
    let mut error = None;
    for (n, kv) in raw.iter().enumerate() {
        let decoded = match plain_key_value(kv) {
            Some(pair) => Ok(pair),
            None => key_value(Fields::new(kv, MAX_DEPTH)),
        };
        match decoded {
            Ok((k, v)) if n < limits.max_attributes => maps.push(k, &v, limits, counts),
            Ok(_) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    maps.end_row(first);
    let extra = raw.len().saturating_sub(limits.max_attributes) as u64;
    counts.dropped += extra;
    (extra, error)
}

/// A ``dropped_attributes_count`` (with what the limit dropped) as the INT column holds it: a
/// uint32 past 2^31 reads as negative; past 2^32 it does not fit.
pub fn dropped_count(total: u64, first_overflow: &mut Option<u64>) -> i32 {
    if total > u32::MAX as u64 && first_overflow.is_none() {
        *first_overflow = Some(total);
    }
    total as u32 as i32
}

pub fn too_large(value: u64) -> Deferred {
    Deferred::OutOfRange(format!("Value {value} too large to fit in C integer type"))
}

/// The resources and scopes of a request, and which of them each row came from.
pub struct Origins {
    limits: Limits,
    resource_attributes: Maps,
    resource_dropped: Vec<u64>,
    resource_urls: Vec<Vec<u8>>,
    scope_names: Vec<Vec<u8>>,
    scope_versions: Vec<Vec<u8>>,
    scope_attributes: Maps,
    scope_dropped: Vec<u64>,
    scope_urls: Vec<Vec<u8>>,
    rows: Vec<(u32, u32)>,
}

impl Origins {
    pub fn new(limits: Limits) -> Self {
        Origins {
            limits,
            resource_attributes: Maps::default(),
            resource_dropped: vec![],
            resource_urls: vec![],
            scope_names: vec![],
            scope_versions: vec![],
            scope_attributes: Maps::default(),
            scope_dropped: vec![],
            scope_urls: vec![],
            rows: vec![],
        }
    }

    /// The index the next resource will have.
    pub fn next_resource(&self) -> u32 {
        self.resource_urls.len() as u32
    }

    pub fn next_scope(&self) -> u32 {
        self.scope_urls.len() as u32
    }

    pub fn add_resource(&mut self, r: &Resource<'_>, schema_url: &str, counts: &mut Counts) {
        let extra = attributes_row(
            &mut self.resource_attributes,
            &r.attributes,
            &self.limits,
            counts,
        );
        self.resource_dropped.push(r.dropped as u64 + extra);
        self.resource_urls.push(schema_url.as_bytes().to_vec());
    }

    pub fn add_scope(&mut self, s: &Scope<'_>, schema_url: &str, counts: &mut Counts) {
        let extra = attributes_row(
            &mut self.scope_attributes,
            &s.attributes,
            &self.limits,
            counts,
        );
        self.scope_names.push(s.name.as_bytes().to_vec());
        self.scope_versions.push(s.version.as_bytes().to_vec());
        self.scope_dropped.push(s.dropped as u64 + extra);
        self.scope_urls.push(schema_url.as_bytes().to_vec());
    }

    /// The next ``n`` rows came from this resource and scope.
    pub fn repeat(&mut self, resource: u32, scope: u32, n: usize) {
        self.rows.extend(std::iter::repeat_n((resource, scope), n));
    }

    /// The columns resource, its schema URL, instrumentation_scope and its schema URL; or the
    /// first count that does not fit (resources first, as they are built first).
    pub fn finish(self) -> std::result::Result<[Node; 4], Deferred> {
        for d in self.resource_dropped.iter().chain(&self.scope_dropped) {
            if *d > u32::MAX as u64 {
                return Err(too_large(*d));
            }
        }
        let mut r_attrs = Maps::default();
        let mut r_dropped = Numbers::<i32>::default();
        let mut r_urls = Strings::default();
        let mut s_names = Strings::default();
        let mut s_versions = Strings::default();
        let mut s_attrs = Maps::default();
        let mut s_dropped = Numbers::<i32>::default();
        let mut s_urls = Strings::default();
        let ra = &self.resource_attributes;
        let sa = &self.scope_attributes;
        for &(r, s) in &self.rows {
            let (r, s) = (r as usize, s as usize);
            r_attrs.copy_row(ra, r);
            r_dropped.push(self.resource_dropped[r] as u32 as i32);
            r_urls.push(&self.resource_urls[r]);
            s_names.push(&self.scope_names[s]);
            s_versions.push(&self.scope_versions[s]);
            s_attrs.copy_row(sa, s);
            s_dropped.push(self.scope_dropped[s] as u32 as i32);
            s_urls.push(&self.scope_urls[s]);
        }
        let n = self.rows.len();
        Ok([
            struct_node(n, None, vec![r_attrs.node(), r_dropped.node()]),
            r_urls.node(),
            struct_node(
                n,
                None,
                vec![
                    s_names.node(),
                    s_versions.node(),
                    s_attrs.node(),
                    s_dropped.node(),
                ],
            ),
            s_urls.node(),
        ])
    }
}

/// What differs between the signals in walking an Export*ServiceRequest: the items of a ScopeX
/// (its field 2: log records, metrics or spans) and what rows they make.
pub trait Signal<'a> {
    fn origins(&mut self) -> (&mut Origins, &mut Counts);
    /// Parse one item of the ScopeX being read (kept until the ScopeX ends: its scope may come
    /// after its items).
    fn item(&mut self, f: Fields<'a>) -> Result<()>;
    /// The ScopeX is read: add the rows of its items; how many rows they made.
    fn end_scope(&mut self) -> usize;
    /// The request is read: its columns, or the first error.
    fn finish(self) -> Flat;

    /// Flatten a whole request.
    fn run(mut self, body: &'a [u8]) -> Result<Flat>
    where
        Self: Sized,
    {
        walk(&mut self, body)?;
        Ok(self.finish())
    }
}

/// Walk a request: each ResourceX (field 1) has a resource (1), ScopeXs (2) and a schema URL
/// (3); each ScopeX a scope (1), items (2) and a schema URL (3). Its rows come from both.
pub fn walk<'a>(signal: &mut impl Signal<'a>, body: &'a [u8]) -> Result<()> {
    let mut f = Fields::new(body, MAX_DEPTH);
    while let Some((field, v)) = f.next()? {
        if let (1, Value::Len(b)) = (field, v) {
            resource_x(signal, f.child(b)?)?;
        }
    }
    Ok(())
}

fn resource_x<'a>(signal: &mut impl Signal<'a>, mut f: Fields<'a>) -> Result<()> {
    let r_i = signal.origins().0.next_resource();
    let mut resource = Resource::default();
    let mut url = "";
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Len(b)) => resource.merge(f.child(b)?)?,
            (2, Value::Len(b)) => scope_x(signal, f.child(b)?, r_i)?,
            (3, Value::Len(b)) => url = utf8(b)?,
            (3, Value::Overrun(b)) => _ = utf8(b)?,
            _ => {}
        }
    }
    let (origins, counts) = signal.origins();
    origins.add_resource(&resource, url, counts);
    Ok(())
}

fn scope_x<'a>(signal: &mut impl Signal<'a>, mut f: Fields<'a>, r_i: u32) -> Result<()> {
    let s_i = signal.origins().0.next_scope();
    let mut scope = Scope::default();
    let mut url = "";
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Len(b)) => scope.merge(f.child(b)?)?,
            (2, Value::Len(b)) => signal.item(f.child(b)?)?,
            (3, Value::Len(b)) => url = utf8(b)?,
            (3, Value::Overrun(b)) => _ = utf8(b)?,
            _ => {}
        }
    }
    let (origins, counts) = signal.origins();
    origins.add_scope(&scope, url, counts);
    let rows = signal.end_scope();
    signal.origins().0.repeat(r_i, s_i, rows);
    Ok(())
}
