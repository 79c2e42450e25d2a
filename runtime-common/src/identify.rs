//! The identify coordinator: one task for the process that receives the shards' identify
//! requests and sends each shard its grant when the core's scheduler allows it.
//!
//! Owns: the plumbing (requests in, `ShardInput::IdentifyGranted` out, sleeping until the
//! scheduler's next deadline). Does not own the rule of who may identify when (the core's
//! identify scheduler).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use proto_core::identify::{IdentifyScheduler, SessionStartLimit};
use tokio::sync::mpsc;

use crate::runtime::Runtime;
use crate::shard_task::ShardInput;

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
pub(crate) fn start<R: Runtime>(
    rt: &R,
    limits: SessionStartLimit,
    shards: HashMap<u32, mpsc::UnboundedSender<ShardInput>>,
    identifying_at_start: BTreeSet<u32>,
) -> IdentifyClient {
    let (tx, rx) = mpsc::unbounded_channel();
    rt.spawn(coordinate(
        rt.clone(),
        limits,
        shards,
        identifying_at_start,
        rx,
    ));
    IdentifyClient { requests: tx }
}

async fn coordinate<R: Runtime>(
    rt: R,
    limits: SessionStartLimit,
    shards: HashMap<u32, mpsc::UnboundedSender<ShardInput>>,
    mut initial: BTreeSet<u32>,
    mut requests: mpsc::UnboundedReceiver<Message>,
) {
    let mut scheduler = IdentifyScheduler::new(limits, rt.now());
    let barrier_until = rt.now() + STARTUP_BARRIER;
    loop {
        let now = rt.now();
        // Buckets must start in shard order, but the shards' first requests arrive in the
        // order their sockets happened to open: hold every grant until each shard expected to
        // identify at start has asked (or the barrier times out).
        let holding = !initial.is_empty() && now < barrier_until;
        while let Some(shard) = (!holding).then(|| scheduler.poll_grant(now)).flatten() {
            tracing::debug!(shard, remaining = scheduler.remaining(), "identify granted");
            if let Some(inputs) = shards.get(&shard) {
                let _ = inputs.send(ShardInput::IdentifyGranted);
            }
        }
        if scheduler.remaining() == 0 && scheduler.waiting().next().is_some() {
            tracing::warn!("no session starts left until Discord's reset; shards wait to identify");
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
