//! The deterministic simulation harness: a shard, a fake gateway, a fake clock and a fake
//! runtime (identify grants, publisher confirms), driven step by step.
//!
//! Owns: time (one real `Instant` as epoch plus `Duration`s) and the runtime's drive loop
//! minus sockets. Does not decide anything the shard decides.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use crate::codec::Compression;
use crate::outbox::{Confirm, Outbox, OutboxConfig, OutboxEvent, Unroutable};
use crate::profile::Router;
use crate::rng::SeededRng;
use crate::secret::Secret;
use crate::session::SessionSnapshot;
use crate::shard::{Action, FrameKind, PublishId, Shard, ShardConfig, ShardEvent, ShardState};
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
    /// The broker's answer to a publication sent on `link` (dropped if the link is gone).
    Answer {
        link: u64,
        id: PublishId,
        confirm: Confirm,
        message_id: String,
    },
    /// A new broker link is up.
    LinkUp,
}

/// A fake broker behind the pure [`Outbox`], as the runtime drives it: publications go
/// through the outbox, and the broker answers each with an ack, a nack, a return or nothing
/// (a lost confirm), by chance, or stalls.
pub(crate) struct SimBroker {
    pub(crate) outbox: Outbox,
    config: OutboxConfig,
    /// The current link, if up.
    pub(crate) link: Option<u64>,
    next_link: u64,
    rng: SeededRng,
    /// Chances in percent, per publication.
    pub(crate) nack_percent: u64,
    pub(crate) return_percent: u64,
    pub(crate) lose_percent: u64,
    /// No answers at all while set.
    pub(crate) stalled: bool,
    /// How long a reconnect takes.
    pub(crate) reconnect_delay: Duration,
    /// Message ids the broker acknowledged and routed to a queue.
    pub(crate) held: BTreeSet<String>,
    /// Message ids the broker returned (unroutable).
    pub(crate) returned: BTreeSet<String>,
}

impl SimBroker {
    pub(crate) fn new(seed: u64, unroutable: Unroutable) -> Self {
        let config = OutboxConfig {
            confirm_timeout: Duration::from_secs(30),
            unroutable,
        };
        Self {
            outbox: Outbox::new(config),
            config,
            link: Some(1),
            next_link: 2,
            rng: SeededRng::new(seed ^ 0xB40CE5),
            nack_percent: 0,
            return_percent: 0,
            lose_percent: 0,
            stalled: false,
            reconnect_delay: Duration::from_secs(2),
            held: BTreeSet::new(),
            returned: BTreeSet::new(),
        }
    }

    /// The outbox's settings.
    pub(crate) fn outbox_config(&self) -> OutboxConfig {
        self.config
    }

    /// The link failed: withdraw it; a new one comes after the reconnect delay.
    fn fail_link(&mut self) -> bool {
        match self.link.take() {
            Some(link) => {
                self.outbox.handle_link_failed(link);
                true
            }
            None => false,
        }
    }

