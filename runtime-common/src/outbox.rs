//! One shard's publications between the core's `Action::Publish` and the broker's confirm.
//!
//! Owns: the order of publishing (per shard, in the order the core emitted them), the confirm
//! futures, and the rule that nothing is lost: when a publish or a confirm fails (connection
//! lost, nack), every unconfirmed publication goes back to the front of the queue and is
//! published again once a link is up (at-least-once; the native profile's message id
//! `<session>:<seq>` lets workers drop duplicates). Does not own the connection (`broker`).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, Stream};
use proto_core::profile::{Publication, Router};
use proto_core::shard::PublishId;

use crate::broker::Link;

/// Publications started together before awaiting any of them.
const MAX_BATCH: usize = 256;

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

/// Resolves to (outbox epoch, link generation, id, result).
type ConfirmFuture = Pin<Box<dyn Future<Output = (u64, u64, PublishId, ConfirmResult)> + Send>>;

/// How a confirm ended.
#[derive(Debug)]
pub(crate) enum ConfirmResult {
    /// The broker has the message.
    Ack,
    /// The broker refused it.
    Nack,
    /// The channel or connection failed first.
    Lost(String),
}

struct Pending {
    publication: Publication,
    received_at: Instant,
}

/// A confirmed publication, for metrics.
pub(crate) struct Confirmed {
    pub(crate) id: PublishId,
    pub(crate) event: String,
    pub(crate) received_at: Instant,
}

/// What became of one confirm.
pub(crate) enum ConfirmOutcome {
    /// Confirmed: tell the shard.
    Confirmed(Confirmed),
    /// Failed: everything unconfirmed was queued again, to be published on the next link;
    /// report this link as failed.
    Failed {
        /// The link the failure happened on.
        generation: u64,
        /// Why.
        reason: String,
    },
    /// A stale confirm from before a reset; nothing to do.
    Stale,
}

#[derive(Default)]
pub(crate) struct Outbox {
    pending: BTreeMap<PublishId, Pending>,
    unsent: VecDeque<PublishId>,
    in_flight: FuturesUnordered<ConfirmFuture>,
    epoch: u64,
    /// The link generation that last failed; no publishing until a different link is current.
    failed_generation: Option<u64>,
}

impl Outbox {
    /// Publications not yet confirmed (sent or not).
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Queues a publication from the core.
    pub(crate) fn push(&mut self, id: PublishId, publication: Publication, received_at: Instant) {
        self.pending.insert(
            id,
            Pending {
                publication,
                received_at,
            },
        );
        self.unsent.push_back(id);
    }

    /// Whether publications wait for a link.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Whether `link` may be used (it is not the one that failed last).
    pub(crate) fn can_use(&self, link: &Link) -> bool {
        self.failed_generation != Some(link.generation)
    }

    /// Publishes everything unsent on `link`, in order. On a publish error, resets and returns
    /// the failure.
    ///
    /// Publications go out in batches: every publish of a batch is started (its frames queued
    /// on the channel) in order before any is awaited, so the connection writes them together.
    ///
    /// With `event_topology` (profiles that declare per event), each event's declarations are
    /// made before its first publication on the link.
    pub(crate) async fn flush(
        &mut self,
        link: &Arc<Link>,
        event_topology: Option<&Router>,
    ) -> Result<(), String> {
        if !self.can_use(link) {
            return Ok(());
        }
        self.failed_generation = None;
        while !self.unsent.is_empty() {
            let taken = self.unsent.len().min(MAX_BATCH);
            if let Some(router) = event_topology {
                for id in self.unsent.iter().take(taken) {
                    let Some(pending) = self.pending.get(id) else {
                        continue;
                    };
                    let event = &pending.publication.routing_key;
                    if let Err(e) = link.ensure_event_topology(router, event).await {
                        self.reset(link.generation);
                        return Err(e);
                    }
                }
            }
            let batch: Vec<PublishId> = self
                .unsent
                .drain(..taken)
                .filter(|id| self.pending.contains_key(id))
                .collect();
            let results = {
                let publishes = batch
                    .iter()
                    .map(|id| link.publish(&self.pending[id].publication))
                    .collect();
                start_in_order(publishes).await
            };
            for (id, result) in batch.into_iter().zip(results) {
                match result {
                    Ok(confirm) => {
                        let epoch = self.epoch;
                        let generation = link.generation;
                        self.in_flight.push(Box::pin(async move {
                            let result = match confirm.await {
                                Ok(c) if c.is_ack() => ConfirmResult::Ack,
                                Ok(_) => ConfirmResult::Nack,
                                Err(e) => ConfirmResult::Lost(e.to_string()),
                            };
                            (epoch, generation, id, result)
                        }));
                    }
                    Err(e) => {
                        self.reset(link.generation);
                        return Err(e.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// Polls the next confirm.
    pub(crate) fn poll_confirm(&mut self, cx: &mut Context<'_>) -> Poll<ConfirmOutcome> {
        if self.in_flight.is_empty() {
            return Poll::Pending;
        }
        match Pin::new(&mut self.in_flight).poll_next(cx) {
            Poll::Ready(Some((epoch, generation, id, result))) => {
                Poll::Ready(self.on_confirm(epoch, generation, id, result))
            }
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn on_confirm(
        &mut self,
        epoch: u64,
        generation: u64,
        id: PublishId,
        result: ConfirmResult,
    ) -> ConfirmOutcome {
        if epoch != self.epoch {
            return ConfirmOutcome::Stale;
        }
        match result {
            ConfirmResult::Ack => match self.pending.remove(&id) {
                Some(p) => ConfirmOutcome::Confirmed(Confirmed {
                    id,
                    event: p.publication.routing_key,
                    received_at: p.received_at,
                }),
                None => ConfirmOutcome::Stale,
            },
            ConfirmResult::Nack | ConfirmResult::Lost(_) => {
                let reason = match result {
                    ConfirmResult::Lost(e) => e,
                    _ => "the broker nacked a publication".into(),
                };
                self.reset(generation);
                ConfirmOutcome::Failed { generation, reason }
            }
        }
    }

    /// Forgets the confirms in flight and queues every unconfirmed publication again, in order.
    pub(crate) fn reset(&mut self, failed_generation: u64) {
        self.failed_generation = Some(failed_generation);
        self.requeue_all();
    }

    fn requeue_all(&mut self) {
        let in_flight = std::mem::take(&mut self.in_flight);
        if !in_flight.is_empty() {
            crate::metrics::record_confirm_failure("lost", in_flight.len());
        }
        self.epoch += 1;
        self.unsent = self.pending.keys().copied().collect();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::start_in_order;

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
}
