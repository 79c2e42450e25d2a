//! The JSON the shard writes (HEARTBEAT, IDENTIFY, RESUME), the bytes it puts on the wire for
//! any packet (JSON as is, or ETF), and the few fields it reads from HELLO, READY and
//! INVALID_SESSION.
//!
//! Owns: exact wire shapes of the gateway's own packets. Does not decide when to send them, and
//! never touches dispatch bodies (those are published as received).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codec::{Encoding, EtfEncodeError, json_to_etf};
use crate::secret::Secret;
use crate::sharding::ShardId;

#[derive(Serialize)]
struct Packet<T> {
    op: u8,
    d: T,
}

#[derive(Serialize)]
struct Properties<'a> {
    os: &'a str,
    browser: &'a str,
    device: &'a str,
}

#[derive(Serialize)]
struct Identify<'a> {
    token: &'a str,
    properties: Properties<'a>,
    compress: bool,
    large_threshold: u8,
    shard: [u32; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<&'a RawValue>,
    intents: u64,
}

#[derive(Serialize)]
struct Resume<'a> {
    token: &'a str,
    session_id: &'a str,
    seq: u64,
}

fn encode<T: Serialize>(op: u8, d: T) -> Bytes {
    // Serialising these plain structs into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&Packet { op, d }).unwrap_or_default())
}

/// `{"op":1,"d":<seq or null>}`.
pub(crate) fn heartbeat(seq: Option<u64>) -> Bytes {
    encode(1, seq)
}

/// IDENTIFY's fields other than the token.
pub(crate) struct IdentifyFields<'a> {
    pub(crate) shard: ShardId,
    pub(crate) intents: u64,
    pub(crate) large_threshold: u8,
    pub(crate) presence: Option<&'a RawValue>,
}

/// `{"op":2,"d":{token, properties, compress:false, large_threshold, shard, presence?, intents}}`.
pub(crate) fn identify(token: &Secret, f: &IdentifyFields<'_>) -> Bytes {
    encode(
        2,
        Identify {
            token: token.expose(),
            properties: Properties {
                os: std::env::consts::OS,
                browser: "gatehouse",
                device: "gatehouse",
            },
            // Transport compression is negotiated in the URL; payload compression stays off.
            compress: false,
            large_threshold: f.large_threshold,
            shard: [f.shard.number(), f.shard.total()],
            presence: f.presence,
            intents: f.intents,
        },
    )
}

/// `{"op":6,"d":{token, session_id, seq}}`.
pub(crate) fn resume(token: &Secret, session_id: &str, seq: u64) -> Bytes {
    encode(
        6,
        Resume {
            token: token.expose(),
            session_id,
            seq,
        },
    )
}

/// The bytes that go on the wire for a JSON packet: the packet itself on a JSON connection,
/// its ETF form (binary keys, never compressed) on an ETF connection.
pub(crate) fn to_wire(encoding: Encoding, packet: Bytes) -> Result<Bytes, EtfEncodeError> {
    match encoding {
        Encoding::Json => Ok(packet),
        Encoding::Etf => json_to_etf(&packet).map(Bytes::from),
    }
}

/// How the ETF form of `{"op":N,...}` starts: a map, then the binary key `op`, then N as a
/// small integer (the encoder keeps the key order, and the shard writes `op` first).
const ETF_OP_PREFIX: [u8; 14] = [131, 116, 0, 0, 0, 2, 109, 0, 0, 0, 2, b'o', b'p', 97];

