//! The recorded fixtures of `fixtures/` compiled into the crate, and the parser for session files.
//!
//! Owns: the embedded bytes (so an installed binary's demo mode needs no checkout), the
//! [`Fixture`] type (a list of dispatches: event name plus the raw bytes of `d`) and its loading
//! from `.jsonl` text, files or builtin names. Does not own: sending, sequencing or routing of the
//! events (see the connection and session modules); the file format is documented in
//! `fixtures/README.md`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// `fixtures/sessions/basic.jsonl`: a small real session (26 dispatches, one unknown event).
pub const BASIC_SESSION: &str = include_str!("../../../fixtures/sessions/basic.jsonl");
/// `fixtures/sessions/large.jsonl`: serenity's 2.8 MB GUILD_CREATE as one dispatch.
pub const LARGE_SESSION: &str = include_str!("../../../fixtures/sessions/large.jsonl");
/// `fixtures/gateway/hello.json`: a recorded HELLO frame, the template of the mock's HELLO.
pub const HELLO_TEMPLATE: &str = include_str!("../../../fixtures/gateway/hello.json");
/// `fixtures/gateway/ready.json`: a recorded v10 READY frame, the template of the mock's READY.
pub const READY_TEMPLATE: &str = include_str!("../../../fixtures/gateway/ready.json");
/// `fixtures/gateway/gateway_bot.json`: a recorded `GET /gateway/bot` response body.
pub const GATEWAY_BOT_TEMPLATE: &str = include_str!("../../../fixtures/gateway/gateway_bot.json");
/// `fixtures/compression/zlib_stream_hello.bin`: the first message of a real zlib-stream connection.
pub const ZLIB_STREAM_HELLO: &[u8] =
    include_bytes!("../../../fixtures/compression/zlib_stream_hello.bin");
/// `fixtures/compression/zstd_stream_hello.bin`: the first message of a real zstd-stream connection.
pub const ZSTD_STREAM_HELLO: &[u8] =
    include_bytes!("../../../fixtures/compression/zstd_stream_hello.bin");

/// Names accepted by [`Fixture::builtin`] (and by the binary's `--fixture`).
pub const BUILTIN_NAMES: &[&str] = &["basic", "large", "empty"];

/// One recorded dispatch: the event name and the exact bytes of its `d` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureEvent {
    /// The event name (`t`), e.g. `MESSAGE_CREATE`.
    pub name: Arc<str>,
    /// The raw JSON bytes of `d`, exactly as recorded.
    pub d: Bytes,
    /// The guild the event belongs to, if any: the top-level `guild_id` of `d`, or the top-level
    /// `id` for `GUILD_CREATE`/`GUILD_UPDATE`/`GUILD_DELETE`. Used to route events to shards.
    pub guild_id: Option<u64>,
    /// The `s` the fixture line carried (informational; the mock assigns its own sequence).
    pub recorded_seq: Option<u64>,
}

/// A recorded session: dispatches in the order they are replayed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fixture {
    events: Arc<[FixtureEvent]>,
}

/// Why a fixture could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The file could not be read.
    #[error("cannot read fixture file {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a dispatch frame `{"t":..,"s":..,"op":0,"d":..}`.
    #[error("fixture line {line}: {reason}")]
    BadLine {
        /// One-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither a builtin name nor an existing file.
    #[error("unknown fixture {0:?}: not a file and not one of the builtin names {BUILTIN_NAMES:?}")]
    Unknown(String),
}

#[derive(Deserialize)]
struct LineFrame<'a> {
    #[serde(borrow)]
    t: Option<&'a RawValue>,
    #[serde(default)]
    s: Option<u64>,
    op: Option<i64>,
    #[serde(borrow)]
    d: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RoutingKeys<'a> {
    #[serde(borrow, default)]
    guild_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

fn snowflake(raw: Option<&RawValue>) -> Option<u64> {
    let text = raw?.get();
    text.trim_matches('"').parse().ok()
}

fn guild_of(name: &str, d: &str) -> Option<u64> {
    let keys: RoutingKeys<'_> = serde_json::from_str(d).ok()?;
    match name {
        "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE" => snowflake(keys.id),
        _ => snowflake(keys.guild_id),
    }
}

impl FixtureEvent {
    /// Builds an event from a name and the raw JSON of `d` (validated to be one JSON value).
    pub fn new(name: &str, d: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let d: Bytes = d.into();
        let text: &RawValue = serde_json::from_slice(&d)?;
        let guild_id = guild_of(name, text.get());
        // Keep the exact bytes, but without surrounding whitespace.
        let trimmed = d.slice_ref(text.get().as_bytes());
        Ok(Self {
            name: Arc::from(name),
            d: trimmed,
            guild_id,
            recorded_seq: None,
        })
    }
}

