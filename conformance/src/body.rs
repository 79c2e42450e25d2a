//! Message bodies as a worker sees them: an order-preserving value tree decoded from JSON or
//! msgpack, exact comparison with a readable first difference, raw `d` slicing of a dispatch, and
//! encoding of command bodies.
//!
//! Owns decoding and comparing; it does not know which profile expects which body (see
//! [`crate::profiles`]).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A decoded body. Maps keep their keys in wire order; integers are exact (64-bit signed or
/// unsigned, held as `i128`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null` / msgpack nil.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A floating point number.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes (msgpack bin): never produced from JSON.
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map, keys in wire order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// Decodes JSON text.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = Value::deserialize(&mut de).map_err(|e| format!("not JSON: {e}"))?;
        de.end().map_err(|e| format!("not JSON: {e}"))?;
        Ok(value)
    }

    /// Decodes one msgpack value that must span the whole input.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, String> {
        let mut cursor = bytes;
        let value =
            rmpv::decode::read_value(&mut cursor).map_err(|e| format!("not msgpack: {e}"))?;
        if !cursor.is_empty() {
            return Err(format!(
                "not one msgpack value: {} trailing bytes",
                cursor.len()
            ));
        }
        Self::from_rmpv(value)
    }

    fn from_rmpv(value: rmpv::Value) -> Result<Self, String> {
        Ok(match value {
            rmpv::Value::Nil => Self::Null,
            rmpv::Value::Boolean(b) => Self::Bool(b),
            rmpv::Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
                (Some(v), _) => Self::Int(v.into()),
                (None, Some(v)) => Self::Int(v.into()),
                (None, None) => return Err("msgpack integer out of range".into()),
            },
            rmpv::Value::F32(f) => Self::Float(f.into()),
            rmpv::Value::F64(f) => Self::Float(f),
            rmpv::Value::String(s) => match s.into_str() {
                Some(s) => Self::Str(s),
                None => return Err("msgpack string is not UTF-8".into()),
            },
            rmpv::Value::Binary(b) => Self::Bin(b),
            rmpv::Value::Array(items) => Self::Array(
                items
                    .into_iter()
                    .map(Self::from_rmpv)
                    .collect::<Result<_, _>>()?,
            ),
            rmpv::Value::Map(pairs) => Self::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| Ok((Self::from_rmpv(k)?, Self::from_rmpv(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            rmpv::Value::Ext(tag, _) => return Err(format!("msgpack extension type {tag}")),
        })
    }

    /// The value under a string key of a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Self::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x:?}"),
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Bin(b) => write!(f, "<{} bytes>", b.len()),
            Self::Array(items) => write!(f, "[{} items]", items.len()),
            Self::Map(pairs) => write!(f, "{{{} keys}}", pairs.len()),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            pairs.push((Value::Str(k), v));
        }
        Ok(Value::Map(pairs))
    }
}

/// How strictly two values must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Same values, maps in Discord's key order (JSON passthrough, msgpack transcoding of JSON).
    Exact,
    /// Values decoded from ETF: maps in any order (ETF maps have none), and an integer beyond
    /// 2^53 may come back as its decimal string (ETF sends snowflakes as big integers, which
    /// bridges turn into strings as JSON connections deliver them; the two cannot be told apart).
    EtfValues,
}

/// The largest integer a JSON number holds exactly in most languages (2^53 - 1).
const MAX_SAFE_INTEGER: i128 = (1 << 53) - 1;

/// The first place where `actual` differs from `expected` (maps compared in key order), or `None`
/// when they are equal. An integral float equals the same integer (a transcoder may pick either)
/// only while a double holds that integer exactly (up to 2^53): `u64::MAX` delivered as the float
/// 2^64 is a lost integer, not the same value.
pub fn first_difference(expected: &Value, actual: &Value) -> Option<String> {
    diff_at("$", expected, actual, Match::Exact)
}

/// [`first_difference`] with a choice of strictness.
pub fn first_difference_in(expected: &Value, actual: &Value, order: Match) -> Option<String> {
    diff_at("$", expected, actual, order)
}