    /// The fate of one publication sent now: its answer and when, or `None` (never answered).
    fn fate(&mut self) -> Option<(Duration, Confirm)> {
        if self.stalled {
            return None;
        }
        let roll = self.rng.below(100);
        let delay = Duration::from_millis(1 + self.rng.below(20));
        if roll < self.lose_percent {
            None
        } else if roll < self.lose_percent + self.nack_percent {
            Some((delay, Confirm::Nack))
        } else if roll < self.lose_percent + self.nack_percent + self.return_percent {
            Some((delay, Confirm::Returned))
        } else {
            Some((delay, Confirm::Ack))
        }
    }
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
    /// Read the socket exactly as the runtimes do: not while
    /// [`Shard::should_pause_reading`] holds (messages wait at the gateway, unread).
    pub(crate) follow_backpressure: bool,
    /// Publish through the pure outbox to this fake broker instead of `confirm_delay`.
    pub(crate) broker: Option<SimBroker>,
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
            follow_backpressure: true,
            broker: None,
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
        if let Some(broker) = &mut self.broker {
            broker.outbox = Outbox::new(broker.config);
        }
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
        loop {
            self.drain_actions();
            if !self.pump_broker() {
                break;
            }
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

    fn drain_actions(&mut self) {
        while let Some(action) = self.shard.poll_action() {
            match &action {
                Action::RequestIdentify => {
                    self.schedule(self.now + self.grant_delay, RuntimeEvent::Grant)
                }
                Action::Publish {
                    id, publication, ..
                } => {
                    if let Some(broker) = &mut self.broker {
                        broker.outbox.push(self.now, *id, publication.clone());
                    } else if let Some(d) = self.confirm_delay {
                        self.schedule(self.now + d, RuntimeEvent::Confirm(*id));
                    }
                }
                _ => {}
            }
            self.gw.accept(self.now, &action);
            self.log.push((self.elapsed(), Logged::Did(action.clone())));
            self.trace.push((self.elapsed(), action));
        }
    }

    /// What the runtime's publisher does: sends what the outbox has on the current link,
    /// schedules the broker's answers, and hands confirms to the shard. Returns whether the
    /// shard got an input (so it may have new actions).
    fn pump_broker(&mut self) -> bool {
        let now = self.now;
        let Some(broker) = &mut self.broker else {
            return false;
        };
        let mut answers = Vec::new();
        if let Some(link) = broker.link {
            for (id, publication) in broker.outbox.take_sendable(now, link, usize::MAX) {
                let message_id = publication
                    .properties
                    .message_id
                    .clone()
                    .unwrap_or_default();
                if let Some((delay, confirm)) = broker.fate() {
                    answers.push((
                        now + delay,
                        RuntimeEvent::Answer {
                            link,
                            id,
                            confirm,
                            message_id,
                        },
                    ));
                }
            }
        }
        let mut confirmed = Vec::new();
        let mut link_failed = false;
        while let Some(event) = broker.outbox.poll_event() {
            match event {
                OutboxEvent::Confirmed { id, .. } => confirmed.push(id),
                OutboxEvent::LinkFailed { .. } => link_failed |= broker.fail_link(),
                OutboxEvent::Nacked { .. } | OutboxEvent::Unroutable { .. } => {}
            }
        }
        let reconnect = broker.reconnect_delay;
        for (at, answer) in answers {
            self.schedule(at, answer);
        }
        if link_failed {
            self.schedule(now + reconnect, RuntimeEvent::LinkUp);
        }
        for id in &confirmed {
            self.log.push((self.elapsed(), Logged::Confirmed));
            self.shard.handle_published(now, *id);
        }
        !confirmed.is_empty()
    }

    /// The broker link drops now (as a cut connection): what was in flight on it is lost.
    pub(crate) fn cut_broker_link(&mut self) {
        let now = self.now;
        if let Some(broker) = &mut self.broker
            && broker.fail_link()
        {
            let at = now + broker.reconnect_delay;
            self.schedule(at, RuntimeEvent::LinkUp);
        }
    }

    /// Hands one text message to the shard now (and logs its envelope).
    pub(crate) fn deliver(&mut self, bytes: &[u8]) {
        self.log_received(bytes);
        let now = self.now;
        self.shard.handle_message(now, bytes, FrameKind::Text);
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

    /// Whether the runtime reads the socket now. The socket opening and closing are seen
    /// without reading (the runtime waits for the close after its own close frame).
    fn reads_gateway(&self) -> bool {
        !self.follow_backpressure
            || !self.shard.should_pause_reading()
            || self.gw.next_is_socket_event()
    }

    fn next_event(&self) -> Option<Instant> {
        [
            self.shard.poll_timeout(),
            self.gw.next_delivery().filter(|_| self.reads_gateway()),
            self.runtime.front().map(|(t, _)| *t),
            self.broker.as_ref().and_then(|b| b.outbox.poll_timeout()),
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
        let delivery = if self.reads_gateway() {
            self.gw.pop_due(now)
        } else {
            None
        };
        if let Some(delivery) = delivery {
            match delivery {
                Delivery::Connected => {
                    self.log.push((self.elapsed(), Logged::Connected));
                    self.shard.handle_connected(now);
                }
                Delivery::Message(bytes) => self.deliver(&bytes),
                Delivery::Binary { plain, wire } => {
                    self.log_received(&plain);
                    self.shard.handle_message(now, &wire, FrameKind::Binary);
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
                RuntimeEvent::Answer {
                    link,
                    id,
                    confirm,
                    message_id,
                } => {
                    if let Some(broker) = &mut self.broker
                        && broker.link == Some(link)
                    {
                        match confirm {
                            Confirm::Ack => broker.held.insert(message_id),
                            Confirm::Returned => broker.returned.insert(message_id),
                            Confirm::Nack => false,
                        };
                        broker.outbox.handle_confirm(now, link, id, confirm);
                    }
                }
                RuntimeEvent::LinkUp => {
                    if let Some(broker) = &mut self.broker {
                        broker.link = Some(broker.next_link);
                        broker.next_link += 1;
                    }
                }
            }
        } else if let Some(broker) = self
            .broker
            .as_mut()
            .filter(|b| b.outbox.poll_timeout().is_some_and(|t| t <= now))
        {
            broker.outbox.handle_timeout(now);
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

    /// The sequences of the dispatches published since a mark, in order.
    pub(crate) fn published_since<B: FromIterator<u64>>(&self, mark: usize) -> B {
        self.since(mark)
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Publish { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }
}
