//! Validation of the gateway packets that workers ask Gatehouse to send to Discord, whatever
//! the profile that carried them.
//!
//! Owns: which opcodes a worker may send ([`CommandPolicy`]), the shape a packet must have
//! (`{"op": <integer>, "d": <value>}`, at most [`MAX_PACKET_BYTES`] as sent), and the
//! normalised packet bytes that go on the wire ([`GatewayPacket`]). Does not decide which shard
//! a command goes to (the profiles do) and does not rate-limit (the shard does).
//!
//! A worker's packet is rebuilt as `{"op":N,"d":<d>}` from the original bytes of `d`: other
//! top-level fields are dropped, `d` is never re-serialised. The rules:
//! - the body is one JSON object with an integer `op` and a `d` (duplicate keys are refused);
//! - ops 1 (Heartbeat), 2 (Identify) and 6 (Resume) belong to the gateway and are refused, as
//!   are the receive-only ops 0, 7, 9, 10 and 11;
//! - ops 3, 4, 8 and 31 are allowed, and `d` must be an object for them; any other op only
//!   when configured (`extra_allowed_ops`, for opcodes newer than this code such as 43);
//! - the packet as sent is at most 4096 bytes (Discord closes the connection with 4002 above).

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The largest packet Discord accepts from a client, in bytes.
pub const MAX_PACKET_BYTES: usize = 4096;

/// The largest command body read at all (envelopes and msgpack included), in bytes.
pub const MAX_COMMAND_BODY_BYTES: usize = 64 * 1024;

/// Ops a worker may always send: Presence Update, Voice State Update, Request Guild Members,
/// Request Soundboard Sounds.
pub const DEFAULT_ALLOWED_OPS: [u8; 4] = [3, 4, 8, 31];

/// Ops the gateway sends itself: Heartbeat, Identify, Resume.
pub const GATEWAY_OWNED_OPS: [u8; 3] = [1, 2, 6];

/// Ops Discord sends and never receives: Dispatch, Reconnect, Invalid Session, Hello,
/// Heartbeat ACK.
pub const RECEIVE_ONLY_OPS: [u8; 5] = [0, 7, 9, 10, 11];

/// The name of a gateway opcode, for messages.
pub fn op_name(op: u64) -> Option<&'static str> {
    Some(match op {
        0 => "Dispatch",
        1 => "Heartbeat",
        2 => "Identify",
        3 => "Presence Update",
        4 => "Voice State Update",
        6 => "Resume",
        7 => "Reconnect",
        8 => "Request Guild Members",
        9 => "Invalid Session",
        10 => "Hello",
        11 => "Heartbeat ACK",
        31 => "Request Soundboard Sounds",
        43 => "Request Channel Info",
        _ => return None,
    })
}

/// Which opcodes workers may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandPolicy {
    allowed: [u64; 4],
}

impl Default for CommandPolicy {
    fn default() -> Self {
        let mut policy = Self { allowed: [0; 4] };
        for op in DEFAULT_ALLOWED_OPS {
            policy.allow(op);
        }
        policy
    }
}

impl CommandPolicy {
    /// The default policy plus `extra_allowed_ops`. Refuses gateway-owned and receive-only ops.
    pub fn new(extra_allowed_ops: &[u8]) -> Result<Self, String> {
        let mut policy = Self::default();
        for &op in extra_allowed_ops {
            if GATEWAY_OWNED_OPS.contains(&op) {
                return Err(format!(
                    "extra_allowed_ops: op {op} ({}) is sent by the gateway itself and cannot be allowed",
                    op_name(op.into()).unwrap_or("?")
                ));
            }
            if RECEIVE_ONLY_OPS.contains(&op) {
                return Err(format!(
                    "extra_allowed_ops: op {op} ({}) is only ever sent by Discord",
                    op_name(op.into()).unwrap_or("?")
                ));
            }
            policy.allow(op);
        }
        Ok(policy)
    }

    fn allow(&mut self, op: u8) {
        self.allowed[usize::from(op / 64)] |= 1 << (op % 64);
    }

    /// Whether workers may send `op`.
    pub fn is_allowed(&self, op: u64) -> bool {
        u8::try_from(op).is_ok_and(|op| self.allowed[usize::from(op / 64)] & (1 << (op % 64)) != 0)
    }

    /// The allowed ops in ascending order.
    pub fn allowed_ops(&self) -> Vec<u8> {
        (0..=u8::MAX)
            .filter(|&op| self.is_allowed(op.into()))
            .collect()
    }
}

