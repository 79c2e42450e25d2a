//! Builds the JSON text of the frames the mock sends (HELLO, READY, dispatches, op 1/7/9/11),
//! and the `/gateway/bot` body, from the recorded templates.
//!
//! Owns: the exact bytes of every server frame, always in Discord's `t, s, op, d` key order with
//! explicit nulls. Template rewriting keeps every other key, its order and its bytes. Does not
//! own: encoding to ETF or compression (see `wire`), or when a frame is sent.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::fixtures;

/// A JSON object kept as ordered `(key, raw value)` members, so that a template can be rewritten
/// without reordering or re-serialising what is not changed.
#[derive(Debug, Clone)]
pub(crate) struct RawObject {
    members: Vec<(String, Box<RawValue>)>,
}

impl<'de> serde::Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((key, value));
                }
                Ok(RawObject { members })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl RawObject {
    pub(crate) fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &**v)
    }

    /// Replaces the value of `key` (raw JSON), or appends the member if it is missing.
    pub(crate) fn set(&mut self, key: &str, raw_json: String) {
        let value = RawValue::from_string(raw_json).expect("caller passes valid JSON");
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.members.push((key.to_owned(), value)),
        }
    }

    pub(crate) fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(key).expect("string"));
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
        out
    }
}

/// The `d` object of the HELLO template.
fn template_d(template: &str) -> RawObject {
    let frame = RawObject::parse(template).expect("embedded template is an object");
    let d = frame.get("d").expect("template has d");
    RawObject::parse(d.get()).expect("template d is an object")
}

/// The templates, parsed once per mock.
#[derive(Debug, Clone)]
pub(crate) struct Templates {
    hello_d: RawObject,
    ready_d: RawObject,
    gateway_bot: RawObject,
}

impl Templates {
    pub(crate) fn recorded() -> Self {
        Self {
            hello_d: template_d(fixtures::HELLO_TEMPLATE),
            ready_d: template_d(fixtures::READY_TEMPLATE),
            gateway_bot: RawObject::parse(fixtures::GATEWAY_BOT_TEMPLATE).expect("object"),
        }
    }

    /// `{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":N,"_trace":[..]}}`
    pub(crate) fn hello(&self, heartbeat_interval_ms: u64) -> Bytes {
        let mut d = self.hello_d.clone();
        d.set("heartbeat_interval", heartbeat_interval_ms.to_string());
        op_frame(10, &d.to_json())
    }

    /// The READY dispatch (`s` = 1) for a new session.
    pub(crate) fn ready(
        &self,
        session_id: &str,
        resume_gateway_url: &str,
        shard: [u32; 2],
        guilds: &[u64],
    ) -> Bytes {
        let mut d = self.ready_d.clone();
        d.set("session_id", json_string(session_id));
        d.set("resume_gateway_url", json_string(resume_gateway_url));
        d.set("shard", format!("[{},{}]", shard[0], shard[1]));
        let guilds: Vec<String> = guilds
            .iter()
            .map(|id| format!("{{\"id\":\"{id}\",\"unavailable\":true}}"))
            .collect();
        d.set("guilds", format!("[{}]", guilds.join(",")));
        dispatch_frame("READY", 1, d.to_json().as_bytes())
    }

    /// The `GET /gateway/bot` response body.
    pub(crate) fn gateway_bot(&self, url: &str, shards: u32, limit: SessionStartLimit) -> String {
        let mut body = self.gateway_bot.clone();
        body.set("url", json_string(url));
        body.set("shards", shards.to_string());
        body.set(
            "session_start_limit",
            format!(
                "{{\"max_concurrency\":{},\"remaining\":{},\"total\":{},\"reset_after\":{}}}",
                limit.max_concurrency, limit.remaining, limit.total, limit.reset_after_ms
            ),
        );
        body.to_json()
    }
}

