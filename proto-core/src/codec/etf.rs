//! Erlang External Term Format (`encoding=etf`) to JSON text.
//!
//! Owns: decoding the term set of Discord's erlpack decoder (PROTOCOL.md §11.5) and writing the
//! JSON a JSON connection would have delivered, so everything downstream (the envelope scanner,
//! the profiles, consumers) sees one format. Does not own the envelope: the result is scanned
//! like any JSON payload.
//!
//! # Conversion rules
//!
//! | ETF term (tag) | JSON |
//! |---|---|
//! | version byte 131 | required first byte of a payload |
//! | SMALL_INTEGER (97), INTEGER (98) | number |
//! | SMALL_BIG (110), LARGE_BIG (111) up to 2^53 - 1 (flags, ms timestamps such as `version`) | number, as a JSON connection sends them |
//! | SMALL_BIG, LARGE_BIG above 2^53 - 1 (snowflakes: every id minted after 2015-01-25) | decimal **string**, as a JSON connection sends ids; magnitudes above 64 bits are an error |
//! | NEW_FLOAT (70), FLOAT (99, the legacy `%.20e` text) | number (shortest round-trip form); NaN and infinities become `null` |
//! | ATOM (100), SMALL_ATOM (115): Latin-1; ATOM_UTF8 (118), SMALL_ATOM_UTF8 (119) | `nil` and `null` → `null`, `true`/`false` → booleans, any other atom → string |
//! | BINARY (109) | string (invalid UTF-8 is replaced with U+FFFD rather than failing the connection) |
//! | STRING (107) (Erlang's compact list of small integers) | array of numbers |
//! | NIL (106) | `[]` |
//! | LIST (108) | array; the tail must be NIL (erlpack refuses improper lists too) |
//! | SMALL_TUPLE (104), LARGE_TUPLE (105) | array |
//! | MAP (116) | object; binary and atom keys become string keys (atoms by name), integer keys their decimal text; other keys are an error |
//! | COMPRESSED (80) | the zlib-inflated term (its declared size must match and stay within the payload limit) |
//!
//! Any other tag (pids, references, funs, bit binaries, ports) is [`DecodeError::Malformed`].
//!
//! # Limits
//!
//! Nesting deeper than [`MAX_ETF_DEPTH`] is refused; declared lengths are checked against the
//! bytes actually left before anything is reserved; the JSON output may not pass the payload
//! limit. No input makes it panic or read out of bounds.

use std::io::{Read, Write};

use super::DecodeError;

/// Deepest nesting of ETF terms accepted (lists, tuples, maps, compressed terms). Discord's
/// payloads nest a handful of levels; hostile input is stopped long before the stack is at risk.
pub(crate) const MAX_ETF_DEPTH: usize = 128;

const VERSION: u8 = 131;
const NEW_FLOAT_EXT: u8 = 70;
const COMPRESSED: u8 = 80;
const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const FLOAT_EXT: u8 = 99;
const ATOM_EXT: u8 = 100;
const SMALL_TUPLE_EXT: u8 = 104;
const LARGE_TUPLE_EXT: u8 = 105;
const NIL_EXT: u8 = 106;
const STRING_EXT: u8 = 107;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
/// The largest integer a JSON number holds exactly in every client (2^53 - 1).
const MAX_EXACT_JSON_INTEGER: u64 = (1 << 53) - 1;
const LARGE_BIG_EXT: u8 = 111;
const SMALL_ATOM_EXT: u8 = 115;
const MAP_EXT: u8 = 116;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// Converts one ETF payload (starting with the version byte) to JSON text of at most `limit`
/// bytes.
pub(crate) fn to_json(etf: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let Some((&VERSION, term)) = etf.split_first() else {
        return Err(malformed("ETF payload does not start with version 131"));
    };
    let mut out = Vec::with_capacity(etf.len().saturating_mul(2).min(limit));
    let mut conv = Converter {
        out: &mut out,
        limit,
    };
    let mut r = Reader { buf: term, pos: 0 };
    conv.term(&mut r, 0)?;
    if r.pos != term.len() {
        return Err(malformed("trailing bytes after the ETF term"));
    }
    Ok(out)
}

fn malformed(reason: &str) -> DecodeError {
    DecodeError::Malformed(reason.to_owned())
}

