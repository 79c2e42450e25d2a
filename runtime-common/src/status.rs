//! The process's live status: what the status page, `/status.json` and `/readyz` show.
//!
//! Owns: one [`ShardCell`] per shard this process runs (state, gateway latency, last
//! sequence, events published; written by the shard's task through its metrics handle, read
//! by the HTTP endpoints), the broker's and Redis' link state, the recent state changes, the
//! readiness rule ([`Registry::readiness`]) and the events-per-second sampling
//! ([`Registry::snapshot`]). Does not own: serving any of it (`http`), deciding anything about
//! Discord or the broker, or the cluster-wide view in Redis (`session_store`, `cli`).
//!
//! The hot path (a shard after each burst of messages) only stores atomics; the mutex is taken
//! on state changes (rare) and by readers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_config::SecretUrl;
use proto_core::shard::{DisconnectReason, ShardState};
use serde::Serialize;

/// How many state changes the page lists.
pub const RECENT_CHANGES: usize = 50;
/// The shortest window an events-per-second figure is computed over.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A stored `u64` meaning "none".
const NONE: u64 = u64::MAX;

/// One shard's live figures, shared between its task (writer) and the endpoints (readers).
#[derive(Debug)]
pub struct ShardCell {
    number: u32,
    latency_us: AtomicU64,
    sequence: AtomicU64,
    published: AtomicU64,
}

impl ShardCell {
    /// Stores the latest heartbeat round trip (`None` before the first ACK).
    pub fn set_latency(&self, latency: Option<Duration>) {
        let micros = latency.map_or(NONE, |l| l.as_micros().min(u128::from(NONE - 1)) as u64);
        self.latency_us.store(micros, Ordering::Relaxed);
    }

    /// Stores the last sequence received.
    pub fn set_sequence(&self, sequence: Option<u64>) {
        self.sequence
            .store(sequence.unwrap_or(NONE), Ordering::Relaxed);
    }

    /// Counts one event the broker confirmed.
    pub fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    fn load(value: &AtomicU64) -> Option<u64> {
        Some(value.load(Ordering::Relaxed)).filter(|&v| v != NONE)
    }
}

/// One state change, as the page lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateChange {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The shard.
    pub shard: u32,
    /// The new state's name (`proto_core::store::state_name`).
    pub state: String,
    /// Why, in words.
    pub reason: String,
}

/// One shard's row on the page.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShardRow {
    /// The shard number.
    pub shard: u32,
    /// The state's name.
    pub state: String,
    /// Since when (milliseconds since the Unix epoch).
    pub since_ms: u64,
    /// The latest heartbeat round trip, in milliseconds.
    pub latency_ms: Option<f64>,
    /// The last sequence received.
    pub sequence: Option<u64>,
    /// Events the broker confirmed.
    pub published: u64,
    /// Confirmed events per second over the last sampling window.
    pub events_per_second: f64,
}

/// Everything the page shows, at one instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// Gatehouse's version.
    pub version: &'static str,
    /// The shards of this process, by number.
    pub shards: Vec<ShardRow>,
    /// Whether the AMQP connection is up (and its topology declared).
    pub broker_connected: bool,
    /// The AMQP address connected to now (the first configured one while none is), credentials
    /// redacted.
    pub broker_url: String,
    /// Every configured AMQP address, in the configured order, credentials redacted.
    pub broker_urls: Vec<String>,
    /// Which of [`Snapshot::broker_urls`] is connected now (its index), if any.
    pub broker_address: Option<usize>,
    /// RabbitMQ's management UI of [`Snapshot::broker_url`] (same host, port 15672), for a
    /// link.
    pub broker_management_url: Option<String>,
    /// The Redis URL, credentials redacted.
    pub redis_url: String,
    /// The latest failed Redis write, if the latest write failed.
    pub redis_error: Option<String>,
    /// `None` when ready, otherwise why not (what `/readyz` answers).
    pub not_ready: Option<String>,
    /// The latest state changes, newest first.
    pub changes: Vec<StateChange>,
}

