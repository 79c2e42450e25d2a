//! A sans-IO fake of Discord's gateway that answers the shard's actions like Discord does.
//!
//! Owns: sessions (id, event log for replay), per-connection protocol checks (nothing before
//! IDENTIFY/RESUME, one IDENTIFY, 4096-byte limit, 120 frames per 60 s, on `encoding=etf`
//! only uncompressed ETF with binary keys) and scheduled deliveries with a fixed latency, in
//! JSON or ETF, optionally zlib-stream compressed. Does not drive the shard (the
//! [`super::sim::Sim`] does).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::rng::SeededRng;
use crate::shard::Action;

/// What the gateway (or the fake runtime around it) hands to the shard.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Delivery {
    /// The socket opened.
    Connected,
    /// One text message.
    Message(Bytes),
    /// One binary message carrying the JSON payload `plain`: as ETF, or as a piece of the
    /// connection's zlib stream, or both.
    Binary {
        /// The payload as JSON (for the log).
        plain: Bytes,
        /// The bytes on the wire.
        wire: Bytes,
    },
    /// The socket closed (or failed to open) with this code.
    Closed(Option<u16>),
}

/// One frame the shard sent, as the gateway saw it.
#[allow(dead_code)] // fields read by some scenarios only
#[derive(Clone, Debug)]
pub(crate) struct SentFrame {
    pub(crate) at: Instant,
    pub(crate) connection: u32,
    pub(crate) op: u64,
    pub(crate) d: Value,
    pub(crate) len: usize,
}

#[derive(Clone, Debug, Default)]
struct GwSession {
    /// Every dispatch of the session, `(seq, bytes)`.
    log: Vec<(u64, Bytes)>,
    valid: bool,
}

#[derive(Clone, Debug, Default)]
struct Conn {
    id: u32,
    session: Option<String>,
    identified: bool,
}

#[allow(dead_code)] // knobs used by some scenarios only
pub(crate) struct FakeGateway {
    pub(crate) latency: Duration,
    pub(crate) heartbeat_interval_ms: u64,
    /// Don't answer heartbeats.
    pub(crate) drop_acks: bool,
    /// The next this many connects fail.
    pub(crate) fail_connects: u32,
    /// Send op 7 instead of HELLO on the next connection.
    pub(crate) reconnect_before_hello: bool,
    /// GUILD_CREATEs sent after READY.
    pub(crate) guilds_after_ready: u32,
    /// Answer a RESUME with op 9 `false` even for known sessions.
    pub(crate) reject_resumes: bool,
    pub(crate) token: String,
    /// Send every message as `compress=zlib-stream` does (one deflate stream per connection).
    pub(crate) zlib_stream: bool,
    /// Speak `encoding=etf`: send ETF (binary frames) and accept only ETF from the client.
    pub(crate) etf: bool,
    deflate: Option<flate2::Compress>,
    rng: SeededRng,
    sessions: HashMap<String, GwSession>,
    conn: Option<Conn>,
    next_conn: u32,
    next_session: u32,
    queue: VecDeque<(Instant, u32, Delivery)>,
    /// Every frame the shard sent.
    pub(crate) sent: Vec<SentFrame>,
    /// Every URL the shard connected to.
    pub(crate) connects: Vec<String>,
    /// Every close code the shard sent.
    pub(crate) client_closes: Vec<u16>,
    /// Protocol violations the gateway noticed (a test asserts this stays empty).
    pub(crate) violations: Vec<String>,
}

pub(crate) const RESUME_URL: &str = "wss://resume.gateway.test";
pub(crate) const GATEWAY_URL: &str = "wss://gateway.test";

#[allow(dead_code)]
impl FakeGateway {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            latency: Duration::from_millis(50),
            heartbeat_interval_ms: 41_250,
            drop_acks: false,
            fail_connects: 0,
            reconnect_before_hello: false,
            guilds_after_ready: 2,
            reject_resumes: false,
            token: "test-token".into(),
            zlib_stream: false,
            etf: false,
            deflate: None,
            rng: SeededRng::new(seed ^ 0xFA4E),
            sessions: HashMap::new(),
            conn: None,
            next_conn: 0,
            next_session: 0,
            queue: VecDeque::new(),
            sent: Vec::new(),
            connects: Vec::new(),
            client_closes: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// The id of the current connection, if open.
    pub(crate) fn connection(&self) -> Option<u32> {
        self.conn.as_ref().map(|c| c.id)
    }

    /// The current session id of the open connection.
    pub(crate) fn current_session(&self) -> Option<&str> {
        self.conn.as_ref()?.session.as_deref()
    }

