//! OTLP/JSON → the same request as protobuf bytes, which the protobuf flatteners then read: the
//! mapping of OTLP to rows stays written once, as on the Python path, where collector.otlpjson
//! builds objects that read like the protobuf messages.
//!
//! Only JSON written the way exporters write it is read here. Anything else, an error or a
//! form that Python's reading also takes but that this one does not check (integers as
//! `" 1_000"`, `NaN` as a bare token, lone surrogates, a key given twice, two members of one
//! oneof, nesting past `MAX_DEPTH`), gives `Defer`, and the Python reading, the reference,
//! decides: its rows, or its error with the JSON path of the fault. So no error message is
//! written twice, and a request is read here only in the way the reference would read it.

use std::borrow::Cow;
use std::sync::OnceLock;

/// This reader does not vouch for the request; the Python reading is to decide.
#[derive(Debug)]
pub struct Defer;

type R<T> = Result<T, Defer>;

/// Messages nested below the request, here at most: below the protobuf parser's limit (100
/// below the message it parses), so the bytes made here always parse; anything deeper goes to
/// the reference.
const MAX_DEPTH: usize = 96;
/// JSON arrays and objects nested in an unknown field, at most, as skipped here.
const MAX_SKIP_DEPTH: usize = 128;

/// How a field's JSON value is read and its protobuf value written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int64,
    Int32,
    UInt64,
    UInt32,
    SInt64,
    SInt32,
    Fixed64,
    SFixed64,
    Fixed32,
    SFixed32,
    Double,
    Bool,
    String,
    /// Bytes given in base64 (standard or URL-safe alphabet, padding optional).
    Bytes,
    /// Bytes given in hex: trace and span ids.
    Hex,
    /// An enum, by name or number; the index is into `Schema::enums`.
    Enum(usize),
    /// A message; the index is into `Schema::messages`.
    Message(usize),
}

impl Kind {
    pub fn parse(name: &str, target: usize) -> Option<Kind> {
        Some(match name {
            "int64" => Kind::Int64,
            "int32" => Kind::Int32,
            "uint64" => Kind::UInt64,
            "uint32" => Kind::UInt32,
            "sint64" => Kind::SInt64,
            "sint32" => Kind::SInt32,
            "fixed64" => Kind::Fixed64,
            "sfixed64" => Kind::SFixed64,
            "fixed32" => Kind::Fixed32,
            "sfixed32" => Kind::SFixed32,
            "double" => Kind::Double,
            "bool" => Kind::Bool,
            "string" => Kind::String,
            "bytes" => Kind::Bytes,
            "hex" => Kind::Hex,
            "enum" => Kind::Enum(target),
            "message" => Kind::Message(target),
            _ => return None,
        })
    }

    /// The integer range the field takes, `[low, high)`.
    fn range(self) -> (i128, i128) {
        match self {
            Kind::Int64 | Kind::SInt64 | Kind::SFixed64 => (-(1 << 63), 1 << 63),
            Kind::UInt64 | Kind::Fixed64 => (0, 1 << 64),
            Kind::Int32 | Kind::SInt32 | Kind::SFixed32 | Kind::Enum(_) => (-(1 << 31), 1 << 31),
            Kind::UInt32 | Kind::Fixed32 => (0, 1 << 32),
            _ => (0, 0),
        }
    }

    /// Repeated fields of these kinds are written packed.
    fn packs(self) -> bool {
        !matches!(
            self,
            Kind::String | Kind::Bytes | Kind::Hex | Kind::Message(_)
        )
    }
}

pub struct Field {
    pub name: String,
    pub json_name: String,
    pub number: u32,
    pub kind: Kind,
    pub repeated: bool,
    /// The oneof group it belongs to, if any (an index within its message).
    pub oneof: Option<u8>,
}

pub struct Message {
    pub fields: Vec<Field>,
}

