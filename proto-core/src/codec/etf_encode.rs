//! JSON text to Erlang External Term Format, for what an `encoding=etf` connection sends.
//!
//! Owns: the one mapping from a JSON gateway packet (the shard's own HEARTBEAT, IDENTIFY and
//! RESUME, and workers' commands) to the ETF bytes Discord accepts. Does not own decoding (see
//! the `etf` module), framing, or any decision about what to send.
//!
//! Discord's rules for client ETF (PROTOCOL.md §11.5): version byte 131 first, map keys are
//! binaries (atom keys make Discord close with 4002), and the payload is never compressed.
//!
//! # Mapping
//!
//! | JSON | ETF term (tag) |
//! |---|---|
//! | object | MAP (116) with BINARY (109) keys, in the order they appear; duplicate keys are an error (Erlang refuses such maps) |
//! | string | BINARY (109), UTF-8 |
//! | integer 0..=255 | SMALL_INTEGER (97) |
//! | other integer in the `i32` range | INTEGER (98) |
//! | any other integer of `i64`/`u64` | SMALL_BIG (110): byte count, sign, little-endian magnitude |
//! | number with a fraction or exponent, or an integer beyond 64 bits | NEW_FLOAT (70) |
//! | `true`, `false`, `null` | SMALL_ATOM (115) `true`, `false`, `nil` |
//! | array | LIST (108) ending in NIL (106); the empty array is NIL alone |
//!
//! The codec's ETF decoder turns the result back into the same JSON value, except that integers
//! beyond ±(2^53 - 1) come back as decimal strings (the decoder's snowflake rule; found by the
//! `json_to_etf` fuzz target, this said "more than 32 bits" before).
//!
//! The conversion streams: it never builds a JSON tree. Nesting is bounded by `serde_json`'s
//! recursion limit (128), so no input can exhaust the stack, and nothing panics on any input.
//!
//! # Why not the `eetf` crate's encoder
//!
//! `serde_json` parses and this module only writes the terms. `eetf` (0.12, the tests' oracle)
//! cannot write these bytes: its `Map` is a `HashMap` with std's random hasher, so the key order,
//! and the bytes, change from run to run (hidden randomness this crate refuses; checked: the same
//! three-key map came out in three orders in four runs), and it writes lists of small integers as
//! STRING (107) and atoms as SMALL_ATOM_UTF8 (119), which the tests pin otherwise.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

const VERSION: u8 = 131;
const NEW_FLOAT_EXT: u8 = 70;
const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const NIL_EXT: u8 = 106;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
const SMALL_ATOM_EXT: u8 = 115;
const MAP_EXT: u8 = 116;

/// Why a JSON value cannot be sent as ETF.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtfEncodeError {
    /// The input is not one valid JSON value (or nests deeper than 128 levels).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// An object has the same key twice; Erlang cannot decode such a map.
    #[error("duplicate key {0:?} in a JSON object")]
    DuplicateKey(String),
    /// A string, array or object is longer than ETF's 32-bit length fields.
    #[error("a value is too long for ETF")]
    TooLong,
}

/// Converts one JSON value (surrounding whitespace allowed) to an ETF payload: the version
/// byte 131 and one term, following the table in the module docs.
pub fn json_to_etf(json: &[u8]) -> Result<Vec<u8>, EtfEncodeError> {
    let mut enc = Encoder {
        // ETF is a little larger than compact JSON (5-byte headers for maps, lists, binaries).
        out: Vec::with_capacity(json.len() + json.len() / 2 + 16),
        failure: None,
    };
    enc.out.push(VERSION);
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = Term(&mut enc).deserialize(&mut de).and_then(|()| de.end());
    match (result, enc.failure) {
        (Ok(()), _) => Ok(enc.out),
        (Err(_), Some(failure)) => Err(failure),
        (Err(e), None) => Err(EtfEncodeError::Json(e.to_string())),
    }
}

/// The output buffer, plus the typed reason when a visitor stops the conversion.
struct Encoder {
    out: Vec<u8>,
    failure: Option<EtfEncodeError>,
}

impl Encoder {
    fn fail<E: de::Error>(&mut self, failure: EtfEncodeError) -> E {
        let message = failure.to_string();
        self.failure = Some(failure);
        E::custom(message)
    }

