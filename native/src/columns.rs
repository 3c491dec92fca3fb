//! Arrow columns built in place: the buffers of each array, as Arrow lays them out, handed to
//! pyarrow without a copy (collector/flatten/native.py puts them together by the table schema).

use std::cell::Cell;

use crate::values::{write_str, Any};

/// Bytes one STRING array may hold: Arrow's 32-bit offsets.
pub const MAX_COLUMN_BYTES: usize = i32::MAX as usize;

thread_local! {
    // Set when a column would outgrow its offsets; the flatten that set it fails as a whole
    // (lib.rs), so nothing reads the columns it left.
    static OUTGROWN: Cell<bool> = const { Cell::new(false) };
}

/// Whether a column outgrew ``MAX_COLUMN_BYTES`` since the last call (which clears it).
pub fn take_outgrown() -> bool {
    OUTGROWN.with(|o| o.replace(false))
}

fn outgrow() {
    OUTGROWN.with(|o| o.set(true));
}

/// A validity bitmap, made only once a null is appended (no bitmap means no nulls).
#[derive(Default, Clone)]
pub struct Validity {
    bits: Vec<u8>,
    len: usize,
    nulls: usize,
}

impl Validity {
    #[inline]
    pub fn push(&mut self, valid: bool) {
        if !valid && self.nulls == 0 {
            // The first null: the bitmap of the values so far, all valid.
            self.bits = vec![0xff; self.len / 8];
            if !self.len.is_multiple_of(8) {
                self.bits.push((1u8 << (self.len % 8)) - 1);
            }
        }
        if !valid {
            self.nulls += 1;
        }
        if self.nulls > 0 {
            if self.len.is_multiple_of(8) {
                self.bits.push(0);
            }
            if valid {
                *self.bits.last_mut().unwrap() |= 1 << (self.len % 8);
            }
        }
        self.len += 1;
    }

    fn export(self) -> (usize, Option<Buffer>) {
        if self.nulls == 0 {
            (0, None)
        } else {
            (self.nulls, Some(Buffer::U8(self.bits)))
        }
    }
}