    /// When the next delivery is due.
    pub(crate) fn next_delivery(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _, _)| *at)
    }

    /// Whether the next delivery is the socket opening or closing (not a message).
    pub(crate) fn next_is_socket_event(&self) -> bool {
        matches!(
            self.queue.front(),
            Some((_, _, Delivery::Connected | Delivery::Closed(_)))
        )
    }

    /// The next delivery due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Delivery> {
        if self.queue.front().is_none_or(|(at, _, _)| *at > now) {
            return None;
        }
        let (_, _, delivery) = self.queue.pop_front()?;
        let Delivery::Message(plain) = delivery else {
            return Some(delivery);
        };
        if !self.etf && self.deflate.is_none() {
            return Some(Delivery::Message(plain));
        }
        let payload = if self.etf {
            let value: Value = serde_json::from_slice(&plain).expect("the gateway writes JSON");
            let mut etf = vec![131];
            server_etf::term(&value, true, &mut etf);
            etf
        } else {
            plain.to_vec()
        };
        // Compress at delivery time, so the stream is in the order the shard reads it.
        let wire = match self.deflate.as_mut() {
            Some(deflate) => {
                let mut wire = Vec::new();
                let mut offset = 0;
                // Sync-flush every payload, as Discord does: it then ends with 00 00 ff ff.
                while offset < payload.len() || !wire.ends_with(&[0, 0, 0xff, 0xff]) {
                    wire.reserve(payload.len() + 64);
                    let before = deflate.total_in();
                    deflate
                        .compress_vec(&payload[offset..], &mut wire, flate2::FlushCompress::Sync)
                        .expect("deflate");
                    offset += usize::try_from(deflate.total_in() - before).unwrap_or(0);
                }
                wire
            }
            None => payload,
        };
        Some(Delivery::Binary {
            plain,
            wire: Bytes::from(wire),
        })
    }

    fn schedule(&mut self, at: Instant, conn: u32, d: Delivery) {
        // Keep the queue ordered by time, FIFO among equal times.
        let pos = self.queue.partition_point(|(t, _, _)| *t <= at);
        self.queue.insert(pos, (at, conn, d));
    }

    fn push_to_client(&mut self, now: Instant, payload: Value) {
        let Some(conn) = self.connection() else {
            return;
        };
        let bytes = Bytes::from(serde_json::to_vec(&payload).unwrap_or_default());
        self.schedule(now + self.latency, conn, Delivery::Message(bytes));
    }

    /// A frame `{"t":null,"s":null,"op":op,"d":d}`, as Discord writes non-dispatches.
    pub(crate) fn send_op(&mut self, now: Instant, op: u8, d: Value) {
        self.push_to_client(
            now,
            serde_json::json!({"t": null, "s": null, "op": op, "d": d}),
        );
    }

    /// A dispatch in the current session (numbered and logged for replay).
    pub(crate) fn dispatch(&mut self, now: Instant, t: &str, d: Value) {
        let Some(sid) = self.current_session().map(str::to_owned) else {
            return;
        };
        let session = self.sessions.entry(sid).or_default();
        let seq = session.log.len() as u64 + 1;
        let payload = serde_json::json!({"t": t, "s": seq, "op": 0, "d": d});
        let bytes = Bytes::from(serde_json::to_vec(&payload).unwrap_or_default());
        session.log.push((seq, bytes.clone()));
        if let Some(conn) = self.connection() {
            self.schedule(now + self.latency, conn, Delivery::Message(bytes));
        }
    }

    /// The server closes the connection with `code` (`None`: the TCP connection drops).
    pub(crate) fn close(&mut self, now: Instant, code: Option<u16>) {
        if let Some(conn) = self.conn.take() {
            self.queue.retain(|(_, c, _)| *c != conn.id);
            self.schedule(now + self.latency, conn.id, Delivery::Closed(code));
        }
    }

    /// The client process died: the connection is gone without a close frame; its session
    /// stays resumable.
    pub(crate) fn drop_connection(&mut self) {
        self.conn = None;
        self.queue.clear();
    }

    /// Invalidates every session (as if they expired).
    pub(crate) fn expire_sessions(&mut self) {
        for s in self.sessions.values_mut() {
            s.valid = false;
        }
    }

    /// Reacts to one action of the shard.
    pub(crate) fn accept(&mut self, now: Instant, action: &Action) {
        match action {
            Action::Connect { url } => {
                self.connects.push(url.clone());
                // A new connect abandons whatever was open; a runtime never reports events
                // of an older socket after opening a new one.
                self.conn = None;
                self.queue.clear();
                self.next_conn += 1;
                let id = self.next_conn;
                if self.fail_connects > 0 {
                    self.fail_connects -= 1;
                    self.schedule(now + self.latency, id, Delivery::Closed(None));
                    return;
                }
                self.conn = Some(Conn {
                    id,
                    ..Conn::default()
                });
                self.deflate = self
                    .zlib_stream
                    .then(|| flate2::Compress::new(flate2::Compression::fast(), true));
                self.schedule(now + self.latency, id, Delivery::Connected);
                if self.reconnect_before_hello {
                    self.reconnect_before_hello = false;
                    self.send_op(now + self.latency, 7, Value::Null);
                } else {
                    let hello = serde_json::json!({
                        "heartbeat_interval": self.heartbeat_interval_ms,
                        "_trace": ["[\"gateway-prd-test\",{\"micros\":0.0}]"]
                    });
                    self.send_op(now + self.latency, 10, hello);
                }
            }
            Action::Send(bytes) => self.receive(now, bytes),
            Action::Close(code) => {
                self.client_closes.push(code.0);
                if let Some(conn) = self.conn.take() {
                    if matches!(code.0, 1000 | 1001)
                        && let Some(s) = conn.session.and_then(|s| self.sessions.get_mut(&s))
                    {
                        s.valid = false;
                    }
                    self.queue.retain(|(_, c, _)| *c != conn.id);
                    // The runtime reports its own close back to the shard.
                    self.schedule(now, conn.id, Delivery::Closed(Some(code.0)));
                }
            }
            Action::RequestIdentify
            | Action::Publish { .. }
            | Action::PersistSession(_)
            | Action::Stopped(_) => {}
        }
    }

    fn receive(&mut self, now: Instant, bytes: &Bytes) {
        let Some(conn_id) = self.connection() else {
            // The server already closed; the shard has not heard yet. The frame is lost.
            return;
        };
        let decoded = if self.etf {
            client_etf::decode(bytes)
        } else {
            serde_json::from_slice(bytes).map_err(|e| e.to_string())
        };
        let value: Value = match decoded {
            Ok(v) => v,
            Err(e) => {
                self.violations.push(format!("undecodable frame: {e}"));
                return self.close(now, Some(4002));
            }
        };
        let op = value["op"].as_u64().unwrap_or(u64::MAX);
        let d = value["d"].clone();
        self.sent.push(SentFrame {
            at: now,
            connection: conn_id,
            op,
            d: d.clone(),
            len: bytes.len(),
        });
        if bytes.len() > 4096 {
            self.violations.push("frame over 4096 bytes".into());
            return self.close(now, Some(4002));
        }
        let in_window = self
            .sent
            .iter()
            .rev()
            .take_while(|f| f.connection == conn_id && f.at + Duration::from_secs(60) > now)
            .count();
        if in_window > 120 {
            self.violations.push(format!("{in_window} frames in 60 s"));
            return self.close(now, Some(4008));
        }
        let identified = self.conn.as_ref().is_some_and(|c| c.identified);
        match op {
            1 => {
                if !self.drop_acks {
                    self.send_op(now, 11, Value::Null);
                }
            }
            2 => {
                if identified {
                    self.violations.push("second IDENTIFY".into());
                    return self.close(now, Some(4005));
                }
                if d["token"] != self.token.as_str() {
                    return self.close(now, Some(4004));
                }
                self.next_session += 1;
                let sid = format!("session-{}", self.next_session);
                self.sessions.insert(
                    sid.clone(),
                    GwSession {
                        log: Vec::new(),
                        valid: true,
                    },
                );
                if let Some(c) = self.conn.as_mut() {
                    c.identified = true;
                    c.session = Some(sid.clone());
                }
                let ready = serde_json::json!({
                    "v": 10,
                    "user": {"id": "1", "username": "gatehouse", "bot": true},
                    "guilds": [],
                    "session_id": sid,
                    "resume_gateway_url": RESUME_URL,
                    "shard": d["shard"].clone(),
                    "application": {"id": "1", "flags": 0},
                    "_trace": ["x"]
                });
                self.dispatch(now, "READY", ready);
                for g in 0..self.guilds_after_ready {
                    let id = (u64::from(g) + 1) << 22;
                    self.dispatch(
                        now,
                        "GUILD_CREATE",
                        serde_json::json!({"id": id.to_string(), "name": "g"}),
                    );
                }
            }
            6 => {
                if identified {
                    self.violations.push("RESUME after IDENTIFY".into());
                    return self.close(now, Some(4005));
                }
                let sid = d["session_id"].as_str().unwrap_or_default().to_owned();
                let seq = d["seq"].as_u64();
                let known = self.sessions.get(&sid).filter(|s| s.valid).cloned();
                match (known, seq) {
                    (Some(session), Some(seq)) if !self.reject_resumes => {
                        if seq > session.log.len() as u64 {
                            return self.close(now, Some(4007));
                        }
                        if let Some(c) = self.conn.as_mut() {
                            c.identified = true;
                            c.session = Some(sid);
                        }
                        for (s, bytes) in session.log.iter().filter(|(s, _)| *s > seq) {
                            let _ = s;
                            self.schedule(
                                now + self.latency,
                                conn_id,
                                Delivery::Message(bytes.clone()),
                            );
                        }
                        self.dispatch(now, "RESUMED", Value::Null);
                    }
                    _ => {
                        let wait = Duration::from_millis(self.rng.below(500));
                        self.send_op(now + wait, 9, Value::Bool(false));
                    }
                }
            }
            _ => {
                if !identified {
                    self.violations
                        .push(format!("op {op} before IDENTIFY/RESUME"));
                    self.close(now, Some(4003));
                }
            }
        }
    }

    /// Frames the shard sent with this opcode.
    pub(crate) fn sent_ops(&self, op: u64) -> impl Iterator<Item = &SentFrame> {
        self.sent.iter().filter(move |f| f.op == op)
    }
}

