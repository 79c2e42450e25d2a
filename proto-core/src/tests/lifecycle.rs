//! Scenarios: zombie connections, op 1/7/9, close codes, back-off, HELLO timeout, decode
//! errors and worker-requested reconnects.

use std::time::Duration;

use serde_json::Value;

use crate::shard::{Action, CloseCode, DisconnectReason, FrameKind, ShardState, StopReason, Timer};

use super::fake_gateway::{GATEWAY_URL, RESUME_URL};
use super::sim::Sim;

const INTERVAL: Duration = Duration::from_millis(41_250);

fn resume_url() -> String {
    format!("{RESUME_URL}/?v=10&encoding=json")
}

fn gateway_url() -> String {
    format!("{GATEWAY_URL}/?v=10&encoding=json")
}

fn is_close(a: &Action) -> bool {
    matches!(a, Action::Close(_))
}

#[test]
fn zombie_connection_resumes_instead_of_identifying() {
    let mut sim = Sim::new(7);
    sim.until_active();
    sim.gw.drop_acks = true;
    let mark = sim.mark();
    sim.advance(INTERVAL * 2 + Duration::from_secs(1));
    assert!(
        sim.since(mark)
            .iter()
            .any(|(_, a)| *a == Action::Close(CloseCode::RESUME))
    );
    assert_eq!(sim.shard.last_disconnect(), Some(&DisconnectReason::Zombie));
    sim.gw.drop_acks = false;
    sim.until_active_since(mark);
    assert_eq!(sim.gw.sent_ops(2).count(), 1, "identified only once");
    let resume = sim.gw.sent_ops(6).next().expect("RESUME sent");
    assert_eq!(resume.d["session_id"], "session-1");
    assert_eq!(resume.d["seq"], 3);
    assert_eq!(resume.d["token"], "test-token");
    assert_eq!(sim.gw.connects.last(), Some(&resume_url()));
    assert!(sim.gw.client_closes.iter().all(|&c| c != 1000 && c != 1001));
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
}

#[test]
fn zombie_is_declared_at_the_second_unacked_beat() {
    let mut sim = Sim::new(8);
    sim.until_active();
    sim.gw.drop_acks = true;
    let beats_before = sim.gw.sent_ops(1).count();
    sim.run_until(Duration::from_secs(200), |s| s.saw(is_close));
    assert_eq!(
        sim.gw.sent_ops(1).count(),
        beats_before + 1,
        "one unacked beat, then close"
    );
    assert_eq!(sim.shard.last_disconnect(), Some(&DisconnectReason::Zombie));
}

#[test]
fn server_heartbeat_request_is_answered_at_once_without_moving_the_schedule() {
    let mut reference = Sim::new(9);
    reference.until_active();
    reference.advance(Duration::from_secs(100));
    let periodic: Vec<_> = reference
        .gw
        .sent_ops(1)
        .map(|f| f.at - reference.epoch)
        .collect();

    let mut sim = Sim::new(9);
    sim.until_active();
    sim.advance(Duration::from_secs(5));
    let asked_at = sim.now;
    sim.gw.send_op(asked_at, 1, Value::Null);
    sim.advance(Duration::from_secs(95));
    let beats: Vec<_> = sim.gw.sent_ops(1).map(|f| f.at - sim.epoch).collect();
    let requested = asked_at - sim.epoch + sim.gw.latency;
    assert!(beats.contains(&requested), "{beats:?} lacks {requested:?}");
    let without: Vec<_> = beats.into_iter().filter(|&b| b != requested).collect();
    assert_eq!(without, periodic);
    assert_eq!(sim.shard.state(), ShardState::Active);
}

