//! Worker commands, whatever the output: taking what the output delivers (the broker seam's
//! `output::CommandSource`), asking the profile what each delivery means, and carrying out the
//! decision through one lane per shard.
//!
//! Owns: the handler task, which never waits for a shard; the lane tasks (one per shard, for the life of the process), which hand their shard its
//! commands in order and wait for its answers, so that a reconnecting or flooded shard delays
//! only its own commands; and settling each delivery through the output's `Settle` and
//! `Republish` (acknowledge, forward, dead-letter, or requeue after a pause, without the
//! handler waiting). Does not own reading any output (`amqp_commands`, `redis_streams`,
//! `stdio`). Does not own any
//! decision: what a command means and which shard it targets (`Router::decode_command`), how
//! much a lane holds, how often a shard may reconnect, and what to tell the broker
//! (`proto_core::command_flow`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto_core::command_flow::{
    CommandLanes, LaneStep, REQUEUE_DELAY, ShardAnswer, Verdict, lane_step, verdict,
};
use proto_core::profile::{CommandDecision, CommandDelivery, Router};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics;
use crate::output::{CommandSource, Incoming, Republish, Republished, Settle};
use crate::runtime::Runtime;
use crate::shard_inputs::ShardInput;
use crate::shard_inputs::ShardInputs;

/// How many deliveries an output may hand over unsettled: what the lanes of `owned` shards
/// (each holding `lane_capacity`) hold, plus a reserve (AMQP's prefetch).
pub(crate) fn prefetch(owned: &[u32], lane_capacity: usize) -> u16 {
    CommandLanes::new(owned.iter().copied(), lane_capacity).prefetch()
}

/// Starts the handler task, which takes `source`'s commands until `stop` (or until the source
/// ends); each shard's lane starts with its first command and holds at most `lane_capacity`. `owned`
/// are the shards this process may run (cluster mode: those it may take over, too).
pub(crate) fn start<R: Runtime>(
    rt: &R,
    source: CommandSource,
    router: Router,
    shards: ShardInputs,
    owned: &[u32],
    lane_capacity: usize,
    stop: watch::Receiver<bool>,
) {
    let settler = Settler {
        rt: rt.clone(),
        republish: source.republish,
        router,
    };
    let lanes = Arc::new(Mutex::new(CommandLanes::new(
        owned.iter().copied(),
        lane_capacity,
    )));
    // Each shard's lane (a task and its channel) starts with the shard's first command: most
    // shards never get one, and an idle shard's memory is the point (BENCHMARKS.md section 4).
    let handler = Handler {
        settler,
        shards,
        lanes,
        lane_inputs: Mutex::new(HashMap::new()),
    };
    rt.spawn(take_commands(handler, source.incoming, stop));
}

/// Handles each command the output delivers, in order, until `stop` or the output's end.
async fn take_commands<R: Runtime>(
    handler: Handler<R>,
    mut incoming: mpsc::Receiver<Incoming>,
    mut stop: watch::Receiver<bool>,
) {
    use futures_util::future::{Either, select};
    loop {
        let command = {
            let next = incoming.recv();
            let stopped = stop.wait_for(|s| *s);
            futures_util::pin_mut!(next, stopped);
            match select(next, stopped).await {
                Either::Left((Some(command), _)) => command,
                Either::Left((None, _)) | Either::Right(_) => return,
            }
        };
        handler.handle(command).await;
    }
}

/// Where a delivery came from (kept for a dead letter once the shards answered).
struct Origin {
    exchange: String,
    routing_key: String,
    queue: String,
    body: Vec<u8>,
}

impl Origin {
    fn delivery(&self) -> CommandDelivery<'_> {
        CommandDelivery {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            queue: &self.queue,
            body: &self.body,
        }
    }
}

/// A delivery waiting for its shards' answers (unacknowledged meanwhile).
struct Pending {
    acker: Arc<dyn Settle>,
    origin: Origin,
    expected: usize,
    answers: Mutex<Vec<(u32, ShardAnswer)>>,
}