/// What Discord sends on `encoding=etf`, written by hand (not with the shard's encoder):
/// envelope keys as atoms, other keys as binaries, `null` as the atom `nil`, integers beyond
/// 32 bits as SMALL_BIG, strings as binaries.
mod server_etf {
    use serde_json::Value;

    fn atom(name: &str, out: &mut Vec<u8>) {
        out.push(100); // ATOM_EXT
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    }

    fn binary(s: &str, out: &mut Vec<u8>) {
        out.push(109);
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// One term; `envelope` marks the top-level payload, whose keys are atoms.
    pub(super) fn term(value: &Value, envelope: bool, out: &mut Vec<u8>) {
        match value {
            Value::Null => atom("nil", out),
            Value::Bool(b) => atom(if *b { "true" } else { "false" }, out),
            Value::Number(n) => {
                if let Some(v) = n.as_i64().and_then(|v| i32::try_from(v).ok()) {
                    out.push(98);
                    out.extend_from_slice(&v.to_be_bytes());
                } else if let Some(v) = n.as_u64() {
                    out.extend_from_slice(&[110, 8, 0]);
                    out.extend_from_slice(&v.to_le_bytes());
                } else if let Some(v) = n.as_i64() {
                    out.extend_from_slice(&[110, 8, 1]);
                    out.extend_from_slice(&v.unsigned_abs().to_le_bytes());
                } else {
                    out.push(70);
                    out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
                }
            }
            Value::String(s) => binary(s, out),
            Value::Array(items) if items.is_empty() => out.push(106),
            Value::Array(items) => {
                out.push(108);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for item in items {
                    term(item, false, out);
                }
                out.push(106);
            }
            Value::Object(members) => {
                out.push(116);
                out.extend_from_slice(&(members.len() as u32).to_be_bytes());
                for (key, value) in members {
                    if envelope {
                        atom(key, out);
                    } else {
                        binary(key, out);
                    }
                    term(value, false, out);
                }
            }
        }
    }
}

/// Reads what a client sends on `encoding=etf` as strictly as Discord: version 131, no
/// compressed terms, binary map keys only (an atom key is a 4002), no atoms but
/// `true`/`false`/`nil`. Uses the `eetf` crate, independent of the shard's own codec.
mod client_etf {
    use eetf::Term;
    use serde_json::{Map, Value};

