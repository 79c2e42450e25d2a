//! `fault-command-flood`: under load, a worker floods shard 0 with commands (far more than
//! Discord's 120 per 60 s let through, so they queue for minutes) and then sends a few commands
//! to shard 1. Shard 1's commands must not wait behind shard 0's queue: each must reach the mock
//! within the usual command budget. No command may reach the wrong shard, no rate limit may be
//! broken, and no event may be missing.

use std::time::{Duration, Instant};

use crate::gateway;
use crate::profiles::{CommandMode, Profile, Target};
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::commands::{guild_on_shard, request_members};
use crate::scenarios::fault::{self, FaultRun, SHARDS, scaled};
use crate::scenarios::fault_process::LEAD;
use crate::scenarios::{COMMAND_BUDGET, frames_with_marker};

/// See the module docs.
pub struct CommandFlood;

/// Commands flooded onto shard 0.
pub const FLOOD: usize = 300;
/// Commands then sent to shard 1, one per [`PROBE_GAP`].
pub const PROBES: usize = 5;
/// The gap between two probes.
pub const PROBE_GAP: Duration = Duration::from_secs(2);

impl Scenario for CommandFlood {
    fn name(&self) -> String {
        "fault-command-flood".into()
    }

    fn description(&self) -> String {
        format!("{FLOOD} commands to shard 0 do not hold up shard 1's commands; no event missing")
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        if !profile.command_modes().contains(&CommandMode::Shard) {
            return None;
        }
        // Zero loss under faults is Gatehouse's promise (RELIABILITY.md), not the predecessors'.
        Requirement::native_only(profile)
    }

    fn setup(&self, _profile: Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(SHARDS)
    }

    fn budget(&self) -> Duration {
        fault::budget(Duration::from_secs(240), LEAD * 2)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &mut Context) -> Result<(), Failure> {
    let worker_url = ctx.env.amqp_url.clone();
    let mut run = FaultRun::begin(ctx, &worker_url).await?;
    for shard in [0, 1] {
        ctx.wait_command_entry(Target::Shard(shard), COMMAND_BUDGET)
            .await?;
    }
    let lead = ctx.observe(scaled(LEAD)).await;
    run.note(lead);

    let prefix = format!("flood:{}", ctx.env.redis_key_prefix);
    let guild0 = guild_on_shard(0, SHARDS);
    for i in 0..FLOOD {
        let packet = request_members(guild0, &format!("{prefix}0:{i}"));
        ctx.send_command(Target::Shard(0), &packet).await?;
    }
    let guild1 = guild_on_shard(1, SHARDS);
    let mut probes = Vec::new();
    for i in 0..PROBES {
        let marker = format!("{prefix}1:{i}");
        ctx.send_command(Target::Shard(1), &request_members(guild1, &marker))
            .await?;
        probes.push((marker, Instant::now()));
        tokio::time::sleep(PROBE_GAP).await;
    }
    let last_sent = probes.last().map_or_else(Instant::now, |p| p.1);
    let _ = ctx
        .observe(COMMAND_BUDGET.saturating_sub(last_sent.elapsed()))
        .await;
    let rec = ctx.gateway.recorder().snapshot();
    let mut late = Vec::new();
    for (marker, sent_at) in &probes {
        let arrived = frames_with_marker(&rec, 1, marker).next().map(|f| f.at);
        match arrived {
            Some(at) if at.saturating_duration_since(*sent_at) <= COMMAND_BUDGET => {}
            Some(at) => late.push(format!(
                "{:.1} s",
                at.saturating_duration_since(*sent_at).as_secs_f64()
            )),
            None => late.push("never".into()),
        }
    }
    if !late.is_empty() {
        run.problem(format!(
            "{} of {PROBES} commands to shard 1 did not reach it within {} while shard 0 was flooded (arrived after: {}); shard 0 had received {} of the {FLOOD} flood commands",
            late.len(),
            crate::scenarios::ms(COMMAND_BUDGET),
            late.join(", "),
            frames_with_marker(&rec, 0, &format!("{prefix}0:")).count()
        ));
    }
    let strays = frames_with_marker(&rec, 1, &format!("{prefix}0:")).count()
        + frames_with_marker(&rec, 0, &format!("{prefix}1:")).count();
    if strays > 0 {
        run.problem(format!("{strays} command(s) reached the wrong shard"));
    }
    if let Err(v) = gateway::no_violations(&rec) {
        run.problem(v);
    }
    let tail = ctx.observe(scaled(LEAD)).await;
    run.note(tail);
    run.finish(ctx).await.map(drop)
}
