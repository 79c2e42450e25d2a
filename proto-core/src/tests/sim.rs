//! The deterministic simulation harness: a shard, a fake gateway, a fake clock and a fake
//! runtime (identify grants, publisher confirms), driven step by step.
//!
//! Owns: time (one real `Instant` as epoch plus `Duration`s) and the runtime's drive loop
//! minus sockets. Does not decide anything the shard decides.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::codec::Compression;
use crate::profile::Router;
use crate::secret::Secret;
use crate::session::SessionSnapshot;
use crate::shard::{Action, PublishId, Shard, ShardConfig, ShardEvent, ShardState};
use crate::sharding::ShardId;

use super::fake_gateway::{Delivery, FakeGateway, GATEWAY_URL};

/// A shard's config for tests: shard 0 of 1, plain JSON text frames, the given seed.
pub(crate) fn test_config(seed: u64) -> ShardConfig {
    let shard = ShardId::new(0, 1).expect("valid shard");
    let mut config = ShardConfig::new(
        shard,
        Secret::new("test-token"),
        GATEWAY_URL,
        Router::native(),
    );
    config.compression = Compression::None;
    config.seed = seed;
    config
}

/// One entry of the simulation's full log: inputs to the shard and its actions, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Logged {
    /// `handle_connected`.
    Connected,
    /// `handle_message` with a payload of this opcode and sequence (`op` 255: undecodable);
    /// `flag` is `d` when it is a bool (op 9).
    Received {
        op: u8,
        s: Option<u64>,
        flag: Option<bool>,
    },
    /// `handle_closed`.
    Closed(Option<u16>),
    /// `handle_timeout`.
    Timeout,
    /// `handle_identify_granted`, and whether the shard used the grant.
    Granted { used: bool },
    /// `handle_published`.
    Confirmed,
    /// An action of the shard.
    Did(Action),
    /// The process restarted; the new shard resumes from this sequence (if it has a session).
    Restarted { seq: Option<u64> },
}

/// Something the fake runtime will do at a time.
#[derive(Clone, Debug)]
enum RuntimeEvent {
    Grant,
    Confirm(PublishId),
}

pub(crate) struct Sim {
    pub(crate) epoch: Instant,
    pub(crate) now: Instant,
    pub(crate) shard: Shard,
    pub(crate) gw: FakeGateway,
    /// Every action, with the time since the epoch.
    pub(crate) trace: Vec<(Duration, Action)>,
    /// Inputs and actions, in order, with the time since the epoch.
    pub(crate) log: Vec<(Duration, Logged)>,
    /// Every event (`poll_event`), with the time since the epoch.
    pub(crate) events: Vec<(Duration, ShardEvent)>,
    /// How long the identify scheduler takes to grant.
    pub(crate) grant_delay: Duration,
    /// Confirm publications automatically after this delay (`None`: never).
    pub(crate) confirm_delay: Option<Duration>,
    runtime: VecDeque<(Instant, RuntimeEvent)>,
}

#[allow(dead_code)] // helpers used by some scenarios only
impl Sim {
    pub(crate) fn new(seed: u64) -> Self {
        Self::with_config(test_config(seed), seed)
    }

    pub(crate) fn with_config(config: ShardConfig, seed: u64) -> Self {
        let epoch = super::epoch();
        let shard = Shard::new(config, epoch);
        // The shard's first actions (Connect) are drained by the first step, so a test can
        // still configure the gateway.
        Self {
            epoch,
            now: epoch,
            shard,
            gw: FakeGateway::new(seed),
            trace: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            grant_delay: Duration::from_millis(10),
            confirm_delay: Some(Duration::from_millis(5)),
            runtime: VecDeque::new(),
        }
    }

    /// Simulates a process restart: the old shard dies without closing (its socket drops),
    /// and a new shard starts from `snapshot` against the same gateway.
    pub(crate) fn restart_process(&mut self, snapshot: Option<SessionSnapshot>) {
        self.gw.drop_connection();
        self.runtime.clear();
        let mut config = self.shard.config().clone();
        self.log.push((
            self.elapsed(),
            Logged::Restarted {
                seq: snapshot.as_ref().map(|s| s.sequence),
            },
        ));
        config.session = snapshot;
        self.shard = Shard::new(config, self.now);
    }

