//! `commands`: a worker's commands, published the profile's way in every addressing mode it
//! defines (by shard, by guild id, to every shard), reach exactly the right shard(s) of the mock,
//! once each, as the packet the worker asked for.

use std::time::Duration;

use serde_json::json;

use crate::gateway;
use crate::profiles::Profile;
use crate::profiles::{CommandMode, Target};
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::{COMMAND_BUDGET, frames_with_marker, start_and_wait_ready};
use crate::{ensure, fail};

/// See the module docs.
pub struct Commands;

const SHARDS: u32 = 2;

/// A guild id whose shard (`(id >> 22) % SHARDS`) is `shard`.
pub fn guild_on_shard(shard: u32, shard_count: u32) -> u64 {
    let base: u64 = 81_384_788_765_712_384; // a real-looking snowflake
    (0..u64::from(shard_count))
        .map(|i| base + (i << 22))
        .find(|g| (g >> 22) % u64::from(shard_count) == u64::from(shard))
        .expect("one of shard_count consecutive ids lands on each shard")
}

/// One command to send and where it must arrive.
struct Case {
    target: Target,
    packet: serde_json::Value,
    marker: String,
    shards: Vec<u32>,
}

fn cases(ctx: &Context) -> Vec<Case> {
    let mut cases = Vec::new();
    for mode in ctx.profile.command_modes() {
        match mode {
            CommandMode::Shard => {
                for shard in 0..SHARDS {
                    let marker = format!("cmd-shard-{shard}");
                    let guild = guild_on_shard(shard, SHARDS);
                    cases.push(Case {
                        target: Target::Shard(shard),
                        packet: request_members(guild, &marker),
                        marker,
                        shards: vec![shard],
                    });
                }
            }
            CommandMode::Guild => {
                for shard in 0..SHARDS {
                    let guild = guild_on_shard(shard, SHARDS);
                    let marker = format!("cmd-guild-{guild}");
                    cases.push(Case {
                        target: Target::Guild(guild),
                        packet: request_members(guild, &marker),
                        marker,
                        shards: vec![shard],
                    });
                }
            }
            CommandMode::AllShards => {
                let marker = "cmd-all-shards".to_owned();
                cases.push(Case {
                    target: Target::AllShards,
                    packet: json!({"op": 3, "d": {
                        "since": null,
                        "activities": [{"name": marker, "type": 0}],
                        "status": "online",
                        "afk": false
                    }}),
                    marker,
                    shards: (0..SHARDS).collect(),
                });
            }
        }
    }
    cases
}

/// Op 8 Request Guild Members with a nonce that identifies it.
pub fn request_members(guild: u64, nonce: &str) -> serde_json::Value {
    json!({"op": 8, "d": {"guild_id": guild.to_string(), "query": "", "limit": 0, "nonce": nonce}})
}

impl Scenario for Commands {
    fn name(&self) -> String {
        "commands".into()
    }

    fn description(&self) -> String {
        "commands by shard / by guild / to every shard reach exactly the right shards, once".into()
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // The Cordis spec dropped commands in 2021 (commit e839c6f); the 1.x service consumes
        // none. Gatehouse keeps offering them.
        Requirement::extension_for(profile, &[Profile::Cordis])
    }

    fn setup(&self, _profile: Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(SHARDS)
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
    let cases = cases(ctx);
    for case in &cases {
        ctx.wait_command_entry(case.target, COMMAND_BUDGET).await?;
        ctx.send_command(case.target, &case.packet).await?;
    }
    let recorder = ctx.gateway.recorder();
    for case in &cases {
        let label = format!("{:?}", case.target);
        ctx.wait_for(
            &format!("command {label} on shard(s) {:?}", case.shards),
            COMMAND_BUDGET,
            |_| {
                recorder.read(|r| {
                    case.shards
                        .iter()
                        .all(|&s| frames_with_marker(r, s, &case.marker).next().is_some())
                        .then_some(())
                })
            },
        )
        .await?;
    }
    // Late duplicates or strays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rec = recorder.snapshot();
    for case in &cases {
        for shard in 0..SHARDS {
            let frames: Vec<_> = frames_with_marker(&rec, shard, &case.marker).collect();
            let expected = usize::from(case.shards.contains(&shard));
            if frames.len() != expected {
                fail!(
                    "command {:?} arrived {} time(s) on shard {shard}, expected {expected} (it belongs on {:?})",
                    case.target,
                    frames.len(),
                    case.shards
                );
            }
            if let Some(frame) = frames.first() {
                let got: serde_json::Value = serde_json::from_slice(&frame.json)
                    .map_err(|e| Failure::fail(format!("command frame is not JSON: {e}")))?;
                ensure!(
                    got["op"] == case.packet["op"] && got["d"] == case.packet["d"],
                    "command {:?} reached shard {shard} as {got}, expected {}",
                    case.target,
                    case.packet
                );
            }
        }
    }
    gateway::no_violations(&rec).map_err(Failure::fail)?;
    Ok(())
}
