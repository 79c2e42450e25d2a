//! `handshake`: the client fetches `/gateway/bot` with the token, connects with
//! `v=<DISCORD_API_VERSION>` (10 unless the run names another) and the
//! configured encoding and compression, sends one IDENTIFY per shard with the right token, shard
//! pair, intents and properties, and then heartbeats on time with the last sequence it received.

use std::time::Duration;

use crate::gateway::{self, IdentifyOutcome};
use crate::scenario::{Context, Failure, Scenario, ScenarioFuture, Setup};
use crate::scenarios::{ms, start_and_wait_ready};
use crate::{ensure, fail};

/// See the module docs.
pub struct Handshake;

const SHARDS: u32 = 2;

impl Scenario for Handshake {
    fn name(&self) -> String {
        "handshake".into()
    }

    fn description(&self) -> String {
        "GET /gateway/bot, IDENTIFY (token, shard, intents, properties), heartbeat timing and sequence".into()
    }

    fn setup(&self, _profile: crate::profiles::Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(SHARDS)
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(90)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &mut Context) -> Result<(), Failure> {
    let sessions = start_and_wait_ready(ctx).await?;
    let interval = ctx.gateway.config().heartbeat_interval;
    // Watch four intervals of heartbeats.
    ctx.observe(interval * 4 + Duration::from_millis(500))
        .await?;
    let rec = ctx.gateway.recorder().snapshot();

    // REST
    ensure!(
        rec.http
            .iter()
            .any(|h| h.status == 200 && h.path.contains("/gateway/bot")),
        "no successful GET {{DISCORD_API_BASE}}/gateway/bot with `Authorization: Bot <token>` (requests: {:?})",
        rec.http
            .iter()
            .map(|h| (&h.path, h.status))
            .collect::<Vec<_>>()
    );

    // Connection URLs
    for c in &rec.connections {
        let Some(params) = &c.params else {
            fail!("connection {} has a bad query string {:?}", c.id.0, c.query);
        };
        ensure!(
            params.version == Some(ctx.env.api_version),
            "connection {} asks for gateway version {:?}, DISCORD_API_VERSION is {}",
            c.id.0,
            params.version,
            ctx.env.api_version
        );
        ensure!(
            params.encoding == gateway::mock_encoding(ctx.setup.encoding),
            "connection {} uses encoding {:?}, DISCORD_ENCODING is {}",
            c.id.0,
            params.encoding,
            ctx.setup.encoding.as_str()
        );
        ensure!(
            params.compression == gateway::mock_compression(ctx.setup.compress),
            "connection {} uses compression {:?}, DISCORD_COMPRESS is {}",
            c.id.0,
            params.compression,
            ctx.setup.compress.as_str()
        );
    }

    // IDENTIFY: one per shard, right fields
    gateway::no_violations(&rec).map_err(Failure::fail)?;
    for &(shard, _) in &sessions {
        let identifies: Vec<_> = rec
            .identifies
            .iter()
            .filter(|i| i.shard.is_some_and(|s| s[0] == shard))
            .collect();
        ensure!(
            identifies.len() == 1,
            "shard {shard} sent {} IDENTIFYs, expected exactly one",
            identifies.len()
        );
        let identify = identifies[0];
        ensure!(
            identify.token_ok,
            "shard {shard}: IDENTIFY carries the wrong token"
        );
        ensure!(
            identify.shard == Some([shard, SHARDS]),
            "shard {shard}: IDENTIFY `shard` is {:?}, expected [{shard}, {SHARDS}]",
            identify.shard
        );
        ensure!(
            identify.intents == Some(ctx.setup.intents),
            "shard {shard}: IDENTIFY intents {:?}, DISCORD_INTENTS is {}",
            identify.intents,
            ctx.setup.intents
        );
        ensure!(
            matches!(identify.outcome, IdentifyOutcome::Ready { .. }),
            "shard {shard}: IDENTIFY was answered with {:?}",
            identify.outcome
        );
        let d: serde_json::Value = serde_json::from_slice(&identify.d)
            .map_err(|e| Failure::fail(format!("shard {shard}: IDENTIFY `d` is not JSON: {e}")))?;
        for field in ["os", "browser", "device"] {
            ensure!(
                d["properties"][field].is_string(),
                "shard {shard}: IDENTIFY `properties.{field}` is missing (properties must be {{os, browser, device}})"
            );
        }
    }
    ensure!(
        rec.resumes.is_empty(),
        "a fresh start sent RESUME (nothing to resume)"
    );

    // Heartbeats
    let late_after = interval + gateway::late_slack(interval);
    for &(shard, _) in &sessions {
        let conn = rec
            .live_connection(shard)
            .ok_or_else(|| Failure::fail(format!("shard {shard} lost its connection")))?;
        let beats = &conn.heartbeats;
        ensure!(
            beats.len() >= 3,
            "shard {shard}: {} heartbeat(s) in {} of connection time with heartbeat_interval {} (expected one per interval)",
            beats.len(),
            ms(conn.opened_at.elapsed()),
            ms(interval)
        );
        let first = &beats[0];
        ensure!(
            first.since_previous <= late_after,
            "shard {shard}: first heartbeat {} after HELLO; it must come within heartbeat_interval * jitter ({} here)",
            ms(first.since_previous),
            ms(interval)
        );
        for (i, beat) in beats.iter().enumerate().skip(1) {
            if beat.requested {
                continue;
            }
            ensure!(
                beat.since_previous <= late_after,
                "shard {shard}: heartbeat #{} came {} after the previous one (interval {})",
                i + 1,
                ms(beat.since_previous),
                ms(interval)
            );
            ensure!(
                beat.since_previous >= interval / 2,
                "shard {shard}: heartbeat #{} came only {} after the previous one (interval {}): heartbeats count against the 120/60 s limit",
                i + 1,
                ms(beat.since_previous),
                ms(interval)
            );
        }
        // The last heartbeat carries the last sequence the client received (the replay was sent
        // right after READY, long before).
        let last_seq = gateway::last_sent_seq(&rec, shard);
        let last_beat = beats.last().expect("checked above");
        ensure!(
            last_beat.seq == Some(last_seq),
            "shard {shard}: heartbeat `d` is {:?}, expected the last sequence received ({last_seq})",
            last_beat.seq
        );
    }
    Ok(())
}
