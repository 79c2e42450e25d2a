//! `passthrough` and `passthrough-json`: every dispatch the mock sends (READY, the recorded
//! fixture with its unknown event names, and an injected unknown event with awkward bytes)
//! reaches the profile's worker exactly once, in sequence order, with the body the profile
//! defines: byte-identical where the profile passes bytes through, a lossless msgpack transcoding
//! where it uses msgpack, and the profile's routing key and properties.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::Delivery;
use crate::contract::{Compression, Encoding};
use crate::profiles::{BodyEncoding, EventContext, Fidelity, Profile, Subscription};
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::start_and_wait_ready;
use crate::{ensure, fail};

/// See the module docs.
pub struct Passthrough {
    /// `None`: the profile's default body encoding; `Some(Json)`: the JSON variant of profiles
    /// that default to msgpack.
    pub body: Option<BodyEncoding>,
    /// Transport compression.
    pub compress: Compression,
    /// Gateway encoding (with ETF only values, not bytes, can be compared).
    pub encoding: Encoding,
}

impl Passthrough {
    /// The plain variant: JSON, no compression, the profile's body encoding.
    pub const PLAIN: Passthrough = Passthrough {
        body: None,
        compress: Compression::None,
        encoding: Encoding::Json,
    };
}

/// An event name no Discord library knows.
pub const UNKNOWN_EVENT: &str = "CONFORMANCE_UNKNOWN_EVENT";

/// A `d` with everything a re-serialiser or a lossy transcoder gets wrong: 64-bit integers at
/// both ends, a float with a trailing zero, an exponent, escapes, astral-plane characters,
/// empty containers, unsorted keys and spaces.
pub const AWKWARD_D: &str = r#"{"id":"1234567890123456789","zeta":1,"big":18446744073709551615,"neg":-9223372036854775808,"float":1.50,"exp":1e3,"text":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/","raw":"ü👩‍👩‍👧","empty":{},"list":[],"nested":{"z":null,"a":[true,false,-0.5]}, "spaced" : [ 1 , 2 ]}"#;

impl Scenario for Passthrough {
    fn name(&self) -> String {
        let mut name = "passthrough".to_owned();
        if let Some(e) = self.body {
            name = format!("{name}-{}", e.as_str());
        }
        if self.compress != Compression::None {
            name = format!("{name}-{}", self.compress.as_str());
        }
        if self.encoding != Encoding::Json {
            name = format!("{name}-{}", self.encoding.as_str());
        }
        name
    }

    fn description(&self) -> String {
        let mut variant = Vec::new();
        if let Some(e) = self.body {
            variant.push(format!("BROKER_BODY_ENCODING={}", e.as_str()));
        }
        if self.compress != Compression::None {
            variant.push(format!("DISCORD_COMPRESS={}", self.compress.as_str()));
        }
        if self.encoding != Encoding::Json {
            variant.push(format!(
                "DISCORD_ENCODING={} (same values, not bytes)",
                self.encoding.as_str()
            ));
        }
        if variant.is_empty() {
            "every dispatch (unknown events too) published once, in order, with the profile's body"
                .into()
        } else {
            format!("as passthrough, with {}", variant.join(", "))
        }
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        use Profile::*;
        if let Some(e) = self.body {
            // The second body encoding of Spectacles and Cordis is Gatehouse's offer: the
            // predecessors' services publish what their worker libraries decode (msgpack).
            let applies = profile.offers_json_and_msgpack() && e != profile.default_body_encoding();
            return applies.then_some(Requirement::Extension);
        }
        match (self.compress, self.encoding) {
            // zstd-stream (2024) is younger than every predecessor.
            (Compression::ZstdStream, _) => Requirement::native_only(profile),
            // ETF: the Cordis default; twilight, Retsu and the Spectacles gateway speak JSON.
            (_, Encoding::Etf) => {
                Requirement::extension_for(profile, &[Spectacles, TwilightDispatch, Retsu])
            }
            _ => Some(Requirement::Required),
        }
    }

    fn setup(&self, _profile: Profile) -> Setup {
        Setup {
            body_encoding: self.body,
            compress: self.compress,
            encoding: self.encoding,
            ..Setup::default()
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(90)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx, self.encoding))
    }
}

