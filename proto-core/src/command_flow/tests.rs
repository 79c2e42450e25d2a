//! Simulation tests of the command flow: a broker queue with a prefetch window, the consumer,
//! one lane per shard and shards that rate-limit, stall (reconnecting) or refuse, on a fake
//! clock. Checked: a shard's trouble never delays another shard's commands, every delivery
//! gets exactly one verdict, refusals are never acknowledged as sent, each shard sends its
//! commands in queue order, and the lanes never hold more than the prefetch allows.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::codec::EtfEncodeError;
use crate::tests::{cases, epoch};

/// Simulated time per step.
const TICK: Duration = Duration::from_millis(10);
/// Steps a simulation may take before it counts as a livelock.
const MAX_STEPS: usize = 200_000;
/// Discord's pace once a shard's window is used up: one command per 0.5 s.
const SEND_EVERY: Duration = Duration::from_millis(500);
/// The shards' rate-limit queue capacity (the default `limits.command_queue_capacity`).
const QUEUE: usize = 64;

#[test]
fn shard_answers_become_lane_steps() {
    assert_eq!(lane_step(Some(Ok(()))), LaneStep::Done(ShardAnswer::Queued));
    assert_eq!(
        lane_step(Some(Err(UsageError::QueueFull))),
        LaneStep::Retry(QUEUE_FULL_RETRY)
    );
    assert_eq!(
        lane_step(Some(Err(UsageError::ShuttingDown))),
        LaneStep::Done(ShardAnswer::Stopping)
    );
    assert_eq!(
        lane_step(Some(Err(UsageError::PayloadTooLarge))),
        LaneStep::Done(ShardAnswer::Refused(
            "command is larger than 4096 bytes".into()
        ))
    );
    assert!(matches!(
        lane_step(Some(Err(UsageError::Unencodable(EtfEncodeError::Json(
            "trailing comma".into()
        ))))),
        LaneStep::Done(ShardAnswer::Refused(reason)) if reason.contains("cannot be encoded")
    ));
    assert_eq!(lane_step(None), LaneStep::Done(ShardAnswer::Gone));
}

#[test]
fn refusals_are_dead_lettered_never_acknowledged_as_sent() {
    let too_large = ShardAnswer::Refused("command is larger than 4096 bytes".into());
    assert_eq!(
        verdict(&[(3, too_large.clone())]),
        Verdict::Reject("shard 3 refused the command: command is larger than 4096 bytes".into())
    );
    // A refusal outweighs a shard that is shutting down: requeueing would only come back.
    assert!(matches!(
        verdict(&[(0, ShardAnswer::Stopping), (1, too_large)]),
        Verdict::Reject(_)
    ));
    assert!(matches!(
        verdict(&[(0, ShardAnswer::LaneFull(64))]),
        Verdict::Reject(reason) if reason.contains("64 commands waiting")
    ));
    assert!(matches!(
        verdict(&[(0, ShardAnswer::ReconnectLimited)]),
        Verdict::Reject(reason) if reason.contains("at most one reconnect per 10 s")
    ));
    assert_eq!(verdict(&[(0, ShardAnswer::Stopping)]), Verdict::Requeue);
    assert!(matches!(
        verdict(&[(0, ShardAnswer::Gone), (1, ShardAnswer::Stopping)]),
        Verdict::Requeue
    ));
}

#[test]
fn one_shard_queueing_acknowledges_and_names_the_others() {
    assert_eq!(
        verdict(&[(0, ShardAnswer::Queued), (1, ShardAnswer::LaneFull(64))]),
        Verdict::Ack {
            missed: vec![(
                1,
                "shard 1 has 64 commands waiting for Discord's rate limit already; send fewer, \
                 or spread them over time"
                    .into()
            )]
        }
    );
    assert_eq!(verdict(&[]), Verdict::Ack { missed: vec![] });
}

#[test]
fn lanes_are_bounded_per_shard_and_the_prefetch_covers_them_all() {
    let mut lanes = CommandLanes::new([0, 1], 2);
    assert_eq!(lanes.prefetch(), 2 * 2 + PREFETCH_RESERVE);
    assert_eq!(lanes.admit(0), Ok(()));
    assert_eq!(lanes.admit(0), Ok(()));
    assert_eq!(lanes.admit(0), Err(ShardAnswer::LaneFull(2)));
    assert_eq!(lanes.admit(1), Ok(()), "shard 0's lane is not shard 1's");
    assert_eq!(lanes.admit(7), Err(ShardAnswer::Gone));
    lanes.finish(0);
    assert_eq!(lanes.waiting(0), 1);
    assert_eq!(lanes.admit(0), Ok(()));
    assert_eq!(lanes.total_waiting(), 3);
    let huge = CommandLanes::new(0..1000, 1000);
    assert_eq!(huge.prefetch(), u16::MAX);
}