impl Pending {
    /// Records `shard`'s answer; the last one gets every answer back, to settle.
    fn answer(&self, shard: u32, answer: ShardAnswer) -> Option<Vec<(u32, ShardAnswer)>> {
        let mut answers = self.answers.lock().expect("not poisoned");
        answers.push((shard, answer));
        (answers.len() == self.expected).then(|| std::mem::take(&mut *answers))
    }
}

/// A command in a shard's lane.
struct LaneItem {
    packet: Bytes,
    pending: Arc<Pending>,
}

/// Hands a shard its commands, in order, and settles each delivery whose last answer it got.
async fn lane<R: Runtime>(
    shard: u32,
    shards: ShardInputs,
    mut items: mpsc::UnboundedReceiver<LaneItem>,
    lanes: Arc<Mutex<CommandLanes>>,
    settler: Settler<R>,
) {
    while let Some(item) = items.recv().await {
        let answer = loop {
            // The shard's current task (cluster mode starts and stops shards).
            let Some(inputs) = shards.get(shard) else {
                // Cluster mode: another member may run it; back to the queue, for them. At
                // start-up (an output delivering before the shard's task started): back to
                // the queue too, for the shard once it runs.
                break if shards.elsewhere() || !shards.ever_started(shard) {
                    ShardAnswer::Stopping
                } else {
                    ShardAnswer::Gone
                };
            };
            let (reply, answer) = oneshot::channel();
            let input = ShardInput::Command {
                packet: item.packet.clone(),
                reply,
            };
            let result = match inputs.send(input) {
                Ok(()) => answer.await.ok(),
                Err(_) => None,
            };
            match lane_step(result) {
                LaneStep::Done(answer) => break answer,
                LaneStep::Retry(pause) => settler.rt.sleep(pause).await,
            }
        };
        lanes.lock().expect("not poisoned").finish(shard);
        if let Some(answers) = item.pending.answer(shard, answer) {
            settler.settle_answers(&item.pending, &answers).await;
        }
    }
}

/// Carries out verdicts with the output (shared by the handler and the lanes).
#[derive(Clone)]
struct Settler<R: Runtime> {
    rt: R,
    republish: Arc<dyn Republish>,
    router: Router,
}

impl<R: Runtime> Settler<R> {
    /// Settles a delivery once every target shard answered.
    async fn settle_answers(&self, pending: &Pending, answers: &[(u32, ShardAnswer)]) {
        match verdict(answers) {
            Verdict::Ack { missed } => {
                if !missed.is_empty() {
                    let missed: Vec<String> = missed.into_iter().map(|(_, r)| r).collect();
                    tracing::warn!(
                        missed = %missed.join("; "),
                        "a command reached only some of its shards"
                    );
                }
                metrics::record_command("sent");
                self.ack(&pending.acker).await;
            }
            Verdict::Reject(reason) => {
                let decision = self
                    .router
                    .reject_command(&pending.origin.delivery(), reason);
                self.act(decision, &pending.acker).await;
            }
            Verdict::Requeue => {
                metrics::record_command("requeued");
                self.requeue(&pending.acker);
            }
        }
    }

    /// Settles a decision that needs no shard (everything but `Send` and `Reconnect`).
    async fn act(&self, decision: CommandDecision, acker: &Arc<dyn Settle>) {
        match decision {
            CommandDecision::Forward(publication) => {
                match self
                    .republish
                    .publish(publication, Republished::Forward)
                    .await
                {
                    Ok(()) => {
                        metrics::record_command("forwarded");
                        self.ack(acker).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot forward a command");
                        self.requeue(acker);
                    }
                }
            }
            CommandDecision::Reject {
                reason,
                dead_letter,
            } => {
                tracing::warn!(%reason, "rejected a worker command");
                metrics::record_command("rejected");
                if let Some(dead_letter) = dead_letter
                    && let Err(e) = self
                        .republish
                        .publish(dead_letter, Republished::DeadLetter)
                        .await
                {
                    tracing::warn!(error = %e, "cannot dead-letter a command");
                    return self.requeue(acker);
                }
                self.ack(acker).await;
            }
            CommandDecision::Ignore => {
                metrics::record_command("ignored");
                self.ack(acker).await;
            }
            CommandDecision::Send { .. } | CommandDecision::Reconnect { .. } => {
                unreachable!("the handler gives shards' commands to the lanes")
            }
        }
    }