/// Whether a frame the shard sends carries the token (its own IDENTIFY or RESUME, in JSON or
/// ETF, which always start with the opcode), so logs must not show it.
pub(crate) fn carries_token(frame: &[u8]) -> bool {
    if let Some(rest) = frame.strip_prefix(&ETF_OP_PREFIX[..]) {
        return matches!(rest.first(), Some(2 | 6));
    }
    frame.starts_with(br#"{"op":2,"#) || frame.starts_with(br#"{"op":6,"#)
}

/// HELLO's `heartbeat_interval` in milliseconds, if readable.
pub(crate) fn hello_interval(d: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Hello {
        heartbeat_interval: f64,
    }
    let hello: Hello = serde_json::from_slice(d).ok()?;
    let ms = hello.heartbeat_interval;
    (ms.is_finite() && ms >= 0.0).then(|| ms.min(u64::MAX as f64) as u64)
}

/// READY's session id and resume URL.
pub(crate) struct ReadyFields {
    pub(crate) session_id: String,
    pub(crate) resume_gateway_url: Option<String>,
}

/// Reads READY's `session_id` and `resume_gateway_url`, skipping the rest.
pub(crate) fn ready_fields(d: &[u8]) -> Option<ReadyFields> {
    #[derive(Deserialize)]
    struct Ready {
        session_id: String,
        #[serde(default)]
        resume_gateway_url: Option<String>,
    }
    let ready: Ready = serde_json::from_slice(d).ok()?;
    Some(ReadyFields {
        session_id: ready.session_id,
        resume_gateway_url: ready.resume_gateway_url.filter(|u| !u.is_empty()),
    })
}

/// INVALID_SESSION's `d`: `true` means the session may be resumable. Anything else is `false`.
pub(crate) fn invalid_session_resumable(d: &[u8]) -> bool {
    d.trim_ascii() == b"true"
}

/// Checks that a configured presence is one JSON value, for IDENTIFY.
pub(crate) fn parse_presence(raw: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(raw.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_carries_the_sequence_or_null() {
        assert_eq!(&heartbeat(None)[..], br#"{"op":1,"d":null}"#);
        assert_eq!(&heartbeat(Some(42))[..], br#"{"op":1,"d":42}"#);
    }

    #[test]
    fn identify_has_every_field() {
        let presence =
            parse_presence(r#"{"status":"idle","since":null,"activities":[],"afk":false}"#)
                .expect("valid");
        let bytes = identify(
            &Secret::new("tok\"en"),
            &IdentifyFields {
                shard: ShardId::new(3, 8).expect("valid"),
                intents: 513,
                large_threshold: 250,
                presence: Some(&presence),
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["op"], 2);
        let d = &v["d"];
        assert_eq!(d["token"], "tok\"en");
        assert_eq!(d["intents"], 513);
        assert_eq!(d["shard"], serde_json::json!([3, 8]));
        assert_eq!(d["compress"], false);
        assert_eq!(d["large_threshold"], 250);
        assert_eq!(d["properties"]["browser"], "gatehouse");
        assert_eq!(d["properties"]["device"], "gatehouse");
        assert_eq!(d["properties"]["os"], std::env::consts::OS);
        assert_eq!(d["presence"]["status"], "idle");
    }

    #[test]
    fn token_frames_are_recognised() {
        let fields = IdentifyFields {
            shard: ShardId::new(0, 1).expect("valid"),
            intents: 1,
            large_threshold: 50,
            presence: None,
        };
        assert!(carries_token(&identify(&Secret::new("t"), &fields)));
        assert!(carries_token(&resume(&Secret::new("t"), "s", 1)));
        assert!(!carries_token(&heartbeat(Some(1))));
        let etf = |packet: Bytes| to_wire(Encoding::Etf, packet).expect("encodes");
        assert!(carries_token(&etf(identify(&Secret::new("t"), &fields))));
        assert!(carries_token(&etf(resume(&Secret::new("t"), "s", 1))));
        assert!(!carries_token(&etf(heartbeat(Some(1)))));
        assert!(!carries_token(&etf(Bytes::from_static(
            br#"{"op":3,"d":{}}"#
        ))));
    }

    #[test]
    fn etf_wire_form_decodes_to_the_packet() {
        let packet = resume(&Secret::new("t"), "abc", 300);
        let json = to_wire(Encoding::Json, packet.clone()).expect("json");
        assert_eq!(json, packet);
        let etf = to_wire(Encoding::Etf, packet).expect("etf");
        assert_eq!(etf[0], 131);
        let mut decoder = crate::codec::Decoder::new(crate::codec::DecoderConfig {
            compression: crate::codec::Compression::None,
            encoding: Encoding::Etf,
            max_payload: 1 << 20,
        });
        let payload = decoder.decode(&etf, true).expect("decodes").expect("whole");
        assert_eq!(payload.op, 6);
        assert_eq!(
            payload.data(),
            br#"{"token":"t","session_id":"abc","seq":300}"#
        );
    }

    #[test]
    fn resume_uses_seq() {
        let b = resume(&Secret::new("t"), "abc", 7);
        assert_eq!(
            &b[..],
            br#"{"op":6,"d":{"token":"t","session_id":"abc","seq":7}}"#
        );
    }

    #[test]
    fn reads_hello_ready_and_invalid_session() {
        assert_eq!(
            hello_interval(br#"{"heartbeat_interval":41250,"_trace":["x"]}"#),
            Some(41_250)
        );
        assert_eq!(hello_interval(b"null"), None);
        assert_eq!(hello_interval(br#"{"heartbeat_interval":-5}"#), None);
        let r = ready_fields(
            br#"{"v":10,"user":{"id":"1"},"session_id":"s1","resume_gateway_url":"wss://r.example","guilds":[]}"#,
        )
        .expect("ready");
        assert_eq!(r.session_id, "s1");
        assert_eq!(r.resume_gateway_url.as_deref(), Some("wss://r.example"));
        assert!(ready_fields(b"{}").is_none());
        assert!(invalid_session_resumable(b" true "));
        assert!(!invalid_session_resumable(b"false"));
        assert!(!invalid_session_resumable(b"null"));
    }
}
