//! `topology` and `topology-commands`: in an empty vhost the gateway declares the profile's
//! exchanges and queues with exactly the documented types and flags (a mismatch makes the
//! profile's workers fail with 406 PRECONDITION_FAILED). `topology` checks the events side (the
//! events exchange, and Retsu's `gateway:<EVENT>` queues for the events it publishes);
//! `topology-commands` the command side (command exchange or queue, the gateway's command
//! queue(s) bound to it, the native dead-letter exchange). The command side is a Gatehouse
//! extension for Cordis, whose 1.x contract has no commands.

use std::time::Duration;

use crate::profiles::{ExchangeSpec, Profile};
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture};
use crate::scenarios::start_and_wait_ready;
use crate::worker::TopologySnapshot;
use crate::{ensure, fail};

/// See the module docs.
pub struct Topology {
    /// The command side instead of the events side.
    pub commands: bool,
}

impl Scenario for Topology {
    fn name(&self) -> String {
        if self.commands {
            "topology-commands".into()
        } else {
            "topology".into()
        }
    }

    fn description(&self) -> String {
        if self.commands {
            "command exchange/queue, the gateway's bound command queue, the dead-letter exchange, with the profile's exact names, types and flags".into()
        } else {
            "the events exchange (and Retsu's gateway:<EVENT> queues) with the profile's exact names, types and flags".into()
        }
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        if self.commands {
            Requirement::extension_for(profile, &[Profile::Cordis])
        } else {
            Some(Requirement::Required)
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(90)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx, self.commands))
    }
}

fn exchange_problem(spec: &ExchangeSpec, t: &TopologySnapshot) -> Option<String> {
    match t.exchanges.iter().find(|e| e.name == spec.name) {
        None => Some(format!("exchange {:?} is missing", spec.name)),
        Some(e)
            if e.kind != spec.kind.as_str()
                || e.durable != spec.durable
                || e.auto_delete != spec.auto_delete =>
        {
            Some(format!(
                "exchange {:?} is {} durable={} auto_delete={}, expected {} durable={} auto_delete={}",
                spec.name,
                e.kind,
                e.durable,
                e.auto_delete,
                spec.kind.as_str(),
                spec.durable,
                spec.auto_delete
            ))
        }
        Some(_) => None,
    }
}

/// Everything expected on the events side that is missing or wrong.
fn event_problems(profile: Profile, t: &TopologySnapshot) -> Vec<String> {
    let mut problems: Vec<String> = exchange_problem(&profile.events_exchange(), t)
        .into_iter()
        .collect();
    if profile == Profile::Retsu {
        match t.queues.iter().find(|q| q.name == "gateway:READY") {
            None => {
                problems.push("queue gateway:READY is missing (declared on the first READY)".into())
            }
            Some(q) if !q.durable => problems.push("queue gateway:READY is not durable".into()),
            Some(_) => {
                if !t.bindings.iter().any(|b| {
                    b.source == "gateway"
                        && b.destination == "gateway:READY"
                        && b.routing_key == "READY"
                }) {
                    problems.push("gateway:READY is not bound to gateway with READY".into());
                }
            }
        }
    }
    problems
}