impl Message {
    fn lookup(&self, key: &[u8]) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.json_name.as_bytes() == key || f.name.as_bytes() == key)
    }
}

/// The OTLP messages as the JSON reading needs them, from the protobuf descriptors Python has.
pub struct Schema {
    pub messages: Vec<Message>,
    /// Each enum's value names and numbers.
    pub enums: Vec<Vec<(String, i32)>>,
}

impl Schema {
    /// Checks what the reading relies on: indexes in range, fields and oneofs few enough for
    /// the per-object bit sets.
    pub fn check(&self) -> Result<(), String> {
        for (i, m) in self.messages.iter().enumerate() {
            if m.fields.len() > 64 {
                return Err(format!("message {i} has more than 64 fields"));
            }
            for f in &m.fields {
                let fits = match f.kind {
                    Kind::Message(t) => t < self.messages.len(),
                    Kind::Enum(e) => e < self.enums.len(),
                    _ => true,
                };
                if !fits || f.oneof.is_some_and(|g| g >= 32) || f.number == 0 {
                    return Err(format!("field {} of message {i} is out of range", f.name));
                }
            }
        }
        Ok(())
    }
}

static SCHEMA: OnceLock<Schema> = OnceLock::new();

pub fn set_schema(schema: Schema) -> Result<(), String> {
    schema.check()?;
    SCHEMA
        .set(schema)
        .map_err(|_| "the JSON schema is already set".to_owned())
}

/// The request in the OTLP/JSON `body` (its root message is `root` in the schema) as protobuf
/// bytes; `Defer` if the Python reading is to decide.
pub fn transcode(body: &[u8], root: usize) -> R<Vec<u8>> {
    let schema = SCHEMA.get().ok_or(Defer)?;
    if root >= schema.messages.len() {
        return Err(Defer);
    }
    // Python decodes the bytes with surrogatepass and detects UTF-16 and UTF-32: only plain
    // UTF-8 is read here.
    std::str::from_utf8(body).map_err(|_| Defer)?;
    let mut t = Transcoder {
        schema,
        json: Json { s: body, i: 0 },
        out: Vec::with_capacity(body.len() / 2),
        scratch: Vec::new(),
    };
    t.json.ws();
    t.message(root, 0)?;
    t.json.ws();
    if t.json.i != body.len() {
        return Err(Defer);
    }
    Ok(t.out)
}