/// A validated gateway packet, normalised to `{"op":N,"d":...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPacket {
    op: u8,
    bytes: Bytes,
}

impl GatewayPacket {
    /// The opcode.
    pub fn op(&self) -> u8 {
        self.op
    }

    /// The packet's JSON bytes, as they go on the wire.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The packet's JSON bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Why a command was refused. The `Display` text is the reason given to operators (the
/// `x-gatehouse-error` header of native dead letters, and the log).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The body is larger than anything valid.
    #[error("command body is {size} bytes; at most {limit} are read")]
    BodyTooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The packet as it would be sent is larger than Discord accepts.
    #[error("packet is {size} bytes; Discord accepts at most {limit}")]
    PacketTooLarge {
        /// The normalised packet's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON (or msgpack, where the profile accepts it).
    #[error("command is not valid {format}: {detail}")]
    Malformed {
        /// "JSON" or "msgpack".
        format: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// The body (or a nested part that must be) is not an object.
    #[error("{what} must be a JSON object")]
    NotAnObject {
        /// What must be an object ("command", "`packet`", ..).
        what: &'static str,
    },
    /// A required field is missing.
    #[error("command has no `{field}` field")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong type or value.
    #[error("`{field}` must be {expected}, got `{got}`")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was (shortened).
        got: String,
    },
    /// A gateway-owned opcode.
    #[error("op {op} ({name}) is sent by the gateway itself; workers may not send it")]
    GatewayOwnedOp {
        /// The opcode.
        op: u64,
        /// Its name.
        name: &'static str,
    },
    /// An opcode that is not allowed.
    #[error(
        "op {op} is not allowed; allowed ops: {allowed} (allow newer client opcodes with `extra_allowed_ops`)"
    )]
    OpNotAllowed {
        /// The opcode.
        op: u64,
        /// The allowed ops, comma-separated.
        allowed: String,
    },
    /// `d` is not an object for an op whose data is an object.
    #[error("`d` of op {op} ({name}) must be a JSON object, got `{got}`")]
    DataNotObject {
        /// The opcode.
        op: u64,
        /// Its name.
        name: &'static str,
        /// What `d` was (shortened).
        got: String,
    },
}

/// Shortens a raw JSON value for an error message.
pub(crate) fn preview(raw: &str) -> String {
    const MAX: usize = 40;
    if raw.len() <= MAX {
        return raw.to_owned();
    }
    let mut end = MAX;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &raw[..end])
}

/// Validates a worker's packet (JSON) and normalises it.
pub fn validate_packet(json: &[u8], policy: &CommandPolicy) -> Result<GatewayPacket, CommandError> {
    validate_packet_in(json, "command", policy)
}

/// [`validate_packet`] for a packet nested in an envelope; `what` names it in errors.
pub(crate) fn validate_packet_in(
    json: &[u8],
    what: &'static str,
    policy: &CommandPolicy,
) -> Result<GatewayPacket, CommandError> {
    let [op, d] = pick_fields(json, what, [&["op"], &["d"]])?;
    let op = op.ok_or(CommandError::MissingField { field: "op" })?;
    let op = parse_integer(op, "op", "an integer opcode")?;
    let d = d.ok_or(CommandError::MissingField { field: "d" })?;
    packet_from_parts(op, d, policy)
}

/// Builds and validates the packet `{"op":op,"d":d}` from an opcode and the raw JSON of `d`
/// (for envelopes that carry them apart, like Retsu's).
pub fn packet_from_parts(
    op: u64,
    d: &RawValue,
    policy: &CommandPolicy,
) -> Result<GatewayPacket, CommandError> {
    if let Some(owned) = GATEWAY_OWNED_OPS.iter().find(|&&o| u64::from(o) == op) {
        return Err(CommandError::GatewayOwnedOp {
            op,
            name: op_name(u64::from(*owned)).unwrap_or("?"),
        });
    }
    if !policy.is_allowed(op) {
        let allowed = policy
            .allowed_ops()
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CommandError::OpNotAllowed { op, allowed });
    }
    let d = d.get();
    if DEFAULT_ALLOWED_OPS.iter().any(|&o| u64::from(o) == op) && !d.starts_with('{') {
        return Err(CommandError::DataNotObject {
            op,
            name: op_name(op).unwrap_or("?"),
            got: preview(d),
        });
    }
    // `op` is at most 255 here: the policy only holds u8 ops.
    let op_u8 = u8::try_from(op).unwrap_or(u8::MAX);
    let mut bytes = Vec::with_capacity(d.len() + 16);
    bytes.extend_from_slice(b"{\"op\":");
    bytes.extend_from_slice(op_u8.to_string().as_bytes());
    bytes.extend_from_slice(b",\"d\":");
    bytes.extend_from_slice(d.as_bytes());
    bytes.push(b'}');
    if bytes.len() > MAX_PACKET_BYTES {
        return Err(CommandError::PacketTooLarge {
            size: bytes.len(),
            limit: MAX_PACKET_BYTES,
        });
    }
    Ok(GatewayPacket {
        op: op_u8,
        bytes: Bytes::from(bytes),
    })
}

