//! ExportMetricsServiceRequest bytes → the ``otel_metrics`` columns: one row per data point,
//! metric by metric, with the point in the struct column of its type and the other four null,
//! exactly as collector/flatten/metrics.py lays them out.

use crate::columns::{struct_node, Bools, Counts, Limits, Maps, Node, Numbers, Offsets, Strings};
use crate::origins::{attributes_row, key_value, raw_attributes_row, Origins, Signal};
use crate::values::Any;
use crate::wire::{packed_varints, utf8, Fields, Result, Value, MAX_DEPTH};
use crate::{enum_name, hex, out_of_long, Deferred, Enums, Errors, Flat, Rejections};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Gauge,
    Sum,
    Histogram,
    Exponential,
    Summary,
}

const KINDS: [Kind; 5] = [
    Kind::Gauge,
    Kind::Sum,
    Kind::Histogram,
    Kind::Exponential,
    Kind::Summary,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Sum => "sum",
            Kind::Histogram => "histogram",
            Kind::Exponential => "exponential_histogram",
            Kind::Summary => "summary",
        }
    }
}

#[derive(Default)]
struct Exemplar<'a> {
    time: u64,
    value: Option<f64>,
    span_id: &'a [u8],
    trace_id: &'a [u8],
    attributes: Vec<&'a [u8]>,
}

#[derive(Default)]
struct Buckets {
    offset: i32,
    counts: Vec<u64>,
}

/// A data point of any type: the fields its type has are set.
#[derive(Default)]
struct Point<'a> {
    attributes: Vec<&'a [u8]>,
    start: u64,
    time: u64,
    flags: u32,
    exemplars: Vec<Exemplar<'a>>,
    value: Option<f64>,
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    packed_buckets: Vec<&'a [u8]>,
    unpacked_buckets: Vec<u64>,
    packed_bounds: Vec<&'a [u8]>,
    unpacked_bounds: Vec<u64>,
    scale: i32,
    zero_count: u64,
    positive: Buckets,
    negative: Buckets,
    zero_threshold: f64,
    quantiles: Vec<(f64, f64)>,
}

struct Data<'a> {
    kind: Kind,
    points: Vec<Point<'a>>,
    temporality: i32,
    monotonic: bool,
}

#[derive(Default)]
struct Metric<'a> {
    name: &'a str,
    description: &'a str,
    unit: &'a str,
    metadata: Vec<(&'a str, Any<'a>)>,
    data: Option<Data<'a>>,
}

fn zigzag32(x: u64) -> i32 {
    let n = x as u32;
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

fn exemplar<'a>(mut f: Fields<'a>, e: &mut Exemplar<'a>) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (7, Value::Len(b)) => e.attributes.push(b),
            (2, Value::Fixed64(x)) => e.time = x,
            (3, Value::Fixed64(x)) => e.value = Some(f64::from_bits(x)),
            (6, Value::Fixed64(x)) => e.value = Some(x as i64 as f64),
            (4, Value::Len(b)) => e.span_id = b,
            (5, Value::Len(b)) => e.trace_id = b,
            _ => {}
        }
    }
    Ok(())
}

fn buckets(mut f: Fields<'_>, b: &mut Buckets) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Varint(x)) => b.offset = zigzag32(x),
            (2, Value::Varint(x)) => b.counts.push(x),
            (2, Value::Len(run)) => packed_varints(run, &mut b.counts)?,
            _ => {}
        }
    }
    Ok(())
}