/// The `session_start_limit` object of `/gateway/bot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStartLimit {
    /// Session starts per reset window.
    pub total: u32,
    /// Starts left in this window.
    pub remaining: u32,
    /// Milliseconds until the window resets.
    pub reset_after_ms: u64,
    /// Identify buckets allowed per 5 seconds.
    pub max_concurrency: u32,
}

pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

/// `{"t":"<name>","s":<seq>,"op":0,"d":<raw d>}`: the raw `d` bytes are copied untouched.
pub(crate) fn dispatch_frame(name: &str, seq: u64, raw_d: &[u8]) -> Bytes {
    let name = json_string(name);
    let mut out = BytesMut::with_capacity(raw_d.len() + name.len() + 40);
    out.put_slice(b"{\"t\":");
    out.put_slice(name.as_bytes());
    out.put_slice(b",\"s\":");
    out.put_slice(seq.to_string().as_bytes());
    out.put_slice(b",\"op\":0,\"d\":");
    out.put_slice(raw_d);
    out.put_u8(b'}');
    out.freeze()
}

/// `{"t":null,"s":null,"op":<op>,"d":<raw d>}` for non-dispatch frames.
pub(crate) fn op_frame(op: u8, raw_d: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"t\":null,\"s\":null,\"op\":{op},\"d\":{raw_d}}}"
    ))
}

pub(crate) fn heartbeat_ack() -> Bytes {
    Bytes::from_static(b"{\"t\":null,\"s\":null,\"op\":11,\"d\":null}")
}

pub(crate) fn heartbeat_request() -> Bytes {
    Bytes::from_static(b"{\"t\":null,\"s\":null,\"op\":1,\"d\":null}")
}

pub(crate) fn reconnect() -> Bytes {
    Bytes::from_static(b"{\"t\":null,\"s\":null,\"op\":7,\"d\":null}")
}

pub(crate) fn invalid_session(resumable: bool) -> Bytes {
    if resumable {
        Bytes::from_static(b"{\"t\":null,\"s\":null,\"op\":9,\"d\":true}")
    } else {
        Bytes::from_static(b"{\"t\":null,\"s\":null,\"op\":9,\"d\":false}")
    }
}

/// The `d` of RESUMED. Discord sends only a `_trace` array; this one names the mock.
pub(crate) const RESUMED_D: &[u8] =
    b"{\"_trace\":[\"[\\\"mock-gateway\\\",{\\\"micros\\\":0.0}]\"]}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_keeps_trace_and_sets_interval() {
        let hello = Templates::recorded().hello(1234);
        let text = std::str::from_utf8(&hello).unwrap();
        assert!(
            text.starts_with(
                "{\"t\":null,\"s\":null,\"op\":10,\"d\":{\"heartbeat_interval\":1234,\"_trace\":["
            ),
            "{text}"
        );
        let _: serde_json::Value = serde_json::from_str(text).unwrap();
    }

    #[test]
    fn ready_rewrites_session_fields_only() {
        let ready = Templates::recorded().ready("abc", "ws://127.0.0.1:1/resume", [1, 2], &[42]);
        let v: serde_json::Value = serde_json::from_slice(&ready).unwrap();
        assert_eq!(v["t"], "READY");
        assert_eq!(v["s"], 1);
        assert_eq!(v["d"]["session_id"], "abc");
        assert_eq!(v["d"]["resume_gateway_url"], "ws://127.0.0.1:1/resume");
        assert_eq!(v["d"]["shard"], serde_json::json!([1, 2]));
        assert_eq!(
            v["d"]["guilds"],
            serde_json::json!([{"id": "42", "unavailable": true}])
        );
        assert_eq!(v["d"]["session_type"], "normal");
        assert!(v["d"]["_trace"].is_array());
    }

    #[test]
    fn dispatch_frame_keeps_raw_d() {
        let frame = dispatch_frame("X_Y", 7, b"{\"a\" : 1}");
        assert_eq!(
            &frame[..],
            b"{\"t\":\"X_Y\",\"s\":7,\"op\":0,\"d\":{\"a\" : 1}}"
        );
    }
}