    async fn ack(&self, acker: &Arc<dyn Settle>) {
        acker.ack().await;
    }

    /// Sends a delivery back to the output after [`REQUEUE_DELAY`], without anyone waiting.
    fn requeue(&self, acker: &Arc<dyn Settle>) {
        let acker = acker.clone();
        let rt = self.rt.clone();
        self.rt.spawn(async move {
            rt.sleep(REQUEUE_DELAY).await;
            acker.requeue().await;
        });
    }
}

struct Handler<R: Runtime> {
    settler: Settler<R>,
    shards: ShardInputs,
    lanes: Arc<Mutex<CommandLanes>>,
    /// The lanes started so far (on each shard's first command).
    lane_inputs: Mutex<HashMap<u32, mpsc::UnboundedSender<LaneItem>>>,
}

impl<R: Runtime> Handler<R> {
    fn lanes(&self) -> std::sync::MutexGuard<'_, CommandLanes> {
        self.lanes.lock().expect("not poisoned")
    }

    /// Shard `shard`'s lane, started on its first command.
    fn lane_input(&self, shard: u32) -> mpsc::UnboundedSender<LaneItem> {
        let mut inputs = self.lane_inputs.lock().expect("not poisoned");
        inputs
            .entry(shard)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                self.settler.rt.spawn(lane(
                    shard,
                    self.shards.clone(),
                    rx,
                    self.lanes.clone(),
                    self.settler.clone(),
                ));
                tx
            })
            .clone()
    }

    /// Decodes a delivery and passes it on; waits for the output at most (dead letters,
    /// forwards, acknowledgements), never for a shard.
    async fn handle(&self, command: Incoming) {
        let origin = Origin {
            exchange: command.exchange,
            routing_key: command.routing_key,
            queue: command.queue,
            body: command.body,
        };
        let acker = command.settle;
        match self.settler.router.decode_command(&origin.delivery()) {
            CommandDecision::Send { shards, packet } => {
                self.send(shards, packet, acker, origin).await
            }
            CommandDecision::Reconnect { shards } => {
                let now = self.settler.rt.now();
                let answers: Vec<(u32, ShardAnswer)> = shards
                    .into_iter()
                    .map(|shard| {
                        let allowed = self.lanes().allow_reconnect(now, shard);
                        let answer = match allowed.and_then(|()| self.reconnect(shard)) {
                            Ok(()) => ShardAnswer::Queued,
                            Err(answer) => answer,
                        };
                        (shard, answer)
                    })
                    .collect();
                let pending = Pending {
                    acker,
                    origin,
                    expected: answers.len(),
                    answers: Mutex::new(Vec::new()),
                };
                self.settler.settle_answers(&pending, &answers).await;
            }
            decision => self.settler.act(decision, &acker).await,
        }
    }

    fn reconnect(&self, shard: u32) -> Result<(), ShardAnswer> {
        let inputs = self.shards.get(shard).ok_or(ShardAnswer::Gone)?;
        inputs
            .send(ShardInput::Reconnect)
            .map_err(|_| ShardAnswer::Gone)?;
        metrics::record_command("reconnect");
        Ok(())
    }

    /// Puts the packet in each target shard's lane; settles at once only when no lane took it.
    async fn send(&self, shards: Vec<u32>, packet: Bytes, acker: Arc<dyn Settle>, origin: Origin) {
        let pending = Arc::new(Pending {
            acker,
            origin,
            expected: shards.len(),
            answers: Mutex::new(Vec::new()),
        });
        let mut settle = None;
        for shard in shards {
            let admitted = self.lanes().admit(shard);
            let queued = admitted.and_then(|()| {
                let item = LaneItem {
                    packet: packet.clone(),
                    pending: pending.clone(),
                };
                // Admitted: the shard has a lane (`CommandLanes` knows the owned shards).
                if self.lane_input(shard).send(item).is_ok() {
                    return Ok(());
                }
                self.lanes().finish(shard);
                Err(ShardAnswer::Gone)
            });
            if let Err(answer) = queued {
                settle = pending.answer(shard, answer).or(settle);
            }
        }
        if let Some(answers) = settle {
            self.settler.settle_answers(&pending, &answers).await;
        }
    }
}