#[test]
fn reconnect_opcode_closes_resumably_and_resumes() {
    let mut sim = Sim::new(10);
    sim.until_active();
    let now = sim.now;
    sim.gw.send_op(now, 7, Value::Null);
    let mark = sim.mark();
    sim.until_active_since(mark);
    let after: Vec<_> = sim.since(mark).iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(after[0], Action::Close(CloseCode::RESUME));
    assert_eq!(after[1], Action::Connect { url: resume_url() });
    assert!(!after.contains(&Action::RequestIdentify));
    assert_eq!(sim.gw.sent_ops(6).count(), 1);
    assert_eq!(
        sim.shard.last_disconnect(),
        Some(&DisconnectReason::ReconnectRequested)
    );
    // The resumed session keeps publishing with the next sequence.
    let now = sim.now;
    sim.gw.dispatch(now, "TYPING_START", serde_json::json!({}));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.shard.last_sequence(), Some(5)); // READY, 2 GUILD_CREATE, RESUMED, TYPING
}

#[test]
fn reconnect_opcode_before_hello_is_honoured() {
    let mut sim = Sim::new(11);
    sim.gw.reconnect_before_hello = true;
    sim.until_active();
    assert_eq!(sim.gw.connects.len(), 2);
    assert_eq!(sim.gw.client_closes, vec![4000]);
    // No session yet, so the second connection identifies.
    assert_eq!(sim.gw.sent_ops(2).count(), 1);
    assert_eq!(sim.gw.connects[1], gateway_url());
}

#[test]
fn invalid_session_resumable_resumes() {
    let mut sim = Sim::new(12);
    sim.until_active();
    let now = sim.now;
    sim.gw.send_op(now, 9, Value::Bool(true));
    let mark = sim.mark();
    sim.until_active_since(mark);
    assert_eq!(sim.gw.sent_ops(6).count(), 1);
    assert_eq!(sim.gw.sent_ops(2).count(), 1);
    assert_eq!(
        sim.shard.last_disconnect(),
        Some(&DisconnectReason::InvalidSession { resumable: true })
    );
}

#[test]
fn invalid_session_not_resumable_waits_then_identifies_afresh() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed);
        sim.until_active();
        let now = sim.now;
        sim.gw.send_op(now, 9, Value::Bool(false));
        let mark = sim.mark();
        sim.until_active_since(mark);
        let after = sim.since(mark);
        let closed_at = after.iter().find(|(_, a)| is_close(a)).expect("closed").0;
        let (connect_at, url) = after
            .iter()
            .find_map(|(t, a)| match a {
                Action::Connect { url } => Some((*t, url.clone())),
                _ => None,
            })
            .expect("reconnected");
        let wait = connect_at - closed_at;
        assert!(
            wait >= Duration::from_secs(1) && wait < Duration::from_secs(5),
            "seed {seed}: waited {wait:?}"
        );
        assert_eq!(
            url,
            gateway_url(),
            "fresh identify uses the cached gateway URL"
        );
        assert!(after.iter().any(|(_, a)| *a == Action::RequestIdentify));
        assert_eq!(sim.gw.sent_ops(2).count(), 2, "identified afresh");
        assert_eq!(sim.gw.sent_ops(6).count(), 0, "no resume of a dead session");
        assert_eq!(
            sim.shard.session().map(|s| s.id.as_str()),
            Some("session-2")
        );
        assert_eq!(sim.shard.last_sequence(), Some(3));
    }
}

#[test]
fn resume_rejected_by_the_server_falls_back_to_identify() {
    let mut sim = Sim::new(13);
    sim.until_active();
    sim.gw.reject_resumes = true;
    let now = sim.now;
    sim.gw.close(now, None); // TCP drop: resume
    let mark = sim.mark();
    sim.run_until(Duration::from_secs(60), |s| s.gw.sent_ops(2).count() == 2);
    assert_eq!(sim.gw.sent_ops(6).count(), 1);
    assert!(
        sim.since(mark)
            .iter()
            .any(|(_, a)| *a == Action::RequestIdentify)
    );
    sim.until_active();
    assert_eq!(
        sim.shard.session().map(|s| s.id.as_str()),
        Some("session-2")
    );
}

/// What the shard does after the server closes with `code`: the next connection's opening op.
fn after_close(code: Option<u16>) -> Sim {
    let mut sim = Sim::new(u64::from(code.unwrap_or(1)));
    sim.until_active();
    let now = sim.now;
    sim.gw.close(now, code);
    sim.advance(Duration::from_secs(30));
    sim
}