/// Parse one data point of ``kind`` into ``p`` (the fields every type shares, then its own).
fn point<'a>(mut f: Fields<'a>, kind: Kind, p: &mut Point<'a>) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (kind, field, v) {
            (Kind::Exponential, 1, Value::Len(b))
            | (Kind::Histogram, 9, Value::Len(b))
            | (Kind::Gauge | Kind::Sum | Kind::Summary, 7, Value::Len(b)) => p.attributes.push(b),
            (_, 2, Value::Fixed64(x)) => p.start = x,
            (_, 3, Value::Fixed64(x)) => p.time = x,
            (Kind::Gauge | Kind::Sum, 4, Value::Fixed64(x)) => p.value = Some(f64::from_bits(x)),
            (Kind::Gauge | Kind::Sum, 6, Value::Fixed64(x)) => p.value = Some(x as i64 as f64),
            (Kind::Gauge | Kind::Sum, 5, Value::Len(b))
            | (Kind::Histogram, 8, Value::Len(b))
            | (Kind::Exponential, 11, Value::Len(b)) => {
                let mut e = Exemplar::default();
                exemplar(f.child(b)?, &mut e)?;
                p.exemplars.push(e);
            }
            (Kind::Gauge | Kind::Sum | Kind::Summary, 8, Value::Varint(x))
            | (Kind::Histogram | Kind::Exponential, 10, Value::Varint(x)) => p.flags = x as u32,
            (Kind::Histogram | Kind::Exponential | Kind::Summary, 4, Value::Fixed64(x)) => {
                p.count = x
            }
            (Kind::Histogram | Kind::Exponential, 5, Value::Fixed64(x)) => {
                p.sum = Some(f64::from_bits(x))
            }
            (Kind::Summary, 5, Value::Fixed64(x)) => p.sum = Some(f64::from_bits(x)),
            (Kind::Histogram, 6, Value::Len(b)) => p.packed_buckets.push(b),
            (Kind::Histogram, 6, Value::Fixed64(x)) => p.unpacked_buckets.push(x),
            (Kind::Histogram, 7, Value::Len(b)) => p.packed_bounds.push(b),
            (Kind::Histogram, 7, Value::Fixed64(x)) => p.unpacked_bounds.push(x),
            (Kind::Histogram, 11, Value::Fixed64(x))
            | (Kind::Exponential, 12, Value::Fixed64(x)) => p.min = Some(f64::from_bits(x)),
            (Kind::Histogram, 12, Value::Fixed64(x))
            | (Kind::Exponential, 13, Value::Fixed64(x)) => p.max = Some(f64::from_bits(x)),
            (Kind::Exponential, 6, Value::Varint(x)) => p.scale = zigzag32(x),
            (Kind::Exponential, 7, Value::Fixed64(x)) => p.zero_count = x,
            (Kind::Exponential, 8, Value::Len(b)) => buckets(f.child(b)?, &mut p.positive)?,
            (Kind::Exponential, 9, Value::Len(b)) => buckets(f.child(b)?, &mut p.negative)?,
            (Kind::Exponential, 14, Value::Fixed64(x)) => p.zero_threshold = f64::from_bits(x),
            (Kind::Summary, 6, Value::Len(b)) => {
                let mut q = f.child(b)?;
                let (mut quantile, mut value) = (0.0, 0.0);
                while let Some((n, v)) = q.next()? {
                    match (n, v) {
                        (1, Value::Fixed64(x)) => quantile = f64::from_bits(x),
                        (2, Value::Fixed64(x)) => value = f64::from_bits(x),
                        _ => {}
                    }
                }
                p.quantiles.push((quantile, value));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Merge one occurrence of a Gauge / Sum / Histogram / ExponentialHistogram / Summary.
fn data<'a>(mut f: Fields<'a>, d: &mut Data<'a>) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Len(b)) => {
                let mut p = Point::default();
                point(f.child(b)?, d.kind, &mut p)?;
                d.points.push(p);
            }
            (2, Value::Varint(x)) if d.kind != Kind::Gauge && d.kind != Kind::Summary => {
                d.temporality = x as i32
            }
            (3, Value::Varint(x)) if d.kind == Kind::Sum => d.monotonic = x != 0,
            _ => {}
        }
    }
    Ok(())
}

