//! The shard's operation sequences and invariants: what `shard_keeps_its_invariants` (the
//! property test) and the `shard` fuzz target (feature `fuzzing`) drive the simulated shard
//! with, and what they check after every case.
//!
//! Owns: the operations ([`Op`]), applying one to a [`Sim`], and the invariants over a whole log
//! ([`run`] does both). The proptest strategies stay with the property tests; the fuzz input
//! ([`Case`]) is read with `arbitrary`, over the same ranges.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::shard::{Action, UsageError};

use super::sim::{Logged, Sim};

/// Close codes the gateway may send that the shard resumes or reconnects after.
pub(crate) const CLOSE_CODES: [u16; 13] = [
    1000, 1001, 1006, 4000, 4001, 4002, 4003, 4005, 4007, 4008, 4009, 4200, 4999,
];
/// Close codes that stop the shard.
pub(crate) const FATAL_CLOSE_CODES: [u16; 6] = [4004, 4010, 4011, 4012, 4013, 4014];
/// Heartbeat intervals the cases use, in milliseconds.
pub(crate) const INTERVALS_MS: [u64; 4] = [1_000, 5_000, 41_250, 45_000];

/// One step of a property-test or fuzz case: what the gateway, the worker, the runtime or time
/// does next.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Let this many milliseconds pass.
    Run(u32),
    ServerClose(Option<u16>),
    Reconnect,
    InvalidSession(bool),
    RequestHeartbeat,
    Dispatch(u8),
    Commands {
        count: u8,
        size: u16,
    },
    DropAcks(bool),
    FailConnects(u8),
    WorkerReconnect,
    Shutdown,
    Garbage(Vec<u8>),
    ExpireSessions,
    RejectResumes(bool),
    AutoConfirm(bool),
    ProcessRestart,
    /// Cluster mode's re-shard: stop (warm) or start publishing (replaying what was kept).
    Publishing(bool),
}

fn command(size: u16) -> Bytes {
    let pad = "x".repeat(usize::from(size).saturating_sub(40));
    Bytes::from(format!(
        r#"{{"op":3,"d":{{"status":"online","pad":"{pad}"}}}}"#
    ))
}

fn apply(sim: &mut Sim, op: &Op) {
    let now = sim.now;
    match op {
        Op::Run(ms) => sim.advance(Duration::from_millis(u64::from(*ms))),
        Op::ServerClose(code) => sim.gw.close(now, *code),
        Op::Reconnect => sim.gw.send_op(now, 7, Value::Null),
        Op::InvalidSession(b) => sim.gw.send_op(now, 9, Value::Bool(*b)),
        Op::RequestHeartbeat => sim.gw.send_op(now, 1, Value::Null),
        Op::Dispatch(n) => {
            for _ in 0..*n {
                sim.gw
                    .dispatch(now, "MESSAGE_CREATE", serde_json::json!({"content": "hi"}));
            }
        }
        Op::Commands { count, size } => {
            for _ in 0..*count {
                let packet = command(*size);
                // The limit applies to the bytes sent: the ETF form on an ETF connection.
                let len = if sim.shard.config().sends_binary() {
                    crate::codec::json_to_etf(&packet).expect("encodes").len()
                } else {
                    packet.len()
                };
                let queued = sim.shard.queued_commands();
                match sim.shard.send_command(now, packet) {
                    Ok(()) => assert!(len <= 4096),
                    Err(UsageError::PayloadTooLarge) => assert!(len > 4096),
                    Err(UsageError::QueueFull) => {
                        assert_eq!(queued, sim.shard.config().command_queue_capacity)
                    }
                    Err(UsageError::ShuttingDown) => {}
                    Err(UsageError::Unencodable(e)) => panic!("valid JSON refused: {e}"),
                }
            }
        }
        Op::DropAcks(b) => sim.gw.drop_acks = *b,
        Op::FailConnects(n) => sim.gw.fail_connects = u32::from(*n),
        Op::WorkerReconnect => sim.shard.reconnect(now),
        Op::Shutdown => sim.shard.shutdown(now),
        Op::Garbage(bytes) => sim.deliver(bytes),
        Op::ExpireSessions => sim.gw.expire_sessions(),
        Op::RejectResumes(b) => sim.gw.reject_resumes = *b,
        Op::AutoConfirm(on) => sim.confirm_delay = on.then_some(Duration::from_millis(5)),
        Op::Publishing(on) => sim.shard.set_publishing(now, *on),
        Op::ProcessRestart => {
            let snapshot = sim.trace.iter().rev().find_map(|(_, a)| match a {
                Action::PersistSession(s) => Some(s.clone()),
                _ => None,
            });
            sim.restart_process(snapshot);
        }
    }
    sim.drain();
}