    /// A shard restored from a snapshot.
    pub(crate) fn restored(seed: u64, snapshot: SessionSnapshot) -> Self {
        let mut config = test_config(seed);
        config.session = Some(snapshot);
        Self::with_config(config, seed)
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    fn schedule(&mut self, at: Instant, ev: RuntimeEvent) {
        let pos = self.runtime.partition_point(|(t, _)| *t <= at);
        self.runtime.insert(pos, (at, ev));
    }

    /// The runtime's loop minus sockets: hands every action to the gateway or fake runtime,
    /// then collects the events, in the documented order.
    pub(crate) fn drain(&mut self) {
        while let Some(action) = self.shard.poll_action() {
            match &action {
                Action::RequestIdentify => {
                    self.schedule(self.now + self.grant_delay, RuntimeEvent::Grant)
                }
                Action::Publish { id, .. } => {
                    if let Some(d) = self.confirm_delay {
                        self.schedule(self.now + d, RuntimeEvent::Confirm(*id));
                    }
                }
                _ => {}
            }
            self.gw.accept(self.now, &action);
            self.log.push((self.elapsed(), Logged::Did(action.clone())));
            self.trace.push((self.elapsed(), action));
        }
        while let Some(event) = self.shard.poll_event() {
            self.events.push((self.elapsed(), event));
        }
        if let Some(t) = self.shard.poll_timeout() {
            assert!(
                t >= self.now,
                "poll_timeout {t:?} before now {:?}",
                self.now
            );
        }
    }

    /// Hands one text message to the shard now (and logs its envelope).
    pub(crate) fn deliver(&mut self, bytes: &[u8]) {
        self.log_received(bytes);
        let now = self.now;
        self.shard.handle_message(now, bytes, false);
    }

    fn log_received(&mut self, bytes: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Envelope {
            op: u8,
            #[serde(default)]
            s: Option<u64>,
            #[serde(default)]
            d: serde_json::Value,
        }
        let logged = match serde_json::from_slice::<Envelope>(bytes) {
            Ok(e) => Logged::Received {
                op: e.op,
                s: e.s,
                flag: e.d.as_bool(),
            },
            Err(_) => Logged::Received {
                op: 255,
                s: None,
                flag: None,
            },
        };
        self.log.push((self.elapsed(), logged));
    }

    fn next_event(&self) -> Option<Instant> {
        [
            self.shard.poll_timeout(),
            self.gw.next_delivery(),
            self.runtime.front().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One step: the earliest of shard timer, gateway delivery, runtime event. Returns false
    /// when nothing is scheduled, or the next event is after `limit`.
    pub(crate) fn step_until(&mut self, limit: Instant) -> bool {
        self.drain();
        let Some(t) = self.next_event() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        let now = self.now;
        if let Some(delivery) = self.gw.pop_due(now) {
            match delivery {
                Delivery::Connected => {
                    self.log.push((self.elapsed(), Logged::Connected));
                    self.shard.handle_connected(now);
                }
                Delivery::Message(bytes) => self.deliver(&bytes),
                Delivery::Binary { plain, wire } => {
                    self.log_received(&plain);
                    self.shard.handle_message(now, &wire, true);
                }
                Delivery::Closed(code) => {
                    self.log.push((self.elapsed(), Logged::Closed(code)));
                    self.shard.handle_closed(now, code);
                }
            }
        } else if self.runtime.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, ev)) = self.runtime.pop_front() else {
                return false;
            };
            match ev {
                RuntimeEvent::Grant => {
                    let used = self.shard.handle_identify_granted(now);
                    self.log.push((self.elapsed(), Logged::Granted { used }));
                }
                RuntimeEvent::Confirm(id) => {
                    self.log.push((self.elapsed(), Logged::Confirmed));
                    self.shard.handle_published(now, id);
                }
            }
        } else {
            self.log.push((self.elapsed(), Logged::Timeout));
            self.shard.handle_timeout(now);
        }
        self.drain();
        true
    }

    /// Runs everything due within `d`, then sets the clock to `now + d`. Bounded: panics on
    /// a livelock instead of hanging.
    pub(crate) fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut steps = 0;
        while self.step_until(target) {
            steps += 1;
            assert!(steps < 1_000_000, "livelock: {steps} steps within {d:?}");
        }
        self.now = target;
    }

    /// Steps until `pred` holds (true) or `max` of simulated time passed (false).
    pub(crate) fn run_until(&mut self, max: Duration, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let limit = self.now + max;
        let mut steps = 0;
        while !pred(self) {
            if !self.step_until(limit) {
                self.now = self.now.max(limit);
                return pred(self);
            }
            steps += 1;
            assert!(steps < 1_000_000, "livelock");
        }
        true
    }

    /// Runs until the shard is active (panics if it does not get there within a minute),
    /// then lets what follows READY (GUILD_CREATEs, confirms) settle for a second.
    pub(crate) fn until_active(&mut self) {
        let ok = self.run_until(Duration::from_secs(60), |s| {
            s.shard.state() == ShardState::Active
        });
        assert!(
            ok,
            "not active: {:?}, trace {:#?}",
            self.shard.state(),
            self.trace
        );
        self.advance(Duration::from_secs(1));
    }

    /// Runs until the shard reconnected after `mark` and is active again, then settles.
    pub(crate) fn until_active_since(&mut self, mark: usize) {
        let ok = self.run_until(Duration::from_secs(300), |s| {
            s.shard.state() == ShardState::Active
                && s.since(mark)
                    .iter()
                    .any(|(_, a)| matches!(a, Action::Connect { .. }))
        });
        assert!(
            ok,
            "not active again: {:?} {:#?}",
            self.shard.state(),
            self.since(mark)
        );
        self.advance(Duration::from_secs(1));
    }

    /// Events matching, with their times.
    pub(crate) fn events_matching(
        &self,
        pred: impl Fn(&ShardEvent) -> bool,
    ) -> Vec<(Duration, ShardEvent)> {
        self.events
            .iter()
            .filter(|(_, e)| pred(e))
            .cloned()
            .collect()
    }

    /// Whether any action so far matches.
    pub(crate) fn saw(&self, pred: impl Fn(&Action) -> bool) -> bool {
        self.trace.iter().any(|(_, a)| pred(a))
    }

    /// Actions matching, with their times.
    pub(crate) fn actions(&self, pred: impl Fn(&Action) -> bool) -> Vec<(Duration, Action)> {
        self.trace
            .iter()
            .filter(|(_, a)| pred(a))
            .cloned()
            .collect()
    }

    /// Index of the trace now, to look only at later actions.
    pub(crate) fn mark(&self) -> usize {
        self.trace.len()
    }

    /// Actions since a mark.
    pub(crate) fn since(&self, mark: usize) -> &[(Duration, Action)] {
        &self.trace[mark..]
    }
}
