//! The identify coordinator: one task for the process that receives the shards' identify
//! requests and sends each shard its grant when the core's rule allows it.
//!
//! Owns: the plumbing (requests in, bucket claims to Redis, `ShardInput::IdentifyGranted`
//! out, sleeping until the rule's next deadline). Does not own the rule of who may identify
//! when (the core's `cluster::SharedIdentify`: the bot's buckets and daily budget are shared
//! with every other process of the bot through Redis, with the local scheduler as the
//! fallback while Redis is unavailable).

use std::collections::BTreeSet;
use std::time::Duration;

use proto_core::cluster::{IdentifyStep, SharedIdentify};
use proto_core::identify::SessionStartLimit;
use tokio::sync::mpsc;

use crate::cluster::ClusterStore;
use crate::runtime::Runtime;
use crate::shard_inputs::{ShardInput, ShardInputs};

/// What a shard tells the coordinator.
#[derive(Clone, Copy, Debug)]
enum Message {
    /// Shard `n` needs an IDENTIFY.
    Request(u32),
    /// Shard `n` did not use the grant it got (its connection went away meanwhile).
    Release(u32),
}

/// The longest the first grants wait for every shard's first request.
const STARTUP_BARRIER: Duration = Duration::from_secs(10);

/// A shard's way to ask for an IDENTIFY.
#[derive(Clone, Debug)]
pub struct IdentifyClient {
    requests: mpsc::UnboundedSender<Message>,
}

impl IdentifyClient {
    /// Asks for shard `number`; the grant arrives as `ShardInput::IdentifyGranted`.
    pub fn request(&self, number: u32) {
        let _ = self.requests.send(Message::Request(number));
    }

    /// Hands back a grant shard `number` could not use, so the session start is not wasted.
    pub fn release(&self, number: u32) {
        let _ = self.requests.send(Message::Release(number));
    }
}

/// Starts the coordinator for the shards in `shards`.
/// `identifying_at_start` are the shards that will ask to IDENTIFY right away (those without a
/// stored session); no grant goes out before all of them asked, so that buckets start in
/// order.
/// Bucket claims go to `store` (shared with every process of the bot); without one, the
/// local rule decides alone.
pub(crate) fn start<R: Runtime>(
    rt: &R,
    limits: SessionStartLimit,
    shards: ShardInputs,
    identifying_at_start: BTreeSet<u32>,
    store: Option<ClusterStore>,
) -> IdentifyClient {
    let (tx, rx) = mpsc::unbounded_channel();
    rt.spawn(coordinate(
        rt.clone(),
        limits,
        shards,
        identifying_at_start,
        rx,
        store,
    ));
    IdentifyClient { requests: tx }
}

async fn coordinate<R: Runtime>(
    rt: R,
    limits: SessionStartLimit,
    shards: ShardInputs,
    mut initial: BTreeSet<u32>,
    mut requests: mpsc::UnboundedReceiver<Message>,
    mut store: Option<ClusterStore>,
) {
    let mut scheduler = match store {
        Some(_) => SharedIdentify::new(limits, rt.now()),
        None => SharedIdentify::local(limits, rt.now()),
    };
    let barrier_until = rt.now() + STARTUP_BARRIER;
    let mut was_fallback = scheduler.is_fallback();
    loop {
        // Buckets must start in shard order, but the shards' first requests arrive in the
        // order their sockets happened to open: hold every grant until each shard expected to
        // identify at start has asked (or the barrier times out).
        let holding = !initial.is_empty() && rt.now() < barrier_until;
        while let Some(step) = (!holding).then(|| scheduler.poll_step(rt.now())).flatten() {
            let shard = match step {
                IdentifyStep::Grant(shard) => Some(shard),
                IdentifyStep::Claim(claim) => {
                    let reply = match &mut store {
                        Some(store) => store.claim_identify(&rt, &claim, &limits).await,
                        None => proto_core::cluster::ClaimReply::Unavailable,
                    };
                    tracing::debug!(shard = claim.shard, ?reply, "identify claim answered");
                    scheduler.handle_reply(rt.now(), claim, reply)
                }
            };
            if scheduler.is_fallback() != was_fallback {
                was_fallback = scheduler.is_fallback();
                if was_fallback {
                    tracing::warn!(
                        "Redis is unavailable for the identify limits: this process follows the \
                         local rule alone for a while (other processes of the bot are not \
                         counted)"
                    );
                } else {
                    tracing::info!("identify limits are shared through Redis again");
                }
            }
            if let Some(shard) = shard {
                tracing::debug!(shard, "identify granted");
                if let Some(inputs) = shards.get(shard) {
                    let _ = inputs.send(ShardInput::IdentifyGranted);
                }
            }
        }
        let deadline = if holding {
            Some(barrier_until)
        } else {
            scheduler.poll_timeout()
        };
        let request = match deadline {
            Some(deadline) => {
                let sleep = rt.sleep_until(deadline);
                let recv = requests.recv();
                futures_util::pin_mut!(sleep, recv);
                match futures_util::future::select(recv, sleep).await {
                    futures_util::future::Either::Left((request, _)) => Some(request),
                    futures_util::future::Either::Right(_) => None,
                }
            }
            None => Some(requests.recv().await),
        };
        match request {
            Some(Some(Message::Request(shard))) => {
                initial.remove(&shard);
                scheduler.request(rt.now(), shard);
            }
            Some(Some(Message::Release(shard))) => {
                let released = scheduler.release(rt.now(), shard);
                tracing::debug!(shard, released, "unused identify grant handed back");
            }
            Some(None) => return,
            None => {}
        }
    }
}
