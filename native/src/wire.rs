//! The protobuf wire format, read the way upb (the C parser behind Python's protobuf) reads it:
//! the same inputs are accepted, the same are refused, and the refusal names the same cause.

/// Why a message could not be parsed; the text is upb's, as Python's DecodeError carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Corrupt,
    Utf8,
    Depth,
}

impl DecodeError {
    pub fn text(self) -> &'static str {
        match self {
            DecodeError::Corrupt => "Wire format was corrupt",
            DecodeError::Utf8 => "String field had bad UTF-8",
            DecodeError::Depth => "Exceeded upb_DecodeOptions_MaxDepth",
        }
    }
}

pub type Result<T> = std::result::Result<T, DecodeError>;

/// Submessages one parse may enter below its root message (upb's default depth limit).
pub const MAX_DEPTH: i32 = 100;

/// One field occurrence: its value as the wire type carries it.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
    /// A length-delimited field that runs past the end of its message, but not past the end of
    /// the buffer being parsed: upb reads fields up to the buffer's end and checks its message's
    /// end only between fields, so it reads this one (a string field is checked for UTF-8)
    /// before it finds the message corrupt. The next call to ``next`` says so, for any field
    /// that ends past its message.
    Overrun(&'a [u8]),
    /// An unknown group, already skipped.
    Group,
}

/// The fields of one message, in order.
pub struct Fields<'a> {
    /// The whole buffer being parsed (the message and whatever follows it).
    buf: &'a [u8],
    pos: usize,
    /// Where this message ends in ``buf``.
    end: usize,
    depth: i32,
    overrun: bool,
}

impl<'a> Fields<'a> {
    /// The fields of a buffer parsed as one message, with ``depth`` submessage levels allowed
    /// below it.
    pub fn new(buf: &'a [u8], depth: i32) -> Self {
        Fields {
            buf,
            pos: 0,
            end: buf.len(),
            depth,
            overrun: false,
        }
    }

    /// The fields of ``sub``, a submessage of this message that ``next`` returned; an error if
    /// the depth limit is reached.
    #[inline(always)]
    pub fn child(&self, sub: &'a [u8]) -> Result<Fields<'a>> {
        let depth = self.depth - 1;
        if depth < 0 {
            return Err(DecodeError::Depth);
        }
        let start = sub.as_ptr() as usize - self.buf.as_ptr() as usize;
        Ok(Fields {
            buf: self.buf,
            pos: start,
            end: start + sub.len(),
            depth,
            overrun: false,
        })
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64> {
        let buf = self.buf;
        let mut pos = self.pos;
        let Some(&first) = buf.get(pos) else {
            return Err(DecodeError::Corrupt);
        };
        pos += 1;
        if first < 0x80 {
            self.pos = pos;
            return Ok(first as u64);
        }
        let mut value = (first & 0x7f) as u64;
        // Ten bytes at most; bits past the 64th are dropped, as upb drops them.
        for i in 1..10 {
            let Some(&b) = buf.get(pos) else {
                return Err(DecodeError::Corrupt);
            };
            pos += 1;
            let shift = 7 * i;
            if shift < 64 {
                value |= ((b & 0x7f) as u64) << shift;
            }
            if b < 0x80 {
                self.pos = pos;
                return Ok(value);
            }
        }
        Err(DecodeError::Corrupt)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Corrupt)?;
        if end > self.buf.len() {
            return Err(DecodeError::Corrupt);
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, or None at the end of the message. An end-group tag outside a group is
    /// corrupt, as is a field number of 0 or a wire type of 6 or 7.
    #[inline(always)]
    pub fn next(&mut self) -> Result<Option<(u32, Value<'a>)>> {
        if self.overrun {
            return Err(DecodeError::Corrupt);
        }
        if self.pos >= self.end {
            return Ok(None);
        }
        let (field, wire) = self.tag()?;
        match self.value(field, wire)? {
            Some(v) if self.pos > self.end => {
                self.overrun = true;
                Ok(Some((
                    field,
                    if let Value::Len(b) = v {
                        Value::Overrun(b)
                    } else {
                        v
                    },
                )))
            }
            Some(v) => Ok(Some((field, v))),
            None => Err(DecodeError::Corrupt), // end group
        }
    }

    #[inline(always)]
    fn tag(&mut self) -> Result<(u32, u8)> {
        let tag = self.varint()?;
        if tag > u32::MAX as u64 {
            return Err(DecodeError::Corrupt);
        }
        let field = (tag >> 3) as u32;
        if field == 0 {
            return Err(DecodeError::Corrupt);
        }
        Ok((field, (tag & 7) as u8))
    }

    /// The value of a field of this wire type; None for an end-group tag.
    #[inline(always)]
    fn value(&mut self, field: u32, wire: u8) -> Result<Option<Value<'a>>> {
        Ok(Some(match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(b.try_into().unwrap()))
            }
            2 => {
                let n = self.varint()?;
                if n > i32::MAX as u64 {
                    return Err(DecodeError::Corrupt);
                }
                Value::Len(self.take(n as usize)?)
            }
            3 => {
                self.skip_group(field, self.depth)?;
                Value::Group
            }
            4 => return Ok(None),
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(b.try_into().unwrap()))
            }
            _ => return Err(DecodeError::Corrupt),
        }))
    }

    /// Skip an unknown group up to its end tag; a group is a submessage for the depth limit.
    fn skip_group(&mut self, number: u32, depth: i32) -> Result<()> {
        let depth = depth - 1;
        if depth < 0 {
            return Err(DecodeError::Depth);
        }
        loop {
            if self.pos >= self.end || self.overrun {
                return Err(DecodeError::Corrupt);
            }
            let (field, wire) = self.tag()?;
            match wire {
                3 => self.skip_group(field, depth)?,
                4 => {
                    return if field == number {
                        Ok(())
                    } else {
                        Err(DecodeError::Corrupt)
                    }
                }
                _ => {
                    self.value(field, wire)?;
                }
            }
        }
    }
}

/// A proto3 ``string`` field: UTF-8 or the message is refused.
#[inline]
pub fn utf8(b: &[u8]) -> Result<&str> {
    // Most strings in telemetry are short and ASCII: one OR over the bytes (vectorized) costs
    // less than the general check's set-up.
    if b.iter().fold(0u8, |acc, &c| acc | c) < 0x80 {
        // SAFETY: every byte is ASCII, hence the whole is UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).map_err(|_| DecodeError::Utf8)
}

/// The varints of a packed run.
pub fn packed_varints(b: &[u8], out: &mut Vec<u64>) -> Result<()> {
    let mut f = Fields::new(b, 0);
    while f.pos < f.end {
        out.push(f.varint()?);
    }
    Ok(())
}