/// The memory of one Arrow buffer, typed so that it is freed as it was allocated.
pub enum Buffer {
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Buffer {
    /// Gives back the room the vector grew into beyond its length: a buffered batch holds
    /// its buffers until the flush, and growth by doubling leaves up to half of them unused.
    pub fn shrink(&mut self) {
        match self {
            Buffer::U8(v) => v.shrink_to_fit(),
            Buffer::I32(v) => v.shrink_to_fit(),
            Buffer::I64(v) => v.shrink_to_fit(),
            Buffer::F64(v) => v.shrink_to_fit(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        fn raw<T>(v: &[T]) -> &[u8] {
            // SAFETY: plain numbers, read as the bytes they are made of.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }
        match self {
            Buffer::U8(v) => v,
            Buffer::I32(v) => raw(v),
            Buffer::I64(v) => raw(v),
            Buffer::F64(v) => raw(v),
        }
    }
}

/// A finished array: what ``pa.Array.from_buffers`` takes, for the type the schema gives.
pub struct Node {
    pub len: usize,
    pub nulls: usize,
    pub buffers: Vec<Option<Buffer>>,
    pub children: Vec<Node>,
}

impl Node {
    /// ``len`` nulls of the column's type, made by pyarrow (``pa.nulls``) as the Python
    /// flattener makes them, so that the IPC bytes are the same.
    pub fn all_null(len: usize) -> Node {
        Node {
            len,
            nulls: len,
            buffers: vec![],
            children: vec![],
        }
    }

    pub fn is_all_null(&self) -> bool {
        self.buffers.is_empty()
    }
}

/// A STRING column.
pub struct Strings {
    offsets: Vec<i32>,
    pub data: Vec<u8>,
    validity: Validity,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            offsets: vec![0],
            data: Vec::new(),
            validity: Validity::default(),
        }
    }
}

impl Strings {
    /// Append a value. Values repeated on many rows (a resource's, a metric's) are what can
    /// multiply a request's size: past Arrow's offsets they are not copied any more, and the
    /// request fails (``take_outgrown``) rather than holding gigabytes.
    #[inline]
    pub fn push(&mut self, s: &[u8]) {
        if self.data.len() + s.len() > MAX_COLUMN_BYTES {
            outgrow();
        } else {
            self.data.extend_from_slice(s);
        }
        self.end_value();
    }

    /// End a value written straight into ``data``.
    #[inline]
    pub fn end_value(&mut self) {
        if self.data.len() > MAX_COLUMN_BYTES {
            outgrow();
        }
        self.offsets.push(self.data.len() as i32);
        self.validity.push(true);
    }

    #[inline]
    pub fn push_null(&mut self) {
        self.offsets.push(self.data.len() as i32);
        self.validity.push(false);
    }

    #[inline]
    pub fn push_opt(&mut self, s: Option<&[u8]>) {
        match s {
            Some(s) => self.push(s),
            None => self.push_null(),
        }
    }

    /// Where the value being written starts.
    #[inline]
    pub fn value_start(&self) -> usize {
        *self.offsets.last().unwrap() as usize
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The bytes of value ``i``.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Drop the values from ``len`` on (no nulls among them).
    pub fn truncate(&mut self, len: usize) {
        debug_assert_eq!(
            self.validity.nulls, 0,
            "only columns without nulls are cut back"
        );
        self.data.truncate(self.offsets[len] as usize);
        self.offsets.truncate(len + 1);
        self.validity.len = len;
    }

    pub fn node(self) -> Node {
        let len = self.len();
        let (nulls, validity) = self.validity.export();
        Node {
            len,
            nulls,
            buffers: vec![
                validity,
                Some(Buffer::I32(self.offsets)),
                Some(Buffer::U8(self.data)),
            ],
            children: vec![],
        }
    }
}

/// A column of fixed-width numbers.
#[derive(Default)]
pub struct Numbers<T> {
    pub values: Vec<T>,
    validity: Validity,
}

impl<T: Default> Numbers<T> {
    #[inline]
    pub fn push(&mut self, v: T) {
        self.values.push(v);
        self.validity.push(true);
    }

    #[inline]
    pub fn push_opt(&mut self, v: Option<T>) {
        let valid = v.is_some();
        self.values.push(v.unwrap_or_default());
        self.validity.push(valid);
    }
}

pub trait Wrap: Sized {
    fn buffer(v: Vec<Self>) -> Buffer;
}
impl Wrap for i32 {
    fn buffer(v: Vec<Self>) -> Buffer {
        Buffer::I32(v)
    }
}
impl Wrap for i64 {
    fn buffer(v: Vec<Self>) -> Buffer {
        Buffer::I64(v)
    }
}
impl Wrap for f64 {
    fn buffer(v: Vec<Self>) -> Buffer {
        Buffer::F64(v)
    }
}

impl<T: Wrap> Numbers<T> {
    pub fn node(self) -> Node {
        let len = self.values.len();
        let (nulls, validity) = self.validity.export();
        Node {
            len,
            nulls,
            buffers: vec![validity, Some(T::buffer(self.values))],
            children: vec![],
        }
    }
}

/// A BOOLEAN column.
#[derive(Default)]
pub struct Bools {
    bits: Vec<u8>,
    len: usize,
    validity: Validity,
}

impl Bools {
    pub fn push_opt(&mut self, v: Option<bool>) {
        if self.len.is_multiple_of(8) {
            self.bits.push(0);
        }
        if v == Some(true) {
            *self.bits.last_mut().unwrap() |= 1 << (self.len % 8);
        }
        self.len += 1;
        self.validity.push(v.is_some());
    }

    pub fn node(self) -> Node {
        let (nulls, validity) = self.validity.export();
        Node {
            len: self.len,
            nulls,
            buffers: vec![validity, Some(Buffer::U8(self.bits))],
            children: vec![],
        }
    }
}

/// A list's offsets (its child is built beside it).
pub struct Offsets {
    offsets: Vec<i32>,
    validity: Validity,
}

impl Default for Offsets {
    fn default() -> Self {
        Offsets {
            offsets: vec![0],
            validity: Validity::default(),
        }
    }
}

impl Offsets {
    #[inline]
    pub fn end_row(&mut self, child_len: usize) {
        self.offsets.push(child_len as i32);
        self.validity.push(true);
    }

    #[inline]
    pub fn push_null(&mut self) {
        let last = *self.offsets.last().unwrap();
        self.offsets.push(last);
        self.validity.push(false);
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn node(self, child: Node) -> Node {
        let len = self.len();
        let (nulls, validity) = self.validity.export();
        Node {
            len,
            nulls,
            buffers: vec![validity, Some(Buffer::I32(self.offsets))],
            children: vec![child],
        }
    }
}

/// What the limits cut, counted per request (OTLP partial success reports them).
#[derive(Default, Clone, Copy)]
pub struct Counts {
    pub truncated: u64,
    pub dropped: u64,
}

/// ``--max-attributes`` and ``--max-value-bytes``.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_attributes: usize,
    pub max_value_bytes: usize,
}

const TRUNCATED: &[u8] = "…[truncated]".as_bytes();

impl Limits {
    /// Cut the value that starts at ``start`` of ``data`` (and ends at its end) to the limit,
    /// with the marker; whether it was cut.
    #[inline]
    pub fn clip(&self, data: &mut Vec<u8>, start: usize) -> bool {
        if data.len() - start <= self.max_value_bytes {
            return false;
        }
        let mut keep = start + self.max_value_bytes.saturating_sub(TRUNCATED.len());
        // The values are UTF-8: cut at the start of a character.
        while keep > start && (data[keep] & 0xc0) == 0x80 {
            keep -= 1;
        }
        data.truncate(keep);
        data.extend_from_slice(TRUNCATED);
        true
    }
}

/// A MAP<STRING, STRING> column.
#[derive(Default)]
pub struct Maps {
    offsets: Offsets,
    keys: Strings,
    values: Strings,
    seen: KeySet,
}

impl Maps {
    /// Append one attribute to the row being built.
    #[inline]
    pub fn push(&mut self, key: &str, value: &Any<'_>, limits: &Limits, counts: &mut Counts) {
        let k = &mut self.keys;
        let start = k.value_start();
        k.data.extend_from_slice(key.as_bytes());
        counts.truncated += limits.clip(&mut k.data, start) as u64;
        k.end_value();
        let v = &mut self.values;
        let start = v.value_start();
        write_str(value, &mut v.data);
        counts.truncated += limits.clip(&mut v.data, start) as u64;
        v.end_value();
    }

    /// Append a converted attribute (a resource's, repeated on its rows).
    #[inline]
    pub fn push_raw(&mut self, key: &[u8], value: &[u8]) {
        self.keys.push(key);
        self.values.push(value);
    }

    /// End the row whose attributes started at entry ``first``: a key given twice keeps its
    /// first place and its last value, as a Python dict made of the pairs does.
    pub fn end_row(&mut self, first: usize) {
        let end = self.keys.len();
        if end - first > 1 && self.seen.repeats(&self.keys, first, end) {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (first..end)
                .map(|i| (self.keys.get(i).to_vec(), self.values.get(i).to_vec()))
                .collect();
            let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                match merged.iter_mut().find(|(mk, _)| *mk == k) {
                    Some(slot) => slot.1 = v,
                    None => merged.push((k, v)),
                }
            }
            self.keys.truncate(first);
            self.values.truncate(first);
            for (k, v) in merged {
                self.push_raw(&k, &v);
            }
        }
        self.offsets.end_row(self.keys.len());
    }

    pub fn entries(&self) -> usize {
        self.keys.len()
    }

    pub fn push_null(&mut self) {
        self.offsets.push_null();
    }

    pub fn node(self) -> Node {
        let n = self.keys.len();
        let entries = Node {
            len: n,
            nulls: 0,
            buffers: vec![None],
            children: vec![self.keys.node(), self.values.node()],
        };
        self.offsets.node(entries)
    }
}

/// Whether a row's keys repeat, by an open-addressing table reused from row to row.
#[derive(Default)]
struct KeySet {
    slots: Vec<u32>,
    used: Vec<usize>,
}

impl KeySet {
    fn repeats(&mut self, keys: &Strings, first: usize, end: usize) -> bool {
        let n = end - first;
        let size = (n * 2).next_power_of_two().max(16);
        if self.slots.len() < size {
            self.slots = vec![0; size];
        }
        let mask = size - 1;
        let mut used = std::mem::take(&mut self.used);
        let mut found = false;
        'outer: for i in first..end {
            let key = keys.get(i);
            let mut h = hash(key) as usize & mask;
            loop {
                let slot = self.slots[h];
                if slot == 0 {
                    self.slots[h] = (i - first + 1) as u32;
                    used.push(h);
                    break;
                }
                if keys.get(first + slot as usize - 1) == key {
                    found = true;
                    break 'outer;
                }
                h = (h + 1) & mask;
            }
        }
        for &h in &used {
            self.slots[h] = 0;
        }
        used.clear();
        self.used = used;
        found
    }
}

#[inline]
fn hash(b: &[u8]) -> u64 {
    // Only spreads a row's keys over a small table (equal keys are compared in full): the
    // length and the last 8 bytes tell attribute keys apart well enough, in a few instructions.
    let mut tail = [0u8; 8];
    let n = b.len().min(8);
    tail[..n].copy_from_slice(&b[b.len() - n..]);
    (u64::from_le_bytes(tail) ^ (b.len() as u64).rotate_left(56)).wrapping_mul(0x9e3779b97f4a7c15)
        >> 32
}

/// A STRUCT column's own validity (its fields are built beside it).
pub fn struct_node(len: usize, validity: Option<Validity>, children: Vec<Node>) -> Node {
    let (nulls, bits) = validity.map(Validity::export).unwrap_or((0, None));
    Node {
        len,
        nulls,
        buffers: vec![bits],
        children,
    }
}

impl Maps {
    /// Append row ``row`` of ``other`` as a row of this column.
    pub fn copy_row(&mut self, other: &Maps, row: usize) {
        let (start, end) = other.offsets.range(row);
        for i in start..end {
            self.push_raw(other.keys.get(i), other.values.get(i));
        }
        self.offsets.end_row(self.keys.len());
    }
}

impl Offsets {
    pub fn range(&self, row: usize) -> (usize, usize) {
        (self.offsets[row] as usize, self.offsets[row + 1] as usize)
    }
}
