//! The broker seam (issue 14, item 1): what the shards and the command handler need from an
//! output, whatever it is (AMQP, Redis Streams, stdio).
//!
//! Owns, for publishing: the [`Output`] trait, the one interface a shard's loop publishes
//! through. An output takes a publication without waiting and reports its
//! acknowledgement (a confirm, an append reply, a flushed write) as a [`PublishReport`] to the
//! shard that asked; the shard's pure `proto_core::outbox::Outbox` advances the saved sequence
//! only over acknowledged publications, so the at-least-once rule holds for every output that
//! reports honestly. For commands: [`Incoming`] (one command as an output delivered it, with
//! its [`Settle`] handle: acknowledge, or put back for later) and [`Republish`] (publish a
//! forwarded command or a dead letter and wait until the output has it); an output feeds
//! [`CommandSource::incoming`] and the command handler (`commands`) decides. Does not own any
//! output's connection or wire format (`broker`/`publisher`/`amqp_commands` for AMQP,
//! `redis_streams`, `stdio`), nor what to publish again (the outbox), nor what a command means
//! (the profile).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

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
    pub(crate) result: Result<Confirm, OutputError>,
}

/// Where an output reports what became of a shard's publications: the shard's report channel,
/// which holds no memory while nothing is in flight (`lazy_channel`).
pub(crate) type ReportSender = crate::lazy_channel::Sender<PublishReport>;

/// Why an output did not take a publication (the outbox sends it again on the next
/// connection; a forwarded command or dead letter is requeued).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OutputError {
    /// No connection to publish on (the output's name: `RabbitMQ`, `Redis`).
    #[error("not connected to {0}")]
    NotConnected(&'static str),
    /// It went out on a connection that has since been replaced.
    #[error("published on an earlier {0} connection")]
    Superseded(&'static str),
    /// The output's writer has stopped (stdout closed, the Redis publisher ended).
    #[error("{0}")]
    Stopped(&'static str),
    /// The output's client failed: its message, with any secret scrubbed.
    #[error("{0}")]
    Client(String),
}

/// One connection (or incarnation) of an output, as a shard publishes through it.
pub(crate) trait Output: Send + Sync + std::fmt::Debug {
    /// Increases with every new connection of the output, so a failure report names the one
    /// it saw fail and the outbox publishes again what was in flight on it.
    fn generation(&self) -> u64;

    /// Whether the output pushes back now (an AMQP resource alarm); the outbox then holds
    /// publications back instead of timing them out. Outputs that never push back keep the
    /// default.
    fn is_blocked(&self) -> bool {
        false
    }

    /// Takes one publication without waiting; its outcome goes to `reply` once the output has
    /// it for sure (or failed). False when the output can no longer take anything.
    fn submit(&self, id: PublishId, publication: Arc<Publication>, reply: &ReportSender) -> bool;

    /// [`Output::submit`], told when the publication entered the shard's outbox (its
    /// dispatch's arrival), for outputs that measure their hand-off latency
    /// (`gatehouse_publish_handoff_seconds`); the others keep this default.
    fn submit_pushed_at(
        &self,
        id: PublishId,
        publication: Arc<Publication>,
        reply: &ReportSender,
        pushed_at: Instant,
    ) -> bool {
        let _ = pushed_at;
        self.submit(id, publication, reply)
    }
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

/// A boxed future, for the seam's object-safe methods.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Settles one command delivery with the output that delivered it.
pub(crate) trait Settle: Send + Sync {
    /// The command is done with (carried out, forwarded, dropped or dead-lettered): the
    /// output forgets it (AMQP `basic.ack`, Redis `XACK`; nothing for stdin).
    fn ack(&self) -> BoxFuture<()>;

    /// The command could not be carried out now: the output delivers it again later (AMQP
    /// `basic.nack` with requeue, Redis: appended again, then acknowledged). The handler has
    /// already waited `proto_core::command_flow::REQUEUE_DELAY`.
    fn requeue(&self) -> BoxFuture<()>;
}

/// One worker command as an output delivered it.
pub(crate) struct Incoming {
    /// The AMQP exchange it was published to (the group, for outputs without exchanges).
    pub(crate) exchange: String,
    /// Its routing key (AMQP), stream name (Redis) or `event` field (stdin).
    pub(crate) routing_key: String,
    /// The queue (AMQP) or stream (Redis) it was read from.
    pub(crate) queue: String,
    /// The body, as the worker sent it.
    pub(crate) body: Vec<u8>,
    /// How to settle it.
    pub(crate) settle: Arc<dyn Settle>,
}

/// What a message published beside the events is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Republished {
    /// A command for a shard another process runs.
    Forward,
    /// A refused command, where the profile has a dead-letter convention.
    DeadLetter,
}

/// Publishes a message outside the shards' outboxes (a forwarded command, a dead letter) and
/// resolves once the output has it for sure.
pub(crate) trait Republish: Send + Sync {
    /// Publishes `publication`; `Err` when the output did not take it.
    fn publish(
        &self,
        publication: Publication,
        kind: Republished,
    ) -> BoxFuture<Result<(), OutputError>>;
}

/// The command side of an output: what it delivers, and how to publish beside it.
pub(crate) struct CommandSource {
    /// The commands the output delivers (bounded: a full channel holds the reader back).
    pub(crate) incoming: mpsc::Receiver<Incoming>,
    /// Publishing forwarded commands and dead letters.
    pub(crate) republish: Arc<dyn Republish>,
}

/// Room for commands between an output's reader and the command handler.
pub(crate) const INCOMING_CAPACITY: usize = 64;