/// A bounds-checked reader over the term bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| malformed("truncated ETF term"))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N)?;
        Ok(b.try_into().unwrap_or([0; N]))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn u32(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| malformed("length"))
    }

    /// A count of items that each take at least `min_bytes`: refused if the rest cannot hold them.
    fn count(&mut self, n: usize, min_bytes: usize) -> Result<usize, DecodeError> {
        if n.saturating_mul(min_bytes) > self.buf.len() - self.pos {
            return Err(malformed("ETF length exceeds the payload"));
        }
        Ok(n)
    }
}

/// Atoms with a meaning in JSON.
enum Atom<'a> {
    Null,
    Bool(bool),
    Text { bytes: &'a [u8], latin1: bool },
}

fn atom(bytes: &[u8], latin1: bool) -> Atom<'_> {
    match bytes {
        b"nil" | b"null" => Atom::Null,
        b"true" => Atom::Bool(true),
        b"false" => Atom::Bool(false),
        _ => Atom::Text { bytes, latin1 },
    }
}

struct Converter<'o> {
    out: &'o mut Vec<u8>,
    limit: usize,
}

impl Converter<'_> {
    fn check_size(&self) -> Result<(), DecodeError> {
        if self.out.len() > self.limit {
            return Err(DecodeError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    fn term(&mut self, r: &mut Reader<'_>, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_ETF_DEPTH {
            return Err(malformed("ETF nesting too deep"));
        }
        let tag = r.u8()?;
        match tag {
            SMALL_INTEGER_EXT => self.integer(i64::from(r.u8()?)),
            INTEGER_EXT => self.integer(i64::from(i32::from_be_bytes(r.array()?))),
            NEW_FLOAT_EXT => self.float(f64::from_be_bytes(r.array()?)),
            FLOAT_EXT => {
                let text = r.array::<31>()?;
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                let value = std::str::from_utf8(&text[..end])
                    .ok()
                    .and_then(|t| t.trim().parse::<f64>().ok())
                    .ok_or_else(|| malformed("invalid FLOAT_EXT"))?;
                self.float(value)
            }
            SMALL_BIG_EXT => {
                let n = usize::from(r.u8()?);
                self.big(r, n)
            }
            LARGE_BIG_EXT => {
                let n = r.u32()?;
                self.big(r, n)
            }
            ATOM_EXT | ATOM_UTF8_EXT => {
                let n = r.u16()?;
                self.atom(atom(r.bytes(n)?, tag == ATOM_EXT))
            }
            SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => {
                let n = usize::from(r.u8()?);
                self.atom(atom(r.bytes(n)?, tag == SMALL_ATOM_EXT))
            }
            BINARY_EXT => {
                let n = r.u32()?;
                let bytes = r.bytes(n)?;
                self.string(&String::from_utf8_lossy(bytes));
                self.check_size()
            }
            STRING_EXT => {
                let n = r.u16()?;
                let bytes = r.bytes(n)?;
                self.out.push(b'[');
                for (i, &b) in bytes.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.integer(i64::from(b))?;
                }
                self.out.push(b']');
                self.check_size()
            }
            NIL_EXT => {
                self.out.extend_from_slice(b"[]");
                self.check_size()
            }
            LIST_EXT => {
                let n = r.u32()?;
                let n = r.count(n, 1)?;
                self.sequence(r, n, depth)?;
                if r.u8()? != NIL_EXT {
                    return Err(malformed("improper ETF list"));
                }
                Ok(())
            }
            SMALL_TUPLE_EXT => {
                let n = usize::from(r.u8()?);
                let n = r.count(n, 1)?;
                self.sequence(r, n, depth)
            }
            LARGE_TUPLE_EXT => {
                let n = r.u32()?;
                let n = r.count(n, 1)?;
                self.sequence(r, n, depth)
            }
            MAP_EXT => {
                let n = r.u32()?;
                let n = r.count(n, 2)?;
                self.map(r, n, depth)
            }
            COMPRESSED => {
                let size = r.u32()?;
                if size > self.limit {
                    return Err(DecodeError::TooLarge { limit: self.limit });
                }
                let rest = r.bytes(r.buf.len() - r.pos)?;
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(rest)
                    .take(size as u64 + 1)
                    .read_to_end(&mut inflated)
                    .map_err(|e| DecodeError::Decompress(e.to_string()))?;
                if inflated.len() != size {
                    return Err(malformed("COMPRESSED size does not match"));
                }
                let mut inner = Reader {
                    buf: &inflated,
                    pos: 0,
                };
                self.term(&mut inner, depth + 1)?;
                if inner.pos != inflated.len() {
                    return Err(malformed("trailing bytes in COMPRESSED term"));
                }
                Ok(())
            }
            other => Err(DecodeError::Malformed(format!(
                "unsupported ETF tag {other}"
            ))),
        }
    }

    fn sequence(&mut self, r: &mut Reader<'_>, n: usize, depth: usize) -> Result<(), DecodeError> {
        self.out.push(b'[');
        for i in 0..n {
            if i > 0 {
                self.out.push(b',');
            }
            self.term(r, depth + 1)?;
        }
        self.out.push(b']');
        self.check_size()
    }

    fn map(&mut self, r: &mut Reader<'_>, n: usize, depth: usize) -> Result<(), DecodeError> {
        self.out.push(b'{');
        for i in 0..n {
            if i > 0 {
                self.out.push(b',');
            }
            self.key(r)?;
            self.out.push(b':');
            self.term(r, depth + 1)?;
        }
        self.out.push(b'}');
        self.check_size()
    }

    /// A map key: binaries and atoms by their text, integers by their decimal text.
    fn key(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let tag = r.u8()?;
        match tag {
            BINARY_EXT => {
                let n = r.u32()?;
                self.string(&String::from_utf8_lossy(r.bytes(n)?));
            }
            ATOM_EXT | ATOM_UTF8_EXT => {
                let n = r.u16()?;
                let bytes = r.bytes(n)?;
                self.atom_text(bytes, tag == ATOM_EXT);
            }
            SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => {
                let n = usize::from(r.u8()?);
                let bytes = r.bytes(n)?;
                self.atom_text(bytes, tag == SMALL_ATOM_EXT);
            }
            SMALL_INTEGER_EXT => self.quoted_integer(u64::from(r.u8()?), false),
            INTEGER_EXT => {
                let v = i32::from_be_bytes(r.array()?);
                self.quoted_integer(u64::from(v.unsigned_abs()), v < 0);
            }
            SMALL_BIG_EXT | LARGE_BIG_EXT => {
                let n = if tag == SMALL_BIG_EXT {
                    usize::from(r.u8()?)
                } else {
                    r.u32()?
                };
                let (magnitude, negative) = big_value(r, n)?;
                self.quoted_integer(magnitude, negative);
            }
            other => {
                return Err(DecodeError::Malformed(format!(
                    "unsupported ETF map key tag {other}"
                )));
            }
        }
        Ok(())
    }

    fn integer(&mut self, v: i64) -> Result<(), DecodeError> {
        let _ = write!(self.out, "{v}");
        Ok(())
    }

    fn quoted_integer(&mut self, magnitude: u64, negative: bool) {
        let sign = if negative && magnitude != 0 { "-" } else { "" };
        let _ = write!(self.out, "\"{sign}{magnitude}\"");
    }

    fn float(&mut self, v: f64) -> Result<(), DecodeError> {
        if v.is_finite() {
            serde_json::to_writer(&mut *self.out, &v).map_err(|e| malformed(&e.to_string()))
        } else {
            self.out.extend_from_slice(b"null");
            Ok(())
        }
    }

    fn big(&mut self, r: &mut Reader<'_>, n: usize) -> Result<(), DecodeError> {
        let (magnitude, negative) = big_value(r, n)?;
        // A JSON connection sends ids (snowflakes) as strings and every other integer as a
        // number. ETF cannot tell them apart, but every snowflake minted after 2015-01-25 is
        // above 2^53, while Discord's other integers (flags, `version` timestamps in ms,
        // counts) stay below it; so the magnitude decides.
        if magnitude <= MAX_EXACT_JSON_INTEGER {
            let v = i64::try_from(magnitude).unwrap_or(i64::MAX);
            self.integer(if negative { -v } else { v })
        } else {
            self.quoted_integer(magnitude, negative);
            Ok(())
        }
    }

    fn atom(&mut self, a: Atom<'_>) -> Result<(), DecodeError> {
        match a {
            Atom::Null => self.out.extend_from_slice(b"null"),
            Atom::Bool(true) => self.out.extend_from_slice(b"true"),
            Atom::Bool(false) => self.out.extend_from_slice(b"false"),
            Atom::Text { bytes, latin1 } => self.atom_text(bytes, latin1),
        }
        Ok(())
    }

    fn atom_text(&mut self, bytes: &[u8], latin1: bool) {
        if latin1 {
            let text: String = bytes.iter().map(|&b| char::from(b)).collect();
            self.string(&text);
        } else {
            self.string(&String::from_utf8_lossy(bytes));
        }
    }

    /// Writes `s` as a JSON string.
    fn string(&mut self, s: &str) {
        super::write_json_string(self.out, s);
    }
}

