//! The identify coordinator: one task for the process that receives the shards' identify
//! requests and sends each shard its grant when the core's scheduler allows it.
//!
//! Owns: the plumbing (requests in, `ShardInput::IdentifyGranted` out, sleeping until the
//! scheduler's next deadline). Does not own the rule of who may identify when (the core's
//! identify scheduler).

use std::collections::HashMap;
use std::time::Instant;

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
pub(crate) fn start<R: Runtime>(
    rt: &R,
    limits: SessionStartLimit,
    shards: HashMap<u32, mpsc::UnboundedSender<ShardInput>>,
) -> IdentifyClient {
    let (tx, rx) = mpsc::unbounded_channel();
    rt.spawn(coordinate(rt.clone(), limits, shards, rx));
    IdentifyClient { requests: tx }
}

async fn coordinate<R: Runtime>(
    rt: R,
    limits: SessionStartLimit,
    shards: HashMap<u32, mpsc::UnboundedSender<ShardInput>>,
    mut requests: mpsc::UnboundedReceiver<Message>,
) {
    let mut scheduler = IdentifyScheduler::new(limits, Instant::now());
    loop {
        let now = Instant::now();
        while let Some(shard) = scheduler.poll_grant(now) {
            tracing::debug!(shard, remaining = scheduler.remaining(), "identify granted");
            if let Some(inputs) = shards.get(&shard) {
                let _ = inputs.send(ShardInput::IdentifyGranted);
            }
        }
        if scheduler.remaining() == 0 && scheduler.waiting().next().is_some() {
            tracing::warn!("no session starts left until Discord's reset; shards wait to identify");
        }
        let request = match scheduler.poll_timeout() {
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
            Some(Some(Message::Request(shard))) => scheduler.request(Instant::now(), shard),
            Some(Some(Message::Release(shard))) => {
                let released = scheduler.release(Instant::now(), shard);
                tracing::debug!(shard, released, "unused identify grant handed back");
            }
            Some(None) => return,
            None => {}
        }
    }
}