    fn length<E: de::Error>(&mut self, n: usize) -> Result<[u8; 4], E> {
        match u32::try_from(n) {
            Ok(n) => Ok(n.to_be_bytes()),
            Err(_) => Err(self.fail(EtfEncodeError::TooLong)),
        }
    }

    fn binary<E: de::Error>(&mut self, s: &str) -> Result<(), E> {
        let len = self.length(s.len())?;
        self.out.push(BINARY_EXT);
        self.out.extend_from_slice(&len);
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn atom(&mut self, name: &str) {
        // Atom names here are "true", "false" and "nil": always below 256 bytes.
        self.out.push(SMALL_ATOM_EXT);
        self.out.push(name.len() as u8);
        self.out.extend_from_slice(name.as_bytes());
    }

    fn integer(&mut self, negative: bool, magnitude: u64) {
        if !negative && magnitude <= 255 {
            self.out
                .extend_from_slice(&[SMALL_INTEGER_EXT, magnitude as u8]);
            return;
        }
        let small = if negative {
            i32::try_from(magnitude)
                .ok()
                .map(|m| -m)
                .or((magnitude == 1 << 31).then_some(i32::MIN))
        } else {
            i32::try_from(magnitude).ok()
        };
        if let Some(v) = small {
            self.out.push(INTEGER_EXT);
            self.out.extend_from_slice(&v.to_be_bytes());
            return;
        }
        let digits = magnitude.to_le_bytes();
        let n = 8 - magnitude.leading_zeros() as usize / 8;
        self.out
            .extend_from_slice(&[SMALL_BIG_EXT, n as u8, u8::from(negative)]);
        self.out.extend_from_slice(&digits[..n]);
    }

    fn float(&mut self, v: f64) {
        self.out.push(NEW_FLOAT_EXT);
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a LIST/MAP header with a placeholder count; returns where the count goes.
    fn open(&mut self, tag: u8) -> usize {
        self.out.push(tag);
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        at
    }
}

/// Converts one JSON value into the encoder's buffer.
struct Term<'e>(&'e mut Encoder);

impl<'de> DeserializeSeed<'de> for Term<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Term<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.atom(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.atom("nil");
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.integer(v < 0, v.unsigned_abs());
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.integer(false, v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.float(v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.binary(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let enc = self.0;
        let start = enc.out.len();
        let count_at = enc.open(LIST_EXT);
        let mut n = 0usize;
        while seq.next_element_seed(Term(&mut *enc))?.is_some() {
            n += 1;
        }
        if n == 0 {
            enc.out.truncate(start);
        } else {
            let count = enc.length(n)?;
            enc.out[count_at..count_at + 4].copy_from_slice(&count);
        }
        enc.out.push(NIL_EXT);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let enc = self.0;
        let count_at = enc.open(MAP_EXT);
        // Where each key's bytes are in the output, to find duplicates at the end.
        let mut keys: Vec<(usize, usize)> = Vec::new();
        while let Some(key) = map.next_key_seed(Key(&mut *enc))? {
            keys.push(key);
            map.next_value_seed(Term(&mut *enc))?;
        }
        let count = enc.length(keys.len())?;
        enc.out[count_at..count_at + 4].copy_from_slice(&count);
        let out = &enc.out;
        keys.sort_unstable_by(|a, b| out[a.0..a.1].cmp(&out[b.0..b.1]));
        if let Some(pair) = keys
            .windows(2)
            .find(|w| out[w[0].0..w[0].1] == out[w[1].0..w[1].1])
        {
            let key = String::from_utf8_lossy(&out[pair[0].0..pair[0].1]).into_owned();
            return Err(enc.fail(EtfEncodeError::DuplicateKey(key)));
        }
        Ok(())
    }
}

/// Converts one object key to a BINARY; its value is the key's byte range in the output.
struct Key<'e>(&'e mut Encoder);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = (usize, usize);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.binary(v)?;
        let end = self.0.out.len();
        Ok((end - v.len(), end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etf(json: &str) -> Vec<u8> {
        json_to_etf(json.as_bytes()).expect("encodes")
    }

    /// The codec's own decoder: ETF back to JSON text.
    fn back(etf: &[u8]) -> serde_json::Value {
        let text = super::super::etf::to_json(etf, 1 << 20).expect("decodes");
        serde_json::from_slice(&text).expect("JSON")
    }

    #[test]
    fn heartbeat_bytes() {
        assert_eq!(
            etf(r#"{"op":1,"d":null}"#),
            [
                &[131, 116, 0, 0, 0, 2][..],
                &[109, 0, 0, 0, 2, b'o', b'p', 97, 1],
                &[109, 0, 0, 0, 1, b'd', 115, 3, b'n', b'i', b'l'],
            ]
            .concat()
        );
        assert_eq!(
            etf(r#"{"op":1,"d":251}"#)[15..],
            [109, 0, 0, 0, 1, b'd', 97, 251]
        );
    }

    #[test]
    fn every_kind_of_value() {
        assert_eq!(etf("[]"), [131, 106]);
        assert_eq!(etf("[true,false]"), {
            let mut v = vec![131, 108, 0, 0, 0, 2];
            v.extend_from_slice(&[115, 4, b't', b'r', b'u', b'e']);
            v.extend_from_slice(&[115, 5, b'f', b'a', b'l', b's', b'e']);
            v.push(106);
            v
        });
        assert_eq!(etf("{}"), [131, 116, 0, 0, 0, 0]);
        assert_eq!(etf(r#""é""#), [131, 109, 0, 0, 0, 2, 0xc3, 0xa9]);
        assert_eq!(etf("256"), [131, 98, 0, 0, 1, 0]);
        assert_eq!(etf("-1"), [131, 98, 255, 255, 255, 255]);
        assert_eq!(etf("-2147483648"), [131, 98, 128, 0, 0, 0]);
        assert_eq!(etf("2147483648"), [131, 110, 4, 0, 0, 0, 0, 128]);
        assert_eq!(etf("-2147483649"), [131, 110, 4, 1, 1, 0, 0, 128]);
        assert_eq!(
            etf("18446744073709551615"),
            [131, 110, 8, 0, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        assert_eq!(
            etf("-9223372036854775808"),
            [131, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128]
        );
        assert_eq!(etf("1.5"), [&[131, 70][..], &1.5f64.to_be_bytes()].concat());
        assert_eq!(etf("1e2"), [&[131, 70][..], &100f64.to_be_bytes()].concat());
        // Beyond 64 bits serde_json reads a float.
        assert_eq!(etf("36893488147419103232")[1], 70);
    }

    #[test]
    fn refuses_what_erlang_or_json_refuse() {
        assert_eq!(
            json_to_etf(br#"{"a":1,"b":{"x":1,"x":2}}"#),
            Err(EtfEncodeError::DuplicateKey("x".into()))
        );
        // Escaped and plain spellings of one key are the same key.
        assert!(matches!(
            json_to_etf(br#"{"a":1,"\u0061":2}"#),
            Err(EtfEncodeError::DuplicateKey(_))
        ));
        for bad in [
            &b""[..],
            b"{",
            b"[1,]",
            b"nul",
            b"1 2",
            br#"{"a":01}"#,
            b"\"\xff\"",
        ] {
            assert!(
                matches!(json_to_etf(bad), Err(EtfEncodeError::Json(_))),
                "{bad:?}"
            );
        }
        // Found by the `json_to_etf` fuzz target: an object is checked when it closes, so a
        // duplicate key is reported even when the input turns out invalid after it (here a
        // trailing `}`). Refused either way; the error names the first fault found.
        assert_eq!(
            json_to_etf(br#"{"op":2,"d":{"presence":{"a":[],"a":[]}}}}"#),
            Err(EtfEncodeError::DuplicateKey("a".into()))
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            json_to_etf(deep.as_bytes()),
            Err(EtfEncodeError::Json(_))
        ));
    }

    #[test]
    fn identify_round_trips_through_the_decoder() {
        let json = r#" {"op":2,"d":{"token":"t\"o\\k","properties":{"os":"linux","browser":"gatehouse"},
            "compress":false,"large_threshold":250,"shard":[3,8],"presence":{"since":null,
            "activities":[],"status":"idle","afk":false},"intents":53608447}} "#;
        let expected: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(back(&etf(json)), expected);
    }

    #[test]
    fn big_integers_come_back_as_decimal_strings() {
        assert_eq!(
            back(&etf("4294967295")),
            serde_json::json!(4_294_967_295u64)
        );
        assert_eq!(
            back(&etf("-4294967295")),
            serde_json::json!(-4_294_967_295i64)
        );
        // Found by the `json_to_etf` fuzz target: up to 2^53 - 1 a bignum stays a number.
        assert_eq!(
            back(&etf("2147854775808")),
            serde_json::json!(2_147_854_775_808u64)
        );
        assert_eq!(
            back(&etf("-9007199254740991")),
            serde_json::json!(-9_007_199_254_740_991i64)
        );
        assert_eq!(back(&etf("9007199254740992")), "9007199254740992");
        assert_eq!(back(&etf("81384788765712384")), "81384788765712384");
        assert_eq!(back(&etf("-9223372036854775808")), "-9223372036854775808");
    }

    /// An independent decoder (the `eetf` crate) reads the same terms: binary keys only,
    /// integers exact at every width.
    #[test]
    fn eetf_reads_it_with_binary_keys() {
        use eetf::Term;
        let bytes = etf(
            r#"{"op":3,"d":{"since":null,"big":18446744073709551615,"neg":-70000,"f":0.25,"l":[1,"x"],"e":[]}}"#,
        );
        let Term::Map(top) = Term::decode(&bytes[..]).expect("eetf decodes") else {
            panic!("not a map");
        };
        let key = |k: &str| Term::from(eetf::Binary::from(k.as_bytes()));
        assert!(top.map.keys().all(|k| matches!(k, Term::Binary(_))));
        assert_eq!(top.map[&key("op")], Term::from(eetf::FixInteger::from(3)));
        let Term::Map(d) = &top.map[&key("d")] else {
            panic!("d is not a map");
        };
        assert!(d.map.keys().all(|k| matches!(k, Term::Binary(_))));
        assert_eq!(d.map[&key("since")], Term::from(eetf::Atom::from("nil")));
        assert_eq!(
            d.map[&key("big")],
            Term::from(eetf::BigInteger::from(u64::MAX))
        );
        assert_eq!(
            d.map[&key("neg")],
            Term::from(eetf::FixInteger::from(-70_000))
        );
        assert_eq!(d.map[&key("f")], Term::from(eetf::Float { value: 0.25 }));
        assert_eq!(
            d.map[&key("l")],
            Term::from(eetf::List::from(vec![
                Term::from(eetf::FixInteger::from(1)),
                Term::from(eetf::Binary::from(&b"x"[..])),
            ]))
        );
        assert_eq!(d.map[&key("e")], Term::from(eetf::List::nil()));
    }

    mod props {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::{back, json_to_etf};

        /// JSON values whose integers the decoder returns as numbers (|v| < 2^32).
        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<u8>().prop_map(|v| json!(v)),
                any::<i32>().prop_map(|v| json!(v)),
                (-(1i64 << 32) + 1..1i64 << 32).prop_map(|v| json!(v)),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| json!(f)),
                ".*".prop_map(Value::String),
            ];
            leaf.prop_recursive(5, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::btree_map(".{0,10}", inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn encode_then_decode_is_the_same_json(v in value()) {
                let text = serde_json::to_vec(&v).expect("serialises");
                let etf = json_to_etf(&text).expect("encodes");
                prop_assert_eq!(back(&etf), v.clone());
                // Byte for byte, too: the decoder writes what serde_json writes.
                let decoded = super::super::super::etf::to_json(&etf, 1 << 24).expect("decodes");
                prop_assert_eq!(decoded, text);
            }

            #[test]
            fn any_integer_survives_exactly(v: i64, u: u64) {
                for (text, expected) in [(v.to_string(), v.to_string()), (u.to_string(), u.to_string())] {
                    let decoded = back(&json_to_etf(text.as_bytes()).expect("encodes"));
                    let shown = match &decoded {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    prop_assert_eq!(shown, expected);
                }
            }

            #[test]
            fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = json_to_etf(&bytes);
            }
        }
    }
}