/// Parses a non-empty string of ASCII digits (no sign, no blanks) that fits a `u64`: a JSON
/// integer's text, a snowflake's digits, or a routing key part (a shard number or a guild id).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a raw JSON value as a non-negative integer (a JSON number without fraction, exponent
/// or sign; or, when `field` allows strings like snowflakes, see [`parse_id`]).
pub(crate) fn parse_integer(
    raw: &RawValue,
    field: &'static str,
    expected: &'static str,
) -> Result<u64, CommandError> {
    let text = raw.get();
    if let Some(v) = parse_decimal(text) {
        return Ok(v);
    }
    Err(CommandError::InvalidField {
        field,
        expected,
        got: preview(text),
    })
}

/// Parses a raw JSON value as an id: an integer or a string of digits (snowflakes are
/// strings in Discord's JSON).
pub(crate) fn parse_id(
    raw: &RawValue,
    field: &'static str,
    expected: &'static str,
) -> Result<u64, CommandError> {
    let text = raw.get();
    let digits = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if let Some(v) = parse_decimal(digits) {
        return Ok(v);
    }
    Err(CommandError::InvalidField {
        field,
        expected,
        got: preview(text),
    })
}

/// Checks the body size, then picks top-level fields of a JSON object, each under any of its
/// names. Unknown fields are skipped (but must be valid JSON); a field given twice (under the
/// same or another of its names) is refused. `what` names the object in errors.
pub(crate) fn pick_fields<'a, const N: usize>(
    json: &'a [u8],
    what: &'static str,
    names: [&'static [&'static str]; N],
) -> Result<[Option<&'a RawValue>; N], CommandError> {
    if json.len() > MAX_COMMAND_BODY_BYTES {
        return Err(CommandError::BodyTooLarge {
            size: json.len(),
            limit: MAX_COMMAND_BODY_BYTES,
        });
    }
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_none() {
        return Err(CommandError::Malformed {
            format: "JSON",
            detail: "the body is empty".into(),
        });
    }
    if first != Some(&b'{') {
        // Still report invalid JSON as such.
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(json) {
            return Err(CommandError::Malformed {
                format: "JSON",
                detail: e.to_string(),
            });
        }
        return Err(CommandError::NotAnObject { what });
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let fields = FieldPicker { names }
        .deserialize(&mut de)
        .and_then(|fields| de.end().map(|()| fields))
        .map_err(|e| CommandError::Malformed {
            format: "JSON",
            detail: e.to_string(),
        })?;
    Ok(fields)
}

struct FieldPicker<const N: usize> {
    names: [&'static [&'static str]; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for FieldPicker<N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for FieldPicker<N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: [Option<&'de RawValue>; N] = [None; N];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self
                .names
                .iter()
                .position(|aliases| aliases.contains(&&*key))
            {
                Some(i) if found[i].is_some() => {
                    return Err(de::Error::custom(format_args!(
                        "field `{}` is given more than once",
                        self.names[i][0]
                    )));
                }
                Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> GatewayPacket {
        validate_packet(json.as_bytes(), &CommandPolicy::default()).unwrap()
    }

    fn reason(json: &str) -> String {
        validate_packet(json.as_bytes(), &CommandPolicy::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn allowed_ops_pass_and_are_normalised() {
        for op in [3, 4, 8, 31] {
            let p = ok(&format!(
                r#" {{ "d" : {{"x": [1, 2]}}, "op" : {op}, "s": null }} "#
            ));
            assert_eq!(p.op(), op);
            assert_eq!(
                &p.bytes()[..],
                format!(r#"{{"op":{op},"d":{{"x": [1, 2]}}}}"#).as_bytes()
            );
        }
    }

    #[test]
    fn gateway_owned_ops_are_refused() {
        assert_eq!(
            reason(r#"{"op":2,"d":{}}"#),
            "op 2 (Identify) is sent by the gateway itself; workers may not send it"
        );
        assert!(reason(r#"{"op":1,"d":null}"#).contains("op 1 (Heartbeat)"));
        assert!(reason(r#"{"op":6,"d":{}}"#).contains("op 6 (Resume)"));
    }

    #[test]
    fn other_ops_need_configuration() {
        assert_eq!(
            reason(r#"{"op":43,"d":{}}"#),
            "op 43 is not allowed; allowed ops: 3, 4, 8, 31 (allow newer client opcodes with `extra_allowed_ops`)"
        );
        assert!(reason(r#"{"op":0,"d":{}}"#).contains("op 0 is not allowed"));
        assert!(reason(r#"{"op":300,"d":{}}"#).contains("op 300 is not allowed"));
        let policy = CommandPolicy::new(&[43]).unwrap();
        let p = validate_packet(br#"{"op":43,"d":{"guild_id":"1"}}"#, &policy).unwrap();
        assert_eq!(p.op(), 43);
        assert!(
            CommandPolicy::new(&[2])
                .unwrap_err()
                .contains("op 2 (Identify)")
        );
        assert!(
            CommandPolicy::new(&[10])
                .unwrap_err()
                .contains("only ever sent by Discord")
        );
    }

    #[test]
    fn malformed_packets_have_clear_reasons() {
        assert!(reason("").contains("the body is empty"));
        assert!(reason("{").starts_with("command is not valid JSON"));
        assert!(reason(r#"{"op":3,"d":{}} x"#).starts_with("command is not valid JSON"));
        assert_eq!(reason("[3, {}]"), "command must be a JSON object");
        assert_eq!(reason("42"), "command must be a JSON object");
        assert_eq!(reason(r#"{"d":{}}"#), "command has no `op` field");
        assert_eq!(reason(r#"{"op":3}"#), "command has no `d` field");
        assert_eq!(
            reason(r#"{"op":"3","d":{}}"#),
            "`op` must be an integer opcode, got `\"3\"`"
        );
        assert!(reason(r#"{"op":3.0,"d":{}}"#).contains("must be an integer opcode"));
        assert!(reason(r#"{"op":-3,"d":{}}"#).contains("must be an integer opcode"));
        assert!(reason(r#"{"op":3,"op":4,"d":{}}"#).contains("given more than once"));
        assert_eq!(
            reason(r#"{"op":3,"d":null}"#),
            "`d` of op 3 (Presence Update) must be a JSON object, got `null`"
        );
        assert!(reason(r#"{"op":8,"d":[1]}"#).contains("must be a JSON object"));
    }

    #[test]
    fn size_limit_applies_to_the_packet_as_sent() {
        let pad = |n: usize| format!(r#"{{"op":3,"d":{{"x":"{}"}}}}"#, "a".repeat(n));
        let exact = pad(4096 - pad(0).len());
        assert_eq!(ok(&exact).bytes().len(), 4096);
        let over = pad(4097 - pad(0).len());
        assert_eq!(
            reason(&over),
            "packet is 4097 bytes; Discord accepts at most 4096"
        );
        // Whitespace and extra fields do not count: they are not sent.
        let padded = format!("{}{}", exact, " ".repeat(100));
        assert_eq!(ok(&padded).bytes().len(), 4096);
        let huge = " ".repeat(MAX_COMMAND_BODY_BYTES + 1);
        assert!(reason(&huge).contains("at most 65536 are read"));
    }

    #[test]
    fn ids_accept_numbers_and_digit_strings() {
        fn raw(s: &str) -> &RawValue {
            serde_json::from_str(s).unwrap()
        }
        assert_eq!(parse_id(raw(r#""123""#), "guild_id", "x").unwrap(), 123);
        assert_eq!(parse_id(raw("123"), "guild_id", "x").unwrap(), 123);
        assert!(parse_id(raw(r#""""#), "guild_id", "x").is_err());
        assert!(parse_id(raw(r#""-1""#), "guild_id", "x").is_err());
        assert!(parse_id(raw("1.5"), "guild_id", "x").is_err());
        assert!(parse_id(raw("18446744073709551616"), "guild_id", "x").is_err());
    }
}
