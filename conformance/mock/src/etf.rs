//! Conversion between JSON and Erlang External Term Format, for `encoding=etf` connections.
//!
//! Owns: JSON -> ETF for what the mock sends (map keys as atoms when they look like identifiers,
//! else binaries; strings as binaries; null as `nil`; integers as small/int/big) and ETF -> JSON for
//! what clients send (binary keys only: an atom key is a decode error, as Discord closes with
//! 4002). Does not own: framing or compression.

use eetf::{Atom, BigInteger, Binary, FixInteger, Float, List, Map, Term};
use serde_json::{Number, Value};
use std::collections::HashMap;

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

fn json_to_term(value: &Value) -> Term {
    match value {
        Value::Null => Term::from(Atom::from("nil")),
        Value::Bool(b) => Term::from(Atom::from(if *b { "true" } else { "false" })),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match i32::try_from(i) {
                    Ok(small) => Term::from(FixInteger::from(small)),
                    Err(_) => Term::from(BigInteger::from(i)),
                }
            } else if let Some(u) = n.as_u64() {
                Term::from(BigInteger::from(u))
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                Term::from(Float::try_from(f).unwrap_or(Float { value: 0.0 }))
            }
        }
        Value::String(s) => Term::from(Binary::from(s.as_bytes())),
        Value::Array(items) => Term::from(List::from(
            items.iter().map(json_to_term).collect::<Vec<_>>(),
        )),
        Value::Object(members) => {
            let mut map = HashMap::with_capacity(members.len());
            for (key, value) in members {
                let key = if is_atom_like(key) {
                    Term::from(Atom::from(key.as_str()))
                } else {
                    Term::from(Binary::from(key.as_bytes()))
                };
                map.insert(key, json_to_term(value));
            }
            Term::from(Map::from(map))
        }
    }
}

/// Encodes a JSON payload as ETF (version byte 131 first).
pub(crate) fn encode_json(json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let value: Value = serde_json::from_slice(json)?;
    let mut out = Vec::with_capacity(json.len());
    json_to_term(&value)
        .encode(&mut out)
        .expect("writing to a Vec cannot fail");
    Ok(out)
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
    fn convert(value: &Value) -> Term {
        match value {
            Value::Object(members) => {
                let map: HashMap<Term, Term> = members
                    .iter()
                    .map(|(k, v)| (Term::from(Binary::from(k.as_bytes())), convert(v)))
                    .collect();
                Term::from(Map::from(map))
            }
            Value::Array(items) => {
                Term::from(List::from(items.iter().map(convert).collect::<Vec<_>>()))
            }
            other => json_to_term(other),
        }
    }
    let mut out = Vec::new();
    convert(value)
        .encode(&mut out)
        .expect("writing to a Vec cannot fail");
    out
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
}
