//! `redis-session`: once the client has caught up, the session it could resume from is in
//! Redis, under `REDIS_KEY_PREFIX`: for every profile some key holds the session id (an extension
//! for Cordis and Retsu, which define no session store); the
//! Spectacles profile keeps `<prefix><shard>session` / `<prefix><shard>seq`, twilight-dispatch
//! `<prefix>gateway_sessions` (`{"<shard>":{"session_id":..,"sequence":..}}`) and
//! `<prefix>gateway_shards`.

use std::time::Duration;

use crate::profiles::Profile;
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture};
use crate::scenarios::{start_and_wait_ready, wait_caught_up};

/// See the module docs.
pub struct RedisSession;

impl Scenario for RedisSession {
    fn name(&self) -> String {
        "redis-session".into()
    }

    fn description(&self) -> String {
        "the resumable session (id, sequence) is kept in Redis under REDIS_KEY_PREFIX".into()
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // Cordis and Retsu define no session store; Gatehouse keeps one in every profile.
        Requirement::extension_for(profile, &[Profile::Cordis, Profile::Retsu])
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
    let session_id = sessions[0].1.clone();
    let last_seq = wait_caught_up(ctx, 0).await?;
    let profile = ctx.profile;
    let what = match profile {
        Profile::Spectacles => format!(
            "keys {p}0session = {session_id:?} and {p}0seq = {last_seq}",
            p = ctx.redis.prefix()
        ),
        Profile::TwilightDispatch => format!(
            "key {p}gateway_sessions with shard 0's session {session_id:?} at sequence {last_seq}, and {p}gateway_shards = 1",
            p = ctx.redis.prefix()
        ),
        _ => format!(
            "a key under {:?} holding session id {session_id:?}",
            ctx.redis.prefix()
        ),
    };
    let result = ctx
        .wait_for_async(&what, Duration::from_secs(20), |c: &Context| {
            let session_id = session_id.clone();
            Box::pin(async move { check(c, profile, &session_id, last_seq).await.ok() })
        })
        .await;
    let last_seen = if result.is_err() {
        match ctx.redis.entries().await {
            Ok(entries) if entries.is_empty() => " (no key under the prefix)".into(),
            Ok(entries) => format!(
                " (keys: {})",
                entries
                    .iter()
                    .map(|e| format!("{}={:.80}", e.key, e.value))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!(" ({e})"),
        }
    } else {
        String::new()
    };
    result.map_err(|f| Failure {
        message: format!("{}{last_seen}", f.message),
        ..f
    })
}

async fn check(ctx: &Context, profile: Profile, session_id: &str, seq: u64) -> Result<(), String> {
    let redis = &ctx.redis;
    match profile {
        Profile::Spectacles => {
            let session = redis.get("0session").await.map_err(|e| e.to_string())?;
            let stored_seq = redis.get("0seq").await.map_err(|e| e.to_string())?;
            if session.as_deref() == Some(session_id) && stored_seq == Some(seq.to_string()) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        }
        Profile::TwilightDispatch => {
            let sessions = redis
                .get("gateway_sessions")
                .await
                .map_err(|e| e.to_string())?;
            let shards = redis
                .get("gateway_shards")
                .await
                .map_err(|e| e.to_string())?;
            let v: serde_json::Value = serde_json::from_str(sessions.as_deref().unwrap_or("null"))
                .map_err(|e| e.to_string())?;
            let ok = v["0"]["session_id"] == session_id
                && v["0"]["sequence"] == seq
                && shards.as_deref().map(str::trim) == Some("1");
            if ok { Ok(()) } else { Err("not yet".into()) }
        }
        _ => {
            let entries = redis.entries().await.map_err(|e| e.to_string())?;
            if entries.iter().any(|e| e.value.contains(session_id)) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        }
    }
}