#[test]
fn resumable_close_codes_resume() {
    for code in [
        None,
        Some(4000),
        Some(4001),
        Some(4002),
        Some(4008),
        Some(1000),
        Some(1001),
        Some(4999),
        Some(4200),
    ] {
        let sim = after_close(code);
        assert_eq!(sim.shard.state(), ShardState::Active, "{code:?}");
        assert_eq!(sim.gw.sent_ops(6).count(), 1, "{code:?} resumes");
        assert_eq!(
            sim.gw.sent_ops(2).count(),
            1,
            "{code:?} does not identify again"
        );
        assert_eq!(sim.gw.connects.last(), Some(&resume_url()), "{code:?}");
        assert_eq!(
            sim.shard.last_disconnect(),
            Some(&DisconnectReason::Closed { code })
        );
    }
}

#[test]
fn session_ending_close_codes_identify_afresh() {
    for code in [4003, 4005, 4007, 4009] {
        let sim = after_close(Some(code));
        assert_eq!(sim.shard.state(), ShardState::Active, "{code}");
        assert_eq!(sim.gw.sent_ops(6).count(), 0, "{code} does not resume");
        assert_eq!(sim.gw.sent_ops(2).count(), 2, "{code} identifies again");
        assert_eq!(sim.gw.connects.last(), Some(&gateway_url()), "{code}");
        assert_eq!(
            sim.trace
                .iter()
                .filter(|(_, a)| *a == Action::RequestIdentify)
                .count(),
            2
        );
    }
}

#[test]
fn fatal_close_codes_stop_for_good() {
    let names = [
        (4004, "authentication failed"),
        (4010, "invalid shard"),
        (4011, "sharding required"),
        (4012, "invalid API version"),
        (4013, "invalid intents"),
        (4014, "disallowed intents"),
    ];
    for (code, name) in names {
        let mut sim = after_close(Some(code));
        assert_eq!(sim.shard.state(), ShardState::FatallyClosed, "{code}");
        let stops = sim.actions(|a| matches!(a, Action::Stopped(_)));
        assert_eq!(stops.len(), 1);
        assert_eq!(
            stops[0].1,
            Action::Stopped(StopReason::Fatal { code, name })
        );
        assert_eq!(
            stops[0].1.clone(),
            Action::Stopped(StopReason::Fatal { code, name })
        );
        assert_eq!(sim.gw.connects.len(), 1, "{code}: never reconnects");
        // Absorbing: every input is a no-op.
        let mark = sim.mark();
        let now = sim.now;
        sim.shard.handle_connected(now);
        sim.shard.handle_message(
            now,
            br#"{"op":10,"d":{"heartbeat_interval":1000}}"#,
            FrameKind::Text,
        );
        sim.shard.handle_closed(now, Some(4000));
        sim.shard.handle_timeout(now + Duration::from_secs(3600));
        sim.shard.handle_identify_granted(now);
        sim.shard.reconnect(now);
        sim.shard.shutdown(now);
        assert!(
            sim.shard
                .send_command(now, bytes::Bytes::from_static(b"{}"))
                .is_err()
        );
        sim.drain();
        assert!(sim.since(mark).is_empty(), "{code}: {:?}", sim.since(mark));
        assert_eq!(sim.shard.poll_timeout(), None);
        assert_eq!(sim.shard.state(), ShardState::FatallyClosed);
    }
}

#[test]
fn fatal_close_with_a_bad_token() {
    let mut sim = Sim::new(14);
    sim.gw.token = "another".into();
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.shard.state(), ShardState::FatallyClosed);
    assert!(sim.saw(|a| *a
        == Action::Stopped(StopReason::Fatal {
            code: 4004,
            name: "authentication failed"
        })));
    assert_eq!(
        StopReason::Fatal {
            code: 4004,
            name: "authentication failed"
        }
        .to_string(),
        "authentication failed (close code 4004)"
    );
}