#[test]
fn reconnects_are_rate_limited_per_shard() {
    let t0 = epoch();
    let mut lanes = CommandLanes::new([0, 1], 4);
    assert_eq!(lanes.allow_reconnect(t0, 0), Ok(()));
    assert_eq!(
        lanes.allow_reconnect(t0 + Duration::from_secs(3), 0),
        Err(ShardAnswer::ReconnectLimited)
    );
    assert_eq!(
        lanes.allow_reconnect(t0 + Duration::from_secs(3), 1),
        Ok(())
    );
    // A refused reconnect does not push the next allowed one further out.
    assert_eq!(lanes.allow_reconnect(t0 + RECONNECT_INTERVAL, 0), Ok(()));
    assert_eq!(lanes.allow_reconnect(t0, 9), Err(ShardAnswer::Gone));
}

// ----- the simulation -----

/// One command in the broker queue.
#[derive(Clone, Debug)]
struct Command {
    id: usize,
    shards: Vec<u32>,
    /// Too large for the shard (it refuses it).
    oversized: bool,
}

/// A simulated shard: a rate-limit queue of [`QUEUE`] commands that sends one every
/// [`SEND_EVERY`], and windows in which it does not answer (reconnecting) or is stopping.
#[derive(Debug, Default)]
struct SimShard {
    queue: VecDeque<usize>,
    next_send: Option<Instant>,
    stalled_until: Option<Instant>,
    stopping: bool,
    /// Commands queued, in order, and when.
    queued: Vec<(usize, Instant)>,
}

impl SimShard {
    fn answers_at(&self, now: Instant) -> bool {
        self.stalled_until.is_none_or(|until| now >= until)
    }

    fn offer(&mut self, now: Instant, command: &Command) -> Result<(), UsageError> {
        if self.stopping {
            return Err(UsageError::ShuttingDown);
        }
        if command.oversized {
            return Err(UsageError::PayloadTooLarge);
        }
        if self.queue.len() >= QUEUE {
            return Err(UsageError::QueueFull);
        }
        self.queue.push_back(command.id);
        self.queued.push((command.id, now));
        Ok(())
    }
}

/// A delivery the consumer holds (unacknowledged).
#[derive(Debug)]
struct Held {
    command: Command,
    answers: Vec<(u32, ShardAnswer)>,
}

struct Sim {
    now: Instant,
    lanes: CommandLanes,
    prefetch: usize,
    queue: VecDeque<Command>,
    held: BTreeMap<usize, Held>,
    shards: BTreeMap<u32, SimShard>,
    /// Per shard: the lane's commands (ids) and when the head may be offered again.
    lane: BTreeMap<u32, (VecDeque<usize>, Instant)>,
    verdicts: BTreeMap<usize, Verdict>,
    requeues: usize,
    /// When each command was published.
    published: Vec<Instant>,
    /// Deliveries to requeue, and when.
    requeueing: Vec<(Instant, Command)>,
}

impl Sim {
    fn new(shards: u32) -> Self {
        let now = epoch();
        let lanes = CommandLanes::new(0..shards, QUEUE);
        Self {
            now,
            prefetch: lanes.prefetch().into(),
            lanes,
            queue: VecDeque::new(),
            held: BTreeMap::new(),
            shards: (0..shards).map(|s| (s, SimShard::default())).collect(),
            lane: (0..shards).map(|s| (s, (VecDeque::new(), now))).collect(),
            verdicts: BTreeMap::new(),
            requeues: 0,
            published: Vec::new(),
            requeueing: Vec::new(),
        }
    }

    fn publish(&mut self, shards: Vec<u32>, oversized: bool) -> usize {
        let id = self.published.len();
        self.published.push(self.now);
        self.queue.push_back(Command {
            id,
            shards,
            oversized,
        });
        id
    }

    fn settle(&mut self, id: usize) {
        let held = self.held.remove(&id).expect("settled once");
        let v = verdict(&held.answers);
        if v == Verdict::Requeue {
            // Held for the requeue delay, then RabbitMQ puts it back where it was: at the head.
            // Unacknowledged (in the prefetch window) until then.
            self.requeues += 1;
            self.requeueing
                .push((self.now + REQUEUE_DELAY, held.command.clone()));
            self.held.insert(
                id,
                Held {
                    command: held.command,
                    answers: Vec::new(),
                },
            );
        } else {
            assert!(
                self.verdicts.insert(id, v).is_none(),
                "a delivery with two verdicts"
            );
        }
    }

