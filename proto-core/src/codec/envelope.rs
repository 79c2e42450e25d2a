//! The JSON envelope scanner: finds `op`, `t`, `s` and the span of `d` in one gateway payload.
//!
//! Owns: reading the envelope object `{"op":…,"d":…,"s":…,"t":…}` in any key order, with
//! whitespace, escaped keys, unknown extra keys and missing keys (missing `s`/`t`/`d` = null);
//! returning byte ranges so the payload's bytes are never copied or re-serialised. Does not own:
//! decompression, ETF, or what an opcode means.
//!
//! # How it is fast
//!
//! Discord sends the small fields first (`t`, `s`, `op`, then `d`), so the scanner reads the
//! envelope's keys with a hand-written byte scanner and never parses `d`: the end of an object or
//! array `d` is found by [`skip_container`], a structural index in the style of simdjson's first
//! stage, over 64-byte blocks with safe SIMD (the `wide` crate): one bit mask each
//! for quotes, backslashes, opening and closing brackets; escaped quotes removed; a prefix-XOR of
//! the quotes masks out everything inside strings; the depth changes by popcounts, and only the
//! block where the depth returns to zero is walked bit by bit. When `d` is the last key (the
//! usual case) nothing else is read after it but the closing brace.
//!
//! # What is validated
//!
//! Everything outside `d` is validated exactly as `serde_json` validates it when deserialising
//! the envelope into `{op: u8, s: Option<u64>, t: Option<&str>, d: Option<&RawValue>}`: JSON
//! syntax, UTF-8, string escapes, control characters, duplicate known keys, trailing bytes, number
//! types (`op` must be an integer 0..=255, `s` an unsigned 64-bit integer or null, `t` a string
//! without escapes or null), and the nesting limit of 128 in unknown keys' values. When `d` is a
//! scalar or a string it is validated too. When `d` is an object or an array only its structure
//! is followed (strings, escapes, bracket depth): its contents are the payload's business, and
//! publishing them as they came is what the bridge does. Malformed input is always an error,
//! never a panic or an out-of-bounds read.

use std::ops::Range;

/// Deepest nesting accepted in unknown keys' values (the envelope object counts as one level),
/// matching `serde_json`'s recursion limit.
pub(crate) const MAX_DEPTH: usize = 128;

/// The envelope fields of one payload, as positions in its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) op: u8,
    pub(crate) s: Option<u64>,
    pub(crate) t: Option<Range<usize>>,
    /// The span of `d`'s value; empty when `d` is absent.
    pub(crate) d: Range<usize>,
}

/// Why an envelope was rejected. Static, so errors cost nothing on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanError {
    pub(crate) reason: &'static str,
    pub(crate) at: usize,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.at)
    }
}

type Result<T> = std::result::Result<T, ScanError>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Op,
    S,
    T,
    D,
    Other,
}

/// Scans one JSON gateway payload.
pub(crate) fn scan(buf: &[u8]) -> Result<Envelope> {
    let mut sc = Scanner { buf, pos: 0 };
    let mut op: Option<u8> = None;
    let mut s: Option<Option<u64>> = None;
    let mut t: Option<Option<Range<usize>>> = None;
    let mut d: Option<Range<usize>> = None;

    sc.skip_ws();
    sc.expect(b'{', "expected `{`")?;
    sc.skip_ws();
    if sc.peek() == Some(b'}') {
        sc.pos += 1;
    } else {
        loop {
            sc.expect(b'"', "expected a key")?;
            let key = sc.key()?;
            sc.skip_ws();
            sc.expect(b':', "expected `:`")?;
            sc.skip_ws();
            match key {
                Key::Op => {
                    let at = sc.pos;
                    let v = sc.unsigned()?;
                    if op.is_some() {
                        return Err(sc.err("duplicate field `op`"));
                    }
                    op = Some(u8::try_from(v).map_err(|_| err("`op` out of range", at))?);
                }
                Key::S => {
                    let v = if sc.null()? {
                        None
                    } else {
                        Some(sc.unsigned()?)
                    };
                    if s.is_some() {
                        return Err(sc.err("duplicate field `s`"));
                    }
                    s = Some(v);
                }
                Key::T => {
                    let v = if sc.null()? {
                        None
                    } else {
                        Some(sc.event_name()?)
                    };
                    if t.is_some() {
                        return Err(sc.err("duplicate field `t`"));
                    }
                    t = Some(v);
                }
                Key::D => {
                    let start = sc.pos;
                    match sc.peek() {
                        Some(b'{' | b'[') => sc.pos = skip_container(buf, start)?,
                        _ => sc.value(1)?,
                    }
                    if d.is_some() {
                        return Err(sc.err("duplicate field `d`"));
                    }
                    d = Some(start..sc.pos);
                }
                Key::Other => sc.value(1)?,
            }
            sc.skip_ws();
            match sc.next() {
                Some(b',') => sc.skip_ws(),
                Some(b'}') => break,
                _ => return Err(err("expected `,` or `}`", sc.pos.saturating_sub(1))),
            }
        }
    }
    sc.skip_ws();
    if sc.pos != buf.len() {
        return Err(sc.err("trailing characters"));
    }
    let op = op.ok_or_else(|| err("missing field `op`", 0))?;
    Ok(Envelope {
        op,
        s: s.flatten(),
        t: t.flatten(),
        d: d.unwrap_or(0..0),
    })
}

