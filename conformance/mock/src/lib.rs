//! A mock Discord gateway: the HTTP `GET /gateway/bot` route and the gateway WebSocket, on
//! 127.0.0.1, behaving as Discord does (see `docs/PROTOCOL.md` section 15), replaying recorded
//! traffic and recording everything a client does.
//!
//! It stands in for Discord in unit and conformance tests, in benchmarks and in the product's
//! demo mode. It runs on plain threads (one per connection) over `std::net` with sync
//! `tungstenite`; it needs no async runtime.
//!
//! # Use
//!
//! ```no_run
//! use std::time::Duration;
//! use mock_gateway::{MockConfig, MockGateway};
//!
//! let mock = MockGateway::start(MockConfig::for_tests("my-token")).unwrap();
//! // A client fetches `{api_base}/gateway/bot` with `Authorization: Bot my-token`, then connects
//! // to `{ws_url}/?v=10&encoding=json&compress=zlib-stream`.
//! println!("{} {}", mock.api_base(), mock.ws_url());
//! let recorder = mock.recorder();
//! let identify = recorder.wait_identify(1, Duration::from_secs(5));
//! mock.control().shard(0).send_reconnect().ok();
//! let resumed = recorder.wait_resume(1, Duration::from_secs(5));
//! let bytes = recorder.sent_dispatches(0); // exact JSON of every op-0 frame sent to shard 0
//! # let _ = (identify, resumed, bytes);
//! ```
//!
//! # What it does, in Discord's terms
//!
//! - REST: `GET /api/v10/gateway/bot` (also `/api/v9/...` and `/api/gateway/bot`) needs
//!   `Authorization: Bot <token>` (else 401) and returns `{url, shards, session_start_limit}`
//!   from the recorded template; `GET .../gateway` returns `{url}`.
//! - WebSocket on any path with `?v=9|10&encoding=json|etf&compress=zlib-stream|zstd-stream`
//!   (bad `v`: close 4012; bad encoding/compress: 4002). zlib-stream: one deflate stream per
//!   connection, a sync flush per payload, payloads longer than `zlib_max_message` split over
//!   several binary messages. zstd-stream: one stream per connection, flushed (never ended), one
//!   payload per message. etf: binary frames both ways (client map keys must be binaries).
//! - HELLO (`heartbeat_interval` from the config) right after the handshake. Op 1 is answered with
//!   op 11 unless ACKs are dropped. No heartbeat within interval + grace: close 4009.
//! - IDENTIFY is checked: token (4004), `shard` `[id, count]` with `id < count` (4010), intents
//!   defined (4013), equal to `expected_intents` if set (4013), privileged ones allowed (4014),
//!   session start limit and `shard % max_concurrency` bucket (op 9 `false`). Then READY (`s` = 1)
//!   with a fresh `session_id`, `resume_gateway_url` = [`MockGateway::resume_url`], `shard`, and
//!   the fixture's guilds of that shard as unavailable guilds; then the fixture's dispatches.
//! - Dispatch frames are built as `{"t":..,"s":..,"op":0,"d":<raw d bytes>}`: `d` is never
//!   re-serialised, so a fixture line replayed once after READY is sent byte for byte.
//! - RESUME with a known, live-able session and `seq <= last`: every dispatch after `seq` in order
//!   (from the session's history), then RESUMED, then the replay continues. Unknown, expired or
//!   invalidated session: op 9 `false`. `seq` beyond the last: close 4007. Closing with
//!   1000/1001 (client) or a fatal code (server: 4004, 4007, 4009, 4010-4014) invalidates the
//!   session; other closes and TCP drops keep it resumable for `resume_window`.
//! - Before IDENTIFY/RESUME any op but 1 closes 4003; a second IDENTIFY (or RESUME) 4005; a payload
//!   over 4096 bytes or undecodable 4002; an opcode a client may not send 4001; more than 120
//!   frames in 60 s 4008.
//!
//! # Public API
//!
//! - [`MockGateway`]: `start(MockConfig)`, `api_base()`, `ws_url()`, `resume_url()`,
//!   `local_addr()`, `control()`, `recorder()`, `config()`, `shutdown()` (also on drop), `wait()`.
//! - [`MockConfig`] (fields, `Default`, `for_tests(token)`, `demo()`), [`ReplayRate`],
//!   [`ShardRouting`], [`FrameRecording`].
//! - [`Control`]: `reconnect_before_hello(count)` (op 7 in place of HELLO for the next
//!   connections), and -> [`Target`] (`shard(n)` or `connection(id)`): `send_reconnect`,
//!   `send_invalid_session(bool)`, `close(code, reason)`, `drop_acks(bool)`, `request_heartbeat`,
//!   `drop_tcp`, `inject_dispatch(event, d)`, `pause_replay`, `resume_replay`.
//! - [`Recorder`]: `read(|&Recording| ..)`, `snapshot()`, `wait_for(timeout, |&Recording| Option)`,
//!   `wait_until`, `wait_identify(n)`, `wait_resume(n)`, `wait_live(shard)`,
//!   `wait_dispatches(shard, n)`, `wait_closed(id)`, `wait_violation`, `identifies()`,
//!   `resumes()`, `violations()`, `sent_dispatches(shard)`. [`Recording`] holds
//!   [`ConnectionRecord`]s (URL, frames both ways with times, heartbeats, close), identifies,
//!   resumes, HTTP requests and [`Violation`]s.
//! - [`fixtures`]: the recorded sessions and templates compiled in, and [`Fixture`].
//! - [`client`]: a small blocking test client (what the crate's own tests use).
//!
//! Timing: connection threads look at controls and timers at least every `poll_interval`
//! (default 20 ms; 5 ms in [`MockConfig::for_tests`]).