/// A cursor over JSON text that is valid UTF-8.
struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Json<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> R<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(Defer)
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// A string's contents, unescaped; `scratch` holds them when they had escapes.
    fn string<'s>(&mut self, scratch: &'s mut Vec<u8>) -> R<Cow<'s, [u8]>>
    where
        'a: 's,
    {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match self.s.get(self.i) {
                Some(b'"') => {
                    let raw = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(Cow::Borrowed(raw));
                }
                Some(b'\\') => break,
                Some(&b) if b < 0x20 => return Err(Defer), // Python's strict mode refuses
                Some(_) => self.i += 1,
                None => return Err(Defer),
            }
        }
        scratch.clear();
        scratch.extend_from_slice(&self.s[start..self.i]);
        loop {
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Borrowed(&scratch[..]));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or(Defer)?;
                    self.i += 1;
                    let plain = match c {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            let mut utf8 = [0; 4];
                            scratch.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                            continue;
                        }
                        _ => return Err(Defer),
                    };
                    scratch.push(plain);
                }
                Some(&b) if b < 0x20 => return Err(Defer),
                Some(&b) => {
                    scratch.push(b);
                    self.i += 1;
                }
                None => return Err(Defer),
            }
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` read), joining a surrogate pair; a lone
    /// surrogate, which Python keeps in its string, is deferred.
    fn unicode_escape(&mut self) -> R<char> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.literal(b"\\u") {
                return Err(Defer);
            }
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(Defer);
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or(Defer)
    }

    fn hex4(&mut self) -> R<u32> {
        let digits = self.s.get(self.i..self.i + 4).ok_or(Defer)?;
        let mut v = 0;
        for &d in digits {
            v = v * 16 + (d as char).to_digit(16).ok_or(Defer)?;
        }
        self.i += 4;
        Ok(v)
    }

    /// A number token, as its text and whether it is written as an integer (no fraction or
    /// exponent), which Python's json reads as an int.
    fn number(&mut self) -> R<(&'a [u8], bool)> {
        let start = self.i;
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Defer), // incl. -Infinity, which Python's json takes
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok((&self.s[start..self.i], integer))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> R<()> {
        let start = self.i;
        self.digits();
        if self.i == start {
            Err(Defer)
        } else {
            Ok(())
        }
    }

    /// Passes over a value of an unknown field, which must still be valid JSON.
    fn skip(&mut self, scratch: &mut Vec<u8>, depth: usize) -> R<()> {
        if depth > MAX_SKIP_DEPTH {
            return Err(Defer);
        }
        match self.peek().ok_or(Defer)? {
            b'"' => {
                self.string(scratch)?;
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if !self.eat(b'}') {
                    loop {
                        self.string(scratch)?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                        self.skip(scratch, depth + 1)?;
                        self.ws();
                        if !self.eat(b',') {
                            self.expect(b'}')?;
                            break;
                        }
                        self.ws();
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if !self.eat(b']') {
                    loop {
                        self.skip(scratch, depth + 1)?;
                        self.ws();
                        if !self.eat(b',') {
                            self.expect(b']')?;
                            break;
                        }
                        self.ws();
                    }
                }
            }
            b't' | b'f' | b'n' => {
                if !(self.literal(b"true") || self.literal(b"false") || self.literal(b"null")) {
                    return Err(Defer);
                }
            }
            _ => {
                self.number()?;
            }
        }
        Ok(())
    }
}

struct Transcoder<'a> {
    schema: &'a Schema,
    json: Json<'a>,
    out: Vec<u8>,
    scratch: Vec<u8>,
}

impl Transcoder<'_> {
    fn message(&mut self, ty: usize, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(Defer);
        }
        let message = &self.schema.messages[ty];
        self.json.expect(b'{')?;
        self.json.ws();
        if self.json.eat(b'}') {
            return Ok(());
        }
        // A field named twice (or by both its names), or two members of one oneof: Python
        // keeps one by rules of its own, so it decides.
        let mut seen = 0u64;
        let mut oneofs = 0u32;
        loop {
            let key = self.json.string(&mut self.scratch)?;
            let found = message.lookup(&key);
            self.json.ws();
            self.json.expect(b':')?;
            self.json.ws();
            match found {
                None => self.json.skip(&mut self.scratch, 0)?,
                Some(index) => {
                    if seen & (1 << index) != 0 {
                        return Err(Defer);
                    }
                    seen |= 1 << index;
                    let field = &message.fields[index];
                    if self.json.literal(b"null") {
                        // unset
                    } else {
                        if let Some(group) = field.oneof {
                            if oneofs & (1 << group) != 0 {
                                return Err(Defer);
                            }
                            oneofs |= 1 << group;
                        }
                        if field.repeated {
                            self.repeated(field, depth)?;
                        } else {
                            self.tag(field.number, wire_type(field.kind));
                            self.value(field.kind, depth)?;
                        }
                    }
                }
            }
            self.json.ws();
            if !self.json.eat(b',') {
                return self.json.expect(b'}');
            }
            self.json.ws();
        }
    }

    fn repeated(&mut self, field: &Field, depth: usize) -> R<()> {
        self.json.expect(b'[')?;
        self.json.ws();
        if self.json.eat(b']') {
            return Ok(());
        }
        let packed = field.kind.packs();
        let mark = if packed {
            self.tag(field.number, 2);
            Some(self.begin_len())
        } else {
            None
        };
        loop {
            if self.json.peek() == Some(b'n') {
                return Err(Defer); // null in a list: an error
            }
            if !packed {
                self.tag(field.number, wire_type(field.kind));
            }
            self.value(field.kind, depth)?;
            self.json.ws();
            if !self.json.eat(b',') {
                self.json.expect(b']')?;
                break;
            }
            self.json.ws();
        }
        if let Some(mark) = mark {
            self.end_len(mark);
        }
        Ok(())
    }

    /// One value of a field of `kind`, written without its tag.
    fn value(&mut self, kind: Kind, depth: usize) -> R<()> {
        match kind {
            Kind::Message(ty) => {
                let mark = self.begin_len();
                self.message(ty, depth + 1)?;
                self.end_len(mark);
            }
            Kind::String => {
                let s = self.json.string(&mut self.scratch)?;
                put_varint(&mut self.out, s.len() as u64);
                self.out.extend_from_slice(&s);
            }
            Kind::Bytes => {
                let s = self.json.string(&mut self.scratch)?;
                self.out.push(0);
                let mark = self.out.len();
                base64(&s, &mut self.out)?;
                self.end_len(mark);
            }
            Kind::Hex => {
                let s = self.json.string(&mut self.scratch)?;
                if s.len() % 2 != 0 {
                    return Err(Defer);
                }
                put_varint(&mut self.out, (s.len() / 2) as u64);
                for pair in s.chunks_exact(2) {
                    let hi = (pair[0] as char).to_digit(16).ok_or(Defer)?;
                    let lo = (pair[1] as char).to_digit(16).ok_or(Defer)?;
                    self.out.push((hi * 16 + lo) as u8);
                }
            }
            Kind::Double => {
                let d = self.double()?;
                self.out.extend_from_slice(&d.to_le_bytes());
            }
            Kind::Bool => {
                let b = if self.json.literal(b"true") {
                    true
                } else if self.json.literal(b"false") {
                    false
                } else {
                    let s = self.json.string(&mut self.scratch)?;
                    match &s[..] {
                        b"true" => true,
                        b"false" => false,
                        _ => return Err(Defer),
                    }
                };
                self.out.push(b as u8);
            }
            Kind::Enum(e) => {
                let n = if self.json.peek() == Some(b'"') {
                    let s = self.json.string(&mut self.scratch)?;
                    let names = &self.schema.enums[e];
                    match names.iter().find(|(name, _)| name.as_bytes() == &s[..]) {
                        Some(&(_, n)) => n as i128,
                        None => in_range(decimal(&s)?, kind)?, // proto3 enums are open
                    }
                } else {
                    self.integer(kind)?
                };
                put_varint(&mut self.out, n as i64 as u64);
            }
            _ => {
                let n = self.integer(kind)?;
                match kind {
                    Kind::Int64 | Kind::Int32 => put_varint(&mut self.out, n as i64 as u64),
                    Kind::UInt64 | Kind::UInt32 => put_varint(&mut self.out, n as u64),
                    Kind::SInt64 | Kind::SInt32 => {
                        let n = n as i64;
                        put_varint(&mut self.out, ((n << 1) ^ (n >> 63)) as u64)
                    }
                    Kind::Fixed64 | Kind::SFixed64 => {
                        self.out.extend_from_slice(&(n as u64).to_le_bytes())
                    }
                    _ => self.out.extend_from_slice(&(n as u32).to_le_bytes()),
                }
            }
        }
        Ok(())
    }

    /// An integer field's value: a number (an integral float too, as Python takes `1.0` or
    /// `1e3`) or a string of decimal digits, within the field's range.
    fn integer(&mut self, kind: Kind) -> R<i128> {
        let n = if self.json.peek() == Some(b'"') {
            decimal(&self.json.string(&mut self.scratch)?)?
        } else {
            let (text, integer) = self.json.number()?;
            if integer {
                decimal(text)?
            } else {
                let f: f64 = parse_float(text)?;
                // below 2^100 an integral double converts exactly; beyond, out of every range
                if f.fract() != 0.0 || f.abs() >= 1e30 {
                    return Err(Defer);
                }
                f as i128
            }
        };
        in_range(n, kind)
    }

    /// A double field's value: a number, or a string holding one or NaN, Infinity, -Infinity.
    fn double(&mut self) -> R<f64> {
        if self.json.peek() == Some(b'"') {
            let s = self.json.string(&mut self.scratch)?;
            return match &s[..] {
                b"NaN" => Ok(f64::NAN),
                b"Infinity" => Ok(f64::INFINITY),
                b"-Infinity" => Ok(f64::NEG_INFINITY),
                // Only JSON's number syntax here (float() takes more); as float() reads it,
                // "-0" is -0.0, unlike the JSON number -0.
                text => {
                    let mut inner = Json { s: text, i: 0 };
                    inner.number()?;
                    if inner.i != text.len() {
                        return Err(Defer);
                    }
                    parse_float(text)
                }
            };
        }
        let (text, integer) = self.json.number()?;
        let f = parse_float(text)?;
        if integer {
            // Python's json reads an int, which float() converts: exact rounding, and -0 is 0.
            if f.is_infinite() {
                return Err(Defer);
            }
            return Ok(if f == 0.0 { 0.0 } else { f });
        }
        Ok(f)
    }

    fn tag(&mut self, number: u32, wire: u8) {
        put_varint(&mut self.out, (u64::from(number) << 3) | u64::from(wire));
    }

    /// Room for a length that `end_len` fills in once the value is written.
    fn begin_len(&mut self) -> usize {
        self.out.push(0);
        self.out.len()
    }

    fn end_len(&mut self, start: usize) {
        let len = self.out.len() - start;
        if len < 0x80 {
            self.out[start - 1] = len as u8;
            return;
        }
        let mut prefix = Vec::with_capacity(10);
        put_varint(&mut prefix, len as u64);
        let extra = prefix.len() - 1;
        self.out.resize(self.out.len() + extra, 0);
        self.out.copy_within(start..start + len, start + extra);
        self.out[start - 1..start - 1 + prefix.len()].copy_from_slice(&prefix);
    }
}

fn wire_type(kind: Kind) -> u8 {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::SFixed64 => 1,
        Kind::Fixed32 | Kind::SFixed32 => 5,
        Kind::String | Kind::Bytes | Kind::Hex | Kind::Message(_) => 2,
        _ => 0,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `-?[0-9]+` as an integer; anything else (Python's int() also takes `+`, spaces,
/// underscores and other scripts' digits) is deferred.
fn decimal(s: &[u8]) -> R<i128> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 36 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Defer);
    }
    let n = digits
        .iter()
        .fold(0i128, |n, &d| n * 10 + i128::from(d - b'0'));
    Ok(if negative { -n } else { n })
}

fn in_range(n: i128, kind: Kind) -> R<i128> {
    let (low, high) = kind.range();
    if (low..high).contains(&n) {
        Ok(n)
    } else {
        Err(Defer)
    }
}

fn parse_float(text: &[u8]) -> R<f64> {
    // The text is ASCII, checked against JSON's number syntax.
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(Defer)
}

/// Base64 in either alphabet, padded or not, as Python's urlsafe_b64decode reads it once
/// padded: the bits past the last whole byte are dropped. Other forms it takes (characters
/// outside the alphabet, which it skips; padding inside) are deferred.
fn base64(s: &[u8], out: &mut Vec<u8>) -> R<()> {
    let data = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    // The forms whose padding, completed as Python completes it, is valid.
    match (data.len() % 4, s.len() - data.len()) {
        (0 | 2 | 3, 0) | (2 | 3, 1) | (2, 2) => {}
        _ => return Err(Defer),
    }
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in data {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(Defer),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(())
}