fn err(reason: &'static str, at: usize) -> ScanError {
    ScanError { reason, at }
}

/// A cursor over the payload. Every read is bounds-checked through `get`.
struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn err(&self, reason: &'static str) -> ScanError {
        err(reason, self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8, reason: &'static str) -> Result<()> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.buf.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// Consumes `null` if it is next.
    fn null(&mut self) -> Result<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads a key (after its opening quote) and classifies it.
    fn key(&mut self) -> Result<Key> {
        let start = self.pos;
        let escaped = self.string_body(true)?;
        let raw = &self.buf[start..self.pos - 1];
        if escaped {
            let mut decoded = Vec::with_capacity(raw.len());
            unescape(raw, &mut decoded).map_err(|_| err("invalid escape in key", start))?;
            return Ok(classify(&decoded));
        }
        Ok(classify(raw))
    }

    /// An unsigned integer as `serde_json` reads it into `u8`/`u64`: a JSON number that is a
    /// non-negative integer fitting 64 bits. Anything else (fractions, exponents, negatives,
    /// overflow, non-numbers) is an error.
    fn unsigned(&mut self) -> Result<u64> {
        let start = self.pos;
        let mut v: u64 = 0;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(c @ b'0'..=b'9') = self.peek() {
                    v = v
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(c - b'0')))
                        .ok_or_else(|| err("integer out of range", start))?;
                    self.pos += 1;
                }
            }
            _ => return Err(err("expected an unsigned integer", start)),
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => Err(err("expected an integer, found a float", start)),
            Some(b'0'..=b'9') => Err(err("leading zero", start)),
            _ => Ok(v),
        }
    }

    /// The event name (after `"t":`): a string without escapes, returned without its quotes.
    fn event_name(&mut self) -> Result<Range<usize>> {
        self.expect(b'"', "expected a string or null")?;
        let start = self.pos;
        if self.string_body(true)? {
            return Err(err("escaped event name", start));
        }
        Ok(start..self.pos - 1)
    }

    /// Consumes a string's body and closing quote (the opening quote is already consumed),
    /// validating escapes and control characters, and UTF-8 when `utf8` is set (`serde_json`
    /// checks it in keys and in strings it borrows, not in values it skips). Returns whether the
    /// string had escapes.
    fn string_body(&mut self, utf8: bool) -> Result<bool> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            let Some(b) = self.next() else {
                return Err(self.err("unterminated string"));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match self.next() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                        Some(b'u') => {
                            let hex = self.buf.get(self.pos..self.pos + 4);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("invalid \\u escape"));
                            }
                            self.pos += 4;
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                0..=0x1f => return Err(self.err("control character in string")),
                _ => {}
            }
        }
        let body = &self.buf[start..self.pos - 1];
        if utf8 && !body.is_ascii() && std::str::from_utf8(body).is_err() {
            return Err(err("invalid UTF-8 in string", start));
        }
        Ok(escaped)
    }

    /// Validates and consumes any JSON value; `depth` is the nesting level it sits in.
    fn value(&mut self, depth: usize) -> Result<()> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                self.string_body(false).map(drop)
            }
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("recursion limit exceeded"));
                }
                self.pos += 1;
                self.skip_ws();
                let close = if open == b'{' { b'}' } else { b']' };
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.expect(b'"', "expected a key")?;
                        self.string_body(false)?;
                        self.skip_ws();
                        self.expect(b':', "expected `:`")?;
                        self.skip_ws();
                    }
                    self.value(depth + 1)?;
                    self.skip_ws();
                    match self.next() {
                        Some(b',') => self.skip_ws(),
                        Some(c) if c == close => return Ok(()),
                        _ => return Err(err("expected `,` or a closing bracket", self.pos - 1)),
                    }
                }
            }
            _ => Err(self.err("expected a value")),
        }
    }

    /// Validates and consumes a JSON number.
    fn number(&mut self) -> Result<()> {
        let digits = |sc: &mut Self| {
            let start = sc.pos;
            while let Some(b'0'..=b'9') = sc.peek() {
                sc.pos += 1;
            }
            if sc.pos == start {
                Err(sc.err("invalid number"))
            } else {
                Ok(())
            }
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            _ => digits(self)?,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            digits(self)?;
        }
        Ok(())
    }
}

