//! `topology`: in an empty vhost the gateway declares the profile's exchanges and queues with
//! exactly the documented types and flags (a mismatch makes the profile's workers fail with 406
//! PRECONDITION_FAILED), binds its command queue(s), and for Retsu declares `gateway:<EVENT>`
//! for the events it publishes.

use std::time::Duration;

use crate::profiles::Profile;
use crate::scenario::{Context, Failure, Scenario, ScenarioFuture};
use crate::scenarios::start_and_wait_ready;
use crate::worker::TopologySnapshot;
use crate::{ensure, fail};

/// See the module docs.
pub struct Topology;

impl Scenario for Topology {
    fn name(&self) -> String {
        "topology".into()
    }

    fn description(&self) -> String {
        "exchanges and queues declared with the profile's exact names, types and flags".into()
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(90)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

/// Everything expected that is missing or wrong, or `None` when the topology is complete.
fn problems(profile: Profile, t: &TopologySnapshot) -> Option<String> {
    let expected = profile.expected_topology();
    let mut problems = Vec::new();
    for spec in &expected.exchanges {
        match t.exchanges.iter().find(|e| e.name == spec.name) {
            None => problems.push(format!("exchange {:?} is missing", spec.name)),
            Some(e) => {
                if e.kind != spec.kind.as_str()
                    || e.durable != spec.durable
                    || e.auto_delete != spec.auto_delete
                {
                    problems.push(format!(
                        "exchange {:?} is {} durable={} auto_delete={}, expected {} durable={} auto_delete={}",
                        spec.name, e.kind, e.durable, e.auto_delete,
                        spec.kind.as_str(), spec.durable, spec.auto_delete
                    ));
                }
            }
        }
    }
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
            for b in t.bindings.iter().filter(|b| b.source == "gateway_commands") {
                if let Some(q) = t.queues.iter().find(|q| q.name == b.destination)
                    && !(q.exclusive && q.auto_delete)
                {
                    problems.push(format!(
                        "command queue {:?} should be exclusive and auto-delete (one per gateway)",
                        q.name
                    ));
                }
            }
        }
        Profile::Retsu => {
            if !bound("gateway-command") {
                problems.push("no queue is bound to gateway-command".into());
            }
            match t.queues.iter().find(|q| q.name == "gateway:READY") {
                None => problems
                    .push("queue gateway:READY is missing (declared on the first READY)".into()),
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
    if problems.is_empty() {
        None
    } else {
        Some(problems.join("; "))
    }
}

async fn run(ctx: &mut Context) -> Result<(), Failure> {
    start_and_wait_ready(ctx).await?;
    let profile = ctx.profile;
    let mut last = String::new();
    for _ in 0..60 {
        let snapshot = ctx.topology().await?;
        match problems(profile, &snapshot) {
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
