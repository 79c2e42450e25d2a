//! `heartbeat-request`: when the server sends op 1, the client heartbeats at once (without
//! waiting for its interval), and keeps its regular rhythm afterwards.

use std::time::{Duration, Instant};

use crate::gateway;
use crate::scenario::{Context, Failure, Scenario, ScenarioFuture, Setup};
use crate::scenarios::{ms, start_and_wait_ready};
use crate::{ensure, fail};

/// See the module docs.
pub struct HeartbeatRequest;

/// Long, so that a scheduled heartbeat is unlikely to pass for the requested one.
const INTERVAL: Duration = Duration::from_secs(8);
/// "Immediately", on a loaded machine.
const PROMPT: Duration = Duration::from_millis(1500);

impl Scenario for HeartbeatRequest {
    fn name(&self) -> String {
        "heartbeat-request".into()
    }

    fn description(&self) -> String {
        "a server op 1 is answered with a heartbeat at once".into()
    }

    fn setup(&self, _profile: crate::profiles::Profile) -> Setup {
        Setup::default().with_heartbeat_interval(INTERVAL)
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(90)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &mut Context) -> Result<(), Failure> {
    start_and_wait_ready(ctx).await?;
    let recorder = ctx.gateway.recorder();
    // Ask right after a regular heartbeat, so the next scheduled one is a whole interval away.
    let before = ctx
        .wait_for("a first heartbeat", INTERVAL * 2, |_| {
            recorder.read(|r| {
                let n = r.live_connection(0)?.heartbeats.len();
                (n >= 1).then_some(n)
            })
        })
        .await?;
    let asked = Instant::now();
    ctx.steer_mock(|control| control.shard(0).request_heartbeat())?;
    let beat = ctx
        .wait_for("heartbeat after the server's op 1", INTERVAL, |_| {
            recorder.read(|r| r.live_connection(0)?.heartbeats.get(before).cloned())
        })
        .await?;
    let delay = beat.at.saturating_duration_since(asked);
    if delay > PROMPT {
        fail!(
            "the heartbeat requested with op 1 came {} later (expected at once; the interval is {})",
            ms(delay),
            ms(INTERVAL)
        );
    }
    let rec = recorder.snapshot();
    gateway::no_violations(&rec).map_err(Failure::fail)?;
    ensure!(
        rec.live_connection(0).is_some(),
        "the connection closed after the heartbeat request"
    );
    Ok(())
}
