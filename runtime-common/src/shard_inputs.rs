//! The input channels of the shards running in this process, by shard number.
//!
//! Owns: what other tasks tell a shard ([`ShardInput`]) and the shared map the tasks that talk to shards look shards up in (identify grants,
//! worker commands, shutdown), which changes as shards start and stop (cluster mode starts
//! and stops them while the process runs). Does not own the shards or what is sent to them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use proto_core::shard::UsageError;
use tokio::sync::oneshot;

use crate::lazy_channel;

/// What other tasks tell a shard.
#[derive(Debug)]
pub enum ShardInput {
    /// A worker command: a JSON gateway packet. The reply says whether the shard queued it.
    Command {
        /// The packet.
        packet: Bytes,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), UsageError>>,
    },
    /// Reconnect (and resume).
    Reconnect,
    /// The identify scheduler granted an IDENTIFY.
    IdentifyGranted,
    /// Shut down (closing with a resumable code).
    Shutdown,
    /// Shut down once caught up (a re-shard's old set closing for good: the shard first
    /// reads what the gateway already sent it, `proto_core::cluster::Retiring`).
    Retire,
    /// Start or stop publishing dispatches (cluster mode's re-shard).
    Publish(bool),
}

/// A cheap-to-clone handle on the map.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShardInputs {
    inner: Arc<RwLock<Inner>>,
    /// Cluster mode: a shard not running here may be running in another process.
    elsewhere: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    shards: HashMap<u32, (u64, lazy_channel::Sender<ShardInput>)>,
    /// Every shard registered at least once (a shard not yet started is not gone).
    started: std::collections::HashSet<u32>,
}

impl ShardInputs {
    /// An empty map; `elsewhere` says whether other processes run shards of this cluster.
    pub(crate) fn new(elsewhere: bool) -> Self {
        Self {
            inner: Arc::default(),
            elsewhere,
        }
    }

    /// Whether a shard not running here may be running in another process.
    pub(crate) fn elsewhere(&self) -> bool {
        self.elsewhere
    }

    /// Registers shard `number`'s channel; the returned ticket unregisters exactly it.
    pub(crate) fn insert(&self, number: u32, sender: lazy_channel::Sender<ShardInput>) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.next += 1;
        let ticket = inner.next;
        inner.shards.insert(number, (ticket, sender));
        inner.started.insert(number);
        ticket
    }

    /// Unregisters shard `number` if it is still the registration of `ticket`.
    pub(crate) fn remove(&self, number: u32, ticket: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.shards.get(&number).is_some_and(|(t, _)| *t == ticket) {
            inner.shards.remove(&number);
        }
    }

    /// Registers shard `number`'s channel unless it is there already (a re-shard's new set
    /// starts taking commands: each channel is registered once).
    pub(crate) fn insert_channel(&self, number: u32, sender: lazy_channel::Sender<ShardInput>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner
            .shards
            .get(&number)
            .is_some_and(|(_, s)| s.same_channel(&sender))
        {
            return;
        }
        inner.next += 1;
        let ticket = inner.next;
        inner.shards.insert(number, (ticket, sender));
        inner.started.insert(number);
    }

    /// Unregisters shard `number` if its registration is still `sender`'s channel.
    pub(crate) fn remove_channel(&self, number: u32, sender: &lazy_channel::Sender<ShardInput>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner
            .shards
            .get(&number)
            .is_some_and(|(_, s)| s.same_channel(sender))
        {
            inner.shards.remove(&number);
        }
    }

    /// Every registered shard and its channel.
    pub(crate) fn entries(&self) -> Vec<(u32, lazy_channel::Sender<ShardInput>)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .shards
            .iter()
            .map(|(&n, (_, s))| (n, s.clone()))
            .collect()
    }

    /// Whether shard `number` ever ran here (a command that arrives before its shard started,
    /// at start-up, waits for it rather than being refused).
    pub(crate) fn ever_started(&self, number: u32) -> bool {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.started.contains(&number)
    }

    /// Shard `number`'s channel, if it runs here.
    pub(crate) fn get(&self, number: u32) -> Option<lazy_channel::Sender<ShardInput>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.shards.get(&number).map(|(_, s)| s.clone())
    }

    /// Sends `input()` to every shard running here.
    pub(crate) fn send_all(&self, input: impl Fn() -> ShardInput) {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        for (_, sender) in inner.shards.values() {
            let _ = sender.send(input());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ShardInputs;
    use crate::lazy_channel;

    /// A shard not yet started is told apart from one that stopped: commands wait for the
    /// first (start-up), the second is gone.
    #[test]
    fn a_shard_not_yet_started_is_not_gone() {
        let inputs = ShardInputs::new(false);
        assert!(inputs.get(3).is_none());
        assert!(!inputs.ever_started(3), "not started yet");
        let (tx, _rx) = lazy_channel::unbounded();
        let ticket = inputs.insert(3, tx);
        assert!(inputs.get(3).is_some());
        inputs.remove(3, ticket);
        assert!(inputs.get(3).is_none());
        assert!(inputs.ever_started(3), "stopped, not waiting to start");
    }
}