async fn run(ctx: &mut Context, gateway_encoding: Encoding) -> Result<(), Failure> {
    let fidelity = match gateway_encoding {
        Encoding::Json => Fidelity::Bytes,
        Encoding::Etf => Fidelity::Values,
    };
    let mut events: Vec<String> = vec!["READY".into(), UNKNOWN_EVENT.into()];
    for e in ctx.gateway.config().fixture.events() {
        if !events.iter().any(|n| **n == *e.name) {
            events.push(e.name.to_string());
        }
    }
    ctx.subscribe_events(&events).await?;
    let sessions = start_and_wait_ready(ctx).await?;
    let session_id = sessions[0].1.clone();
    ctx.steer_mock(|control| {
        control
            .shard(0)
            .inject_dispatch(UNKNOWN_EVENT, Bytes::from_static(AWKWARD_D.as_bytes()))
    })?;

    let recorder = ctx.gateway.recorder();
    let expected_count = ctx.gateway.config().fixture.len() + 2;
    let sent = ctx
        .wait_for(
            "every dispatch sent by the mock",
            Duration::from_secs(20),
            |_| {
                let sent = recorder.sent_dispatches(0);
                (sent.len() >= expected_count).then_some(sent)
            },
        )
        .await?;
    let inbox = ctx.broker.inbox().clone();
    let arrived = inbox
        .wait_until(Duration::from_secs(20), |d| d.len() >= sent.len())
        .await;
    // A little longer, to catch duplicates.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deliveries = inbox.snapshot();
    if !arrived {
        fail!(
            "{} of {} dispatches reached the worker within 20 s; missing: {}",
            deliveries.len(),
            sent.len(),
            missing(&sent, &deliveries)
        );
    }
    ensure!(
        deliveries.len() == sent.len(),
        "{} messages for {} dispatches: events must be published exactly once (extra: {})",
        deliveries.len(),
        sent.len(),
        missing_reverse(&sent, &deliveries)
    );

    let ctx_event = EventContext {
        session_id: &session_id,
        shard: 0,
        shard_count: 1,
    };
    let profile = ctx.profile;
    let encoding = ctx.body_encoding;
    match profile.subscription() {
        Subscription::Wildcard | Subscription::OwnQueueBoundPerEvent => {
            for (i, (frame, delivery)) in sent.iter().zip(&deliveries).enumerate() {
                profile
                    .check_event(encoding, fidelity, frame, &ctx_event, delivery)
                    .map_err(|e| Failure::fail(format!("message #{}: {e}", i + 1)))?;
            }
        }
        Subscription::NamedQueuePerEvent => {
            let mut frames_by_event: BTreeMap<String, Vec<&Bytes>> = BTreeMap::new();
            for frame in &sent {
                frames_by_event
                    .entry(event_name(frame))
                    .or_default()
                    .push(frame);
            }
            let exchange = profile.events_exchange().name;
            for (event, frames) in frames_by_event {
                let queue = format!("{exchange}:{event}");
                let got: Vec<&Delivery> = deliveries.iter().filter(|d| d.queue == queue).collect();
                ensure!(
                    got.len() == frames.len(),
                    "queue {queue}: {} messages for {} {event} dispatches",
                    got.len(),
                    frames.len()
                );
                for (i, (frame, delivery)) in frames.iter().zip(got).enumerate() {
                    profile
                        .check_event(encoding, fidelity, frame, &ctx_event, delivery)
                        .map_err(|e| {
                            Failure::fail(format!("queue {queue} message #{}: {e}", i + 1))
                        })?;
                }
            }
        }
    }
    Ok(())
}

fn event_name(frame: &[u8]) -> String {
    crate::body::raw_dispatch(frame)
        .ok()
        .and_then(|r| r.event)
        .unwrap_or_default()
}

/// Event names sent but not (or less often) received, by routing key.
fn missing(sent: &[Bytes], deliveries: &[Delivery]) -> String {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for f in sent {
        *counts.entry(event_name(f)).or_default() += 1;
    }
    for d in deliveries {
        *counts.entry(d.routing_key.clone()).or_default() -= 1;
    }
    let list: Vec<String> = counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| format!("{e} x{n}"))
        .collect();
    if list.is_empty() {
        "none by routing key (check the routing keys)".into()
    } else {
        list.join(", ")
    }
}

/// Routing keys received more often than sent.
fn missing_reverse(sent: &[Bytes], deliveries: &[Delivery]) -> String {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for d in deliveries {
        *counts.entry(d.routing_key.clone()).or_default() += 1;
    }
    for f in sent {
        *counts.entry(event_name(f)).or_default() -= 1;
    }
    let list: Vec<String> = counts
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(e, n)| format!("{e} {n:+}"))
        .collect();
    list.join(", ")
}
