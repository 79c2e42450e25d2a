//! AMQP's command side of the broker seam: consuming the profile's command queues on every
//! new link, and settling and republishing through lapin.
//!
//! Owns: the consumer (restarted on every new AMQP link, with the prefetch the command lanes
//! allow), turning each delivery into an [`Incoming`] whose [`Settle`] is its lapin acker, and
//! [`Republish`] as a confirmed publication on the current link. Does not own what a command
//! means or how it is settled (`commands`, the profile, `proto_core::command_flow`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use proto_core::profile::Publication;
use tokio::sync::{mpsc, watch};

use crate::broker::{BrokerClient, Link};
use crate::output::{
    BoxFuture, CommandSource, INCOMING_CAPACITY, Incoming, OutputError, Republish, Republished,
    Settle,
};
use crate::runtime::Runtime;

/// The pause before consuming again after the command channel failed on a live link.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Starts consuming `broker`'s command queues (on every link until `stop`), at most
/// `prefetch` unacknowledged deliveries at a time.
pub(crate) fn start<R: Runtime>(
    rt: &R,
    broker: BrokerClient,
    prefetch: u16,
    stop: watch::Receiver<bool>,
) -> CommandSource {
    let (tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
    rt.spawn(follow_links(rt.clone(), broker.clone(), prefetch, tx, stop));
    CommandSource {
        incoming,
        republish: Arc::new(AmqpRepublish(broker)),
    }
}

async fn follow_links<R: Runtime>(
    rt: R,
    broker: BrokerClient,
    prefetch: u16,
    tx: mpsc::Sender<Incoming>,
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
            let consume = consume(&link, prefetch, &tx);
            let stopped = stop.wait_for(|s| *s);
            futures_util::pin_mut!(consume, stopped);
            if let Either::Right(_) = select(consume, stopped).await {
                return;
            }
        }
        if *stop.borrow() || tx.is_closed() {
            return;
        }
        // Consuming ended: on a new link start again at once; on the same link (its channel
        // failed, for example) try again after a pause.
        let changed = links.changed();
        let stopped = stop.wait_for(|s| *s);
        let retry = async {
            if consumed {
                rt.sleep(RETRY_DELAY).await;
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
async fn consume(link: &Arc<Link>, prefetch: u16, tx: &mpsc::Sender<Incoming>) {
    let channel = match link.connection.create_channel().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the command channel");
            return;
        }
    };
    if let Err(e) = channel
        .basic_qos(prefetch, BasicQosOptions::default())
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
    tracing::info!(queues = ?link.command_queues, prefetch, "consuming commands");
    let mut deliveries = futures_util::stream::select_all(consumers);
    while let Some((queue, delivery)) = deliveries.next().await {
        match delivery {
            Ok(delivery) => {
                let incoming = Incoming {
                    exchange: delivery.exchange.to_string(),
                    routing_key: delivery.routing_key.to_string(),
                    queue,
                    body: delivery.data,
                    settle: Arc::new(AmqpSettle(delivery.acker)),
                };
                if tx.send(incoming).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the command consumer failed");
                break;
            }
        }
    }
}

/// A delivery's lapin acker.
struct AmqpSettle(Acker);

impl Settle for AmqpSettle {
    fn ack(&self) -> BoxFuture<()> {
        let acker = self.0.clone();
        Box::pin(async move {
            if let Err(e) = acker.ack(BasicAckOptions::default()).await {
                // The channel is gone; the broker redelivers the command to the next consumer.
                tracing::warn!(error = %e, "cannot acknowledge a command delivery");
            }
        })
    }

    fn requeue(&self) -> BoxFuture<()> {
        let acker = self.0.clone();
        Box::pin(async move {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(e) = acker.nack(requeue).await {
                tracing::warn!(error = %e, "cannot requeue a command delivery");
            }
        })
    }
}

/// Confirmed publications on the current link.
struct AmqpRepublish(BrokerClient);

impl Republish for AmqpRepublish {
    /// Both kinds go where the profile addresses them (the dead-letter exchange, for one).
    fn publish(
        &self,
        publication: Publication,
        _: Republished,
    ) -> BoxFuture<Result<(), OutputError>> {
        let link = self.0.current();
        Box::pin(async move {
            match link {
                Some(link) => link
                    .publish_confirmed(&publication)
                    .await
                    .map_err(|e| OutputError::Client(e.to_string())),
                None => Err(OutputError::NotConnected("RabbitMQ")),
            }
        })
    }
}
