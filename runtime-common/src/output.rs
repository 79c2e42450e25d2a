//! The publish side of the broker seam (issue 14, item 1): what a shard needs from an output.
//!
//! Owns: the [`Output`] trait, the one interface a shard's loop publishes through, whatever
//! the output (AMQP first). An output takes a publication without waiting and reports its
//! acknowledgement (a confirm, an append reply, a flushed write) as a [`PublishReport`] to the
//! shard that asked; the shard's pure `proto_core::outbox::Outbox` advances the saved sequence
//! only over acknowledged publications, so the at-least-once rule holds for every output that
//! reports honestly. Does not own any output's connection or wire format (`broker` and
//! `publisher` for AMQP), nor what to publish again (the outbox).

use std::sync::Arc;

use proto_core::outbox::Confirm;
use proto_core::profile::Publication;
use proto_core::shard::PublishId;
use tokio::sync::{mpsc, watch};

/// What became of one publication on one connection of an output (for AMQP, a link).
#[derive(Debug)]
pub(crate) struct PublishReport {
    /// The link it was published on.
    pub(crate) link: u64,
    /// The shard's id for it.
    pub(crate) id: PublishId,
    /// The broker's answer, or why the link failed before it answered.
    pub(crate) result: Result<Confirm, String>,
}

/// One connection (or incarnation) of an output, as a shard publishes through it.
pub(crate) trait Output: Send + Sync + std::fmt::Debug {
    /// Increases with every new connection of the output, so a failure report names the one
    /// it saw fail and the outbox publishes again what was in flight on it.
    fn generation(&self) -> u64;

    /// Whether the output pushes back now (an AMQP resource alarm); the outbox then holds
    /// publications back instead of timing them out.
    fn is_blocked(&self) -> bool;

    /// Takes one publication without waiting; its outcome goes to `reply` once the output has
    /// it for sure (or failed). False when the output can no longer take anything.
    fn submit(
        &self,
        id: PublishId,
        publication: Arc<Publication>,
        reply: &mpsc::UnboundedSender<PublishReport>,
    ) -> bool;
}

/// The shards' view of the configured output: its current connection (if any), waking on a
/// change, and a way to report that one failed.
#[derive(Clone, Debug)]
pub(crate) struct OutputClient {
    current: watch::Receiver<Option<Arc<dyn Output>>>,
    failures: mpsc::UnboundedSender<u64>,
}

impl OutputClient {
    /// A client over an output's announcements and its failure reports.
    pub(crate) fn new(
        current: watch::Receiver<Option<Arc<dyn Output>>>,
        failures: mpsc::UnboundedSender<u64>,
    ) -> Self {
        Self { current, failures }
    }

    /// A receiver that wakes when the output's connection changes (or its blocked state).
    pub(crate) fn watch(&self) -> watch::Receiver<Option<Arc<dyn Output>>> {
        self.current.clone()
    }

    /// Tells the output that connection `generation` failed; it reconnects unless it already
    /// has.
    pub(crate) fn report_failure(&self, generation: u64) {
        let _ = self.failures.send(generation);
    }
}