fn classify(key: &[u8]) -> Key {
    match key {
        b"op" => Key::Op,
        b"s" => Key::S,
        b"t" => Key::T,
        b"d" => Key::D,
        _ => Key::Other,
    }
}

/// Decodes the escapes of an already validated string body (used for keys only, which are short).
fn unescape(raw: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), ()> {
    let mut i = 0;
    let hex4 = |i: usize| -> std::result::Result<u32, ()> {
        let h = raw.get(i..i + 4).ok_or(())?;
        let s = std::str::from_utf8(h).map_err(drop)?;
        u32::from_str_radix(s, 16).map_err(drop)
    };
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let e = *raw.get(i + 1).ok_or(())?;
        i += 2;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(i)?;
                i += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return Err(());
                    }
                    let lo = hex4(i + 2)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(());
                    }
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).ok_or(())?
                } else {
                    char::from_u32(hi).ok_or(())?
                }
            }
            _ => return Err(()),
        };
        let mut tmp = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
    Ok(())
}

/// Finds the end (exclusive) of the object or array that starts at `start` by following only
/// its structure: strings (with escapes) and bracket depth. Contents are not validated.
pub(crate) fn skip_container(buf: &[u8], start: usize) -> Result<usize> {
    let mut depth: u64 = 0;
    let mut in_string: u64 = 0; // all ones while the previous block ended inside a string
    let mut escape_carry = false; // previous block ended with an escaping backslash
    let mut base = start;
    let mut padded = [b' '; 64];
    while let Some(rest) = buf.get(base..).filter(|r| !r.is_empty()) {
        let block: &[u8; 64] = match rest.first_chunk::<64>() {
            Some(full) => full,
            None => {
                padded[..rest.len()].copy_from_slice(rest);
                &padded
            }
        };
        let m = Masks::of(block);
        let escaped = match m.backslash {
            Some(backslash) => escaped_mask(backslash, &mut escape_carry),
            None => u64::from(std::mem::take(&mut escape_carry)),
        };
        let inside = prefix_xor(m.quote & !escaped) ^ in_string;
        in_string = ((inside as i64) >> 63) as u64;
        let opens = m.open & !inside;
        let closes = m.close & !inside;
        if opens | closes == 0 {
            // Nothing structural in this block (inside a long string, or a run of scalars).
        } else if depth > sparse_count(closes) {
            depth = depth + sparse_count(opens) - sparse_count(closes);
        } else {
            let mut brackets = opens | closes;
            while brackets != 0 {
                let bit = brackets & brackets.wrapping_neg();
                if opens & bit != 0 {
                    depth += 1;
                } else {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(base + bit.trailing_zeros() as usize + 1);
                    }
                }
                brackets ^= bit;
            }
        }
        base += 64;
    }
    Err(err("unterminated object or array", start))
}

/// One bit per byte of a 64-byte block for each character class the structure depends on.
struct Masks {
    quote: u64,
    /// `None` when the block has no backslash (the usual case).
    backslash: Option<u64>,
    open: u64,
    close: u64,
}

impl Masks {
    /// Sixteen bytes at a time: vector compares and move-masks (SSE2 on x86-64, NEON on
    /// aarch64, plain code elsewhere) through the `wide` crate's safe types.
    #[inline(always)]
    fn of(block: &[u8; 64]) -> Self {
        use wide::u8x16;
        let quote = u8x16::splat(b'"');
        let backslash = u8x16::splat(b'\\');
        let open = u8x16::splat(b'{');
        let close = u8x16::splat(b'}');
        let case = u8x16::splat(0x20);
        let mut m = [0u64; 4];
        for (i, chunk) in block.chunks_exact(16).enumerate() {
            let v = u8x16::new(chunk.try_into().unwrap_or_default());
            // `{` 0x7B and `[` 0x5B differ only in bit 0x20; so do `}` 0x7D and `]` 0x5D.
            let folded = v | case;
            let shift = i * 16;
            m[0] |= u64::from(v.simd_eq(quote).to_bitmask()) << shift;
            m[1] |= u64::from(v.simd_eq(backslash).to_bitmask()) << shift;
            m[2] |= u64::from(folded.simd_eq(open).to_bitmask()) << shift;
            m[3] |= u64::from(folded.simd_eq(close).to_bitmask()) << shift;
        }
        Self {
            quote: m[0],
            backslash: (m[1] != 0).then_some(m[1]),
            open: m[2],
            close: m[3],
        }
    }
}

