//! OTLP AnyValue → the STRING the tables hold, exactly as collector/flatten/values.py writes it
//! (the OpenTelemetry Collector's ``AsString``): scalars as text, arrays and kvlists as compact
//! JSON with sorted keys, doubles as the shortest round-trip decimal in ES6 notation, bytes as
//! base64.

use crate::wire::{utf8, Fields, Result, Value};
use std::fmt::Write;

/// A decoded AnyValue, borrowing its strings from the request.
#[derive(Clone, Debug, Default)]
pub enum Any<'a> {
    #[default]
    Unset,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Vec<Any<'a>>),
    Kvlist(Vec<(&'a str, Any<'a>)>),
    /// ``string_value_strindex``: a reference into a dictionary OTLP does not send yet.
    StrIndex,
}

impl Any<'_> {
    pub fn is_set(&self) -> bool {
        !matches!(self, Any::Unset)
    }
}

/// Merge one occurrence of an AnyValue message into ``into`` (occurrences of a singular
/// message field merge: the oneof takes the last member set, and a repeated member continues).
pub fn merge_any<'a>(mut f: Fields<'a>, into: &mut Any<'a>) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Len(b)) => *into = Any::Str(utf8(b)?),
            (1, Value::Overrun(b)) => _ = utf8(b)?,
            (2, Value::Varint(x)) => *into = Any::Bool(x != 0),
            (3, Value::Varint(x)) => *into = Any::Int(x as i64),
            (4, Value::Fixed64(x)) => *into = Any::Double(f64::from_bits(x)),
            (5, Value::Len(b)) => {
                let mut a = f.child(b)?;
                if !matches!(into, Any::Array(_)) {
                    *into = Any::Array(Vec::new());
                }
                let Any::Array(items) = into else {
                    unreachable!()
                };
                while let Some((n, v)) = a.next()? {
                    if let (1, Value::Len(item)) = (n, v) {
                        let mut value = Any::Unset;
                        merge_any(a.child(item)?, &mut value)?;
                        items.push(value);
                    }
                }
            }
            (6, Value::Len(b)) => {
                let mut a = f.child(b)?;
                if !matches!(into, Any::Kvlist(_)) {
                    *into = Any::Kvlist(Vec::new());
                }
                let Any::Kvlist(items) = into else {
                    unreachable!()
                };
                while let Some((n, v)) = a.next()? {
                    if let (1, Value::Len(item)) = (n, v) {
                        let mut key = "";
                        let mut value = Any::Unset;
                        merge_key_value(a.child(item)?, &mut key, &mut value)?;
                        items.push((key, value));
                    }
                }
            }
            (7, Value::Len(b)) => *into = Any::Bytes(b),
            (8, Value::Varint(_)) => *into = Any::StrIndex,
            _ => {}
        }
    }
    Ok(())
}

/// Merge one KeyValue message into ``key`` and ``value``.
pub fn merge_key_value<'a>(
    mut f: Fields<'a>,
    key: &mut &'a str,
    value: &mut Any<'a>,
) -> Result<()> {
    while let Some((field, v)) = f.next()? {
        match (field, v) {
            (1, Value::Len(b)) => *key = utf8(b)?,
            (1, Value::Overrun(b)) => _ = utf8(b)?,
            (2, Value::Len(b)) => merge_any(f.child(b)?, value)?,
            _ => {}
        }
    }
    Ok(())
}

/// The STRING of an AnyValue as a map value or a log body holds it, appended to ``out``.
pub fn write_str(v: &Any<'_>, out: &mut Vec<u8>) {
    match v {
        Any::Str(s) => out.extend_from_slice(s.as_bytes()),
        Any::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Any::Int(i) => write_int(*i, out),
        Any::Double(d) => format_double(*d, out),
        Any::Bytes(b) => base64(b, out),
        Any::Array(_) | Any::Kvlist(_) => write_json(v, out),
        Any::Unset | Any::StrIndex => {}
    }
}

#[inline]
pub fn write_int(i: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut n = i.unsigned_abs();
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[pos..]);
}

fn write_json(v: &Any<'_>, out: &mut Vec<u8>) {
    match v {
        Any::Str(s) => json_string(s, out),
        Any::Bool(_) | Any::Int(_) => write_str(v, out),
        Any::Double(d) => {
            if d.is_finite() {
                format_double(*d, out)
            } else {
                // JSON has no NaN or infinities: the strings AsString gives for a scalar.
                let mut s = Vec::new();
                format_double(*d, &mut s);
                json_string(std::str::from_utf8(&s).unwrap(), out)
            }
        }
        Any::Bytes(b) => {
            out.push(b'"');
            base64(b, out);
            out.push(b'"');
        }
        Any::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        Any::Kvlist(items) => {
            // Keys sorted, the last of duplicates kept: what AsString's json.Marshal of a Go
            // map writes.
            let mut order: Vec<usize> = (0..items.len()).collect();
            order.sort_by(|&a, &b| items[a].0.cmp(items[b].0).then(b.cmp(&a)));
            out.push(b'{');
            let mut previous: Option<&str> = None;
            for i in order {
                let (k, value) = &items[i];
                if previous == Some(*k) {
                    continue;
                }
                if previous.is_some() {
                    out.push(b',');
                }
                previous = Some(k);
                json_string(k, out);
                out.push(b':');
                write_json(value, out);
            }
            out.push(b'}');
        }
        Any::Unset | Any::StrIndex => out.extend_from_slice(b"null"),
    }
}

