//! `identify-concurrency`: with several shards and `max_concurrency` 2, the client identifies
//! at most once per 5 s in each bucket (`shard_id % max_concurrency`), starts the buckets' rounds
//! in order (shards 0-1, then 2-3), and every shard gets its session without op 9 retries.

use std::time::Duration;

use crate::gateway::{self, IdentifyOutcome};
use crate::scenario::{Context, Failure, Scenario, ScenarioFuture, Setup};
use crate::scenarios::{ms, start_and_wait_ready};
use crate::{ensure, fail};

/// See the module docs.
pub struct IdentifyConcurrency;

const SHARDS: u32 = 4;
const MAX_CONCURRENCY: u32 = 2;
const WINDOW: Duration = gateway::IDENTIFY_WINDOW;
const TOLERANCE: Duration = gateway::IDENTIFY_TOLERANCE;

impl Scenario for IdentifyConcurrency {
    fn name(&self) -> String {
        "identify-concurrency".into()
    }

    fn description(&self) -> String {
        format!(
            "{SHARDS} shards, max_concurrency {MAX_CONCURRENCY}: one IDENTIFY per bucket per 5 s, buckets in order"
        )
    }

    fn setup(&self, _profile: crate::profiles::Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(MAX_CONCURRENCY)
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &mut Context) -> Result<(), Failure> {
    start_and_wait_ready(ctx).await?;
    let rec = ctx.gateway.recorder().snapshot();
    gateway::no_violations(&rec).map_err(Failure::fail)?;
    let mut ready = Vec::new();
    for identify in &rec.identifies {
        let Some([shard, _]) = identify.shard else {
            fail!("an IDENTIFY without a valid `shard`");
        };
        if !matches!(identify.outcome, IdentifyOutcome::Ready { .. }) {
            fail!(
                "shard {shard}'s IDENTIFY was answered with {:?} (identify concurrency exceeded?)",
                identify.outcome
            );
        }
        ready.push((shard, identify.at));
    }
    ensure!(
        ready.len() == SHARDS as usize,
        "{} IDENTIFYs for {SHARDS} shards",
        ready.len()
    );
    // One identify per bucket per window.
    for bucket in 0..MAX_CONCURRENCY {
        let times: Vec<_> = ready
            .iter()
            .filter(|(s, _)| s % MAX_CONCURRENCY == bucket)
            .map(|(_, t)| *t)
            .collect();
        for pair in times.windows(2) {
            let gap = pair[1].saturating_duration_since(pair[0]);
            ensure!(
                gap + TOLERANCE >= WINDOW,
                "bucket {bucket} identified twice within {} (at most once per 5 s)",
                ms(gap)
            );
        }
    }
    // Rounds in order: every shard of round k identifies before any shard of round k + 1.
    let round = |s: u32| s / MAX_CONCURRENCY;
    for (a, ta) in &ready {
        for (b, tb) in &ready {
            if round(*a) < round(*b) && tb < ta {
                fail!(
                    "shard {b} identified before shard {a}: buckets must start in order (shards 0-{}, then {}-{})",
                    MAX_CONCURRENCY - 1,
                    MAX_CONCURRENCY,
                    2 * MAX_CONCURRENCY - 1
                );
            }
        }
    }
    Ok(())
}