/// The number of set bits of a mask with few of them (a block holds a handful of brackets).
/// Baseline x86-64 has no `popcnt` instruction, and this loop beats the bit-twiddling fallback.
#[inline(always)]
fn sparse_count(mut mask: u64) -> u64 {
    let mut n = 0;
    while mask != 0 {
        mask &= mask - 1;
        n += 1;
    }
    n
}

/// Bits of characters escaped by a backslash. Backslashes are rare, so the bits are walked.
#[inline(always)]
fn escaped_mask(backslash: u64, carry: &mut bool) -> u64 {
    let mut escaped = u64::from(*carry);
    *carry = false;
    let mut pending = backslash & !escaped;
    while pending != 0 {
        let i = pending.trailing_zeros();
        if i == 63 {
            *carry = true;
            break;
        }
        let next = 1u64 << (i + 1);
        escaped |= next;
        pending &= !(1u64 << i) & !next;
    }
    escaped
}

/// Bit i of the result is the XOR of bits 0..=i of `x`.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Envelope {
        scan(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn text<'a>(s: &'a str, r: &Range<usize>) -> &'a str {
        &s[r.clone()]
    }

    #[test]
    fn discord_order() {
        let s = r#"{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"content":"hi \"x\" }]","n":[1,{}]}}"#;
        let e = ok(s);
        assert_eq!((e.op, e.s), (0, Some(42)));
        assert_eq!(text(s, e.t.as_ref().unwrap()), "MESSAGE_CREATE");
        assert_eq!(text(s, &e.d), r#"{"content":"hi \"x\" }]","n":[1,{}]}"#);
    }

    #[test]
    fn d_first_and_extra_keys() {
        let s = r#" { "d" : [1, "]", {"a":"\\"}] , "x":{"y":[null]}, "op" : 7 ,"s":null} "#;
        let e = ok(s);
        assert_eq!((e.op, e.s, e.t.clone()), (7, None, None));
        assert_eq!(text(s, &e.d), r#"[1, "]", {"a":"\\"}]"#);
    }

    #[test]
    fn missing_keys_are_null() {
        let e = ok(r#"{"op":11}"#);
        assert_eq!(
            e,
            Envelope {
                op: 11,
                s: None,
                t: None,
                d: 0..0
            }
        );
        let s = r#"{"op":9,"d":false}"#;
        assert_eq!(text(s, &ok(s).d), "false");
    }

    #[test]
    fn escaped_key_names_count() {
        let e = ok(r#"{"\u006fp":3,"\u0064":1}"#);
        assert_eq!(e.op, 3);
        assert!(!e.d.is_empty());
    }

    #[test]
    fn long_d_crosses_blocks() {
        let inner = "\\\"".repeat(100) + &"]}".repeat(7);
        let s = format!(
            r#"{{"op":0,"d":[{{"a":"{inner}"}}, {}],"s":1}}"#,
            "[".repeat(90) + &"]".repeat(90)
        );
        let e = ok(&s);
        assert_eq!(e.s, Some(1));
        assert!(s[e.d.clone()].ends_with("]]"));
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "{",
            "[]",
            r#"{"op":256}"#,
            r#"{"op":-1}"#,
            r#"{"op":1.0}"#,
            r#"{"op":01}"#,
            r#"{"d":{}}"#,
            r#"{"op":1,"op":1}"#,
            r#"{"op":1}x"#,
            r#"{"op":1,"d":{"a":1}"#,
            r#"{"op":1,"t":"A\"B"}"#,
            r#"{"op":1,"d":"\x"}"#,
            r#"{"op":1,"s":-0}"#,
            r#"{"op":1,}"#,
            r#"{"op":1 "d":1}"#,
            r#"{"op":1,"d":[1,2"#,
            r#"{"op":1,"s":18446744073709551616}"#,
        ] {
            assert!(scan(s.as_bytes()).is_err(), "{s}");
        }
    }
}

#[cfg(test)]
mod skip_tests {
    use super::skip_container;

    /// Escapes and brackets at every position relative to the 64-byte blocks.
    #[test]
    fn escapes_at_every_block_offset() {
        let values = [
            r#"{"a":"x\\","b":["\"]}","\\\"{"]}"#,
            r#"[["\\\\\\\"]]\\",{}],"]"]"#,
            r#"{"k":"\\\\"}"#,
        ];
        for v in values {
            let reference: serde_json::Value = serde_json::from_str(v).expect("valid");
            for pad in 0..140 {
                let text = format!("{}{v} ,\"z\":1}}", " ".repeat(pad));
                let end = skip_container(text.as_bytes(), pad).expect("skips");
                assert_eq!(&text[pad..end], v, "pad {pad}");
                let round: serde_json::Value = serde_json::from_str(&text[pad..end]).expect("json");
                assert_eq!(round, reference);
            }
        }
    }
}
