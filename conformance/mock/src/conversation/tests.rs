//! The conversation without sockets: messages in, actions out, time passed by hand.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::Message;

use super::{Action, Conversation, World};
use crate::config::MockConfig;
use crate::frames::Templates;
use crate::recorder::{ConnectionId, IdentifyOutcome, ResumeOutcome, ViolationKind};
use crate::session::{ConnCommand, SessionTable};
use crate::wire::Encoding;

const TOKEN: &str = "conversation-token";

struct Harness {
    config: MockConfig,
    templates: Templates,
    sessions: Mutex<SessionTable>,
    start: Instant,
}

impl Harness {
    fn new(config: MockConfig) -> Self {
        let start = Instant::now();
        let sessions = Mutex::new(SessionTable::new(&config, start));
        Self {
            config,
            templates: Templates::recorded(),
            sessions,
            start,
        }
    }

    fn world(&self) -> World<'_> {
        World {
            config: &self.config,
            templates: &self.templates,
            resume_url: "ws://mock/resume",
            sessions: &self.sessions,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// A conversation that got its HELLO (its actions taken).
    fn open(&self, id: u64, path: &str) -> Conversation {
        let mut c = Conversation::new(
            ConnectionId(id),
            path.into(),
            Encoding::Json,
            path.starts_with("/resume"),
            true,
            &self.config,
            self.start,
        );
        c.open(self.start, false, &self.world());
        c.drain().for_each(drop);
        c
    }

    fn send(&self, c: &mut Conversation, ms: u64, payload: serde_json::Value) -> Vec<Action> {
        let message = Message::text(payload.to_string());
        c.receive(self.at(ms), &message, &self.world());
        c.drain().collect()
    }

    fn identify(&self, c: &mut Conversation, ms: u64, token: &str) -> Vec<Action> {
        let d = json!({"token": token, "intents": 513, "shard": [0, 1], "properties": {}});
        self.send(c, ms, json!({"op": 2, "d": d}))
    }
}

fn pick<T>(actions: &[Action], f: impl Fn(&Action) -> Option<T>) -> Vec<T> {
    actions.iter().filter_map(f).collect()
}

fn sent_ops(actions: &[Action]) -> Vec<u8> {
    pick(actions, |a| match a {
        Action::Send(frame) => Some(frame.op),
        _ => None,
    })
}

fn closes(actions: &[Action]) -> Vec<u16> {
    pick(actions, |a| match a {
        Action::Close(code, _) => Some(*code),
        _ => None,
    })
}

fn violations(actions: &[Action]) -> Vec<ViolationKind> {
    pick(actions, |a| match a {
        Action::Violation(v) => Some(v.kind.clone()),
        _ => None,
    })
}

#[test]
fn hello_first_or_reconnect_in_its_place() {
    let h = Harness::new(MockConfig::for_tests(TOKEN));
    let mut c = Conversation::new(
        ConnectionId(1),
        "/".into(),
        Encoding::Json,
        false,
        true,
        &h.config,
        h.start,
    );
    c.open(h.start, false, &h.world());
    let actions: Vec<Action> = c.drain().collect();
    assert_eq!(sent_ops(&actions), vec![10]);
    let Action::Send(hello) = &actions[0] else {
        unreachable!()
    };
    let hello: serde_json::Value = serde_json::from_slice(&hello.json).unwrap();
    assert_eq!(hello["d"]["heartbeat_interval"], 500);

    let mut c = h.open(2, "/");
    c.open(h.start, true, &h.world());
    assert_eq!(sent_ops(&c.drain().collect::<Vec<_>>()), vec![7]);
}

#[test]
fn heartbeats_are_acked_unless_acks_are_dropped() {
    let h = Harness::new(MockConfig::for_tests(TOKEN));
    let mut c = h.open(1, "/");
    let actions = h.send(&mut c, 100, json!({"op": 1, "d": null}));
    assert!(matches!(actions[1], Action::Heartbeat(_)));
    assert_eq!(sent_ops(&actions), vec![11]);

    c.command(h.at(200), ConnCommand::DropAcks(true), &h.world());
    let actions = h.send(&mut c, 300, json!({"op": 1, "d": null}));
    assert!(sent_ops(&actions).is_empty());
    assert!(closes(&actions).is_empty());
}

#[test]
fn no_heartbeat_within_the_deadline_closes_4009() {
    let h = Harness::new(MockConfig::for_tests(TOKEN));
    let mut c = h.open(1, "/");
    let deadline = h.config.heartbeat_deadline();
    c.tick(h.start + deadline, &h.world());
    assert!(
        c.drain().next().is_none(),
        "exactly at the deadline is still in time"
    );
    c.tick(h.start + deadline + Duration::from_millis(1), &h.world());
    let actions: Vec<Action> = c.drain().collect();
    assert_eq!(violations(&actions), vec![ViolationKind::HeartbeatTimeout]);
    assert_eq!(closes(&actions), vec![4009]);
    assert!(c.closing());
}

#[test]
fn identify_checks_close_with_discords_codes() {
    let h = Harness::new(MockConfig::for_tests(TOKEN));
    let mut c = h.open(1, "/");
    let actions = h.identify(&mut c, 10, "wrong");
    assert_eq!(closes(&actions), vec![4004]);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Identify(r) if r.outcome == IdentifyOutcome::Closed(4004) && !r.token_ok
    )));
    // Nothing is answered after the close.
    assert!(h.send(&mut c, 20, json!({"op": 1, "d": null})).is_empty());

    let mut c = h.open(2, "/");
    let d = json!({"token": TOKEN, "intents": 513, "shard": [1, 1]});
    assert_eq!(
        closes(&h.send(&mut c, 10, json!({"op": 2, "d": d}))),
        vec![4010]
    );

    let mut c = h.open(3, "/");
    let d = json!({"token": TOKEN, "intents": 1u64 << 40, "shard": [0, 1]});
    assert_eq!(
        closes(&h.send(&mut c, 10, json!({"op": 2, "d": d}))),
        vec![4013]
    );

    let mut c = h.open(4, "/");
    assert_eq!(
        closes(&h.send(&mut c, 10, json!({"op": 8, "d": {}}))),
        vec![4003]
    );

    let mut c = h.open(5, "/");
    assert_eq!(
        closes(&h.send(&mut c, 10, json!({"op": 99, "d": {}}))),
        vec![4001]
    );

    let mut c = h.open(6, "/");
    let actions = h.send(&mut c, 10, json!("not an object"));
    assert_eq!(closes(&actions), vec![4002]);
}

