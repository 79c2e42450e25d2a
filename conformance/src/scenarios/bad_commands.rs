//! `bad-commands`: malformed and forbidden commands from workers (undecodable bodies, op 1/2/6
//! which belong to the gateway, unknown opcodes, payloads over Discord's 4096-byte limit) never
//! reach Discord and do no harm: valid commands sent between them still arrive, the connection
//! and its session survive. With the native profile each bad command is dead-lettered to
//! `gateway.commands.dlx` with an `x-gatehouse-error` header saying why.

use std::time::Duration;

use serde_json::json;

use crate::broker::{ExchangeType, HeaderValue};
use crate::gateway;
use crate::profiles::{OutgoingMessage, Profile, Target};
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture};
use crate::scenarios::commands::request_members;
use crate::scenarios::{COMMAND_BUDGET, frames_with_marker, start_and_wait_ready};
use crate::{ensure, fail};

/// See the module docs.
pub struct BadCommands;

impl Scenario for BadCommands {
    fn name(&self) -> String {
        "bad-commands".into()
    }

    fn description(&self) -> String {
        "malformed/forbidden commands are rejected (dead-lettered for native), valid ones still flow".into()
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // Which commands a worker may send (not op 1, 2, 6, ...) and the dead-letter exchange
        // are the native profile's rules; the predecessors forward what workers publish.
        Requirement::native_only(profile)
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

/// A heartbeat `d` no real client would send, to recognise a forwarded op 1.
const HEARTBEAT_MARKER: u64 = 424_242;

fn target(profile: Profile) -> Target {
    if profile
        .command_modes()
        .contains(&crate::profiles::CommandMode::Shard)
    {
        Target::Shard(0)
    } else {
        Target::AllShards
    }
}

/// The bad commands, each with a label.
fn bad_commands(ctx: &Context) -> Vec<(&'static str, OutgoingMessage)> {
    let profile = ctx.profile;
    let encoding = ctx.body_encoding;
    let target = target(profile);
    let packet = |p: serde_json::Value| {
        profile
            .command(encoding, target, &p)
            .expect("the target is one of the profile's modes")
    };
    vec![
        (
            "undecodable body",
            profile.raw_command(0, b"\xc1 not json, not msgpack {".to_vec()),
        ),
        (
            "op 2 IDENTIFY",
            packet(json!({"op": 2, "d": {
                "token": "bad-commands-token",
                "intents": 1,
                "properties": {"os": "x", "browser": "bad-commands", "device": "x"}
            }})),
        ),
        (
            "op 6 RESUME",
            packet(
                json!({"op": 6, "d": {"token": "bad-commands-token", "session_id": "bad-commands", "seq": 1}}),
            ),
        ),
        (
            "op 1 heartbeat",
            packet(json!({"op": 1, "d": HEARTBEAT_MARKER})),
        ),
        (
            "unknown opcode 99",
            packet(json!({"op": 99, "d": {"nonce": "bad-commands-op99"}})),
        ),
        (
            "payload over 4096 bytes",
            packet(json!({"op": 3, "d": {
                "since": null,
                "activities": [{"name": format!("bad-commands-large-{}", "x".repeat(5000)), "type": 0}],
                "status": "online",
                "afk": false
            }})),
        ),
    ]
}

async fn run(ctx: &mut Context) -> Result<(), Failure> {
    let sessions = start_and_wait_ready(ctx).await?;
    let session_before = sessions[0].1.clone();
    let target = target(ctx.profile);
    ctx.wait_command_entry(target, COMMAND_BUDGET).await?;

    // Native: listen on the dead-letter exchange before sending anything.
    let dead_letters = match ctx.profile.dead_letter() {
        Some((exchange, _)) => {
            let recorder_exchange = exchange.to_owned();
            let kind = ctx
                .wait_for_async(
                    &format!("dead-letter exchange {exchange:?}"),
                    COMMAND_BUDGET,
                    |c: &Context| {
                        let name = recorder_exchange.clone();
                        Box::pin(async move {
                            let t = c.topology().await.ok()?;
                            t.exchanges
                                .iter()
                                .find(|e| e.name == name)
                                .map(|e| ExchangeType::parse(&e.kind))
                        })
                    },
                )
                .await?;
            let queue = ctx
                .broker
                .declare_private_queue()
                .await
                .map_err(|e| Failure::error(e.to_string()))?;
            let keys: Vec<String> = match kind {
                Some(ExchangeType::Fanout) | Some(ExchangeType::Headers) => vec![String::new()],
                Some(ExchangeType::Topic) => vec!["#".into()],
                // direct: the original routing keys
                _ => vec!["shard.0".into(), "all".into(), "".into()],
            };
            for key in &keys {
                ctx.broker
                    .bind(&queue, exchange, key)
                    .await
                    .map_err(|e| Failure::fail(format!("binding to {exchange}: {e}")))?;
            }
            // A second consumer would mix dead letters with events; this worker has none.
            ctx.broker
                .consume(&queue)
                .await
                .map_err(|e| Failure::error(e.to_string()))?;
            true
        }
        None => false,
    };

    let bad = bad_commands(ctx);
    let mut good_markers = Vec::new();
    for (i, (_, message)) in bad.iter().enumerate() {
        let marker = format!("good-{i}");
        ctx.send_command(target, &request_members(81_384_788_765_712_384, &marker))
            .await?;
        good_markers.push(marker);
        ctx.publish(message).await?;
    }
    let marker = "good-last".to_owned();
    ctx.send_command(target, &request_members(81_384_788_765_712_384, &marker))
        .await?;
    good_markers.push(marker);

    let recorder = ctx.gateway.recorder();
    ctx.wait_for(
        "every valid command sent between the bad ones",
        COMMAND_BUDGET,
        |_| {
            recorder.read(|r| {
                good_markers
                    .iter()
                    .all(|m| frames_with_marker(r, 0, m).next().is_some())
                    .then_some(())
            })
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rec = recorder.snapshot();

    // Nothing bad reached Discord.
    ensure!(
        rec.identifies.len() == 1,
        "a worker's op 2 IDENTIFY was sent to Discord ({} IDENTIFYs)",
        rec.identifies.len()
    );
    ensure!(
        rec.resumes.is_empty(),
        "a worker's op 6 RESUME was sent to Discord"
    );
    for conn in rec.shard_connections(0) {
        if conn
            .heartbeats
            .iter()
            .any(|h| h.seq == Some(HEARTBEAT_MARKER))
        {
            fail!("a worker's op 1 heartbeat was sent to Discord");
        }
    }
    for (marker, label) in [
        ("bad-commands-op99", "unknown opcode 99"),
        ("bad-commands-large-", "payload over 4096 bytes"),
    ] {
        ensure!(
            frames_with_marker(&rec, 0, marker).next().is_none(),
            "the {label} command was sent to Discord"
        );
    }
    // No harm: same connection, same session, no violations.
    gateway::no_violations(&rec).map_err(Failure::fail)?;
    let live = rec
        .live_connection(0)
        .ok_or_else(|| Failure::fail("shard 0 lost its connection"))?;
    ensure!(
        live.session_id.as_deref() == Some(session_before.as_str()) && rec.connections.len() == 1,
        "shard 0 reconnected while handling bad commands"
    );

    if dead_letters {
        let (_, header) = ctx.profile.dead_letter().expect("native has one");
        let inbox = ctx.broker.inbox().clone();
        let arrived = inbox
            .wait_until(COMMAND_BUDGET, |d| d.len() >= bad.len())
            .await;
        let got = inbox.snapshot();
        if !arrived {
            fail!(
                "{} of {} bad commands were dead-lettered to {:?} within {:.0?}",
                got.len(),
                bad.len(),
                ctx.profile.dead_letter().map(|d| d.0),
                COMMAND_BUDGET
            );
        }
        for d in &got {
            match d.header(header) {
                Some(HeaderValue::Str(why)) if !why.is_empty() => {}
                other => {
                    fail!("a dead-lettered command has {header} = {other:?}, expected the reason")
                }
            }
        }
    }
    Ok(())
}