    fn answer(&mut self, id: usize, shard: u32, answer: ShardAnswer) {
        let held = self.held.get_mut(&id).expect("held");
        held.answers.push((shard, answer));
        if held.answers.len() == held.command.shards.len() {
            self.settle(id);
        }
    }

    /// The consumer: takes deliveries while the prefetch window allows, never waiting.
    fn consume(&mut self) {
        while self.held.len() < self.prefetch
            && let Some(command) = self.queue.pop_front()
        {
            let id = command.id;
            let shards = command.shards.clone();
            self.held.insert(
                id,
                Held {
                    command,
                    answers: Vec::new(),
                },
            );
            for shard in shards {
                match self.lanes.admit(shard) {
                    Ok(()) => self.lane.get_mut(&shard).expect("lane").0.push_back(id),
                    Err(answer) => self.answer(id, shard, answer),
                }
            }
            // The lanes run alongside the consumer.
            self.drive_lanes();
        }
    }

    /// The lanes: each offers its head to its shard when the shard answers.
    fn drive_lanes(&mut self) {
        let numbers: Vec<u32> = self.lane.keys().copied().collect();
        for shard in numbers {
            loop {
                let (commands, retry_at) = &self.lane[&shard];
                let Some(&id) = commands.front() else { break };
                if self.now < *retry_at || !self.shards[&shard].answers_at(self.now) {
                    break;
                }
                let command = self.held[&id].command.clone();
                let result = self
                    .shards
                    .get_mut(&shard)
                    .expect("shard")
                    .offer(self.now, &command);
                match lane_step(Some(result)) {
                    LaneStep::Retry(pause) => {
                        self.lane.get_mut(&shard).expect("lane").1 = self.now + pause;
                        break;
                    }
                    LaneStep::Done(answer) => {
                        self.lane.get_mut(&shard).expect("lane").0.pop_front();
                        self.lanes.finish(shard);
                        self.answer(id, shard, answer);
                    }
                }
            }
        }
    }

    /// The shards send one queued command per [`SEND_EVERY`] while they answer.
    fn send(&mut self) {
        let now = self.now;
        for shard in self.shards.values_mut() {
            if !shard.answers_at(now) || shard.queue.is_empty() {
                continue;
            }
            match shard.next_send {
                Some(at) if at > now => {}
                _ => {
                    shard.queue.pop_front();
                    shard.next_send = Some(now + SEND_EVERY);
                }
            }
        }
    }

    fn step(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.requeueing)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.requeueing = later;
        for (_, command) in due.into_iter().rev() {
            self.held.remove(&command.id);
            self.queue.push_front(command);
        }
        self.consume();
        self.drive_lanes();
        self.send();
        assert!(
            self.lanes.total_waiting() + usize::from(PREFETCH_RESERVE) <= self.prefetch,
            "the lanes outgrew the prefetch"
        );
        self.now += TICK;
    }

    fn run_for(&mut self, period: Duration) {
        let steps = period.as_millis() / TICK.as_millis();
        assert!(steps < MAX_STEPS as u128, "livelock guard");
        for _ in 0..steps {
            self.step();
        }
    }

    /// Runs until every published command has a verdict.
    fn run_until_settled(&mut self) {
        for _ in 0..MAX_STEPS {
            if self.queue.is_empty() && self.held.is_empty() && self.requeueing.is_empty() {
                return;
            }
            self.step();
        }
        panic!(
            "livelock: {} queued, {} held after {MAX_STEPS} steps",
            self.queue.len(),
            self.held.len()
        );
    }

    fn queued_at(&self, shard: u32, id: usize) -> Option<Instant> {
        self.shards[&shard]
            .queued
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, at)| *at)
    }
}

#[test]
fn a_flood_to_one_shard_and_a_stalled_shard_do_not_hold_up_another_shard() {
    // Three shards: 0 is flooded (as fault-command-flood does), 2 stalls for 30 s (a
    // reconnect), 1 must get each of its commands at once.
    let mut sim = Sim::new(3);
    sim.shards.get_mut(&2).unwrap().stalled_until = Some(sim.now + Duration::from_secs(30));
    for _ in 0..300 {
        sim.publish(vec![0], false);
    }
    for _ in 0..10 {
        sim.publish(vec![2], false);
    }
    let mut probes = Vec::new();
    for _ in 0..5 {
        probes.push(sim.publish(vec![1], false));
        sim.run_for(Duration::from_secs(2));
    }
    for &probe in &probes {
        let queued = sim.queued_at(1, probe).expect("probe queued");
        let waited = queued.saturating_duration_since(sim.published[probe]);
        assert!(waited <= TICK, "shard 1 waited {waited:?}");
    }
    sim.run_until_settled();
    // Shard 0 took what its queue and lane hold; the rest was dead-lettered with the reason.
    let flood: Vec<&Verdict> = (0..300).map(|id| &sim.verdicts[&id]).collect();
    let acked = flood
        .iter()
        .filter(|v| matches!(v, Verdict::Ack { .. }))
        .count();
    assert!(acked >= 2 * QUEUE, "acked {acked}");
    assert!(flood.iter().all(|v| match v {
        Verdict::Ack { missed } => missed.is_empty(),
        Verdict::Reject(reason) => reason.contains("commands waiting"),
        Verdict::Requeue => false,
    }));
    // The stalled shard got its commands once it answered again.
    assert_eq!(sim.shards[&2].queued.len(), 10);
    assert_eq!(sim.requeues, 0);
}

