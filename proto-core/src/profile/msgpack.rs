//! Lossless transcoding between JSON text and MessagePack, for the profiles whose worker
//! libraries speak msgpack (Spectacles and Cordis).
//!
//! Owns: JSON bytes -> msgpack (the hot path: one pass over the bytes, no intermediate tree,
//! one output buffer; hand-written, as it measured faster than `serde-transcode` + `rmp-serde`,
//! see BENCHMARKS.md) and msgpack -> JSON (commands from msgpack workers, a cold path: `rmp-serde`
//! reads, a serde visitor writes JSON). Does not decide which bodies are msgpack: the profiles do.
//!
//! What survives JSON -> msgpack:
//! - strings, with escapes decoded to UTF-8 (`\uXXXX` pairs become one character; a lone
//!   surrogate, which UTF-8 cannot hold, becomes U+FFFD);
//! - integers exactly: non-negative ones as the smallest msgpack unsigned int (up to `u64::MAX`),
//!   negative ones as the smallest signed int (down to `i64::MIN`); only integers beyond the
//!   64-bit range fall back to float64, as they would in any msgpack library;
//! - numbers with a fraction or exponent as float64 (`-0` too, so that it keeps its sign);
//! - `null`, booleans, arrays, and maps with their keys in the original order (duplicates kept).
//!
//! Container headers are written as one placeholder byte and patched when the container closes;
//! only containers with more than 15 entries need their contents moved (by 2 or 4 bytes).

use rmp::encode::ByteBuf;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::codec::write_json_string;

/// The deepest nesting either direction accepts (Discord payloads nest about 6 levels).
pub const MAX_DEPTH: usize = 512;