/// Why the process is not ready: the reasons in words, joined by `; ` (what `/readyz` answers).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

#[derive(Debug)]
struct ShardEntry {
    cell: Arc<ShardCell>,
    state: String,
    since_ms: u64,
    /// When the current rate window started, and the count then.
    sample: (Instant, u64),
    rate: f64,
}

#[derive(Debug, Default)]
struct Inner {
    shards: BTreeMap<u32, ShardEntry>,
    changes: VecDeque<StateChange>,
    /// Redacted.
    broker_urls: Vec<String>,
    broker_address: Option<usize>,
    /// Redacted.
    redis_url: String,
    redis_error: Option<String>,
}

/// The live status of the process (one per process: [`global`]; tests make their own).
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    broker_connected: AtomicBool,
    broker: tokio::sync::watch::Sender<bool>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            broker_connected: AtomicBool::new(false),
            broker: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// The process's registry, which the shard tasks, the broker supervisor and the HTTP endpoints
/// share.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

/// Milliseconds since the Unix epoch of `at`.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a shard entered `state` from `previous`, in words (for the log line and the page).
pub fn change_reason(
    state: ShardState,
    previous: Option<ShardState>,
    last_disconnect: Option<&DisconnectReason>,
) -> String {
    match state {
        ShardState::Connecting => match last_disconnect {
            None => "starting".into(),
            Some(reason) => format!("reconnecting after: {}", disconnect_text(reason)),
        },
        ShardState::Identifying => "connected; identifying (no session to resume)".into(),
        ShardState::Resuming => "connected; resuming the session".into(),
        ShardState::Active => match previous {
            Some(ShardState::Resuming) => "RESUMED: the session continues".into(),
            Some(ShardState::Identifying) => "READY: a new session".into(),
            _ => "READY or RESUMED received".into(),
        },
        ShardState::Disconnected { attempts } => match last_disconnect {
            Some(reason) => format!("{} (attempt {attempts})", disconnect_text(reason)),
            None => format!("disconnected (attempt {attempts})"),
        },
        ShardState::FatallyClosed => match last_disconnect {
            Some(reason) => format!("stopped for good: {}", disconnect_text(reason)),
            None => "stopped for good".into(),
        },
    }
}

/// A disconnect reason in words.
pub fn disconnect_text(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::Closed { code: Some(code) } => format!("closed with code {code}"),
        DisconnectReason::Closed { code: None } => "the connection dropped".into(),
        DisconnectReason::ConnectFailed => "cannot connect".into(),
        DisconnectReason::Zombie => "no heartbeat ACK (zombie connection)".into(),
        DisconnectReason::ReconnectRequested => "Discord asked to reconnect (op 7)".into(),
        DisconnectReason::InvalidSession { resumable } => {
            format!("invalid session (op 9, resumable: {resumable})")
        }
        DisconnectReason::DecodeError(e) => format!("undecodable message: {e}"),
        DisconnectReason::HelloTimeout => "HELLO did not arrive in time".into(),
        DisconnectReason::Requested => "reconnect requested by a worker".into(),
    }
}

/// A short label for a disconnect reason, for metrics (bounded set of values).
pub fn disconnect_label(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::Closed { code: Some(code) } => format!("close_{code}"),
        DisconnectReason::Closed { code: None } => "dropped".into(),
        DisconnectReason::ConnectFailed => "connect_failed".into(),
        DisconnectReason::Zombie => "zombie".into(),
        DisconnectReason::ReconnectRequested => "reconnect_requested".into(),
        DisconnectReason::InvalidSession { .. } => "invalid_session".into(),
        DisconnectReason::DecodeError(_) => "decode_error".into(),
        DisconnectReason::HelloTimeout => "hello_timeout".into(),
        DisconnectReason::Requested => "requested".into(),
    }
}