#[test]
fn connection_failures_back_off_exponentially_and_reset_after_ready() {
    let mut sim = Sim::new(15);
    sim.gw.fail_connects = 6;
    sim.until_active();
    let connects: Vec<_> = sim
        .actions(|a| matches!(a, Action::Connect { .. }))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(connects.len(), 7);
    let gaps: Vec<_> = connects
        .windows(2)
        .map(|w| w[1] - w[0] - sim.gw.latency)
        .collect();
    // Attempt 1 retries at once; then [0.5, 1) s, [1, 2) s, [2, 4) s, [4, 8) s, [8, 16) s.
    assert_eq!(gaps[0], Duration::ZERO);
    for (i, gap) in gaps.iter().enumerate().skip(1) {
        let full = Duration::from_secs(1 << (i - 1));
        assert!(*gap >= full / 2 && *gap < full, "gap {i}: {gap:?}");
    }
    assert_eq!(
        sim.shard.last_disconnect(),
        Some(&DisconnectReason::ConnectFailed)
    );
    // After READY the count starts over: a drop reconnects at once.
    let now = sim.now;
    sim.gw.close(now, None);
    let mark = sim.mark();
    sim.advance(sim.gw.latency);
    assert!(
        sim.since(mark)
            .iter()
            .any(|(_, a)| matches!(a, Action::Connect { .. }))
    );
}

#[test]
fn backoff_is_capped() {
    let mut sim = Sim::new(16);
    sim.gw.fail_connects = 40;
    sim.advance(Duration::from_secs(3600));
    let connects: Vec<_> = sim
        .actions(|a| matches!(a, Action::Connect { .. }))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let max_gap = connects
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .expect("gaps");
    assert!(
        max_gap <= Duration::from_secs(64) + sim.gw.latency,
        "{max_gap:?}"
    );
    assert!(matches!(sim.shard.state(), ShardState::Active));
}

#[test]
fn resume_falls_back_to_the_gateway_url_when_the_resume_host_fails() {
    let mut sim = Sim::new(17);
    sim.until_active();
    sim.gw.fail_connects = 3;
    let now = sim.now;
    sim.gw.close(now, None);
    let mark = sim.mark();
    sim.until_active_since(mark);
    let urls = &sim.gw.connects[1..];
    assert_eq!(urls[..3], [resume_url(), resume_url(), resume_url()]);
    assert_eq!(urls[3], gateway_url());
    assert_eq!(sim.gw.sent_ops(6).count(), 1, "still a resume");
}

#[test]
fn hello_timeout_reconnects() {
    let mut sim = Sim::new(18);
    sim.advance(sim.gw.latency); // connected, HELLO due next
    // Swallow the HELLO: pretend the server never sends it.
    while sim.gw.pop_due(sim.now + Duration::from_secs(1)).is_some() {}
    assert_eq!(sim.shard.timeout_reason(), Some(Timer::HelloDeadline));
    sim.advance(Duration::from_secs(21));
    assert_eq!(
        sim.shard.last_disconnect(),
        Some(&DisconnectReason::HelloTimeout)
    );
    assert_eq!(sim.gw.connects.len(), 2);
    sim.until_active();
}

#[test]
fn undecodable_message_closes_and_resumes() {
    let mut sim = Sim::new(19);
    sim.until_active();
    let now = sim.now;
    let mark = sim.mark();
    sim.shard.handle_message(now, b"{not json", FrameKind::Text);
    sim.drain();
    assert!(matches!(
        sim.shard.last_disconnect(),
        Some(DisconnectReason::DecodeError(_))
    ));
    sim.until_active_since(mark);
    assert_eq!(sim.gw.sent_ops(6).count(), 1);
}

#[test]
fn unknown_opcodes_and_unrequested_acks_are_ignored() {
    let mut sim = Sim::new(20);
    sim.until_active();
    let now = sim.now;
    sim.gw.send_op(now, 42, Value::Null);
    sim.gw.send_op(now, 11, Value::Null);
    sim.gw
        .send_op(now, 10, serde_json::json!({"heartbeat_interval": 1}));
    let mark = sim.mark();
    sim.advance(Duration::from_secs(1));
    assert!(sim.since(mark).is_empty(), "{:?}", sim.since(mark));
    assert_eq!(sim.shard.state(), ShardState::Active);
}