/// Input that cannot be transcoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The JSON input is malformed.
    #[error("invalid JSON at byte {at}: {what}")]
    Json {
        /// Byte offset of the problem.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The msgpack input is malformed or has no JSON equivalent.
    #[error("invalid msgpack at byte {at}: {what}")]
    Msgpack {
        /// Byte offset of the problem.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Converts one JSON value (the whole input, surrounding whitespace allowed) to msgpack.
pub fn json_to_msgpack(json: &[u8]) -> Result<Vec<u8>, TranscodeError> {
    let mut out = Vec::with_capacity(json.len() + 16);
    append_json_as_msgpack(json, &mut out)?;
    Ok(out)
}

/// Appends the msgpack form of one JSON value to `out`. On error `out` is left as it was.
pub fn append_json_as_msgpack(json: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
    check_utf8(json)?;
    let start = out.len();
    let mut encoder = JsonToMsgpack {
        src: json,
        pos: 0,
        out: ByteBuf::from_vec(std::mem::take(out)),
        stack: Vec::new(),
    };
    let result = encoder.run();
    *out = encoder.out.into_vec();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Appends a msgpack string holding the *contents* of a JSON string (the bytes between the
/// quotes, escapes included) to `out`. On error `out` is left as it was.
pub fn append_json_str_contents_as_msgpack(
    contents: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TranscodeError> {
    check_utf8(contents)?;
    let start = out.len();
    let mut encoder = JsonToMsgpack {
        src: contents,
        pos: 0,
        out: ByteBuf::from_vec(std::mem::take(out)),
        stack: Vec::new(),
    };
    let result = encoder.string_body(0, contents.len());
    *out = encoder.out.into_vec();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The whole input is checked once, so that strings can be copied without further checks.
fn check_utf8(json: &[u8]) -> Result<(), TranscodeError> {
    std::str::from_utf8(json)
        .map(|_| ())
        .map_err(|e| TranscodeError::Json {
            at: e.valid_up_to(),
            what: "input is not valid UTF-8",
        })
}

/// Bytes that end the fast scan of a string: the closing quote, a backslash, a control byte.
const STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Converts one msgpack value (the whole input) to compact JSON text.
///
/// `rmp-serde` reads the msgpack; [`JsonValue`] writes each value as JSON and refuses what JSON
/// cannot hold: binary data, extension types, NaN and infinities, map keys other than strings
/// and integers (integer keys become strings). Errors give the byte where reading stopped.
pub fn msgpack_to_json(msgpack: &[u8]) -> Result<Vec<u8>, TranscodeError> {
    let mut writer = JsonWriter {
        out: Vec::with_capacity(msgpack.len() * 2 + 16),
        failure: None,
    };
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(msgpack));
    // rmp-serde counts open containers and refuses the one that reaches its limit.
    de.set_max_depth(MAX_DEPTH + 1);
    let result = JsonValue(&mut writer).deserialize(&mut de);
    let at = usize::try_from(de.position()).unwrap_or(usize::MAX);
    match result {
        Ok(()) if at == msgpack.len() => Ok(writer.out),
        Ok(()) => Err(TranscodeError::Msgpack {
            at,
            what: "trailing bytes after the value",
        }),
        Err(e) => Err(msgpack_error(e, at, writer.failure, msgpack.is_empty())),
    }
}

/// Writes a msgpack map header for `len` entries (for profiles that build an envelope).
pub fn write_map_len(out: &mut Vec<u8>, len: u32) {
    write_container_header(out, len, true);
}

/// Writes a msgpack string (for profiles that build an envelope).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_header(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn write_container_header(out: &mut Vec<u8>, len: u32, is_map: bool) {
    let (h, n) = container_header(len, is_map);
    out.extend_from_slice(&h[..n]);
}

/// The smallest msgpack map or array header for `len` entries: its bytes and how many are used.
fn container_header(len: u32, is_map: bool) -> ([u8; 5], usize) {
    let (fix, m16, m32) = if is_map {
        (0x80, 0xde, 0xdf)
    } else {
        (0x90, 0xdc, 0xdd)
    };
    let mut h = [0u8; 5];
    if len <= 15 {
        h[0] = fix | len as u8;
        (h, 1)
    } else if let Ok(len) = u16::try_from(len) {
        h[0] = m16;
        h[1..3].copy_from_slice(&len.to_be_bytes());
        (h, 3)
    } else {
        h[0] = m32;
        h[1..5].copy_from_slice(&len.to_be_bytes());
        (h, 5)
    }
}

/// The msgpack string header for `len` bytes: its bytes and how many of them are used.
fn str_header(len: usize) -> ([u8; 5], usize) {
    let mut h = [0u8; 5];
    if len <= 31 {
        h[0] = 0xa0 | len as u8;
        (h, 1)
    } else if len <= 0xff {
        h[0] = 0xd9;
        h[1] = len as u8;
        (h, 2)
    } else if len <= 0xffff {
        h[0] = 0xda;
        h[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 3)
    } else {
        // Inputs are far below 4 GiB (the decoder caps payloads), so this does not truncate.
        h[0] = 0xdb;
        h[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        (h, 5)
    }
}

fn write_str_header(out: &mut Vec<u8>, len: usize) {
    let (h, n) = str_header(len);
    out.extend_from_slice(&h[..n]);
}

#[derive(Clone, Copy)]
struct OpenContainer {
    header_at: usize,
    count: u32,
    is_map: bool,
}

struct JsonToMsgpack<'a> {
    src: &'a [u8],
    pos: usize,
    out: ByteBuf,
    stack: Vec<OpenContainer>,
}

impl JsonToMsgpack<'_> {
    fn err<T>(&self, what: &'static str) -> Result<T, TranscodeError> {
        Err(TranscodeError::Json { at: self.pos, what })
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn run(&mut self) -> Result<(), TranscodeError> {
        self.skip_ws();
        'value: loop {
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.open(true)?;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        self.close();
                    } else {
                        self.key()?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.open(false)?;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        self.close();
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b't') => self.literal(b"true", 0xc3)?,
                Some(b'f') => self.literal(b"false", 0xc2)?,
                Some(b'n') => self.literal(b"null", 0xc0)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return self.err("expected a value"),
                None => return self.err("unexpected end of input"),
            }
            // A value is complete: continue its container, or finish.
            loop {
                self.skip_ws();
                let Some(top) = self.stack.last_mut() else {
                    if self.pos != self.src.len() {
                        return self.err("trailing characters after the value");
                    }
                    return Ok(());
                };
                top.count = match top.count.checked_add(1) {
                    Some(c) => c,
                    None => return self.err("container too large"),
                };
                let is_map = top.is_map;
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                        if is_map {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b']') if !is_map => {
                        self.pos += 1;
                        self.close();
                    }
                    Some(b'}') if is_map => {
                        self.pos += 1;
                        self.close();
                    }
                    _ if is_map => return self.err("expected ',' or '}'"),
                    _ => return self.err("expected ',' or ']'"),
                }
            }
        }
    }

    fn open(&mut self, is_map: bool) -> Result<(), TranscodeError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(TranscodeError::TooDeep);
        }
        let buf = self.out.as_mut_vec();
        self.stack.push(OpenContainer {
            header_at: buf.len(),
            count: 0,
            is_map,
        });
        buf.push(0); // placeholder, patched in close()
        Ok(())
    }

    fn close(&mut self) {
        let Some(open) = self.stack.pop() else {
            return;
        };
        let buf = self.out.as_mut_vec();
        let (header, len) = container_header(open.count, open.is_map);
        buf[open.header_at] = header[0];
        if len > 1 {
            buf.splice(
                open.header_at + 1..open.header_at + 1,
                header[1..len].iter().copied(),
            );
        }
    }

    fn key(&mut self) -> Result<(), TranscodeError> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string key");
        }
        self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return self.err("expected ':'");
        }
        self.pos += 1;
        self.skip_ws();
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8], marker: u8) -> Result<(), TranscodeError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            self.out.as_mut_vec().push(marker);
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// A string starting at the opening quote at `self.pos`.
    fn string(&mut self) -> Result<(), TranscodeError> {
        let start = self.pos + 1;
        let rest = &self.src[start..];
        match rest.iter().position(|&b| STRING_STOP[usize::from(b)]) {
            Some(i) if rest[i] == b'"' => {
                // The input is valid UTF-8 and `"` is ASCII, so this slice is too.
                let raw = &rest[..i];
                let buf = self.out.as_mut_vec();
                write_str_header(buf, raw.len());
                buf.extend_from_slice(raw);
                self.pos = start + i + 1;
                Ok(())
            }
            Some(_) => {
                let end = self.find_string_end(start)?;
                self.string_body(start, end)?;
                self.pos = end + 1;
                Ok(())
            }
            None => {
                self.pos = start;
                self.err("unterminated string")
            }
        }
    }

    /// The index of the closing quote of the string whose contents start at `start`.
    fn find_string_end(&mut self, start: usize) -> Result<usize, TranscodeError> {
        let mut i = start;
        while let Some(&b) = self.src.get(i) {
            match b {
                b'"' => return Ok(i),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        self.pos = start;
        self.err("unterminated string")
    }

    /// Writes the string whose raw contents (escapes included) are `src[start..end]`.
    fn string_body(&mut self, start: usize, end: usize) -> Result<(), TranscodeError> {
        let raw = &self.src[start..end];
        if !raw.iter().any(|&b| STRING_STOP[usize::from(b)]) {
            let buf = self.out.as_mut_vec();
            write_str_header(buf, raw.len());
            buf.extend_from_slice(raw);
            return Ok(());
        }
        let body_at = self.out.as_mut_vec().len();
        let mut i = start;
        while i < end {
            let seg_end = self.src[i..end]
                .iter()
                .position(|&b| b == b'\\' || b < 0x20)
                .map_or(end, |p| i + p);
            let seg = &self.src[i..seg_end];
            self.out.as_mut_vec().extend_from_slice(seg);
            i = seg_end;
            if i == end {
                break;
            }
            if self.src[i] < 0x20 {
                self.pos = i;
                return self.err("control character in string");
            }
            i = self.escape(i, end)?;
        }
        let buf = self.out.as_mut_vec();
        let len = buf.len() - body_at;
        let (h, n) = str_header(len);
        buf.splice(body_at..body_at, h[..n].iter().copied());
        Ok(())
    }

    /// Decodes the escape at `src[at]` (a backslash); returns the index after it.
    fn escape(&mut self, at: usize, end: usize) -> Result<usize, TranscodeError> {
        let Some(&kind) = self.src.get(at + 1).filter(|_| at + 1 < end) else {
            self.pos = at;
            return self.err("unterminated escape");
        };
        let simple = match kind {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            _ => {
                self.pos = at;
                return self.err("invalid escape");
            }
        };
        if let Some(byte) = simple {
            self.out.as_mut_vec().push(byte);
            return Ok(at + 2);
        }
        let Some(unit) = hex4(self.src.get(at + 2..at + 6).filter(|_| at + 6 <= end)) else {
            self.pos = at;
            return self.err("invalid \\u escape");
        };
        let mut next = at + 6;
        let ch = match unit {
            0xD800..=0xDBFF => {
                let low = if self.src.get(next..next + 2) == Some(b"\\u") && next + 6 <= end {
                    hex4(self.src.get(next + 2..next + 6))
                } else {
                    None
                };
                match low {
                    Some(low @ 0xDC00..=0xDFFF) => {
                        next += 6;
                        let c = 0x10000
                            + ((u32::from(unit) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
                    }
                    _ => char::REPLACEMENT_CHARACTER,
                }
            }
            0xDC00..=0xDFFF => char::REPLACEMENT_CHARACTER,
            _ => char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER),
        };
        let mut utf8 = [0u8; 4];
        self.out
            .as_mut_vec()
            .extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
        Ok(next)
    }

    fn number(&mut self) -> Result<(), TranscodeError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return self.err("invalid number"),
        }
        let int_end = self.pos;
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.err("expected a digit after '.'");
            }
            self.skip_digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            is_float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.err("expected a digit in the exponent");
            }
            self.skip_digits();
        }
        if !is_float && let Some(magnitude) = parse_u64(&self.src[int_start..int_end]) {
            let buf = &mut self.out;
            if !negative {
                let Ok(_) = rmp::encode::write_uint(buf, magnitude);
                return Ok(());
            }
            if magnitude == 0 {
                let Ok(()) = rmp::encode::write_f64(buf, -0.0);
                return Ok(());
            }
            if magnitude <= 1 << 63 {
                // 2^63 wraps to i64::MIN, which is exactly -2^63.
                let Ok(_) = rmp::encode::write_sint(buf, 0i64.wrapping_sub(magnitude as i64));
                return Ok(());
            }
        }
        // Fractions, exponents and integers beyond 64 bits.
        let token = std::str::from_utf8(&self.src[start..self.pos]).unwrap_or("");
        match token.parse::<f64>() {
            Ok(value) => {
                let Ok(()) = rmp::encode::write_f64(&mut self.out, value);
                Ok(())
            }
            Err(_) => self.err("invalid number"),
        }
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