fn metric<'a>(mut f: Fields<'a>, m: &mut Metric<'a>) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Len(b)) => m.name = utf8(b)?,
            (2, Value::Len(b)) => m.description = utf8(b)?,
            (3, Value::Len(b)) => m.unit = utf8(b)?,
            (1..=3, Value::Overrun(b)) => _ = utf8(b)?,
            (12, Value::Len(b)) => m.metadata.push(key_value(f.child(b)?)?),
            (5 | 7 | 9 | 10 | 11, Value::Len(b)) => {
                let kind = match field {
                    5 => Kind::Gauge,
                    7 => Kind::Sum,
                    9 => Kind::Histogram,
                    10 => Kind::Exponential,
                    _ => Kind::Summary,
                };
                // The data oneof: the same member again merges, another one replaces it.
                if m.data.as_ref().map(|d| d.kind) != Some(kind) {
                    m.data = Some(Data {
                        kind,
                        points: vec![],
                        temporality: 0,
                        monotonic: false,
                    });
                }
                data(f.child(b)?, m.data.as_mut().unwrap())?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// An exemplar's list items.
#[derive(Default)]
struct ExemplarRows {
    offsets: Offsets,
    time: Numbers<i64>,
    value: Numbers<f64>,
    span_id: Strings,
    trace_id: Strings,
    attributes: Maps,
}

impl ExemplarRows {
    fn node(self) -> Node {
        let n = self.time.values.len();
        let item = struct_node(
            n,
            None,
            vec![
                self.time.node(),
                self.value.node(),
                self.span_id.node(),
                self.trace_id.node(),
                self.attributes.node(),
            ],
        );
        self.offsets.node(item)
    }
}

/// The struct column of one metric type: every row of the table has an entry, null unless
/// the row's point is of this type.
#[derive(Default)]
struct TypeRows {
    valid: crate::columns::Validity,
    len: usize,
    attributes: Maps,
    start: Numbers<i64>,
    time: Numbers<i64>,
    value: Numbers<f64>,
    exemplars: ExemplarRows,
    flags: Numbers<i32>,
    temporality: Strings,
    monotonic: Bools,
    count: Numbers<i64>,
    sum: Numbers<f64>,
    bucket_offsets: Offsets,
    bucket_counts: Numbers<i64>,
    bounds_offsets: Offsets,
    bounds: Numbers<f64>,
    min: Numbers<f64>,
    max: Numbers<f64>,
    scale: Numbers<i32>,
    zero_count: Numbers<i64>,
    positive: BucketRows,
    negative: BucketRows,
    zero_threshold: Numbers<f64>,
    quantile_offsets: Offsets,
    quantile: Numbers<f64>,
    quantile_value: Numbers<f64>,
    used: bool,
}

#[derive(Default)]
struct BucketRows {
    offset: Numbers<i32>,
    offsets: Offsets,
    counts: Numbers<i64>,
}

impl BucketRows {
    fn push_null(&mut self) {
        self.offset.push_opt(None);
        self.offsets.push_null();
    }

    fn node(self, len: usize, valid: Option<crate::columns::Validity>) -> Node {
        struct_node(
            len,
            valid,
            vec![self.offset.node(), self.offsets.node(self.counts.node())],
        )
    }
}

impl TypeRows {
    /// A row whose point is of another type: null here, and so is each of its fields.
    fn push_null(&mut self, kind: Kind) {
        self.valid.push(false);
        self.len += 1;
        self.start.push_opt(None);
        self.time.push_opt(None);
        match kind {
            Kind::Gauge | Kind::Sum => {
                self.value.push_opt(None);
                self.exemplars.offsets.push_null();
                self.attributes.push_null();
                self.flags.push_opt(None);
                if kind == Kind::Sum {
                    self.temporality.push_null();
                    self.monotonic.push_opt(None);
                }
            }
            Kind::Histogram => {
                self.count.push_opt(None);
                self.sum.push_opt(None);
                self.bucket_offsets.push_null();
                self.bounds_offsets.push_null();
                self.exemplars.offsets.push_null();
                self.attributes.push_null();
                self.flags.push_opt(None);
                self.min.push_opt(None);
                self.max.push_opt(None);
                self.temporality.push_null();
            }
            Kind::Exponential => {
                self.attributes.push_null();
                self.count.push_opt(None);
                self.sum.push_opt(None);
                self.scale.push_opt(None);
                self.zero_count.push_opt(None);
                self.positive.push_null();
                self.negative.push_null();
                self.flags.push_opt(None);
                self.exemplars.offsets.push_null();
                self.min.push_opt(None);
                self.max.push_opt(None);
                self.zero_threshold.push_opt(None);
                self.temporality.push_null();
            }
            Kind::Summary => {
                self.count.push_opt(None);
                self.sum.push_opt(None);
                self.quantile_offsets.push_null();
                self.attributes.push_null();
                self.flags.push_opt(None);
            }
        }
    }

    fn node(self, kind: Kind) -> Node {
        let n = self.len;
        if !self.used {
            return Node::all_null(n);
        }
        let valid = Some(self.valid);
        let lists = |o: Offsets, child: Node| o.node(child);
        let children = match kind {
            Kind::Gauge | Kind::Sum => {
                let mut c = vec![
                    self.start.node(),
                    self.time.node(),
                    self.value.node(),
                    self.exemplars.node(),
                    self.attributes.node(),
                    self.flags.node(),
                ];
                if kind == Kind::Sum {
                    c.push(self.temporality.node());
                    c.push(self.monotonic.node());
                }
                c
            }
            Kind::Histogram => vec![
                self.start.node(),
                self.time.node(),
                self.count.node(),
                self.sum.node(),
                lists(self.bucket_offsets, self.bucket_counts.node()),
                lists(self.bounds_offsets, self.bounds.node()),
                self.exemplars.node(),
                self.attributes.node(),
                self.flags.node(),
                self.min.node(),
                self.max.node(),
                self.temporality.node(),
            ],
            Kind::Exponential => {
                let nulls = || Some(clone_validity(&valid));
                vec![
                    self.attributes.node(),
                    self.start.node(),
                    self.time.node(),
                    self.count.node(),
                    self.sum.node(),
                    self.scale.node(),
                    self.zero_count.node(),
                    self.positive.node(n, nulls()),
                    self.negative.node(n, nulls()),
                    self.flags.node(),
                    self.exemplars.node(),
                    self.min.node(),
                    self.max.node(),
                    self.zero_threshold.node(),
                    self.temporality.node(),
                ]
            }
            Kind::Summary => {
                let q = struct_node(
                    self.quantile.values.len(),
                    None,
                    vec![self.quantile.node(), self.quantile_value.node()],
                );
                vec![
                    self.start.node(),
                    self.time.node(),
                    self.count.node(),
                    self.sum.node(),
                    lists(self.quantile_offsets, q),
                    self.attributes.node(),
                    self.flags.node(),
                ]
            }
        };
        struct_node(n, valid, children)
    }
}

fn clone_validity(v: &Option<crate::columns::Validity>) -> crate::columns::Validity {
    v.clone().unwrap_or_default()
}

// Errors, in the order the Python flattener meets them: first while it adds each type's
// points (gauge, sum, histogram, exponential, summary), then as it builds each type's struct
// column by column, then the origins.
const ADD_GAUGE: usize = 0;
const ADD_SUM: usize = 1;
const ADD_HISTOGRAM: usize = 2;
const ADD_EXPONENTIAL: usize = 3;
const BUILD: usize = 4;
const SLOTS: usize = 9; // per type while building, in column order (see Col)
const ORIGINS: usize = BUILD + 5 * SLOTS;

/// The columns of a type's struct that can fail to build, in the order they are built.
#[derive(Clone, Copy, PartialEq)]
enum Col {
    Start,
    Time,
    Count,
    ZeroCount,
    Buckets,
    Positive,
    Negative,
    ExemplarTime,
    ExemplarAttributes,
    Attributes,
}

fn slot(kind: Kind, col: Col) -> usize {
    use Col::*;
    let order: &[Col] = match kind {
        Kind::Gauge | Kind::Sum => &[Start, Time, ExemplarTime, ExemplarAttributes, Attributes],
        Kind::Histogram => &[
            Start,
            Time,
            Count,
            Buckets,
            ExemplarTime,
            ExemplarAttributes,
            Attributes,
        ],
        Kind::Exponential => &[
            Attributes,
            Start,
            Time,
            Count,
            ZeroCount,
            Positive,
            Negative,
            ExemplarTime,
            ExemplarAttributes,
        ],
        Kind::Summary => &[Start, Time, Count, Attributes],
    };
    let i = order.iter().position(|c| *c == col).unwrap();
    BUILD + SLOTS * KINDS.iter().position(|k| *k == kind).unwrap() + i
}

fn not_whole(wire: &str) -> Deferred {
    Deferred::Malformed(format!(
        "a packed {wire} field is not a whole number of 8-byte values"
    ))
}

struct HistogramErrors {
    sequence: Option<Deferred>, // point by point (the way taken when some point has exemplars)
    buckets: Option<Deferred>,  // column by column (the way taken otherwise)
    bounds: Option<Deferred>,
    exemplars: bool,
}

pub struct MetricsFlattener<'e, 'a> {
    pending: Vec<Metric<'a>>, // the metrics of the ScopeMetrics being read
    limits: Limits,
    enums: &'e Enums,
    origins: Origins,
    counts: Counts,
    rejections: Rejections,
    errors: Errors<{ ORIGINS + 1 }>,
    histogram: HistogramErrors,
    records: usize,
    metrics: usize,
    name: Strings,
    description: Strings,
    unit: Strings,
    metric_type: Strings,
    metadata: Maps,
    types: Vec<TypeRows>,
}

impl<'e, 'a> MetricsFlattener<'e, 'a> {
    pub fn new(limits: Limits, enums: &'e Enums) -> Self {
        MetricsFlattener {
            pending: Vec::new(),
            limits,
            enums,
            origins: Origins::new(limits),
            counts: Counts::default(),
            rejections: Rejections::default(),
            errors: Errors::default(),
            histogram: HistogramErrors {
                sequence: None,
                buckets: None,
                bounds: None,
                exemplars: false,
            },
            records: 0,
            metrics: 0,
            name: Strings::default(),
            description: Strings::default(),
            unit: Strings::default(),
            metric_type: Strings::default(),
            metadata: Maps::default(),
            types: (0..5).map(|_| TypeRows::default()).collect(),
        }
    }
}

impl<'a> Signal<'a> for MetricsFlattener<'_, 'a> {
    fn finish(self) -> Flat {
        self.into_flat()
    }

    fn origins(&mut self) -> (&mut Origins, &mut Counts) {
        (&mut self.origins, &mut self.counts)
    }

    fn item(&mut self, f: Fields<'a>) -> Result<()> {
        let mut m = Metric::default();
        metric(f, &mut m)?;
        self.pending.push(m);
        Ok(())
    }

    fn end_scope(&mut self) -> usize {
        let metrics = std::mem::take(&mut self.pending);
        let mut rows = 0;
        for m in &metrics {
            if let Some(d) = &m.data {
                rows += self.add_metric(m, d);
            }
        }
        self.pending = metrics;
        self.pending.clear();
        rows
    }
}

impl MetricsFlattener<'_, '_> {
    /// The rows of one metric; how many points it kept.
    fn add_metric(&mut self, m: &Metric<'_>, d: &Data<'_>) -> usize {
        let at = self.metrics;
        self.metrics += 1;
        self.records += d.points.len();
        if d.kind == Kind::Histogram && d.points.iter().any(|p| !p.exemplars.is_empty()) {
            self.histogram.exemplars = true;
        }
        let mut kept = 0;
        let mut metadata: Option<Maps> = None; // the metric's, converted once it has a row
        for p in &d.points {
            if let Some(reason) = self.problem(d.kind, p) {
                self.reject(m, d.kind, p, &reason, at);
                continue;
            }
            let once = metadata.get_or_insert_with(|| {
                // Only metrics with rows: the limits count what they cut of stored metadata.
                let mut once = Maps::default();
                attributes_row(&mut once, &m.metadata, &self.limits, &mut self.counts);
                once
            });
            self.metadata.copy_row(once, 0);
            self.name.push(m.name.as_bytes());
            self.description.push(m.description.as_bytes());
            self.unit.push(m.unit.as_bytes());
            self.metric_type.push(d.kind.name().as_bytes());
            for (i, k) in KINDS.iter().enumerate() {
                if *k != d.kind {
                    self.types[i].push_null(*k);
                }
            }
            self.add_point(d, p);
            kept += 1;
        }
        kept
    }

    /// Why a point cannot be stored, if it cannot: a number point without a value, or an
    /// exemplar whose ids are not of their length.
    fn problem(&self, kind: Kind, p: &Point<'_>) -> Option<String> {
        if matches!(kind, Kind::Gauge | Kind::Sum) && p.value.is_none() {
            return Some("number data point has no value".into());
        }
        for e in &p.exemplars {
            if !matches!(e.span_id.len(), 0 | 8) {
                return Some(format!(
                    "exemplar span_id must be 8 bytes, got {}",
                    e.span_id.len()
                ));
            }
            if !matches!(e.trace_id.len(), 0 | 16) {
                return Some(format!(
                    "exemplar trace_id must be 16 bytes, got {}",
                    e.trace_id.len()
                ));
            }
        }
        None
    }

    /// A rejected point's attributes (and its packed runs) must decode all the same.
    fn reject(&mut self, m: &Metric<'_>, kind: Kind, p: &Point<'_>, reason: &str, at: usize) {
        self.rejections.add_metric(m.name, reason, at);
        let mut error = None;
        let raw = p
            .attributes
            .iter()
            .chain(p.exemplars.iter().flat_map(|e| &e.attributes));
        for kv in raw {
            if let Err(e) = key_value(Fields::new(kv, MAX_DEPTH)) {
                error = Some(Deferred::attribute(e));
                break;
            }
        }
        if error.is_none() && kind == Kind::Histogram {
            if p.packed_buckets.iter().any(|r| r.len() % 8 != 0) {
                error = Some(not_whole("fixed64"));
            } else if p.packed_bounds.iter().any(|r| r.len() % 8 != 0) {
                error = Some(not_whole("double"));
            }
        }
        if let Some(e) = error {
            match kind {
                Kind::Gauge => self.errors.set(ADD_GAUGE, e),
                Kind::Sum => self.errors.set(ADD_SUM, e),
                Kind::Histogram => set_first(&mut self.histogram.sequence, e),
                Kind::Exponential => self.errors.set(ADD_EXPONENTIAL, e),
                Kind::Summary => {}
            }
        }
    }

    fn long(&mut self, kind: Kind, col: Col, v: u64) -> i64 {
        if v > i64::MAX as u64 {
            self.errors.set(slot(kind, col), out_of_long(v));
        }
        v as i64
    }

    fn attributes(
        &mut self,
        kind: Kind,
        col: Col,
        raw: &[&[u8]],
        maps_of: impl Fn(&mut TypeRows) -> &mut Maps,
    ) {
        let maps = maps_of(&mut self.types[kind as usize]);
        let (_, error) = raw_attributes_row(maps, raw, &self.limits, &mut self.counts);
        if let Some(e) = error {
            self.errors.set(slot(kind, col), Deferred::attribute(e));
        }
    }

    fn add_point(&mut self, d: &Data<'_>, p: &Point<'_>) {
        let kind = d.kind;
        let i = kind as usize;
        let start = self.long(kind, Col::Start, p.start);
        let time = self.long(kind, Col::Time, p.time);
        {
            let t = &mut self.types[i];
            t.used = true;
            t.valid.push(true);
            t.len += 1;
            t.start.push(start);
            t.time.push(time);
            t.flags.push(p.flags as i32);
        }
        if kind == Kind::Exponential {
            self.attributes(kind, Col::Attributes, &p.attributes, |t| &mut t.attributes);
        }
        if kind != Kind::Summary {
            self.exemplars(kind, p);
        }
        match kind {
            Kind::Gauge | Kind::Sum => {
                self.types[i].value.push(p.value.unwrap_or_default());
                if kind == Kind::Sum {
                    let t = &mut self.types[i];
                    enum_name(&self.enums.temporality, d.temporality, &mut t.temporality);
                    t.monotonic.push_opt(Some(d.monotonic));
                }
            }
            Kind::Histogram => {
                let count = self.long(kind, Col::Count, p.count);
                let buckets = self.packed(&p.packed_buckets, &p.unpacked_buckets, "fixed64", true);
                let bounds = self.packed(&p.packed_bounds, &p.unpacked_bounds, "double", false);
                let mut overflow = None;
                let t = &mut self.types[i];
                t.count.push(count);
                t.sum.push_opt(p.sum);
                for v in buckets {
                    if v > i64::MAX as u64 && overflow.is_none() {
                        overflow = Some(v);
                    }
                    t.bucket_counts.push(v as i64);
                }
                t.bucket_offsets.end_row(t.bucket_counts.values.len());
                for v in bounds {
                    t.bounds.push(f64::from_bits(v));
                }
                t.bounds_offsets.end_row(t.bounds.values.len());
                t.min.push_opt(p.min);
                t.max.push_opt(p.max);
                enum_name(&self.enums.temporality, d.temporality, &mut t.temporality);
                if let Some(v) = overflow {
                    self.errors.set(slot(kind, Col::Buckets), out_of_long(v));
                }
            }
            Kind::Exponential => {
                let count = self.long(kind, Col::Count, p.count);
                let zero_count = self.long(kind, Col::ZeroCount, p.zero_count);
                let mut overflows = [None, None];
                let t = &mut self.types[i];
                t.count.push(count);
                t.sum.push_opt(p.sum);
                t.scale.push(p.scale);
                t.zero_count.push(zero_count);
                for (side, (rows, b)) in [
                    (&mut t.positive, &p.positive),
                    (&mut t.negative, &p.negative),
                ]
                .into_iter()
                .enumerate()
                {
                    rows.offset.push(b.offset);
                    for &v in &b.counts {
                        if v > i64::MAX as u64 && overflows[side].is_none() {
                            overflows[side] = Some(v);
                        }
                        rows.counts.push(v as i64);
                    }
                    rows.offsets.end_row(rows.counts.values.len());
                }
                t.min.push_opt(p.min);
                t.max.push_opt(p.max);
                t.zero_threshold.push(p.zero_threshold);
                enum_name(&self.enums.temporality, d.temporality, &mut t.temporality);
                for (side, col) in [(0, Col::Positive), (1, Col::Negative)] {
                    if let Some(v) = overflows[side] {
                        self.errors.set(slot(kind, col), out_of_long(v));
                    }
                }
            }
            Kind::Summary => {
                let count = self.long(kind, Col::Count, p.count);
                let t = &mut self.types[i];
                t.count.push(count);
                t.sum.push(p.sum.unwrap_or_default());
                for &(q, v) in &p.quantiles {
                    t.quantile.push(q);
                    t.quantile_value.push(v);
                }
                t.quantile_offsets.end_row(t.quantile.values.len());
            }
        }
        if kind != Kind::Exponential {
            self.attributes(kind, Col::Attributes, &p.attributes, |t| &mut t.attributes);
        }
    }

    fn exemplars(&mut self, kind: Kind, p: &Point<'_>) {
        let i = kind as usize;
        for e in &p.exemplars {
            let time = self.long(kind, Col::ExemplarTime, e.time);
            self.attributes(kind, Col::ExemplarAttributes, &e.attributes, |t| {
                &mut t.exemplars.attributes
            });
            let x = &mut self.types[i].exemplars;
            x.time.push(time);
            x.value.push_opt(e.value);
            hex(&mut x.span_id, e.span_id);
            hex(&mut x.trace_id, e.trace_id);
        }
        let x = &mut self.types[i].exemplars;
        x.offsets.end_row(x.time.values.len());
    }

    /// A kept histogram point's values of a packed-or-unpacked field: its packed runs' then
    /// its unpacked ones (the order of a full parse of the point as protobuf re-serializes it).
    fn packed(&mut self, runs: &[&[u8]], unpacked: &[u64], wire: &str, buckets: bool) -> Vec<u64> {
        let mut out = Vec::new();
        for run in runs {
            if run.len() % 8 != 0 {
                set_first(&mut self.histogram.sequence, not_whole(wire));
                let slot = if buckets {
                    &mut self.histogram.buckets
                } else {
                    &mut self.histogram.bounds
                };
                set_first(slot, not_whole(wire));
                return out;
            }
            out.extend(
                run.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
            );
        }
        out.extend_from_slice(unpacked);
        out
    }

    fn into_flat(mut self) -> Flat {
        let h = &mut self.histogram;
        let add = if h.exemplars {
            h.sequence.take()
        } else {
            h.buckets.take().or(h.bounds.take())
        };
        if let Some(e) = add {
            self.errors.set(ADD_HISTOGRAM, e);
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
        let mut types = self.types.into_iter();
        let mut next = |k: Kind| types.next().unwrap().node(k);
        flat.columns = vec![
            ("name", self.name.node()),
            ("description", self.description.node()),
            ("unit", self.unit.node()),
            ("metric_type", self.metric_type.node()),
            ("gauge", next(Kind::Gauge)),
            ("sum", next(Kind::Sum)),
            ("histogram", next(Kind::Histogram)),
            ("exponential_histogram", next(Kind::Exponential)),
            ("summary", next(Kind::Summary)),
            ("metadata", self.metadata.node()),
            ("resource", resource),
            ("resource_schema_url", resource_url),
            ("instrumentation_scope", scope),
            ("metric_schema_url", scope_url),
        ];
        flat
    }
}

fn set_first(slot: &mut Option<Deferred>, e: Deferred) {
    if slot.is_none() {
        *slot = Some(e);
    }
}