fn diff_at(path: &str, expected: &Value, actual: &Value, order: Match) -> Option<String> {
    use Value::*;
    match (expected, actual) {
        (Int(i), Float(x)) | (Float(x), Int(i))
            if i.abs() <= MAX_SAFE_INTEGER && (*i as f64) == *x && x.fract() == 0.0 =>
        {
            None
        }
        (Array(e), Array(a)) => {
            if e.len() != a.len() {
                return Some(format!(
                    "{path}: expected {} items, got {}",
                    e.len(),
                    a.len()
                ));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (e, a))| diff_at(&format!("{path}[{i}]"), e, a, order))
        }
        (Int(i), Str(s))
            if order == Match::EtfValues && i.abs() > MAX_SAFE_INTEGER && *s == i.to_string() =>
        {
            None
        }
        (Map(e), Map(a)) if order == Match::EtfValues => {
            for (ek, ev) in e {
                let Some((_, av)) = a.iter().find(|(ak, _)| ak == ek) else {
                    return Some(format!("{path}: key {ek} is missing"));
                };
                if let Some(d) = diff_at(&format!("{path}.{}", key_text(ek)), ev, av, order) {
                    return Some(d);
                }
            }
            a.iter()
                .find(|(ak, _)| !e.iter().any(|(ek, _)| ek == ak))
                .map(|(ak, _)| format!("{path}: unexpected key {ak}"))
        }
        (Map(e), Map(a)) => {
            for (i, (ek, ev)) in e.iter().enumerate() {
                let Some((ak, av)) = a.get(i) else {
                    return Some(format!("{path}: key {ek} is missing"));
                };
                if ek != ak {
                    return Some(format!(
                        "{path}: key #{i} should be {ek}, got {ak} (keys must keep Discord's order)"
                    ));
                }
                if let Some(d) = diff_at(&format!("{path}.{}", key_text(ek)), ev, av, order) {
                    return Some(d);
                }
            }
            (a.len() > e.len()).then(|| format!("{path}: unexpected key {}", a[e.len()].0))
        }
        (e, a) if e == a => None,
        (e, a) => Some(format!("{path}: expected {e}, got {a}")),
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The raw pieces of a dispatch frame, borrowed from its text.
#[derive(Debug)]
pub struct RawDispatch<'a> {
    /// `t`.
    pub event: Option<String>,
    /// `s`.
    pub seq: Option<u64>,
    /// `op`.
    pub op: Option<u64>,
    /// The exact text of `d`.
    pub d: &'a str,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(default)]
    op: Option<u64>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    t: Option<String>,
    #[serde(borrow)]
    d: Option<&'a RawValue>,
}

/// Splits a JSON gateway packet into its fields, keeping `d` as the exact bytes.
pub fn raw_dispatch(text: &[u8]) -> Result<RawDispatch<'_>, String> {
    let env: RawEnvelope<'_> =
        serde_json::from_slice(text).map_err(|e| format!("not a JSON gateway packet: {e}"))?;
    Ok(RawDispatch {
        event: env.t,
        seq: env.s,
        op: env.op,
        d: env.d.map_or("null", RawValue::get),
    })
}

