//! The null output (feature `bench` only, never in a shipped binary): every publication is
//! acknowledged at once and goes nowhere, and no command ever arrives.
//!
//! Owns: nothing but that. It exists so that `bench gateway-side` can measure the gateway
//! side of a shard (socket, inflate, the core, the outbox, the per-event metrics) without a
//! broker, beside twilight-gateway reading raw messages (issue 13, item 3). Selected by the
//! environment variable [`SWITCH`] in a binary built with the feature (`outputs`); the
//! configuration knows nothing of it. The acknowledgement still goes through the shard's
//! report channel and its outbox, as a real output's would.

use std::sync::Arc;

use proto_core::outbox::Confirm;
use proto_core::profile::Publication;
use proto_core::shard::PublishId;
use tokio::sync::{mpsc, watch};

use crate::output::{
    BoxFuture, CommandSource, Output, OutputClient, OutputError, PublishReport, ReportSender,
    Republish, Republished,
};

/// The environment variable that selects the null output (any value).
pub(crate) const SWITCH: &str = "GATEHOUSE_BENCH_NULL_OUTPUT";

/// The generation of the one and only "connection".
const GENERATION: u64 = 1;

/// The null output; cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Null;

impl Null {
    /// Whether the environment selects it.
    pub(crate) fn selected() -> bool {
        std::env::var_os(SWITCH).is_some()
    }

    /// The output every shard publishes through: always connected, never blocked.
    pub(crate) fn client(&self) -> OutputClient {
        let output: Arc<dyn Output> = Arc::new(Null);
        let (announce, current) = watch::channel(Some(output));
        // Nothing ever reconnects: the announcement stays, failure reports go nowhere.
        std::mem::forget(announce);
        let (failures, _) = mpsc::unbounded_channel();
        OutputClient::new(current, failures)
    }

    /// No command ever arrives (the sender is kept, so the handler waits rather than ends).
    pub(crate) fn commands(&self) -> CommandSource {
        let (tx, incoming) = mpsc::channel(1);
        std::mem::forget(tx);
        CommandSource {
            incoming,
            republish: Arc::new(Null),
        }
    }
}

impl Output for Null {
    fn generation(&self) -> u64 {
        GENERATION
    }

    fn submit(&self, id: PublishId, _publication: Arc<Publication>, reply: &ReportSender) -> bool {
        reply
            .send(PublishReport {
                link: GENERATION,
                id,
                result: Ok(Confirm::Ack),
            })
            .is_ok()
    }
}

impl Republish for Null {
    fn publish(
        &self,
        _publication: Publication,
        _kind: Republished,
    ) -> BoxFuture<Result<(), OutputError>> {
        Box::pin(async { Ok(()) })
    }
}