impl Fixture {
    /// A fixture with no events (the mock then only sends READY and what tests inject).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a fixture from events.
    pub fn from_events(events: Vec<FixtureEvent>) -> Self {
        Self {
            events: events.into(),
        }
    }

    /// Parses `.jsonl` text: one dispatch frame per line; blank lines are ignored.
    pub fn from_jsonl(text: impl Into<Bytes>) -> Result<Self, FixtureError> {
        let bytes: Bytes = text.into();
        let mut events = Vec::new();
        let mut start = 0;
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line_start = start;
            start += line.len() + 1;
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            let bad = |reason: String| FixtureError::BadLine {
                line: index + 1,
                reason,
            };
            let frame: LineFrame<'_> =
                serde_json::from_slice(trimmed).map_err(|e| bad(e.to_string()))?;
            if frame.op.is_some_and(|op| op != 0) {
                return Err(bad("op is not 0".into()));
            }
            let name: String = frame
                .t
                .and_then(|t| serde_json::from_str(t.get()).ok())
                .ok_or_else(|| bad("missing or non-string t".into()))?;
            let d = frame.d.ok_or_else(|| bad("missing d".into()))?;
            // Slice the raw d bytes out of the shared buffer (no copy).
            let offset = d.get().as_ptr() as usize - bytes.as_ptr() as usize;
            debug_assert!(offset >= line_start);
            let d_bytes = bytes.slice(offset..offset + d.get().len());
            let guild_id = guild_of(&name, d.get());
            events.push(FixtureEvent {
                name: Arc::from(name),
                d: d_bytes,
                guild_id,
                recorded_seq: frame.s,
            });
        }
        Ok(Self {
            events: events.into(),
        })
    }

    /// Loads a builtin fixture by name: `basic`, `large` or `empty`.
    pub fn builtin(name: &str) -> Option<Self> {
        let text = match name {
            "basic" => BASIC_SESSION,
            "large" => LARGE_SESSION,
            "empty" => return Some(Self::empty()),
            _ => return None,
        };
        Some(
            Self::from_jsonl(Bytes::from_static(text.as_bytes()))
                .expect("embedded fixtures are valid"),
        )
    }

    /// The embedded `basic` session.
    pub fn basic() -> Self {
        Self::builtin("basic").expect("builtin")
    }

    /// The embedded `large` session.
    pub fn large() -> Self {
        Self::builtin("large").expect("builtin")
    }

    /// Loads a `.jsonl` file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, FixtureError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| FixtureError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_jsonl(text)
    }

    /// A builtin name, or else a path to a `.jsonl` file.
    pub fn load(name_or_path: &str) -> Result<Self, FixtureError> {
        if let Some(fixture) = Self::builtin(name_or_path) {
            return Ok(fixture);
        }
        if Path::new(name_or_path).exists() {
            return Self::from_path(name_or_path);
        }
        Err(FixtureError::Unknown(name_or_path.to_owned()))
    }

    /// The events in replay order.
    pub fn events(&self) -> &[FixtureEvent] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// A fixture made of this one repeated `times` times (e.g. to build a benchmark corpus).
    pub fn repeated(&self, times: usize) -> Self {
        let mut events = Vec::with_capacity(self.events.len() * times);
        for _ in 0..times {
            events.extend(self.events.iter().cloned());
        }
        Self {
            events: events.into(),
        }
    }

    /// Distinct ids of the guilds this fixture creates (GUILD_CREATE), in first-seen order.
    pub fn created_guilds(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for event in self.events.iter() {
            if &*event.name == "GUILD_CREATE"
                && let Some(id) = event.guild_id
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_fixtures_parse_and_keep_raw_d() {
        let basic = Fixture::basic();
        assert_eq!(basic.len(), 26);
        for (line, event) in BASIC_SESSION.lines().zip(basic.events()) {
            let rebuilt = format!(
                "{{\"t\":\"{}\",\"s\":{},\"op\":0,\"d\":{}}}",
                event.name,
                event.recorded_seq.unwrap(),
                std::str::from_utf8(&event.d).unwrap()
            );
            assert_eq!(line, rebuilt);
        }
        assert!(
            basic
                .events()
                .iter()
                .any(|e| &*e.name == "VOICE_CHANNEL_START_TIME_UPDATE")
        );
        assert_eq!(
            basic.created_guilds(),
            vec![900000000000000008, 900000000000000034]
        );
        let large = Fixture::large();
        assert_eq!(large.len(), 1);
        assert!(large.events()[0].d.len() > 2_700_000);
        assert_eq!(large.events()[0].guild_id, Some(81384788765712384));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err = Fixture::from_jsonl("{\"t\":\"A\",\"s\":1,\"op\":0,\"d\":{}}\n{\"op\":0}\n")
            .unwrap_err();
        assert!(
            matches!(err, FixtureError::BadLine { line: 2, .. }),
            "{err}"
        );
    }
}