/// The opcode and `d` of a frame the shard sent (JSON text, or ETF when `etf`).
fn op_of(bytes: &[u8], etf: bool) -> Option<(u64, Value)> {
    let v: Value = if etf {
        let mut decoder = crate::codec::Decoder::new(crate::codec::DecoderConfig {
            compression: crate::codec::Compression::None,
            encoding: crate::codec::Encoding::Etf,
            max_payload: 1 << 20,
        });
        let payload = decoder.decode(bytes, true).ok()??;
        serde_json::from_slice(&payload.bytes).ok()?
    } else {
        serde_json::from_slice(bytes).ok()?
    };
    Some((v["op"].as_u64()?, v["d"].clone()))
}

/// Every invariant, over the whole log.
fn check(sim: &Sim, interval: Duration) {
    let end = sim.elapsed();
    // Per-connection bookkeeping, reset at every Connect.
    let mut conn = 0usize;
    let mut sends: Vec<Vec<Duration>> = vec![Vec::new()];
    let mut hello_at: Option<Duration> = None;
    let mut last_periodic: Option<Duration> = None;
    let mut acked_since_periodic = true;
    let mut open = false;
    let mut last_s: Option<u64> = None;
    let mut stopped = false;
    let mut last_received_op: Option<u8> = None;
    let etf = sim.shard.config().sends_binary();

    let close_connection =
        |hello_at: &mut Option<Duration>, last_periodic: &mut Option<Duration>, at: Duration| {
            if let Some(h) = *hello_at {
                let last = last_periodic.unwrap_or(h);
                assert!(
                    at - last <= interval,
                    "heartbeat gap {:?} before the connection ended at {at:?}",
                    at - last
                );
            }
            *hello_at = None;
            *last_periodic = None;
        };

    for (at, entry) in &sim.log {
        let at = *at;
        match entry {
            Logged::Restarted { seq } => {
                close_connection(&mut hello_at, &mut last_periodic, at);
                open = false;
                stopped = false;
                last_s = *seq;
            }
            Logged::Connected => open = true,
            Logged::Timeout | Logged::Granted { .. } | Logged::Confirmed => {}
            Logged::Received { op, s, flag } => {
                last_received_op = Some(*op);
                if *op == 9 && *flag != Some(true) && open {
                    last_s = None; // the session is gone
                }
                if *op == 0 && s.is_some() && open {
                    last_s = *s;
                }
                if *op == 10 && hello_at.is_none() && open {
                    hello_at = Some(at);
                    acked_since_periodic = true;
                }
                if *op == 11 {
                    acked_since_periodic = true;
                }
            }
            Logged::Closed(code) => {
                if open && matches!(code, Some(4003 | 4005 | 4007 | 4009)) {
                    last_s = None; // the session is gone
                }
                close_connection(&mut hello_at, &mut last_periodic, at);
                open = false;
            }
            Logged::Did(action) => {
                assert!(!stopped, "action after Stopped: {action:?}");
                match action {
                    Action::Connect { .. } => {
                        close_connection(&mut hello_at, &mut last_periodic, at);
                        conn += 1;
                        sends.push(Vec::new());
                        open = false;
                    }
                    Action::Close(code) => {
                        assert!(code.is_resumable(), "closed with {code:?}");
                        close_connection(&mut hello_at, &mut last_periodic, at);
                        open = false;
                    }
                    Action::Stopped(_) => {
                        close_connection(&mut hello_at, &mut last_periodic, at);
                        stopped = true;
                    }
                    Action::Send(bytes) => {
                        sends[conn].push(at);
                        let (op, d) = op_of(bytes, etf).expect("the shard sends its encoding");
                        match op {
                            6 => assert_eq!(
                                d["seq"].as_u64(),
                                last_s,
                                "RESUME must carry the last sequence received"
                            ),
                            1 => {
                                let requested = last_received_op.take() == Some(1);
                                assert_eq!(
                                    d.as_u64(),
                                    last_s,
                                    "heartbeat carries the last sequence"
                                );
                                if !requested {
                                    let h = hello_at.expect("heartbeat only after HELLO");
                                    let prev = last_periodic.unwrap_or(h);
                                    assert!(
                                        at - prev <= interval,
                                        "heartbeats {:?} apart",
                                        at - prev
                                    );
                                    assert!(
                                        last_periodic.is_none() || acked_since_periodic,
                                        "two unacked heartbeats at {at:?}"
                                    );
                                    last_periodic = Some(at);
                                    acked_since_periodic = false;
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        // A heartbeat answers the op 1 it follows only within the same step.
        if !matches!(entry, Logged::Received { .. } | Logged::Did(_)) {
            last_received_op = None;
        }
    }
    if !stopped && open {
        close_connection(&mut hello_at, &mut last_periodic, end);
    }
    // Never more than 120 frames in any 60 s window of one connection.
    for times in &sends {
        for (i, t) in times.iter().enumerate() {
            if let Some(later) = times.get(i + 120) {
                assert!(
                    *later - *t >= Duration::from_secs(60),
                    "121 frames within {:?}",
                    *later - *t
                );
            }
        }
    }
    assert!(
        sim.gw.violations.is_empty(),
        "gateway saw: {:?}",
        sim.gw.violations
    );
}

pub(crate) fn run(seed: u64, interval_ms: u64, zlib: bool, etf: bool, ops: &[Op]) {
    let mut config = super::sim::test_config(seed);
    if zlib {
        config.compression = crate::codec::Compression::ZlibStream;
    }
    if etf {
        config.encoding = crate::codec::Encoding::Etf;
    }
    // Small replay limits, so that warming and publishing again prune and replay.
    config.replay.window = Duration::from_secs(7);
    config.replay.max_events = 16;
    config.replay.max_bytes = 4096;
    let mut sim = Sim::with_config(config, seed);
    sim.gw.zlib_stream = zlib;
    sim.gw.etf = etf;
    sim.gw.heartbeat_interval_ms = interval_ms;
    for op in ops {
        apply(&mut sim, op);
    }
    sim.advance(Duration::from_secs(1));
    check(&sim, Duration::from_millis(interval_ms));
}

/// A fuzz case: the parameters of [`run`] and up to 40 operations.
#[cfg(feature = "fuzzing")]
#[derive(Debug)]
pub(crate) struct Case {
    pub(crate) seed: u64,
    pub(crate) interval_ms: u64,
    pub(crate) zlib: bool,
    pub(crate) etf: bool,
    pub(crate) ops: Vec<Op>,
}

#[cfg(feature = "fuzzing")]
impl<'a> arbitrary::Arbitrary<'a> for Case {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let (seed, interval_ms, zlib, etf) = (
            u.arbitrary()?,
            *u.choose(&INTERVALS_MS)?,
            u.arbitrary()?,
            u.arbitrary()?,
        );
        let mut ops = Vec::new();
        while ops.len() < 40 && !u.is_empty() {
            ops.push(Op::arbitrary(u)?);
        }
        Ok(Self {
            seed,
            interval_ms,
            zlib,
            etf,
            ops,
        })
    }
}

/// The same operations, weights and ranges as the property test's strategy.
#[cfg(feature = "fuzzing")]
impl<'a> arbitrary::Arbitrary<'a> for Op {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let close = |u: &mut arbitrary::Unstructured<'a>| -> arbitrary::Result<Option<u16>> {
            Ok(match u.int_in_range(0..=16u8)? {
                0..=5 => None,
                6..=15 => Some(*u.choose(&CLOSE_CODES)?),
                _ => Some(*u.choose(&FATAL_CLOSE_CODES)?),
            })
        };
        // Cumulative weights: 20, 4, 3, 2, 2, 3, 4, 5, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1.
        Ok(match u.int_in_range(0..=54u8)? {
            0..=19 => Op::Run(u.int_in_range(0..=129_999)?),
            20..=23 => Op::Run(u.int_in_range(0..=1_999)?),
            24..=26 => Op::ServerClose(close(u)?),
            27..=28 => Op::Reconnect,
            29..=30 => Op::InvalidSession(u.arbitrary()?),
            31..=33 => Op::RequestHeartbeat,
            34..=37 => Op::Dispatch(u.int_in_range(1..=19)?),
            38..=42 => Op::Commands {
                count: u.int_in_range(1..=199)?,
                size: if u.ratio(1, 10)? {
                    u.int_in_range(4000..=4199)?
                } else {
                    u.int_in_range(20..=199)?
                },
            },
            43..=44 => Op::DropAcks(u.arbitrary()?),
            45 => Op::FailConnects(u.int_in_range(0..=5)?),
            46 => Op::WorkerReconnect,
            47 => Op::Shutdown,
            48 => Op::Garbage({
                let len = u.int_in_range(0..=39)?;
                u.bytes(len)?.to_vec()
            }),
            49 => Op::ExpireSessions,
            50 => Op::RejectResumes(u.arbitrary()?),
            51..=52 => Op::AutoConfirm(u.arbitrary()?),
            53 => Op::ProcessRestart,
            _ => Op::Publishing(u.arbitrary()?),
        })
    }
}