/// Encodes a JSON value as msgpack (maps keep the JSON value's key order).
pub fn json_to_msgpack(value: &serde_json::Value) -> Vec<u8> {
    fn convert(value: &serde_json::Value) -> rmpv::Value {
        match value {
            serde_json::Value::Null => rmpv::Value::Nil,
            serde_json::Value::Bool(b) => rmpv::Value::Boolean(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    rmpv::Value::from(i)
                } else if let Some(u) = n.as_u64() {
                    rmpv::Value::from(u)
                } else {
                    rmpv::Value::F64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => rmpv::Value::from(s.as_str()),
            serde_json::Value::Array(items) => {
                rmpv::Value::Array(items.iter().map(convert).collect())
            }
            serde_json::Value::Object(map) => rmpv::Value::Map(
                map.iter()
                    .map(|(k, v)| (rmpv::Value::from(k.as_str()), convert(v)))
                    .collect(),
            ),
        }
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &convert(value)).expect("writing to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_key_order_and_exact_integers() {
        let v = Value::from_json(br#"{"b":1,"a":18446744073709551615,"c":-9223372036854775808}"#)
            .unwrap();
        let Value::Map(pairs) = &v else { panic!() };
        assert_eq!(pairs[0].0, Value::Str("b".into()));
        assert_eq!(v.get("a"), Some(&Value::Int(u64::MAX.into())));
        assert_eq!(v.get("c"), Some(&Value::Int(i64::MIN.into())));
    }

    #[test]
    fn msgpack_transcoding_round_trips() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"id":"1","n":[1,-2,3.5,null,true],"big":18446744073709551615}"#,
        )
        .unwrap();
        let packed = json_to_msgpack(&json);
        let from_pack = Value::from_msgpack(&packed).unwrap();
        let from_json = Value::from_json(serde_json::to_string(&json).unwrap().as_bytes()).unwrap();
        assert_eq!(first_difference(&from_json, &from_pack), None);
    }

    #[test]
    fn differences_name_the_path() {
        let e = Value::from_json(br#"{"a":{"b":[1,2]}}"#).unwrap();
        let a = Value::from_json(br#"{"a":{"b":[1,3]}}"#).unwrap();
        assert_eq!(
            first_difference(&e, &a).unwrap(),
            "$.a.b[1]: expected 2, got 3"
        );
        let reordered = Value::from_json(br#"{"b":1,"a":2}"#).unwrap();
        let original = Value::from_json(br#"{"a":2,"b":1}"#).unwrap();
        assert!(
            first_difference(&original, &reordered)
                .unwrap()
                .contains("order")
        );
    }

    #[test]
    fn integers_must_stay_exact() {
        // u64::MAX as a double is 2^64: the integer is lost, whatever `as f64` says.
        let exact = Value::Int(u64::MAX.into());
        let as_float = Value::Float(u64::MAX as f64);
        assert!(first_difference(&exact, &as_float).is_some());
        assert!(first_difference(&as_float, &exact).is_some());
        let min = Value::Int(i64::MIN.into());
        assert!(first_difference(&min, &Value::Float(i64::MIN as f64)).is_some());
        // 2^53 + 1 has no double; 2^53 - 1 and small integers do, and may arrive as floats.
        let above = Value::Int((1 << 53) + 1);
        assert!(first_difference(&above, &Value::Float(((1u64 << 53) + 1) as f64)).is_some());
        let safe = Value::Int((1 << 53) - 1);
        assert_eq!(
            first_difference(&safe, &Value::Float(((1u64 << 53) - 1) as f64)),
            None
        );
        assert_eq!(
            first_difference(&Value::Float(1000.0), &Value::Int(1000)),
            None
        );
        // Through msgpack: an encoder that wrote u64::MAX as a float 64 is caught.
        let json = Value::from_json(br#"{"big":18446744073709551615}"#).unwrap();
        let mut packed = Vec::new();
        rmpv::encode::write_value(
            &mut packed,
            &rmpv::Value::Map(vec![(
                rmpv::Value::from("big"),
                rmpv::Value::F64(u64::MAX as f64),
            )]),
        )
        .unwrap();
        let decoded = Value::from_msgpack(&packed).unwrap();
        assert!(first_difference(&json, &decoded).is_some());
    }

    #[test]
    fn floats_parse_exactly() {
        // 0.9843569397926331 is the shortest text of its double; a sloppy parser lands 1 ULP off.
        let v = Value::from_json(b"0.9843569397926331").unwrap();
        assert_eq!(v, Value::Float(f64::from_bits(0x3fef_7fda_2000_0000)));
    }

    #[test]
    fn raw_dispatch_keeps_d_bytes() {
        let frame = br#"{"t":"X","s":5,"op":0,"d":{"a" : 1.50}}"#;
        let raw = raw_dispatch(frame).unwrap();
        assert_eq!(raw.d, r#"{"a" : 1.50}"#);
        assert_eq!(raw.seq, Some(5));
        assert_eq!(raw.event.as_deref(), Some("X"));
    }
}