fn hex4(digits: Option<&[u8]>) -> Option<u16> {
    let digits = digits?;
    let mut value: u16 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u16::from(v);
    }
    Some(value)
}

/// Decimal digits to u64, `None` on overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for &d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(value)
}

/// Reads msgpack with `rmp-serde` and writes each value it is handed as JSON text; records why
/// it refused a value, as serde errors carry only text.
struct JsonWriter {
    out: Vec<u8>,
    failure: Option<&'static str>,
}

impl JsonWriter {
    fn refuse<E: de::Error>(&mut self, what: &'static str) -> E {
        self.failure = Some(what);
        E::custom(what)
    }

    /// Writes a comma unless this is the container's first item; returns where the comma
    /// went, to take it back when there is no item after all.
    fn separator(&mut self, first: &mut bool) -> usize {
        let at = self.out.len();
        if !std::mem::take(first) {
            self.out.push(b',');
        }
        at
    }

    fn display(&mut self, v: impl std::fmt::Display) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{v}");
    }

    fn float<E: de::Error>(&mut self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(self.refuse("NaN and infinity have no JSON form"));
        }
        // `{:?}` is the shortest text that parses back to the same f64, and it always has a
        // fraction or an exponent, so the value stays a float.
        self.display(format_args!("{v:?}"));
        Ok(())
    }
}