#[test]
fn a_shutting_down_shard_sends_its_commands_back_to_the_queue() {
    let mut sim = Sim::new(2);
    sim.shards.get_mut(&0).unwrap().stopping = true;
    let id = sim.publish(vec![0], false);
    sim.run_for(Duration::from_millis(50));
    assert!(sim.requeues > 0);
    assert!(!sim.verdicts.contains_key(&id));
    // Another process (here: the shard, back) takes it.
    sim.shards.get_mut(&0).unwrap().stopping = false;
    sim.run_until_settled();
    assert_eq!(sim.verdicts[&id], Verdict::Ack { missed: vec![] });
}

/// What a property case publishes, and when.
#[derive(Clone, Debug)]
enum Op {
    /// Commands to these shards (oversized ones are refused by the shard).
    Publish {
        count: u16,
        shard: u32,
        all: bool,
        oversized: bool,
    },
    /// Shard `n` stops answering for this many milliseconds.
    Stall { shard: u32, ms: u32 },
    /// Time passes.
    Run(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            1u16..200,
            0u32..3,
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1)
        )
            .prop_map(|(count, shard, all, oversized)| Op::Publish {
                count,
                shard,
                all,
                oversized
            }),
        (0u32..3, 1u32..40_000).prop_map(|(shard, ms)| Op::Stall { shard, ms }),
        (1u32..20_000).prop_map(Op::Run),
    ]
}

fn check_flow(ops: &[Op]) {
    let mut sim = Sim::new(3);
    // A probe to shard 1 after every op; shard 1 never stalls and gets nothing else.
    let mut probes = Vec::new();
    let mut flood_shards = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Publish {
                count,
                shard,
                all,
                oversized,
            } => {
                let shard = if shard == 1 { 0 } else { shard };
                for _ in 0..count {
                    let shards = if all { vec![0, 2] } else { vec![shard] };
                    let id = sim.publish(shards, oversized);
                    flood_shards.insert(id, oversized);
                }
            }
            Op::Stall { shard, ms } => {
                let shard = if shard == 1 { 2 } else { shard };
                sim.shards.get_mut(&shard).unwrap().stalled_until =
                    Some(sim.now + Duration::from_millis(ms.into()));
            }
            Op::Run(ms) => sim.run_for(Duration::from_millis(ms.into())),
        }
        probes.push(sim.publish(vec![1], false));
        sim.run_for(TICK * 2);
    }
    sim.run_until_settled();
    // Shard 1's commands were never held up by the others' floods and stalls.
    for &probe in &probes {
        let queued = sim
            .queued_at(1, probe)
            .expect("every probe reaches shard 1");
        let waited = queued.saturating_duration_since(sim.published[probe]);
        assert!(waited <= TICK, "shard 1 waited {waited:?}");
        assert_eq!(sim.verdicts[&probe], Verdict::Ack { missed: vec![] });
    }
    // Every command has one verdict; an oversized one is never acknowledged.
    for (&id, &oversized) in &flood_shards {
        match &sim.verdicts[&id] {
            Verdict::Ack { .. } => assert!(!oversized, "a refused command acknowledged"),
            // An oversized command is refused by the shard, or never reaches it (full lane).
            Verdict::Reject(reason) => assert!(
                oversized || !reason.contains("refused"),
                "wrong reason: {reason}"
            ),
            Verdict::Requeue => panic!("a requeue is not final"),
        }
    }
    // Each shard queued its commands in publication order.
    for shard in sim.shards.values() {
        assert!(shard.queued.windows(2).all(|w| w[0].0 < w[1].0));
    }
    assert_eq!(sim.lanes.total_waiting(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(100)))]

    #[test]
    fn commands_flow_around_floods_and_stalls(ops in prop::collection::vec(op(), 1..12)) {
        check_flow(&ops);
    }
}

// ----- pinned shrunk failures -----