/// RabbitMQ's management UI for an AMQP URL: the same host, port 15672 (plain) or 15671
/// (`amqps`). `None` if the URL has no host.
pub fn management_url(amqp_url: &str) -> Option<String> {
    let (scheme, rest) = amqp_url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => host_port.split(':').next()?.to_owned(),
    };
    if host.is_empty() {
        return None;
    }
    let (web, port) = if scheme == "amqps" {
        ("https", 15671)
    } else {
        ("http", 15672)
    };
    Some(format!("{web}://{host}:{port}/"))
}

impl Registry {
    /// Registers shard `number` at `now` (again: a restarted task keeps its counters) and
    /// returns its cell.
    pub fn shard(&self, number: u32, now: Instant) -> Arc<ShardCell> {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner
            .shards
            .entry(number)
            .or_insert_with(|| ShardEntry {
                cell: Arc::new(ShardCell {
                    number,
                    latency_us: AtomicU64::new(NONE),
                    sequence: AtomicU64::new(NONE),
                    published: AtomicU64::new(0),
                }),
                state: "starting".into(),
                since_ms: 0,
                sample: (now, 0),
                rate: 0.0,
            })
            .cell
            .clone()
    }

    /// Records that `cell`'s shard entered `state` (a name) at `at`, because of `reason`.
    pub fn state_changed(&self, cell: &ShardCell, state: &str, reason: String, at: SystemTime) {
        let at_ms = epoch_ms(at);
        let mut inner = self.inner.lock().expect("not poisoned");
        if let Some(entry) = inner.shards.get_mut(&cell.number) {
            entry.state = state.to_owned();
            entry.since_ms = at_ms;
        }
        if inner.changes.len() >= RECENT_CHANGES {
            inner.changes.pop_back();
        }
        inner.changes.push_front(StateChange {
            at_ms,
            shard: cell.number,
            state: state.to_owned(),
            reason,
        });
    }

    /// Records which AMQP address (its index in the configured list) the connection is up to,
    /// with its topology declared; `None`: no connection is up.
    pub fn set_broker_connected(&self, address: Option<usize>) {
        self.inner.lock().expect("not poisoned").broker_address = address;
        self.broker_connected
            .store(address.is_some(), Ordering::Relaxed);
        self.broker.send_replace(address.is_some());
    }

    /// Completes once the AMQP connection is up and its topology declared.
    pub async fn broker_connected(&self) {
        let _ = self.broker.subscribe().wait_for(|up| *up).await;
    }

    /// Records the outcome of a Redis write (`Err` with the error's text).
    pub fn redis_write<E: std::fmt::Display>(&self, result: Result<(), E>) {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.redis_error = result.err().map(|e| e.to_string());
    }

    /// Records every configured broker address and the Redis URL (kept redacted only).
    pub fn set_links(&self, broker_urls: &[SecretUrl], redis_url: &SecretUrl) {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.broker_urls = broker_urls.iter().map(SecretUrl::redacted).collect();
        inner.redis_url = redis_url.redacted();
    }