    pub(super) fn decode(bytes: &[u8]) -> Result<Value, String> {
        match bytes {
            [131, 80, ..] => return Err("compressed ETF".into()),
            [131, ..] => {}
            _ => return Err("not ETF (no version byte 131)".into()),
        }
        let term = Term::decode(bytes).map_err(|e| e.to_string())?;
        json(term)
    }

    fn json(term: Term) -> Result<Value, String> {
        Ok(match term {
            Term::Atom(a) => match a.name.as_str() {
                "nil" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => return Err(format!("atom value {other}")),
            },
            Term::FixInteger(i) => Value::from(i.value),
            Term::BigInteger(b) => {
                let v: i128 = b.value.to_string().parse().map_err(|_| "huge integer")?;
                if let Ok(v) = u64::try_from(v) {
                    Value::from(v)
                } else {
                    Value::from(i64::try_from(v).map_err(|_| "huge integer")?)
                }
            }
            Term::Float(f) => Value::from(f.value),
            Term::Binary(b) => {
                Value::String(String::from_utf8(b.bytes).map_err(|_| "binary not UTF-8")?)
            }
            Term::ByteList(l) => Value::Array(l.bytes.into_iter().map(Value::from).collect()),
            Term::List(l) => {
                Value::Array(l.elements.into_iter().map(json).collect::<Result<_, _>>()?)
            }
            Term::Map(m) => {
                let mut object = Map::new();
                for (k, v) in m.map {
                    let Term::Binary(k) = k else {
                        return Err(format!("map key {k} is not a binary"));
                    };
                    let k = String::from_utf8(k.bytes).map_err(|_| "key not UTF-8")?;
                    object.insert(k, json(v)?);
                }
                Value::Object(object)
            }
            other => return Err(format!("unexpected term {other}")),
        })
    }
}