/// The value of a SMALL_BIG/LARGE_BIG body of `n` magnitude bytes: (magnitude, negative).
fn big_value(r: &mut Reader<'_>, n: usize) -> Result<(u64, bool), DecodeError> {
    let negative = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(malformed("invalid bignum sign")),
    };
    let digits = r.bytes(n)?;
    let mut magnitude: u64 = 0;
    for (i, &d) in digits.iter().enumerate() {
        if d == 0 {
            continue;
        }
        if i >= 8 {
            return Err(malformed("integer wider than 64 bits"));
        }
        magnitude |= u64::from(d) << (8 * i);
    }
    Ok((magnitude, negative))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny ETF writer for tests.
    pub(crate) mod enc {
        pub(crate) fn version(term: Vec<u8>) -> Vec<u8> {
            [vec![131], term].concat()
        }
        pub(crate) fn small_int(v: u8) -> Vec<u8> {
            vec![97, v]
        }
        pub(crate) fn int(v: i32) -> Vec<u8> {
            [vec![98], v.to_be_bytes().to_vec()].concat()
        }
        pub(crate) fn small_big(v: u64, negative: bool) -> Vec<u8> {
            let digits: Vec<u8> = v
                .to_le_bytes()
                .into_iter()
                .rev()
                .skip_while(|&b| b == 0)
                .collect();
            let digits: Vec<u8> = digits.into_iter().rev().collect();
            [vec![110, digits.len() as u8, u8::from(negative)], digits].concat()
        }
        pub(crate) fn atom(name: &str) -> Vec<u8> {
            [
                vec![100],
                (name.len() as u16).to_be_bytes().to_vec(),
                name.as_bytes().to_vec(),
            ]
            .concat()
        }
        pub(crate) fn small_atom_utf8(name: &str) -> Vec<u8> {
            [vec![119, name.len() as u8], name.as_bytes().to_vec()].concat()
        }
        pub(crate) fn binary(s: &str) -> Vec<u8> {
            [
                vec![109],
                (s.len() as u32).to_be_bytes().to_vec(),
                s.as_bytes().to_vec(),
            ]
            .concat()
        }
        pub(crate) fn list(items: Vec<Vec<u8>>) -> Vec<u8> {
            [
                vec![108],
                (items.len() as u32).to_be_bytes().to_vec(),
                items.concat(),
                vec![106],
            ]
            .concat()
        }
        pub(crate) fn map(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
            let arity = (pairs.len() as u32).to_be_bytes().to_vec();
            let body: Vec<u8> = pairs
                .into_iter()
                .flat_map(|(k, v)| [k, v].concat())
                .collect();
            [vec![116], arity, body].concat()
        }
        pub(crate) fn float(v: f64) -> Vec<u8> {
            [vec![70], v.to_be_bytes().to_vec()].concat()
        }
    }

    fn json(etf: &[u8]) -> String {
        String::from_utf8(to_json(etf, 1 << 20).expect("converts")).expect("UTF-8")
    }

    #[test]
    fn dispatch_with_atom_keys_and_snowflakes() {
        use enc::*;
        let d = map(vec![
            (binary("id"), small_big(81_384_788_765_712_384, false)),
            (binary("content"), binary("hi \"there\"\n")),
            (binary("pinned"), atom("false")),
            (binary("nonce"), int(-5)),
            (binary("flags"), small_big(3_000_000_000, false)),
            (
                binary("mentions"),
                list(vec![small_int(1), atom("nil"), atom("other")]),
            ),
            (binary("score"), float(1.5)),
        ]);
        let etf = version(map(vec![
            (atom("t"), atom("MESSAGE_CREATE")),
            (small_atom_utf8("s"), small_int(42)),
            (atom("op"), small_int(0)),
            (atom("d"), d),
        ]));
        assert_eq!(
            json(&etf),
            r#"{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"id":"81384788765712384","content":"hi \"there\"\n","pinned":false,"nonce":-5,"flags":3000000000,"mentions":[1,null,"other"],"score":1.5}}"#
        );
    }

    #[test]
    fn other_tags() {
        // NIL, STRING_EXT as integers, tuples, ATOM_UTF8, LARGE_BIG, negative big, integer keys.
        assert_eq!(json(&[131, 106]), "[]");
        assert_eq!(json(&[131, 107, 0, 3, 1, 2, 255]), "[1,2,255]");
        assert_eq!(
            json(&[131, 104, 2, 97, 1, 100, 0, 4, b't', b'r', b'u', b'e']),
            "[1,true]"
        );
        assert_eq!(json(&[131, 118, 0, 2, 0xc3, 0xa9]), "\"é\"");
        assert_eq!(json(&[131, 115, 1, 0xe9]), "\"é\""); // Latin-1
        assert_eq!(
            json(&[131, 111, 0, 0, 0, 5, 1, 1, 2, 3, 4, 5]),
            "-21542142465"
        );
        // Above 2^53 - 1 a bignum is a snowflake: a string, as on JSON connections.
        assert_eq!(
            json(&[131, 110, 7, 0, 0, 0, 0, 0, 0, 0, 0x20]),
            "\"9007199254740992\""
        );
        assert_eq!(
            json(&[131, 110, 7, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f]),
            "9007199254740991"
        );
        assert_eq!(
            json(&[131, 116, 0, 0, 0, 1, 98, 255, 255, 255, 255, 97, 7]),
            r#"{"-1":7}"#
        );
        let legacy: Vec<u8> = [
            &[131, 99][..],
            format!("{:<31}", "1.50000000000000000000e+00").as_bytes(),
        ]
        .concat();
        assert_eq!(json(&legacy), "1.5");
        assert_eq!(json(&enc::version(enc::float(f64::NAN))), "null");
    }

    #[test]
    fn every_atom_tag_decodes_as_value_and_as_key() {
        // ATOM (100) and SMALL_ATOM (115) are what erlpack writes; ATOM_UTF8 (118) and
        // SMALL_ATOM_UTF8 (119) what OTP 20+ (and eetf) write. Each must work in both places.
        type Encoder = fn(&str) -> Vec<u8>;
        let atoms: [(&str, Encoder); 4] = [
            ("ATOM_EXT", |n| {
                [
                    vec![100],
                    (n.len() as u16).to_be_bytes().to_vec(),
                    n.as_bytes().to_vec(),
                ]
                .concat()
            }),
            ("SMALL_ATOM_EXT", |n| {
                [vec![115, n.len() as u8], n.as_bytes().to_vec()].concat()
            }),
            ("ATOM_UTF8_EXT", |n| {
                [
                    vec![118],
                    (n.len() as u16).to_be_bytes().to_vec(),
                    n.as_bytes().to_vec(),
                ]
                .concat()
            }),
            ("SMALL_ATOM_UTF8_EXT", |n| {
                [vec![119, n.len() as u8], n.as_bytes().to_vec()].concat()
            }),
        ];
        for (tag, atom) in atoms {
            let etf = enc::version(enc::map(vec![
                (atom("op"), enc::small_int(0)),
                (atom("t"), atom("GUILD_CREATE")),
                (
                    atom("d"),
                    enc::list(vec![atom("nil"), atom("null"), atom("true"), atom("false")]),
                ),
            ]));
            assert_eq!(
                json(&etf),
                r#"{"op":0,"t":"GUILD_CREATE","d":[null,null,true,false]}"#,
                "{tag}"
            );
        }
    }

    #[test]
    fn compressed_term() {
        let inner = enc::binary("hello hello hello hello");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &inner).expect("compress");
        let z = z.finish().expect("compress");
        let etf = [
            vec![131, 80],
            (inner.len() as u32).to_be_bytes().to_vec(),
            z,
        ]
        .concat();
        assert_eq!(json(&etf), "\"hello hello hello hello\"");
        // A declared size past the limit is refused before inflating.
        let bomb = [vec![131, 80], u32::MAX.to_be_bytes().to_vec()].concat();
        assert!(matches!(
            to_json(&bomb, 1 << 20),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_input() {
        // Deep nesting.
        let mut deep = vec![131];
        for _ in 0..10_000 {
            deep.extend_from_slice(&[108, 0, 0, 0, 1]);
        }
        assert!(to_json(&deep, 1 << 20).is_err());
        // Lengths past the payload, truncation, bad tags, trailing bytes, no version.
        for bad in [
            &[131, 108, 255, 255, 255, 255][..],
            &[131, 116, 0, 0, 0, 9],
            &[131, 109, 0, 0, 0, 9, 1],
            &[131, 98, 0],
            &[131, 88],
            &[131, 97, 1, 97],
            &[97, 1],
            &[],
            &[131, 110, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            &[131, 108, 0, 0, 0, 1, 97, 1, 97, 2],
        ] {
            assert!(to_json(bad, 1 << 20).is_err(), "{bad:?}");
        }
        // Output past the limit.
        let big = enc::version(enc::binary(&"x".repeat(5000)));
        assert_eq!(
            to_json(&big, 1000),
            Err(DecodeError::TooLarge { limit: 1000 })
        );
    }

    mod props {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::enc;
        use super::to_json;

        /// A JSON value and how Discord could send it in ETF (snowflakes as bigints, map keys as
        /// binaries or atoms, null as `nil`).
        fn value() -> impl Strategy<Value = (Value, Vec<u8>)> {
            let leaf = prop_oneof![
                Just((Value::Null, enc::atom("nil"))),
                Just((Value::Null, enc::small_atom_utf8("null"))),
                any::<bool>().prop_map(|b| (json!(b), enc::atom(if b { "true" } else { "false" }))),
                any::<u8>().prop_map(|v| (json!(v), enc::small_int(v))),
                any::<i32>().prop_map(|v| (json!(v), enc::int(v))),
                (1u64 << 53..u64::MAX)
                    .prop_map(|v| (json!(v.to_string()), enc::small_big(v, false))),
                (1u64 << 31..1u64 << 53).prop_map(|v| (json!(v), enc::small_big(v, false))),
                ".*".prop_map(|s| (json!(s), enc::binary(&s))),
                "[a-z_]{1,12}".prop_map(|s| (json!(s), enc::atom(&s))),
                // Floats that serde_json's parser reads back exactly.
                any::<i32>()
                    .prop_map(|v| f64::from(v) / 1024.0)
                    .prop_map(|f| (json!(f), enc::float(f))),
            ];
            leaf.prop_recursive(4, 40, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                        let (values, terms): (Vec<_>, Vec<_>) = items.into_iter().unzip();
                        (Value::Array(values), enc::list(terms))
                    }),
                    prop::collection::btree_map("[a-z_]{1,8}", (inner, any::<bool>()), 0..6)
                        .prop_map(|m| {
                            let mut object = serde_json::Map::new();
                            let mut pairs = Vec::new();
                            for (k, ((v, term), atom_key)) in m {
                                object.insert(k.clone(), v);
                                pairs.push((
                                    if atom_key {
                                        enc::atom(&k)
                                    } else {
                                        enc::binary(&k)
                                    },
                                    term,
                                ));
                            }
                            (Value::Object(object), enc::map(pairs))
                        }),
                ]
            })
        }

        proptest! {
            #[test]
            fn converts_to_the_json_a_json_connection_sends((expected, term) in value()) {
                let text = to_json(&enc::version(term), 1 << 24).expect("converts");
                // Byte for byte what serde_json writes for the same value (same number and
                // string forms; both keep the keys in this map's order).
                let expected = serde_json::to_string(&expected).expect("serialises");
                prop_assert_eq!(String::from_utf8(text).expect("UTF-8"), expected);
            }

            #[test]
            fn never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = to_json(&bytes, 1 << 16);
                let _ = to_json(&[&[131][..], &bytes].concat(), 1 << 16);
            }
        }
    }
}