    /// `Ok` when every shard of this process is active and the broker connected; otherwise
    /// why not, in words.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let inner = self.inner.lock().expect("not poisoned");
        self.readiness_of(&inner)
    }

    fn readiness_of(&self, inner: &Inner) -> Result<(), NotReady> {
        let mut reasons = Vec::new();
        if inner.shards.is_empty() {
            reasons.push("no shard has started yet".to_owned());
        }
        for (number, entry) in &inner.shards {
            if entry.state != "active" {
                reasons.push(format!("shard {number} is {}", entry.state));
            }
        }
        if !self.broker_connected.load(Ordering::Relaxed) {
            reasons.push("not connected to RabbitMQ".to_owned());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(NotReady(reasons.join("; ")))
        }
    }

    /// Everything the page shows, at `now`. Events per second are computed over the time
    /// since the previous sample, once that is at least a second old (so frequent readers do
    /// not make the figure noisy).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut inner = self.inner.lock().expect("not poisoned");
        let not_ready = self.readiness_of(&inner).err().map(|e| e.0);
        let shards = inner
            .shards
            .values_mut()
            .map(|entry| {
                let published = entry.cell.published.load(Ordering::Relaxed);
                let (at, count) = entry.sample;
                let elapsed = now.saturating_duration_since(at);
                if elapsed >= RATE_WINDOW {
                    entry.rate = published.saturating_sub(count) as f64 / elapsed.as_secs_f64();
                    entry.sample = (now, published);
                }
                ShardRow {
                    shard: entry.cell.number,
                    state: entry.state.clone(),
                    since_ms: entry.since_ms,
                    latency_ms: ShardCell::load(&entry.cell.latency_us)
                        .map(|us| us as f64 / 1000.0),
                    sequence: ShardCell::load(&entry.cell.sequence),
                    published,
                    events_per_second: entry.rate,
                }
            })
            .collect();
        let broker_url = inner
            .broker_urls
            .get(inner.broker_address.unwrap_or(0))
            .cloned()
            .unwrap_or_default();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            shards,
            broker_connected: self.broker_connected.load(Ordering::Relaxed),
            broker_management_url: management_url(&broker_url),
            broker_url,
            broker_urls: inner.broker_urls.clone(),
            broker_address: inner.broker_address,
            redis_url: inner.redis_url.clone(),
            redis_error: inner.redis_error.clone(),
            not_ready,
            changes: inner.changes.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_every_shard_active_and_the_broker_connected() {
        let registry = Registry::default();
        assert_eq!(
            registry.readiness(),
            Err(NotReady(
                "no shard has started yet; not connected to RabbitMQ".into()
            ))
        );
        let zero = registry.shard(0, Instant::now());
        let one = registry.shard(1, Instant::now());
        let at = UNIX_EPOCH + Duration::from_secs(100);
        registry.state_changed(&zero, "active", "READY".into(), at);
        registry.set_broker_connected(Some(0));
        assert_eq!(
            registry.readiness(),
            Err(NotReady("shard 1 is starting".into()))
        );
        registry.state_changed(&one, "active", "READY".into(), at);
        assert_eq!(registry.readiness(), Ok(()));
        registry.state_changed(&one, "disconnected", "zombie".into(), at);
        registry.set_broker_connected(None);
        assert_eq!(
            registry.readiness(),
            Err(NotReady(
                "shard 1 is disconnected; not connected to RabbitMQ".into()
            ))
        );
    }

    #[test]
    fn snapshots_carry_the_figures_and_the_newest_change_first() {
        let registry = Registry::default();
        let cell = registry.shard(3, Instant::now());
        cell.set_latency(Some(Duration::from_micros(41_500)));
        cell.set_sequence(Some(17));
        let at = UNIX_EPOCH + Duration::from_millis(5_000);
        registry.state_changed(&cell, "identifying", "connected".into(), at);
        registry.state_changed(&cell, "active", "READY".into(), at + Duration::from_secs(1));
        let snapshot = registry.snapshot(Instant::now());
        let row = &snapshot.shards[0];
        assert_eq!((row.shard, row.state.as_str()), (3, "active"));
        assert_eq!(row.latency_ms, Some(41.5));
        assert_eq!(row.sequence, Some(17));
        assert_eq!(row.since_ms, 6_000);
        assert_eq!(snapshot.changes[0].state, "active");
        assert_eq!(snapshot.changes[1].state, "identifying");
        cell.set_latency(None);
        cell.set_sequence(None);
        let row = &registry.snapshot(Instant::now()).shards[0];
        assert_eq!((row.latency_ms, row.sequence), (None, None));
    }

    #[test]
    fn keeps_only_the_recent_changes() {
        let registry = Registry::default();
        let cell = registry.shard(0, Instant::now());
        for i in 0..(RECENT_CHANGES + 10) {
            registry.state_changed(&cell, "connecting", format!("{i}"), UNIX_EPOCH);
        }
        let changes = registry.snapshot(Instant::now()).changes;
        assert_eq!(changes.len(), RECENT_CHANGES);
        assert_eq!(changes[0].reason, format!("{}", RECENT_CHANGES + 9));
    }

    #[test]
    fn events_per_second_over_at_least_a_second() {
        let registry = Registry::default();
        let start = Instant::now();
        let cell = registry.shard(0, start);
        for _ in 0..30 {
            cell.published();
        }
        // Too soon: the previous figure stays.
        let soon = registry.snapshot(start + Duration::from_millis(300));
        assert_eq!(soon.shards[0].events_per_second, 0.0);
        let later = registry.snapshot(start + Duration::from_secs(2));
        assert_eq!(later.shards[0].events_per_second, 15.0);
        assert_eq!(later.shards[0].published, 30);
    }

    #[test]
    fn reasons_in_words() {
        assert_eq!(
            change_reason(ShardState::Connecting, None, None),
            "starting"
        );
        assert_eq!(
            change_reason(ShardState::Active, Some(ShardState::Resuming), None),
            "RESUMED: the session continues"
        );
        assert_eq!(
            change_reason(ShardState::Active, Some(ShardState::Identifying), None),
            "READY: a new session"
        );
        assert_eq!(
            change_reason(
                ShardState::Disconnected { attempts: 2 },
                None,
                Some(&DisconnectReason::Closed { code: Some(4000) })
            ),
            "closed with code 4000 (attempt 2)"
        );
        assert_eq!(
            disconnect_label(&DisconnectReason::InvalidSession { resumable: false }),
            "invalid_session"
        );
    }

    #[test]
    fn every_broker_address_is_shown_redacted_with_the_connected_one() {
        let registry = Registry::default();
        let urls = [
            SecretUrl::new("amqp://u:pa55-a@rabbit-a:5672/%2f"),
            SecretUrl::new("amqps://u:pa55-b@rabbit-b/%2f?auth=t0ken"),
        ];
        registry.set_links(&urls, &SecretUrl::new("redis://:pa55-r@cache:6379/"));
        let shown = |registry: &Registry| {
            let snapshot = registry.snapshot(Instant::now());
            let json = serde_json::to_string(&snapshot).unwrap();
            for secret in ["pa55", "t0ken"] {
                assert!(!json.contains(secret), "{json}");
            }
            snapshot
        };
        let before = shown(&registry);
        assert_eq!(
            before.broker_urls,
            [
                "amqp://u:***@rabbit-a:5672/%2f",
                "amqps://u:***@rabbit-b/%2f?auth=***"
            ]
        );
        assert_eq!(before.broker_address, None);
        assert_eq!(before.broker_url, before.broker_urls[0]);
        registry.set_broker_connected(Some(1));
        let connected = shown(&registry);
        assert_eq!(connected.broker_address, Some(1));
        assert!(connected.broker_connected);
        assert_eq!(connected.broker_url, connected.broker_urls[1]);
        assert_eq!(
            connected.broker_management_url.as_deref(),
            Some("https://rabbit-b:15671/")
        );
        registry.set_broker_connected(None);
        assert_eq!(shown(&registry).broker_address, None);
    }

    #[test]
    fn management_links_point_at_the_brokers_host() {
        assert_eq!(
            management_url("amqp://guest:<redacted>@127.0.0.1:5672/%2f").as_deref(),
            Some("http://127.0.0.1:15672/")
        );
        assert_eq!(
            management_url("amqps://rabbit.example").as_deref(),
            Some("https://rabbit.example:15671/")
        );
        assert_eq!(
            management_url("amqp://[::1]:5672/").as_deref(),
            Some("http://[::1]:15672/")
        );
        assert_eq!(management_url("not a url"), None);
    }
}