#[test]
fn worker_reconnect_resumes() {
    let mut sim = Sim::new(21);
    sim.until_active();
    let now = sim.now;
    let mark = sim.mark();
    sim.shard.reconnect(now);
    sim.drain();
    sim.until_active_since(mark);
    assert_eq!(sim.gw.client_closes, vec![4000]);
    assert_eq!(sim.gw.sent_ops(6).count(), 1);
    assert_eq!(
        sim.shard.last_disconnect(),
        Some(&DisconnectReason::Requested)
    );
}

#[test]
fn resume_carries_the_last_sequence_received_even_unconfirmed() {
    let mut sim = Sim::new(22);
    sim.confirm_delay = None;
    sim.until_active();
    let now = sim.now;
    for _ in 0..5 {
        sim.gw
            .dispatch(now, "MESSAGE_CREATE", serde_json::json!({}));
    }
    sim.advance(Duration::from_secs(1));
    let now = sim.now;
    sim.gw.close(now, Some(4000));
    sim.advance(Duration::from_secs(1));
    let resume = sim.gw.sent_ops(6).next().expect("resumed");
    assert_eq!(resume.d["seq"], 8);
    assert_eq!(sim.shard.confirmed_sequence(), 0);
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut sim = Sim::new(23);
    sim.until_active();
    let now = sim.now;
    sim.shard.handle_timeout(now + Duration::from_secs(10));
    sim.drain();
    let before = sim.shard.poll_timeout();
    sim.shard.handle_timeout(now); // earlier than the last call: a no-op
    sim.drain();
    assert_eq!(sim.shard.poll_timeout(), before);
    assert!(before.is_some_and(|t| t >= now + Duration::from_secs(10)));
}

#[test]
fn ready_without_a_session_id_starts_over() {
    let mut sim = Sim::new(24);
    sim.grant_delay = Duration::from_secs(3600);
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.shard.state(), ShardState::Identifying);
    let mark = sim.mark();
    sim.deliver(br#"{"t":"READY","s":1,"op":0,"d":{"v":10}}"#);
    sim.drain();
    assert_eq!(sim.since(mark)[0].1, Action::Close(CloseCode::RESUME));
    assert!(sim.shard.session().is_none());
    sim.advance(Duration::from_secs(2));
    let requests = sim.actions(|a| *a == Action::RequestIdentify).len();
    assert_eq!(requests, 2);
}

#[test]
fn no_zombie_verdict_while_reading_is_paused() {
    let mut config = super::sim::test_config(25);
    config.max_unconfirmed = 1;
    let mut sim = Sim::with_config(config, 25);
    sim.gw.guilds_after_ready = 0;
    sim.confirm_delay = None;
    sim.until_active();
    assert!(sim.shard.should_pause_reading());
    sim.gw.drop_acks = true;
    let beats = sim.gw.sent_ops(1).count();
    sim.advance(INTERVAL * 4);
    assert!(!sim.saw(is_close), "paused reading is not a zombie");
    assert!(sim.gw.sent_ops(1).count() >= beats + 4, "heartbeats go on");
    // Confirms catch up: the next unacknowledged beat is a zombie again.
    let ids: Vec<_> = sim
        .trace
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Publish { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    for id in ids {
        let now = sim.now;
        sim.shard.handle_published(now, id);
    }
    sim.drain();
    assert!(!sim.shard.should_pause_reading());
    sim.advance(INTERVAL * 2);
    assert_eq!(sim.shard.last_disconnect(), Some(&DisconnectReason::Zombie));
}

#[test]
fn reconnect_while_connecting_is_a_no_op() {
    let mut sim = Sim::new(26);
    sim.drain();
    let mark = sim.mark();
    let now = sim.now;
    sim.shard.reconnect(now);
    sim.drain();
    assert!(sim.since(mark).is_empty());
    sim.until_active();
}

#[test]
fn shard_is_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<crate::shard::Shard>();
    assert_send::<crate::identify::IdentifyScheduler>();
}
