//! Worker commands: consuming the profile's command queues, asking the profile what each
//! delivery means, and carrying out the decision.
//!
//! Owns: the consumers (restarted on every new AMQP link), acknowledging a delivery only once
//! the command was accepted into the shard's queue, forwarded, or rejected (a full shard queue
//! is nacked with requeue after a short pause), and never failing on a bad delivery. Does not
//! own what a command means or which shard it targets (`Router::decode_command` in the core).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use proto_core::profile::{CommandDecision, CommandDelivery, Router};
use proto_core::shard::UsageError;
use tokio::sync::{oneshot, watch};

use crate::broker::{BrokerClient, Link};
use crate::metrics;
use crate::runtime::Runtime;
use crate::shard_inputs::ShardInputs;
use crate::shard_task::ShardInput;

/// Deliveries a command consumer holds unacknowledged at once.
const PREFETCH: u16 = 32;
/// The pause before consuming again after the command channel failed on a live link.
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// The pause before a delivery for a full shard queue goes back to the broker.
const REQUEUE_DELAY: Duration = Duration::from_millis(250);

/// Starts the consumer task; it follows the broker's links until `stop`.
pub(crate) fn start<R: Runtime>(
    rt: &R,
    broker: BrokerClient,
    router: Router,
    shards: ShardInputs,
    stop: watch::Receiver<bool>,
) {
    let handler = Handler {
        rt: rt.clone(),
        broker: broker.clone(),
        router,
        shards,
    };
    rt.spawn(follow_links(handler, broker, stop));
}

async fn follow_links<R: Runtime>(
    handler: Handler<R>,
    broker: BrokerClient,
    mut stop: watch::Receiver<bool>,
) {
    use futures_util::future::{Either, select};
    let mut links = broker.watch();
    loop {
        let link = links.borrow_and_update().clone();
        let mut consumed = false;
        if let Some(link) = link
            && !link.command_queues.is_empty()
        {
            consumed = true;
            let consume = consume(&handler, &link);
            let stopped = stop.wait_for(|s| *s);
            futures_util::pin_mut!(consume, stopped);
            if let Either::Right(_) = select(consume, stopped).await {
                return;
            }
        }
        if *stop.borrow() {
            return;
        }
        // Consuming ended: on a new link start again at once; on the same link (its channel
        // failed, for example) try again after a pause.
        let changed = links.changed();
        let stopped = stop.wait_for(|s| *s);
        let retry = async {
            if consumed {
                handler.rt.sleep(RETRY_DELAY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        futures_util::pin_mut!(changed, stopped, retry);
        match select(select(changed, retry), stopped).await {
            Either::Left((Either::Left((Err(_), _)), _)) | Either::Right(_) => return,
            Either::Left(_) => {}
        }
    }
}

/// Consumes every command queue of `link` until the link fails.
async fn consume<R: Runtime>(handler: &Handler<R>, link: &Arc<Link>) {
    let channel = match link.connection.create_channel().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the command channel");
            return;
        }
    };
    if let Err(e) = channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
    {
        tracing::warn!(error = %e, "cannot set the command prefetch");
    }
    let mut consumers = Vec::new();
    for queue in &link.command_queues {
        match channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(consumer) => {
                let queue = queue.clone();
                consumers.push(consumer.map(move |d| (queue.clone(), d)).boxed());
            }
            Err(e) => tracing::warn!(queue, error = %e, "cannot consume commands"),
        }
    }
    tracing::info!(queues = ?link.command_queues, "consuming commands");
    let mut deliveries = futures_util::stream::select_all(consumers);
    while let Some((queue, delivery)) = deliveries.next().await {
        match delivery {
            Ok(delivery) => handler.handle(&queue, delivery).await,
            Err(e) => {
                tracing::warn!(error = %e, "the command consumer failed");
                break;
            }
        }
    }
}

struct Handler<R: Runtime> {
    rt: R,
    broker: BrokerClient,
    router: Router,
    shards: ShardInputs,
}

/// What to tell the broker about a delivery.
enum Settle {
    Ack,
    Requeue,
}

impl<R: Runtime> Handler<R> {
    async fn handle(&self, queue: &str, delivery: Delivery) {
        let decision = self.router.decode_command(&CommandDelivery {
            exchange: delivery.exchange.as_str(),
            routing_key: delivery.routing_key.as_str(),
            queue,
            body: &delivery.data,
        });
        let settle = self.act(decision).await;
        let result = match settle {
            Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
            Settle::Requeue => {
                self.rt.sleep(REQUEUE_DELAY).await;
                delivery
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
        };
        if let Err(e) = result {
            // The channel is gone; the broker redelivers the command to the next consumer.
            tracing::warn!(error = %e, "cannot settle a command delivery");
        }
    }

    async fn act(&self, decision: CommandDecision) -> Settle {
        match decision {
            CommandDecision::Send { shards, packet } => self.send(shards, packet).await,
            CommandDecision::Reconnect { shards } => {
                for number in shards {
                    if let Some(inputs) = self.shards.get(number) {
                        let _ = inputs.send(ShardInput::Reconnect);
                    }
                }
                metrics::record_command("reconnect");
                Settle::Ack
            }
            CommandDecision::Forward(publication) => match self.broker.current() {
                Some(link) => match link.publish_confirmed(&publication).await {
                    Ok(()) => {
                        metrics::record_command("forwarded");
                        Settle::Ack
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot forward a command");
                        Settle::Requeue
                    }
                },
                None => Settle::Requeue,
            },
            CommandDecision::Ignore => {
                metrics::record_command("ignored");
                Settle::Ack
            }
            CommandDecision::Reject {
                reason,
                dead_letter,
            } => {
                tracing::warn!(%reason, "rejected a worker command");
                metrics::record_command("rejected");
                if let Some(dead_letter) = dead_letter {
                    let published = match self.broker.current() {
                        Some(link) => link.publish_confirmed(&dead_letter).await,
                        None => Err("not connected".into()),
                    };
                    if let Err(e) = published {
                        tracing::warn!(error = %e, "cannot dead-letter a command");
                        return Settle::Requeue;
                    }
                }
                Settle::Ack
            }
        }
    }

    /// Hands the packet to each shard and waits for their answers.
    async fn send(&self, shards: Vec<u32>, packet: Bytes) -> Settle {
        let mut accepted = 0;
        let mut full = 0;
        for number in &shards {
            let Some(inputs) = self.shards.get(*number) else {
                if self.shards.elsewhere() {
                    // Cluster mode: another member runs it; back to the queue, for them.
                    full += 1;
                    continue;
                }
                tracing::warn!(
                    shard = number,
                    "a command names a shard this process does not run"
                );
                continue;
            };
            let (reply, answer) = oneshot::channel();
            let input = ShardInput::Command {
                packet: packet.clone(),
                reply,
            };
            if inputs.send(input).is_err() {
                full += 1;
                continue;
            }
            match answer.await {
                Ok(Ok(())) => accepted += 1,
                Ok(Err(UsageError::QueueFull)) | Ok(Err(UsageError::ShuttingDown)) | Err(_) => {
                    full += 1
                }
                Ok(Err(e)) => {
                    tracing::warn!(shard = number, error = %e, "a shard refused a command")
                }
            }
        }
        if full > 0 && accepted == 0 {
            metrics::record_command("requeued");
            return Settle::Requeue;
        }
        if full > 0 {
            tracing::warn!(
                accepted,
                full,
                "a command reached only some of its shards; the others were full"
            );
        }
        metrics::record_command("sent");
        Settle::Ack
    }
}