fn json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn base64(data: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(ALPHABET[(n >> 18) as usize & 63]);
        out.push(ALPHABET[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63]
        } else {
            b'='
        });
    }
}

/// Shortest round-trip decimal as ES6 ``Number#toString`` / Go ``encoding/json`` write it:
/// positional for 1e-6 <= |x| < 1e21, exponent notation outside.
pub fn format_double(x: f64, out: &mut Vec<u8>) {
    if x.is_nan() {
        return out.extend_from_slice(b"NaN");
    }
    if x.is_infinite() {
        return out.extend_from_slice(if x > 0.0 { b"Infinity" } else { b"-Infinity" });
    }
    if x == 0.0 {
        return out.extend_from_slice(if x.is_sign_negative() { b"-0" } else { b"0" });
    }
    // Rust's shortest round-trip digits in exponent form: "d.ddde-N".
    let mut s = String::with_capacity(32);
    write!(s, "{:e}", x.abs()).unwrap();
    let (mantissa, exp) = s.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let point = exp + 1; // the decimal point's place after the first digit's
    if x < 0.0 {
        out.push(b'-');
    }
    let a = x.abs();
    let n = digits.len() as i32;
    if (1e-6..1e21).contains(&a) {
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-point) as usize));
            out.extend_from_slice(digits.as_bytes());
        } else if point >= n {
            out.extend_from_slice(digits.as_bytes());
            out.extend(std::iter::repeat_n(b'0', (point - n) as usize));
        } else {
            out.extend_from_slice(&digits.as_bytes()[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits.as_bytes()[point as usize..]);
        }
        return;
    }
    let e = point - 1;
    out.push(digits.as_bytes()[0]);
    if n > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits.as_bytes()[1..]);
    }
    out.push(b'e');
    out.push(if e >= 0 { b'+' } else { b'-' });
    write_int(e.abs() as i64, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(x: f64) -> String {
        let mut v = Vec::new();
        format_double(x, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn doubles_as_es6() {
        assert_eq!(fmt(0.00025), "0.00025");
        assert_eq!(fmt(123.0), "123");
        assert_eq!(fmt(1e21), "1e+21");
        assert_eq!(fmt(1.5e-7), "1.5e-7");
        assert_eq!(fmt(-2.5), "-2.5");
        assert_eq!(fmt(1e20), "100000000000000000000");
        assert_eq!(fmt(-0.0), "-0");
    }
}

/// A KeyValue in the layout every exporter writes (key, then a value holding one string,
/// int, double or bool), read without the general parser; None for anything else, which the
/// general parser then reads (and refuses, if it must) exactly as upb does.
#[inline]
pub fn plain_key_value(b: &[u8]) -> Option<(&str, Any<'_>)> {
    let [0x0a, key_len, rest @ ..] = b else {
        return None;
    };
    let key_len = *key_len as usize;
    if key_len >= 0x80 || rest.len() < key_len {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let [0x12, value_len, value @ ..] = rest else {
        return None;
    };
    if *value_len as usize != value.len() || value.len() >= 0x80 {
        return None;
    }
    let any = match value {
        [0x0a, n, s @ ..] if *n as usize == s.len() => Any::Str(ascii_or_utf8(s)?),
        [0x18, v @ ..] if !v.is_empty() && v.len() <= 10 => {
            let mut x: u64 = 0;
            for (i, &byte) in v.iter().enumerate() {
                let last = i == v.len() - 1;
                if (byte < 0x80) != last {
                    return None;
                }
                if i < 10 {
                    x |= ((byte & 0x7f) as u64)
                        .checked_shl(7 * i as u32)
                        .unwrap_or(0);
                }
            }
            Any::Int(x as i64)
        }
        [0x21, d @ ..] if d.len() == 8 => Any::Double(f64::from_le_bytes(d.try_into().ok()?)),
        [0x10, v] if *v < 0x80 => Any::Bool(*v != 0),
        _ => return None,
    };
    Some((ascii_or_utf8(key)?, any))
}

#[inline]
fn ascii_or_utf8(b: &[u8]) -> Option<&str> {
    crate::wire::utf8(b).ok()
}
