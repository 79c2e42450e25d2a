//! Conversion between JSON and Erlang External Term Format, for `encoding=etf` connections.
//!
//! Owns: JSON -> ETF for what the mock sends (map keys as atoms when they look like identifiers,
//! else binaries; strings as binaries; null as `nil`; integers as small/int/big; atoms only with
//! the tags erlpack reads, 115 and 100) and ETF -> JSON for
//! what clients send (binary keys only: an atom key is a decode error, as Discord closes with
//! 4002). Does not own: framing or compression.

use eetf::Term;
use serde_json::{Number, Value};

/// Why a client's ETF payload was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EtfError {
    #[error("not a valid ETF term: {0}")]
    Decode(String),
    #[error("map key is not a binary (atom keys are rejected)")]
    NonBinaryKey,
    #[error("binary is not UTF-8")]
    NotUtf8,
    #[error("term type {0} has no JSON equivalent")]
    Unsupported(&'static str),
    #[error("integer out of range")]
    IntegerRange,
}

fn is_atom_like(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const NEW_FLOAT_EXT: u8 = 70;
const ATOM_EXT: u8 = 100;
const SMALL_ATOM_EXT: u8 = 115;
const NIL_EXT: u8 = 106;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
const MAP_EXT: u8 = 116;

/// Writes an atom as erlpack reads it: SMALL_ATOM_EXT (115), or ATOM_EXT (100) past 255 bytes.
/// Never the UTF-8 atom tags 118/119 (OTP 20+, and what `eetf` writes): erlpack, the decoder of
/// Discord's JavaScript clients, does not know them and fails the whole payload. Every atom the
/// mock writes is ASCII, so Latin-1 and UTF-8 agree.
fn write_atom(out: &mut Vec<u8>, name: &str) {
    match u8::try_from(name.len()) {
        Ok(len) => out.extend_from_slice(&[SMALL_ATOM_EXT, len]),
        Err(_) => {
            out.push(ATOM_EXT);
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(name.as_bytes());
}

fn write_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(BINARY_EXT);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// SMALL_BIG_EXT: digit count, sign, little-endian digits.
fn write_big(out: &mut Vec<u8>, magnitude: u64, negative: bool) {
    let digits: Vec<u8> = magnitude
        .to_le_bytes()
        .into_iter()
        .rev()
        .skip_while(|&b| b == 0)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    out.extend_from_slice(&[SMALL_BIG_EXT, digits.len() as u8, u8::from(negative)]);
    out.extend_from_slice(&digits);
}

/// Writes `value` as an ETF term the way Discord's gateway does for erlpack clients: `null`,
/// booleans and (with `atom_keys`) identifier-like map keys as small atoms; strings and other keys
/// as binaries; integers as SMALL_INTEGER, INTEGER or SMALL_BIG; floats as NEW_FLOAT; lists with
/// a NIL tail.
fn write_term(out: &mut Vec<u8>, value: &Value, atom_keys: bool) {
    match value {
        Value::Null => write_atom(out, "nil"),
        Value::Bool(b) => write_atom(out, if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if let Ok(small) = u8::try_from(i) {
                    out.extend_from_slice(&[SMALL_INTEGER_EXT, small]);
                } else if let Ok(int) = i32::try_from(i) {
                    out.push(INTEGER_EXT);
                    out.extend_from_slice(&int.to_be_bytes());
                } else {
                    write_big(out, i.unsigned_abs(), i < 0);
                }
            } else if let Some(u) = n.as_u64() {
                write_big(out, u, false);
            } else {
                out.push(NEW_FLOAT_EXT);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(s) => write_binary(out, s.as_bytes()),
        Value::Array(items) if items.is_empty() => out.push(NIL_EXT),
        Value::Array(items) => {
            out.push(LIST_EXT);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                write_term(out, item, atom_keys);
            }
            out.push(NIL_EXT);
        }
        Value::Object(members) => {
            out.push(MAP_EXT);
            out.extend_from_slice(&(members.len() as u32).to_be_bytes());
            for (key, value) in members {
                if atom_keys && is_atom_like(key) {
                    write_atom(out, key);
                } else {
                    write_binary(out, key.as_bytes());
                }
                write_term(out, value, atom_keys);
            }
        }
    }
}

/// `value` as an ETF payload (version byte 131 first).
fn encode_value(value: &Value, atom_keys: bool) -> Vec<u8> {
    let mut out = vec![131];
    write_term(&mut out, value, atom_keys);
    out
}

/// Encodes a JSON payload as ETF (version byte 131 first), as Discord sends it: identifier-like
/// map keys as atoms.
pub(crate) fn encode_json(json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let value: Value = serde_json::from_slice(json)?;
    Ok(encode_value(&value, true))
}

fn term_to_json(term: Term) -> Result<Value, EtfError> {
    Ok(match term {
        Term::Atom(atom) => match atom.name.as_str() {
            "nil" | "null" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(atom.name),
        },
        Term::FixInteger(i) => Value::from(i.value),
        Term::BigInteger(big) => {
            if let Ok(i) = i64::try_from(&big.value) {
                Value::from(i)
            } else if let Ok(u) = u64::try_from(&big.value) {
                Value::from(u)
            } else {
                return Err(EtfError::IntegerRange);
            }
        }
        Term::Float(f) => Number::from_f64(f.value)
            .map(Value::Number)
            .ok_or(EtfError::IntegerRange)?,
        Term::Binary(b) => {
            Value::String(String::from_utf8(b.bytes).map_err(|_| EtfError::NotUtf8)?)
        }
        Term::ByteList(list) => Value::Array(list.bytes.into_iter().map(Value::from).collect()),
        Term::List(list) => Value::Array(
            list.elements
                .into_iter()
                .map(term_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Term::Tuple(tuple) => Value::Array(
            tuple
                .elements
                .into_iter()
                .map(term_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Term::Map(map) => {
            let mut out = serde_json::Map::with_capacity(map.map.len());
            for (key, value) in map.map {
                let key = match key {
                    Term::Binary(b) => String::from_utf8(b.bytes).map_err(|_| EtfError::NotUtf8)?,
                    _ => return Err(EtfError::NonBinaryKey),
                };
                out.insert(key, term_to_json(value)?);
            }
            Value::Object(out)
        }
        Term::Pid(_) => return Err(EtfError::Unsupported("pid")),
        Term::Port(_) => return Err(EtfError::Unsupported("port")),
        Term::Reference(_) => return Err(EtfError::Unsupported("reference")),
        Term::ExternalFun(_) | Term::InternalFun(_) => return Err(EtfError::Unsupported("fun")),
        Term::BitBinary(_) => return Err(EtfError::Unsupported("bit binary")),
        Term::ImproperList(_) => return Err(EtfError::Unsupported("improper list")),
    })
}

/// Decodes a client's ETF payload into a JSON value.
pub(crate) fn decode_to_json(bytes: &[u8]) -> Result<Value, EtfError> {
    let term = Term::decode(bytes).map_err(|e| EtfError::Decode(e.to_string()))?;
    term_to_json(term)
}

/// Encodes a JSON value as ETF with binary keys, as a well-behaved client does (used by tests and
/// by the crate's test client).
pub fn encode_client_payload(value: &Value) -> Vec<u8> {
    encode_value(value, false)
}

/// Decodes any ETF payload (atom or binary keys) into JSON; what a client of the mock does.
pub fn decode_server_payload(bytes: &[u8]) -> Result<Value, String> {
    fn convert(term: Term) -> Result<Value, String> {
        match term {
            Term::Map(map) => {
                let mut out = serde_json::Map::new();
                for (key, value) in map.map {
                    let key = match key {
                        Term::Atom(a) => a.name,
                        Term::Binary(b) => String::from_utf8(b.bytes).map_err(|e| e.to_string())?,
                        other => return Err(format!("unexpected key {other}")),
                    };
                    out.insert(key, convert(value)?);
                }
                Ok(Value::Object(out))
            }
            Term::List(list) => Ok(Value::Array(
                list.elements
                    .into_iter()
                    .map(convert)
                    .collect::<Result<_, _>>()?,
            )),
            other => term_to_json(other).map_err(|e| e.to_string()),
        }
    }
    convert(Term::decode(bytes).map_err(|e| e.to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_etf_keeps_values() {
        let json = br#"{"t":"MESSAGE_CREATE","s":2,"op":0,"d":{"id":"900000000000000001","n":-5,"big":18446744073709551615,"f":1.5,"x":null,"ok":true,"list":[1,"a"],"900":"numeric key"}}"#;
        let etf = encode_json(json).unwrap();
        assert_eq!(etf[0], 131);
        let back = decode_server_payload(&etf).unwrap();
        let original: Value = serde_json::from_slice(json).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn client_payloads_need_binary_keys() {
        let value = serde_json::json!({"op": 1, "d": 5});
        let good = encode_client_payload(&value);
        assert_eq!(decode_to_json(&good).unwrap(), value);
        let atom_keys = encode_json(br#"{"op":1,"d":5}"#).unwrap();
        assert!(matches!(
            decode_to_json(&atom_keys),
            Err(EtfError::NonBinaryKey)
        ));
    }

    /// Walks one term with erlpack's decoder set (discord/erlpack `decoder.h`): any other tag,
    /// 118/119 (UTF-8 atoms) among them, fails as it fails erlpack.
    fn erlpack_reads(bytes: &[u8], pos: &mut usize) -> Result<(), String> {
        let take = |pos: &mut usize, n: usize| -> Result<usize, String> {
            let start = *pos;
            *pos += n;
            if *pos > bytes.len() {
                return Err("truncated".into());
            }
            Ok(start)
        };
        let u32_at = |i: usize| {
            u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize
        };
        let tag = bytes[take(pos, 1)?];
        match tag {
            97 => take(pos, 1).map(drop),
            98 => take(pos, 4).map(drop),
            70 => take(pos, 8).map(drop),
            100 => {
                let i = take(pos, 2)?;
                take(
                    pos,
                    usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]])),
                )
                .map(drop)
            }
            115 => {
                let i = take(pos, 1)?;
                take(pos, usize::from(bytes[i])).map(drop)
            }
            109 => {
                let i = take(pos, 4)?;
                take(pos, u32_at(i)).map(drop)
            }
            110 => {
                let i = take(pos, 2)?;
                take(pos, usize::from(bytes[i])).map(drop)
            }
            106 => Ok(()),
            108 => {
                let i = take(pos, 4)?;
                for _ in 0..u32_at(i) {
                    erlpack_reads(bytes, pos)?;
                }
                erlpack_reads(bytes, pos)
            }
            116 => {
                let i = take(pos, 4)?;
                for _ in 0..u32_at(i) * 2 {
                    erlpack_reads(bytes, pos)?;
                }
                Ok(())
            }
            other => Err(format!("tag {other} is not in erlpack's decoder set")),
        }
    }

    #[test]
    fn server_payloads_are_what_erlpack_reads() {
        let json = br#"{"t":"READY","s":1,"op":0,"d":{"v":10,"user":{"id":"80351110224678912","bot":true,"avatar":null},"guilds":[],"big":18446744073709551615,"neg":-9223372036854775808,"i":-70000,"f":1.5,"shard":[0,1],"a_very_long_key_that_is_still_an_identifier":false}}"#;
        let etf = encode_json(json).unwrap();
        let mut pos = 1;
        erlpack_reads(&etf, &mut pos).unwrap();
        assert_eq!(pos, etf.len());
        // Keys and the special values are small atoms (115), never SMALL_ATOM_UTF8 (119).
        assert!(etf.windows(4).any(|w| w == [115, 2, b'o', b'p']));
        assert!(etf.windows(5).any(|w| w == [115, 3, b'n', b'i', b'l']));
        assert!(!etf.windows(4).any(|w| w == [119, 2, b'o', b'p']));
        // And they still decode to the same JSON.
        let back = decode_server_payload(&etf).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(json).unwrap());
        // A client payload (binary keys) too.
        let client = encode_client_payload(&serde_json::json!({"op": 1, "d": null}));
        let mut pos = 1;
        erlpack_reads(&client, &mut pos).unwrap();
    }
}