/// Everything expected on the command side that is missing or wrong.
fn command_problems(profile: Profile, t: &TopologySnapshot) -> Vec<String> {
    let expected = profile.expected_topology();
    let events = profile.events_exchange().name;
    let mut problems: Vec<String> = expected
        .exchanges
        .iter()
        .filter(|spec| spec.name != events)
        .filter_map(|spec| exchange_problem(spec, t))
        .collect();
    for spec in &expected.queues {
        match t.queues.iter().find(|q| q.name == spec.name) {
            None => problems.push(format!("queue {:?} is missing", spec.name)),
            Some(q) if q.durable != spec.durable => problems.push(format!(
                "queue {:?} has durable={}, expected {}",
                spec.name, q.durable, spec.durable
            )),
            Some(_) => {}
        }
    }
    if let Some(dlx) = expected.dead_letter_exchange
        && !t.exchanges.iter().any(|e| e.name == dlx)
    {
        problems.push(format!("dead-letter exchange {dlx:?} is missing"));
    }
    // Command queues bound where workers publish.
    let bound = |exchange: &str| t.bindings.iter().any(|b| b.source == exchange);
    match profile {
        Profile::Gatehouse if !bound("gateway.commands") => {
            problems.push("no queue is bound to gateway.commands".into())
        }
        Profile::Cordis => {
            if !bound("gateway_commands") {
                problems.push("no queue is bound to gateway_commands".into());
            }
            // @cordis/brokers binds a server-named, exclusive queue (no auto-delete: an
            // exclusive queue goes with its connection anyway).
            for b in t.bindings.iter().filter(|b| b.source == "gateway_commands") {
                if let Some(q) = t.queues.iter().find(|q| q.name == b.destination)
                    && !q.exclusive
                {
                    problems.push(format!(
                        "command queue {:?} should be exclusive (one per gateway connection)",
                        q.name
                    ));
                }
            }
        }
        Profile::Retsu if !bound("gateway-command") => {
            problems.push("no queue is bound to gateway-command".into());
        }
        Profile::Spectacles
            if !t
                .bindings
                .iter()
                .any(|b| b.source == "gateway" && b.routing_key == "0") =>
        {
            problems.push(
                "no command queue is bound to gateway with routing key \"0\" (shard 0)".into(),
            );
        }
        _ => {}
    }
    problems
}

/// Everything expected that is missing or wrong, or `None` when the topology is complete.
fn problems(profile: Profile, commands: bool, t: &TopologySnapshot) -> Option<String> {
    let problems = if commands {
        command_problems(profile, t)
    } else {
        event_problems(profile, t)
    };
    if problems.is_empty() {
        None
    } else {
        Some(problems.join("; "))
    }
}

async fn run(ctx: &mut Context, commands: bool) -> Result<(), Failure> {
    start_and_wait_ready(ctx).await?;
    let profile = ctx.profile;
    let mut last = String::new();
    for _ in 0..60 {
        let snapshot = ctx.topology().await?;
        match problems(profile, commands, &snapshot) {
            None => {
                ctx.check_running()?;
                return Ok(());
            }
            Some(p) => last = p,
        }
        ctx.observe(Duration::from_millis(250)).await?;
    }
    ensure!(last.is_empty(), "{last}");
    fail!("topology incomplete")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Cordis vhost as `@cordis/brokers` leaves it: the command queue is server-named and
    /// exclusive, `auto_delete` as given.
    fn cordis(exclusive: bool, auto_delete: bool) -> TopologySnapshot {
        fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
            serde_json::from_value(v).expect("valid")
        }
        TopologySnapshot {
            exchanges: vec![
                json(
                    serde_json::json!({"name": "gateway", "type": "direct", "durable": false, "auto_delete": false}),
                ),
                json(
                    serde_json::json!({"name": "gateway_commands", "type": "fanout", "durable": true, "auto_delete": false}),
                ),
            ],
            queues: vec![json(serde_json::json!({
                "name": "amq.gen-abc", "durable": false, "exclusive": exclusive,
                "auto_delete": auto_delete, "arguments": {}
            }))],
            bindings: vec![json(serde_json::json!({
                "source": "gateway_commands", "destination": "amq.gen-abc",
                "destination_type": "queue", "routing_key": ""
            }))],
        }
    }

    #[test]
    fn cordis_command_queue_needs_exclusive_not_auto_delete() {
        assert_eq!(problems(Profile::Cordis, false, &cordis(true, false)), None);
        assert_eq!(problems(Profile::Cordis, true, &cordis(true, false)), None);
        assert_eq!(problems(Profile::Cordis, true, &cordis(true, true)), None);
        let shared = problems(Profile::Cordis, true, &cordis(false, false)).expect("a problem");
        assert!(shared.contains("exclusive"), "{shared}");
        // The events side does not look at commands at all.
        assert_eq!(
            problems(Profile::Cordis, false, &cordis(false, false)),
            None
        );
    }
}
