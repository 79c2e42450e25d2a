//! Publishing on one broker link, outside every shard's loop (issue 9, item 2).
//!
//! Owns: one task per link that takes the shards' publications from a channel, publishes them
//! mandatory and in order (started in batches, so the connection writes them together), waits
//! for their confirms, tells a returned (unroutable) message from an ack, and reports every
//! outcome to the shard that asked. A blocked, stalled or slow connection holds this task, never
//! a shard: the shard only pushes into a channel. Does not own what to publish again, when, or
//! when a link has failed (the shard's pure `proto_core::outbox::Outbox`), nor the connection
//! (`broker`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::Confirmation;
use proto_core::outbox::Confirm;
use proto_core::profile::{Publication, Router};
use proto_core::shard::PublishId;
use tokio::sync::{mpsc, oneshot};

use crate::output::{OutputError, PublishReport, ReportSender};

/// Publications started together before awaiting any of them.
const MAX_BATCH: usize = 256;

/// Publications in flight on one link at most (published, confirm not yet handled). lapin
/// keeps unconfirmed publications in a map that it scans whole on every multiple ack, so an
/// unbounded number in flight (every shard's window together) costs more per confirm as the
/// shard count grows; past this cap the publisher waits for confirms before publishing more.
const MAX_IN_FLIGHT: usize = 4096;

/// One publication for a link's publisher.
#[derive(Debug)]
pub(crate) struct PublishRequest {
    /// The shard's id for it.
    pub(crate) id: PublishId,
    /// The message (shared with the shard's outbox).
    pub(crate) publication: Arc<Publication>,
    /// Where the outcome goes.
    pub(crate) reply: ReportSender,
    /// When it entered the shard's outbox, for the hand-off histogram.
    pub(crate) pushed_at: Option<Instant>,
}

/// What the publisher needs from one broker connection (`broker::Link` in the process; the
/// trait keeps this module independent of the connection's supervisor).
pub(crate) trait PublishLink: Send + Sync + 'static {
    /// Increases with every connection, so a failure report names the link it saw fail.
    fn generation(&self) -> u64;

    /// Why declaring a per-event topology failed (logged).
    type Error: std::fmt::Display + Send;

    /// Declares the per-event topology the profile wants before `event`'s first publication.
    fn ensure_event_topology(
        &self,
        router: &Router,
        event: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A publication's confirm: what the broker answered, or why the link failed first.
    type Confirmation: Future<Output = Result<Confirm, OutputError>> + Send + 'static;

    /// Publishes one event, mandatory; the confirm resolves when the broker answers.
    fn publish_event(
        &self,
        publication: &Publication,
    ) -> impl Future<Output = Result<Self::Confirmation, OutputError>> + Send;

    /// Forgets that `event`'s per-event topology is declared.
    fn forget_event(&self, event: &str);
}

/// The sending half a link keeps.
pub(crate) type Requests = mpsc::UnboundedSender<PublishRequest>;

/// A channel for a new link's publisher.
pub(crate) fn channel() -> (Requests, mpsc::UnboundedReceiver<PublishRequest>) {
    mpsc::unbounded_channel()
}

/// Polls every future once in order (so each queues its frames in order), then drives them all
/// to completion; returns their outputs in order.
async fn start_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// lapin's confirm of one publication, as the publisher wants it: [`classify`]d, with lapin's
/// error as an [`OutputError`].
pub(crate) struct LapinConfirmation(pub(crate) lapin::PublisherConfirm);

impl Future for LapinConfirmation {
    type Output = Result<Confirm, OutputError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|confirmation| {
            confirmation
                .map(|c| classify(&c))
                .map_err(|e| OutputError::Client(e.to_string()))
        })
    }
}

/// What the broker's confirm means. lapin reports a message the broker returned (mandatory,
/// no queue bound) as an *ack* carrying it; that is not a hand-over, so it is told apart here.
pub(crate) fn classify(confirmation: &Confirmation) -> Confirm {
    match confirmation {
        Confirmation::Ack(Some(_)) => Confirm::Returned,
        Confirmation::Ack(None) | Confirmation::NotRequested => Confirm::Ack,
        Confirmation::Nack(_) => Confirm::Nack,
    }
}

type ConfirmFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the publisher of `link` until `retired` fires (the supervisor dropped the link) or
/// every sender is gone. `event_router` is the router of profiles that declare per event.
pub(crate) async fn run<L: PublishLink>(
    link: Arc<L>,
    mut requests: mpsc::UnboundedReceiver<PublishRequest>,
    event_router: Option<Router>,
    retired: oneshot::Receiver<()>,
) {
    let (confirms_tx, mut confirms_rx) = mpsc::unbounded_channel::<ConfirmFuture>();
    let generation = link.generation();
    let handoff = crate::metrics::handoff_histogram();
    let in_flight_cap = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let publish = async {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
            // One permit per publication, released when its confirm has been reported.
            let Ok(mut permits) = in_flight_cap
                .clone()
                .acquire_many_owned(batch.len() as u32)
                .await
            else {
                return;
            };
            if let Some(router) = &event_router {
                for request in &batch {
                    let Some(event) = request.publication.event() else {
                        continue;
                    };
                    if let Err(e) = link.ensure_event_topology(router, event).await {
                        tracing::warn!(event, error = %e, "cannot declare the event's queue");
                    }
                }
            }
            let started = {
                let publishes = batch
                    .iter()
                    .map(|r| {
                        let publish = link.publish_event(&r.publication);
                        let (pushed_at, handoff) = (r.pushed_at, &handoff);
                        async move {
                            let result = publish.await;
                            // The client has the frames: Gatehouse's share is done.
                            if let Some(at) = pushed_at {
                                handoff.record(at.elapsed().as_secs_f64());
                            }
                            result
                        }
                    })
                    .collect();
                start_in_order(publishes).await
            };
            for (request, result) in batch.drain(..).zip(started) {
                let PublishRequest { id, reply, .. } = request;
                let permit = permits.split(1);
                let link = link.clone();
                let event = request.publication.event().map(str::to_owned);
                let confirm: ConfirmFuture = Box::pin(async move {
                    let result = match result {
                        Ok(confirm) => confirm.await,
                        Err(e) => Err(e),
                    };
                    if let (Ok(Confirm::Returned), Some(event)) = (&result, &event) {
                        // A queue the profile declares per event may have been deleted:
                        // declare it again before the next publication of this event.
                        link.forget_event(event);
                    }
                    let _ = reply.send(PublishReport {
                        link: generation,
                        id,
                        result,
                    });
                    drop(permit);
                });
                let _ = confirms_tx.send(confirm);
            }
        }
    };
    let confirm = async {
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        std::future::poll_fn(|cx| {
            while open {
                match confirms_rx.poll_recv(cx) {
                    Poll::Ready(Some(future)) => in_flight.push(future),
                    Poll::Ready(None) => open = false,
                    Poll::Pending => break,
                }
            }
            while let Poll::Ready(Some(())) = in_flight.poll_next_unpin(cx) {}
            if open || !in_flight.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    };
    let work = futures_util::future::join(publish, confirm);
    futures_util::pin_mut!(work);
    futures_util::future::select(work, retired).await;
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use lapin::Confirmation;
    use lapin::message::{BasicReturnMessage, Delivery};
    use proto_core::outbox::Confirm;

    use super::{classify, start_in_order};

    /// A future that records when it is first polled, stays pending `waits` times, then yields
    /// its number.
    async fn job(number: usize, waits: usize, started: Arc<Mutex<Vec<usize>>>) -> usize {
        started.lock().unwrap().push(number);
        for _ in 0..waits {
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    std::task::Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
        }
        number
    }

    #[tokio::test]
    async fn starts_every_future_in_order_and_returns_outputs_in_order() {
        let started = Arc::new(Mutex::new(Vec::new()));
        // Later futures finish first; starting order and output order must not care.
        let jobs = (0..10).map(|n| job(n, 10 - n, started.clone())).collect();
        let outputs = start_in_order(jobs).await;
        assert_eq!(outputs, (0..10).collect::<Vec<_>>());
        assert_eq!(*started.lock().unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_returned_message_is_not_an_ack() {
        let returned = BasicReturnMessage {
            delivery: Delivery::mock(0, "gateway".into(), "NOBODY_BINDS".into(), false, vec![]),
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        };
        assert_eq!(classify(&Confirmation::Ack(None)), Confirm::Ack);
        assert_eq!(
            classify(&Confirmation::Ack(Some(returned))),
            Confirm::Returned
        );
        assert_eq!(classify(&Confirmation::Nack(None)), Confirm::Nack);
    }

    /// Against the real RabbitMQ (127.0.0.1:5672, a uniquely named exchange, deleted after):
    /// an event published the way the publisher does, with no queue bound, comes back as
    /// `Returned`, not as an ack; once a queue is bound it is an ack.
    #[tokio::test]
    async fn the_real_broker_returns_an_unroutable_event_and_it_is_not_taken_for_an_ack() {
        use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
        use lapin::types::FieldTable;
        use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

        let url = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let connection = Connection::connect_with_config(
            &url,
            ConnectionProperties::default(),
            Default::default(),
            async_rs::Runtime::tokio_current(),
        )
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (scripts/services.sh)");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let exchange = format!("gatehouse-test-returns-{}", std::process::id());
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let publish = |key: &'static str| {
            let channel = channel.clone();
            let exchange = exchange.clone();
            async move {
                let confirm = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        key.into(),
                        crate::broker::event_publish_options(),
                        b"{}",
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap();
                classify(&confirm.await.unwrap())
            }
        };
        assert_eq!(publish("NOBODY_BINDS").await, Confirm::Returned);

        crate::demo::bind_private_queue(&channel, &exchange, &["BOUND".to_owned()])
            .await
            .unwrap();
        assert_eq!(publish("BOUND").await, Confirm::Ack);
        assert_eq!(publish("NOBODY_BINDS").await, Confirm::Returned);
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;
    }
}