/// The JSON of what `rmp-serde` read, for a failed [`msgpack_to_json`]: `at` is where reading
/// stopped.
fn msgpack_error(
    error: rmp_serde::decode::Error,
    at: usize,
    failure: Option<&'static str>,
    empty: bool,
) -> TranscodeError {
    use rmp_serde::decode::Error;
    let eof = |e: &std::io::Error| e.kind() == std::io::ErrorKind::UnexpectedEof;
    let what = match error {
        Error::DepthLimitExceeded => return TranscodeError::TooDeep,
        // A string's bytes that are not UTF-8 (rmp-serde offers them as bytes first, which the
        // writer refuses, so this comes before `failure`).
        Error::Utf8Error(_) => "string is not valid UTF-8",
        _ if failure.is_some() => failure.unwrap_or_default(),
        // A marker missing after the first one: a container declared more items than follow.
        Error::InvalidMarkerRead(e) if eof(&e) && !empty => "length exceeds the input",
        Error::InvalidMarkerRead(e) | Error::InvalidDataRead(e) if eof(&e) => {
            "unexpected end of input"
        }
        Error::TypeMismatch(rmp::Marker::Reserved) => "reserved marker 0xc1",
        _ => "malformed msgpack",
    };
    TranscodeError::Msgpack { at, what }
}

/// One msgpack value, written as JSON.
struct JsonValue<'w>(&'w mut JsonWriter);