// Modules depend one way, top to bottom: `server` -> `connection` -> `conversation` ->
// `session` -> `frames`; `http` and `control` sit beside `connection`, all over `shared`.

/// The configuration, its option types and the intent bits Discord defines.
mod config;
/// One connection's I/O loop on its own thread (sockets, compression, close handshake).
mod connection;
/// Run-time controls ([`Control`], [`Target`]).
mod control;
/// What Discord answers to what on one connection: a sans-IO type, tested without sockets.
mod conversation;
/// ETF (erlpack) encoding and decoding of gateway payloads.
mod etf;
/// Frame templates (HELLO, READY, op 7/9/11, dispatch frames) and `/gateway/bot` bodies.
mod frames;
/// The HTTP side: reading requests, the WebSocket upgrade and the REST routes.
mod http;
/// Everything the mock saw and did ([`Recorder`], [`Recording`]).
mod recorder;
/// The listening socket, the accept loop, start-up and shutdown ([`MockGateway`]).
mod server;
/// Sessions, the identify limits and the replay of each session's history.
mod session;
/// The state every thread shares (configuration, templates, URLs, sessions, recorder).
mod shared;
/// The WebSocket URL's parameters, decoding client payloads and encoding/compressing ours.
mod wire;

/// A small blocking test client (what the crate's own tests use).
pub mod client;
/// The recorded sessions and templates compiled in.
pub mod fixtures;

pub use config::{
    DEFINED_INTENTS, FrameRecording, MockConfig, PRIVILEGED_INTENTS, ReplayRate, ShardRouting,
};
pub use control::{Control, ControlError, Selector, SessionProgress, Target};
pub use etf::{decode_server_payload as decode_etf, encode_client_payload as encode_etf};
pub use fixtures::{Fixture, FixtureError, FixtureEvent};
pub use frames::SessionStartLimit;
pub use recorder::{
    CloseKind, CloseRecord, ConnectionId, ConnectionRecord, HeartbeatRecord, HttpRecord,
    IdentifyOutcome, IdentifyRecord, ReceivedFrame, Recorder, Recording, ResumeOutcome,
    ResumeRecord, SentFrame, Violation, ViolationKind,
};
pub use server::MockGateway;
pub use shared::RESUME_PATH;
pub use wire::{Compression, DecodeProblem, Encoding, GatewayParams, ParamError};
