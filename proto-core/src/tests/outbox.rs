//! Scenarios: the shard publishing through the pure [`crate::outbox::Outbox`] to a fake broker
//! that nacks, returns, loses confirms, stalls and drops links. The invariant: no sequence is
//! saved before it and everything before it is confirmed (held by the broker).

use std::time::Duration;

use proptest::prelude::*;

use crate::outbox::Unroutable;
use crate::shard::{Action, ShardState};

use super::sim::{Sim, SimBroker};

/// Every message id published so far, with the session and sequence it names (the native
/// profile's id is `<session>:<seq>`).
fn published(sim: &Sim) -> Vec<(String, u64, String)> {
    sim.trace
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Publish {
                seq, publication, ..
            } => {
                let id = publication.properties.message_id.clone()?;
                let session = id.rsplit_once(':')?.0.to_owned();
                Some((session, *seq, id))
            }
            _ => None,
        })
        .collect()
}

/// Checks every snapshot the shard emitted: each publication of its session up to its sequence
/// is held by the broker (or, with `Unroutable::Confirm`, was returned as unroutable).
fn check_saved_sequences(sim: &Sim) -> Result<(), TestCaseError> {
    let broker = sim.broker.as_ref().expect("a broker");
    let unroutable_confirms = broker.outbox_config().unroutable == Unroutable::Confirm;
    let publications = published(sim);
    for (at, action) in &sim.trace {
        let Action::PersistSession(snapshot) = action else {
            continue;
        };
        for (session, seq, id) in &publications {
            if *session != snapshot.session_id || *seq > snapshot.sequence {
                continue;
            }
            let handed_over =
                broker.held.contains(id) || (unroutable_confirms && broker.returned.contains(id));
            prop_assert!(
                handed_over,
                "snapshot at {at:?} saved sequence {} but {id} was never confirmed",
                snapshot.sequence
            );
        }
    }
    Ok(())
}

fn load(sim: &mut Sim, events: u32, every: Duration) {
    for i in 0..events {
        let now = sim.now;
        sim.gw
            .dispatch(now, "MESSAGE_CREATE", serde_json::json!({ "n": i }));
        sim.advance(every);
    }
}

fn broker_sim(seed: u64, unroutable: Unroutable) -> Sim {
    let mut config = super::sim::test_config(seed);
    config.max_unconfirmed = 50;
    let mut sim = Sim::with_config(config, seed);
    sim.broker = Some(SimBroker::new(seed, unroutable));
    sim
}

/// Heals the broker and runs until nothing is unconfirmed; returns whether it got there.
fn heal(sim: &mut Sim) -> bool {
    if let Some(broker) = &mut sim.broker {
        broker.stalled = false;
        broker.nack_percent = 0;
        broker.lose_percent = 0;
        broker.return_percent = 0;
    }
    sim.run_until(Duration::from_secs(600), |s| {
        s.shard.unconfirmed() == 0 && s.shard.state() == ShardState::Active
    })
}

#[test]
fn a_stalled_broker_fails_the_link_after_the_confirm_timeout_and_nothing_is_lost() {
    let mut sim = broker_sim(90, Unroutable::Confirm);
    sim.until_active();
    load(&mut sim, 20, Duration::from_millis(100));
    sim.broker.as_mut().expect("broker").stalled = true;
    load(&mut sim, 100, Duration::from_millis(100));
    sim.advance(Duration::from_secs(60));
    assert!(sim.shard.should_pause_reading(), "stopped at the limit");
    let broker = sim.broker.as_ref().expect("broker");
    assert!(
        broker.link.is_some_and(|l| l > 2),
        "links failed and were replaced"
    );
    assert!(heal(&mut sim));
    assert_eq!(sim.gw.connects.len(), 1, "the gateway connection stayed");
    let ids: std::collections::BTreeSet<_> = published(&sim).into_iter().map(|p| p.2).collect();
    let broker = sim.broker.as_ref().expect("broker");
    assert_eq!(ids.len(), 123, "READY, 2 GUILD_CREATEs and 120 dispatches");
    assert!(ids.iter().all(|id| broker.held.contains(id)));
    check_saved_sequences(&sim).expect("invariant");
}

#[test]
fn held_unroutable_events_are_not_saved_until_a_queue_takes_them() {
    let mut sim = broker_sim(91, Unroutable::Hold);
    sim.broker.as_mut().expect("broker").return_percent = 100;
    sim.until_active();
    load(&mut sim, 5, Duration::from_millis(100));
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.shard.confirmed_sequence(), 0, "nothing is routable");
    assert!(heal(&mut sim));
    assert_eq!(
        sim.shard.confirmed_sequence(),
        8,
        "READY, 2 GUILD_CREATEs, 5 dispatches"
    );
    check_saved_sequences(&sim).expect("invariant");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the broker does (nacks, returns, lost confirms, stalls, cut links) and
    /// whatever the unroutable policy, no saved sequence outruns the broker, and once the
    /// broker heals every event is held.
    #[test]
    fn no_sequence_is_saved_before_it_and_everything_before_it_is_confirmed(
        seed in any::<u64>(),
        nack in 0u64..20,
        returned in 0u64..20,
        lose in 0u64..5,
        hold in any::<bool>(),
        faults in prop::collection::vec((0u8..3, 1u32..30), 1..6),
    ) {
        let unroutable = if hold { Unroutable::Hold } else { Unroutable::Confirm };
        let mut sim = broker_sim(seed, unroutable);
        {
            let broker = sim.broker.as_mut().expect("broker");
            broker.nack_percent = nack;
            broker.return_percent = returned;
            broker.lose_percent = lose;
        }
        sim.until_active();
        for (kind, events) in faults {
            match kind {
                0 => sim.cut_broker_link(),
                1 => sim.broker.as_mut().expect("broker").stalled = true,
                _ => sim.broker.as_mut().expect("broker").stalled = false,
            }
            load(&mut sim, events, Duration::from_millis(250));
            check_saved_sequences(&sim)?;
        }
        prop_assert!(heal(&mut sim), "never caught up: {:?}", sim.shard.state());
        check_saved_sequences(&sim)?;
        let broker = sim.broker.as_ref().expect("broker");
        for (_, _, id) in published(&sim) {
            prop_assert!(
                broker.held.contains(&id) || (!hold && broker.returned.contains(&id)),
                "{id} lost"
            );
        }
        prop_assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
    }
}