/// One map key: a string, or an integer written as a string.
struct JsonKey<'w>(&'w mut JsonWriter);

impl<'de> DeserializeSeed<'de> for JsonValue<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> DeserializeSeed<'de> for JsonKey<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonValue<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a msgpack value with a JSON form")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0
            .out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.display(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.display(v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.float(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_json_string(&mut self.0.out, v);
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Err(self.0.refuse("binary data has no JSON form"))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        // How rmp-serde hands over an extension type.
        Err(self.0.refuse("extension types have no JSON form"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let w = self.0;
        w.out.push(b'[');
        let mut first = true;
        loop {
            let end = w.separator(&mut first);
            if seq.next_element_seed(JsonValue(&mut *w))?.is_none() {
                w.out.truncate(end);
                break;
            }
        }
        w.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let w = self.0;
        w.out.push(b'{');
        let mut first = true;
        loop {
            let end = w.separator(&mut first);
            if map.next_key_seed(JsonKey(&mut *w))?.is_none() {
                w.out.truncate(end);
                break;
            }
            w.out.push(b':');
            map.next_value_seed(JsonValue(&mut *w))?;
        }
        w.out.push(b'}');
        Ok(())
    }
}

const NOT_A_KEY: &str = "map keys must be strings (or integers)";

impl<'de> Visitor<'de> for JsonKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or integer map key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_json_string(&mut self.0.out, v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.display(format_args!("\"{v}\""));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.display(format_args!("\"{v}\""));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.0.refuse(NOT_A_KEY))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.0.refuse(NOT_A_KEY))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.0.refuse(NOT_A_KEY))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Err(self.0.refuse(NOT_A_KEY))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(self.0.refuse(NOT_A_KEY))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.0.refuse(NOT_A_KEY))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.0.refuse(NOT_A_KEY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rmpv::Value;

    const SAMPLES: [&[u8]; 5] = [
        include_bytes!("testdata/message_create_1.json"),
        include_bytes!("testdata/message_reaction_add_2.json"),
        include_bytes!("testdata/activity_3.json"),
        include_bytes!("testdata/voice_state_update_1.json"),
        include_bytes!("testdata/ready_1.json"),
    ];

    fn mp(json: &str) -> Vec<u8> {
        json_to_msgpack(json.as_bytes()).unwrap()
    }

    fn json_err(json: &str) -> String {
        json_to_msgpack(json.as_bytes()).unwrap_err().to_string()
    }

    /// rmpv's reading of our output: an independent decoder.
    fn decode(bytes: &[u8]) -> Value {
        let mut rd = bytes;
        let v = rmpv::decode::read_value(&mut rd).unwrap();
        assert!(rd.is_empty(), "trailing bytes");
        v
    }

    /// rmpv's (minimal) encoding of a value.
    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn scalars_use_the_smallest_encoding() {
        assert_eq!(mp("null"), [0xc0]);
        assert_eq!(mp(" true "), [0xc3]);
        assert_eq!(mp("false"), [0xc2]);
        assert_eq!(mp("0"), [0x00]);
        assert_eq!(mp("127"), [0x7f]);
        assert_eq!(mp("128"), [0xcc, 0x80]);
        assert_eq!(mp("-1"), [0xff]);
        assert_eq!(mp("-32"), [0xe0]);
        assert_eq!(mp("-33"), [0xd0, 0xdf]);
        assert_eq!(mp("18446744073709551615"), {
            let mut v = vec![0xcf];
            v.extend_from_slice(&u64::MAX.to_be_bytes());
            v
        });
        assert_eq!(mp("-9223372036854775808"), {
            let mut v = vec![0xd3];
            v.extend_from_slice(&i64::MIN.to_be_bytes());
            v
        });
        assert_eq!(mp("9007199254740993"), {
            // 2^53 + 1: not representable as f64, exact as uint64.
            let mut v = vec![0xcf];
            v.extend_from_slice(&9_007_199_254_740_993u64.to_be_bytes());
            v
        });
        assert_eq!(decode(&mp("1.5")), Value::F64(1.5));
        assert_eq!(decode(&mp("1e2")), Value::F64(100.0));
        assert_eq!(decode(&mp("-2.5E-3")), Value::F64(-0.0025));
        match decode(&mp("-0")) {
            Value::F64(z) => assert!(z == 0.0 && z.is_sign_negative()),
            other => panic!("{other:?}"),
        }
        // Beyond 64 bits: float64, as in any msgpack library.
        assert_eq!(
            decode(&mp("18446744073709551616")),
            Value::F64(18_446_744_073_709_551_616.0)
        );
        assert_eq!(mp(r#""a""#), [0xa1, b'a']);
    }

    #[test]
    fn containers_keep_order_and_get_minimal_headers() {
        assert_eq!(mp("[]"), [0x90]);
        assert_eq!(mp("{}"), [0x80]);
        assert_eq!(
            mp(r#"{"b":1,"a":[true,{}]}"#),
            [0x82, 0xa1, b'b', 0x01, 0xa1, b'a', 0x92, 0xc3, 0x80]
        );
        for n in [15usize, 16, 65_535, 65_536] {
            let array = format!("[{}]", vec!["0"; n].join(","));
            let out = mp(&array);
            let expected = encode(&Value::Array(vec![Value::from(0); n]));
            assert_eq!(out, expected, "array of {n}");
            let map = format!(
                "{{{}}}",
                (0..n)
                    .map(|i| format!("\"{i}\":null"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let expected = encode(&Value::Map(
                (0..n)
                    .map(|i| (Value::from(i.to_string()), Value::Nil))
                    .collect(),
            ));
            assert_eq!(mp(&map), expected, "map of {n}");
        }
        // Nested large containers are patched at the right places.
        let inner = format!("[{}]", vec!["1"; 300].join(","));
        let doc = format!(r#"{{"x":{inner},"y":[{inner},{inner}],"z":"end"}}"#);
        let value = decode(&mp(&doc));
        assert_eq!(value["z"].as_str(), Some("end"));
        assert_eq!(value["y"][1].as_array().map(Vec::len), Some(300));
    }

    #[test]
    fn string_lengths_and_escapes() {
        for n in [31usize, 32, 255, 256, 65_535, 65_536] {
            let s = "x".repeat(n);
            assert_eq!(mp(&format!("\"{s}\"")), encode(&Value::from(s.as_str())));
            // With an escape, the header is chosen after decoding.
            let escaped = format!("\"\\u0078{}\"", "x".repeat(n - 1));
            assert_eq!(
                mp(&escaped),
                encode(&Value::from(s.as_str())),
                "escaped {n}"
            );
        }
        assert_eq!(
            decode(&mp(r#""\"\\\/\b\f\n\r\t\u00e9\u4e2d\ud83d\ude00 ok""#)),
            Value::from("\"\\/\u{8}\u{c}\n\r\té中😀 ok")
        );
        // Lone surrogates cannot be UTF-8: they become U+FFFD.
        assert_eq!(decode(&mp(r#""a\ud800b""#)), Value::from("a\u{fffd}b"));
        assert_eq!(decode(&mp(r#""\udc00""#)), Value::from("\u{fffd}"));
        assert_eq!(decode(&mp(r#""\ud800\u0041""#)), Value::from("\u{fffd}A"));
        // Raw UTF-8 passes through.
        assert_eq!(decode(&mp("\"👍 𝓓\"")), Value::from("👍 𝓓"));
        let mut out = Vec::new();
        append_json_str_contents_as_msgpack(br"MESSAGE\u005fCREATE", &mut out).unwrap();
        assert_eq!(decode(&out), Value::from("MESSAGE_CREATE"));
    }

    #[test]
    fn malformed_json_is_refused_and_leaves_the_buffer() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            ".5",
            r#""abc"#,
            "tru",
            "nul",
            "[1] 2",
            "\"a\u{1}b\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            "]",
            "{]",
            "[}",
            "NaN",
        ] {
            let mut out = vec![1, 2, 3];
            assert!(
                append_json_as_msgpack(bad.as_bytes(), &mut out).is_err(),
                "accepted {bad:?}"
            );
            assert_eq!(out, [1, 2, 3], "{bad:?}");
        }
        assert!(json_err("[1 2]").contains("expected ',' or ']'"));
        assert!(json_err(r#"{"a":1 "b":2}"#).contains("expected ',' or '}'"));
        assert!(
            json_to_msgpack(b"\"\xff\"")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        assert!(
            json_to_msgpack(b"\"\\n\xff\"")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            json_to_msgpack(deep.as_bytes()),
            Err(TranscodeError::TooDeep)
        );
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(json_to_msgpack(ok.as_bytes()).is_ok());
    }

    #[test]
    fn msgpack_to_json_output() {
        let to_json = |v: &Value| String::from_utf8(msgpack_to_json(&encode(v)).unwrap()).unwrap();
        assert_eq!(
            to_json(&Value::Map(vec![
                (Value::from("op"), Value::from(3)),
                (
                    Value::from("d"),
                    Value::Map(vec![
                        (Value::from("s"), Value::from("a\"\\\n\u{1}é")),
                        (Value::from("n"), Value::from(-5)),
                        (Value::from("f"), Value::F64(1.0)),
                        (Value::from("g"), Value::F32(0.5)),
                        (Value::from("b"), Value::from(false)),
                        (Value::from("z"), Value::Nil),
                        (Value::from("a"), Value::Array(vec![Value::from(u64::MAX)])),
                    ])
                ),
            ])),
            r#"{"op":3,"d":{"s":"a\"\\\n\u0001é","n":-5,"f":1.0,"g":0.5,"b":false,"z":null,"a":[18446744073709551615]}}"#
        );
        // Integer keys become strings.
        assert_eq!(
            to_json(&Value::Map(vec![(Value::from(7), Value::from(i64::MIN))])),
            r#"{"7":-9223372036854775808}"#
        );
        assert_eq!(to_json(&Value::Array(vec![])), "[]");
    }

    #[test]
    fn msgpack_without_json_form_is_refused() {
        let err = |v: &Value| msgpack_to_json(&encode(v)).unwrap_err().to_string();
        assert!(err(&Value::Binary(vec![1])).contains("binary"));
        assert!(err(&Value::Ext(1, vec![1])).contains("extension"));
        assert!(err(&Value::F64(f64::NAN)).contains("NaN"));
        assert!(err(&Value::Map(vec![(Value::Nil, Value::Nil)])).contains("keys must be strings"));
        assert!(msgpack_to_json(&[]).is_err());
        assert!(
            msgpack_to_json(&[0xa3, b'a'])
                .unwrap_err()
                .to_string()
                .contains("end of input")
        );
        assert!(msgpack_to_json(&[0x92, 0x01]).is_err());
        assert!(
            msgpack_to_json(&[0x01, 0x02])
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        assert!(msgpack_to_json(&[0xc1]).is_err());
        assert!(
            msgpack_to_json(&[0xa2, 0xff, 0xfe])
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        // A huge declared length is refused before any work.
        assert!(
            msgpack_to_json(&[0xdd, 0xff, 0xff, 0xff, 0xff])
                .unwrap_err()
                .to_string()
                .contains("length exceeds")
        );
        let deep = [vec![0x91; MAX_DEPTH + 1], vec![0xc0]].concat();
        assert_eq!(msgpack_to_json(&deep), Err(TranscodeError::TooDeep));
        let ok = [vec![0x91; MAX_DEPTH], vec![0xc0]].concat();
        assert!(msgpack_to_json(&ok).is_ok());
        // The reserved marker is refused inside containers too (a msgpack reader that reads it
        // as nil would let it through).
        assert!(
            msgpack_to_json(&[0x81, 0xa1, b'a', 0xc1])
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
    }

    /// Pinned from a proptest failure: floats must round-trip bit for bit (the comparison needs
    /// an exactly rounding JSON parser).
    #[test]
    fn float_round_trip_is_bit_exact() {
        for text in [
            "8.296849175839375e15",
            "8296849175839375.0",
            "5e-324",
            "1.7976931348623157e308",
        ] {
            let packed = json_to_msgpack(text.as_bytes()).unwrap();
            let expected: f64 = text.parse().unwrap();
            assert_eq!(decode(&packed), Value::F64(expected));
            let back = msgpack_to_json(&packed).unwrap();
            let again: f64 = std::str::from_utf8(&back).unwrap().parse().unwrap();
            assert_eq!(again.to_bits(), expected.to_bits(), "{text}");
        }
    }

    #[test]
    fn recorded_payloads_round_trip() {
        for sample in SAMPLES {
            let packed = json_to_msgpack(sample).unwrap();
            let back = msgpack_to_json(&packed).unwrap();
            let original: serde_json::Value = serde_json::from_slice(sample).unwrap();
            let round: serde_json::Value = serde_json::from_slice(&back).unwrap();
            assert_eq!(original, round);
            assert_eq!(json_to_msgpack(&back).unwrap(), packed);
            assert!(packed.len() < sample.len());
        }
    }

    /// A JSON value as the tests know it, with map order and duplicate keys kept.
    #[derive(Clone, Debug)]
    enum J {
        Null,
        Bool(bool),
        Uint(u64),
        Neg(i64),
        Float(f64),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    impl J {
        fn to_value(&self) -> Value {
            match self {
                J::Null => Value::Nil,
                J::Bool(b) => Value::from(*b),
                J::Uint(u) => Value::from(*u),
                J::Neg(i) => Value::from(*i),
                J::Float(f) => Value::F64(*f),
                J::Str(s) => Value::from(s.as_str()),
                J::Arr(items) => Value::Array(items.iter().map(J::to_value).collect()),
                J::Obj(entries) => Value::Map(
                    entries
                        .iter()
                        .map(|(k, v)| (Value::from(k.as_str()), v.to_value()))
                        .collect(),
                ),
            }
        }
    }

    /// How to write JSON text: escape non-ASCII as `\u` sequences, escape `/`, add blanks,
    /// write floats with an exponent.
    #[derive(Clone, Copy, Debug)]
    struct Style {
        ascii_only: bool,
        escape_slash: bool,
        blanks: bool,
        exponent: bool,
    }

    fn render(j: &J, style: Style, out: &mut String) {
        let blank = |out: &mut String| {
            if style.blanks {
                out.push_str(" \n\t ");
            }
        };
        match j {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Uint(u) => out.push_str(&u.to_string()),
            J::Neg(i) => out.push_str(&i.to_string()),
            J::Float(f) if style.exponent => out.push_str(&format!("{f:e}")),
            J::Float(f) => out.push_str(&format!("{f:?}")),
            J::Str(s) => render_str(s, style, out),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    blank(out);
                    render(item, style, out);
                    blank(out);
                }
                out.push(']');
            }
            J::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    blank(out);
                    render_str(k, style, out);
                    blank(out);
                    out.push(':');
                    blank(out);
                    render(v, style, out);
                }
                blank(out);
                out.push('}');
            }
        }
    }

    fn render_str(s: &str, style: Style, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if style.escape_slash => out.push_str("\\/"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if style.ascii_only && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn arb_j() -> impl Strategy<Value = J> {
        let int_edges = prop_oneof![
            Just(J::Uint(u64::MAX)),
            Just(J::Uint((1 << 53) + 1)),
            Just(J::Neg(i64::MIN)),
            Just(J::Neg(-(1 << 53) - 1)),
            Just(J::Uint(0)),
        ];
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            any::<u64>().prop_map(J::Uint),
            (i64::MIN..0).prop_map(J::Neg),
            int_edges,
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(J::Float),
            any::<String>().prop_map(J::Str),
            "[a-z\\\\\"/ é😀\u{7f}\u{2028}]{0,40}".prop_map(J::Str),
        ];
        leaf.prop_recursive(5, 200, 24, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..24).prop_map(J::Arr),
                prop::collection::vec(("[a-z_]{0,3}|\\PC{0,8}", inner), 0..24).prop_map(J::Obj),
            ]
        })
    }

    fn arb_style() -> impl Strategy<Value = Style> {
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(ascii_only, escape_slash, blanks, exponent)| Style {
                ascii_only,
                escape_slash,
                blanks,
                exponent,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// JSON -> msgpack keeps every value exactly (ints 64-bit exact, key order, unicode,
        /// escapes), with the same bytes a msgpack library writes for those values.
        #[test]
        fn json_to_msgpack_is_exact(j in arb_j(), style in arb_style()) {
            let mut text = String::new();
            render(&j, style, &mut text);
            let packed = json_to_msgpack(text.as_bytes()).unwrap();
            let expected = j.to_value();
            prop_assert_eq!(decode(&packed), expected.clone());
            prop_assert_eq!(&packed, &encode(&expected));
        }

        /// JSON -> msgpack -> JSON preserves values exactly and is stable.
        #[test]
        fn round_trip_is_exact(j in arb_j(), style in arb_style()) {
            let mut text = String::new();
            render(&j, style, &mut text);
            let packed = json_to_msgpack(text.as_bytes()).unwrap();
            let back = msgpack_to_json(&packed).unwrap();
            prop_assert_eq!(json_to_msgpack(&back).unwrap(), packed);
            let original: serde_json::Value = serde_json::from_str(&text).unwrap();
            let round: serde_json::Value = serde_json::from_slice(&back).unwrap();
            prop_assert_eq!(original, round);
        }

        /// Arbitrary bytes never panic either converter.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = json_to_msgpack(&bytes);
            let _ = msgpack_to_json(&bytes);
        }
    }
}