#[test]
fn identify_starts_a_session_whose_ready_is_due_and_a_second_identify_closes_4005() {
    let h = Harness::new(MockConfig::for_tests(TOKEN));
    let mut c = h.open(1, "/");
    let actions = h.identify(&mut c, 10, TOKEN);
    assert!(closes(&actions).is_empty());
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SessionStarted { shard: [0, 1], .. }))
    );
    assert!(c.has_session());
    assert!(c.due(h.at(11), &h.world()));
    let due: Vec<Action> = c.drain().collect();
    let Some(Action::Send(ready)) = due.first() else {
        panic!("READY first: {due:?}")
    };
    assert_eq!((ready.op, ready.seq), (0, Some(1)));
    assert_eq!(ready.event.as_deref(), Some("READY"));

    let actions = h.identify(&mut c, 20, TOKEN);
    assert_eq!(
        violations(&actions),
        vec![ViolationKind::AlreadyAuthenticated]
    );
    assert_eq!(closes(&actions), vec![4005]);
}

#[test]
fn resume_takes_over_the_session_or_answers_op_9() {
    let h = Harness::new(MockConfig::for_tests(TOKEN));
    let mut first = h.open(1, "/");
    let actions = h.identify(&mut first, 10, TOKEN);
    let session_id = actions
        .iter()
        .find_map(|a| match a {
            Action::SessionStarted { session_id, .. } => Some(session_id.clone()),
            _ => None,
        })
        .expect("a session");
    first.due(h.at(11), &h.world());
    first.drain().for_each(drop);

    let mut second = h.open(2, "/resume");
    let d = json!({"token": TOKEN, "session_id": session_id, "seq": 1});
    let actions = h.send(&mut second, 20, json!({"op": 6, "d": d}));
    assert!(violations(&actions).is_empty(), "{actions:?}");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Supersede(ConnectionId(1))))
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Resume(r) if matches!(r.outcome, ResumeOutcome::Resumed { .. })
    )));

    // The superseded connection closes 4000 and keeps its hands off the session.
    first.command(h.at(21), ConnCommand::Superseded, &h.world());
    assert_eq!(closes(&first.drain().collect::<Vec<_>>()), vec![4000]);

    let mut third = h.open(3, "/");
    let d = json!({"token": TOKEN, "session_id": "nobody", "seq": 1});
    let actions = h.send(&mut third, 30, json!({"op": 6, "d": d}));
    assert_eq!(sent_ops(&actions), vec![9]);
    let kinds = violations(&actions);
    assert!(matches!(kinds[0], ViolationKind::ResumeWrongUrl { .. }));
    assert!(matches!(
        kinds[1],
        ViolationKind::ResumeUnknownSession { .. }
    ));
}

#[test]
fn more_than_the_frame_limit_in_the_window_closes_4008() {
    let config = MockConfig {
        rate_limit_frames: 3,
        ..MockConfig::for_tests(TOKEN)
    };
    let h = Harness::new(config);
    let mut c = h.open(1, "/");
    for i in 0..3 {
        let actions = h.send(&mut c, i, json!({"op": 1, "d": null}));
        assert!(closes(&actions).is_empty());
    }
    let actions = h.send(&mut c, 3, json!({"op": 1, "d": null}));
    assert_eq!(closes(&actions), vec![4008]);
}
