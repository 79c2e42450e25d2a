//! The per-shard drive loop: one task owns one `proto_core::shard::Shard` and does what its
//! actions say.
//!
//! Owns: the WebSocket of the shard, reading the clock (through the runtime) when an input
//! arrives, sleeping until the shard's or the outbox's `poll_timeout()`, driving the shard's
//! pure `proto_core::outbox::Outbox` (publications handed to the current link's publisher task,
//! never awaited here; confirms back to the outbox and the shard), worker commands and identify
//! grants arriving over the shard's input channel, and session and status writes. The socket
//! is read exactly when `Shard::should_pause_reading` is false (the core's one backpressure
//! rule). Does not own any protocol or publishing decision: no opcodes, no close-code meanings,
//! no back-off, no retry; the core decides all of those.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use proto_core::cluster::Retiring;
use proto_core::outbox::{Confirm, Outbox, OutboxConfig, OutboxEvent};
use proto_core::shard::{Action, CloseCode, FrameKind, Shard, ShardEvent, ShardState, StopReason};
use proto_core::store::{self, ShardStatus};
use tokio::sync::watch;
use tracing::Instrument;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

use crate::identify::IdentifyClient;
use crate::lazy_channel;
use crate::metrics;
use crate::output::{Output, OutputClient, PublishReport, ReportSender};
use crate::runtime::Runtime;
use crate::session_store::StoreWriter;
use crate::shard_inputs::ShardInput;

/// How long opening a WebSocket may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages handled back to back (when already received) before publishing and looking at
/// timers and other inputs.
const MAX_BURST: usize = 64;
/// Publisher reports handled in one turn of the loop at most.
const MAX_REPORTS: usize = 1024;
/// How long to wait for the peer's answer to our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything a shard task needs besides its shard.
pub(crate) struct ShardIo<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) inputs: lazy_channel::Receiver<ShardInput>,
    /// The output publications go to (the broker seam).
    pub(crate) output: OutputClient,
    pub(crate) store: StoreWriter,
    pub(crate) identify: IdentifyClient,
    pub(crate) max_message: usize,
    /// The outbox's settings (confirm timeout, what an unroutable event becomes).
    pub(crate) outbox: OutboxConfig,
    /// Set while every guild READY listed has arrived (cluster mode's re-shard reads it).
    pub(crate) guilds_arrived: Option<Arc<AtomicBool>>,
}

/// Why the loop woke up.
enum Wake {
    Message(Message),
    SocketEnded(Option<String>),
    Timer,
    Report(PublishReport),
    Input(ShardInput),
    InputsClosed,
    LinkChanged,
}

/// Drives `shard` until it reports `Stopped`; returns why it stopped.
///
/// Not an `async fn`: one would keep its arguments (the shard and its I/O) in the future beside
/// the task they are moved into, doubling what every shard's task holds for its whole life
/// (BENCHMARKS.md section 4: memory per idle shard). The task is built here, and the future
/// holds only it.
pub(crate) fn run<R: Runtime>(
    shard: Shard,
    io: ShardIo<R>,
) -> impl Future<Output = StopReason> + Send + 'static {
    let number = shard.config().shard.number();
    let total = shard.config().shard.total();
    let binary_frames = shard.config().sends_binary();
    let (reply, reports) = lazy_channel::unbounded();
    let links = io.output.watch();
    let started = io.rt.now();
    let mut task = ShardTask {
        outbox: Outbox::new(io.outbox),
        shard,
        number,
        total,
        binary_frames,
        io,
        ws: None,
        peer_close: None,
        link: None,
        links,
        reply,
        reports,
        failed_link: None,
        link_blocked: false,
        unroutable_logged: Default::default(),
        sleep: None,
        link_wait: None,
        stopped: None,
        last_state: None,
        last_ack_written: None,
        connects: 0,
        inputs_open: true,
        burst: 0,
        input_at: None,
        metrics: metrics::ShardMetrics::new(number, started),
        retiring: None,
        caught_up: false,
    };
    async move {
        let span = tracing::info_span!("shard", shard = number, of = total);
        task.run().instrument(span).await
    }
}

type LinkWait = Pin<Box<dyn Future<Output = ()> + Send>>;

struct ShardTask<R: Runtime> {
    shard: Shard,
    number: u32,
    total: u32,
    binary_frames: bool,
    io: ShardIo<R>,
    ws: Option<R::WebSocket>,
    peer_close: Option<u16>,
    outbox: Outbox,
    /// The link publications go to (the latest one seen).
    link: Option<Arc<dyn Output>>,
    links: watch::Receiver<Option<Arc<dyn Output>>>,
    /// Where the links' publishers report; `reports` is read in `wait`.
    reply: ReportSender,
    reports: lazy_channel::Receiver<PublishReport>,
    /// The latest link this shard reported as failed.
    failed_link: Option<u64>,
    /// Whether the outbox was told that `link` is blocked.
    link_blocked: bool,
    /// Event names already logged as unroutable.
    unroutable_logged: std::collections::HashSet<String>,
    sleep: Option<(Instant, Pin<Box<R::Sleep>>)>,
    link_wait: Option<LinkWait>,
    stopped: Option<StopReason>,
    last_state: Option<ShardState>,
    /// The heartbeat ACK of the latest status written (a new ACK refreshes the latency).
    last_ack_written: Option<Instant>,
    connects: u64,
    inputs_open: bool,
    burst: usize,
    /// When the input being handled arrived (the clock read once per input).
    input_at: Option<Instant>,
    metrics: metrics::ShardMetrics,
    /// Closing once caught up ([`ShardInput::Retire`]).
    retiring: Option<Retiring>,
    /// Whether the socket had nothing more to read since the shard was asked to retire.
    caught_up: bool,
}

impl<R: Runtime> ShardTask<R> {
    async fn run(&mut self) -> StopReason {
        loop {
            self.drain().await;
            if let Some(reason) = self.stopped.take() {
                self.drop_socket();
                let name = match reason {
                    StopReason::Shutdown => store::STATE_STOPPED,
                    StopReason::Fatal { .. } => store::state_name(ShardState::FatallyClosed),
                };
                self.write_status(name);
                return reason;
            }
            // Messages that are already here are handled before publishing, so that their
            // publications go to the broker in one batch (bounded, so timers still run).
            let wake = match self.ready_message() {
                Some(wake) => wake,
                None => {
                    self.burst = 0;
                    if self.retire_due() {
                        continue;
                    }
                    self.publish();
                    self.report_state();
                    self.wait().await
                }
            };
            let now = self.io.rt.now();
            if let Wake::Message(_) = wake {
                self.burst += 1;
                // A retiring shard that still reads is catching up: it may keep reading.
                if let Some(retiring) = &mut self.retiring {
                    retiring.read(now);
                }
            }
            self.input_at = Some(now);
            self.handle_wake(now, wake);
        }
    }

    fn handle_wake(&mut self, now: Instant, wake: Wake) {
        match wake {
            Wake::Message(Message::Text(text)) => {
                self.shard
                    .handle_message(now, text.as_bytes(), FrameKind::Text)
            }
            Wake::Message(Message::Binary(data)) => {
                self.shard.handle_message(now, &data, FrameKind::Binary)
            }
            Wake::Message(Message::Close(frame)) => {
                self.peer_close = frame.map(|f| u16::from(f.code));
            }
            Wake::Message(_) => {}
            Wake::SocketEnded(error) => {
                let code = self.peer_close.take();
                tracing::info!(?code, error, "gateway connection closed");
                self.ws = None;
                self.shard.handle_closed(now, code);
            }
            Wake::Timer => {
                // Early calls are no-ops for both.
                self.shard.handle_timeout(now);
                self.outbox.handle_timeout(now);
                self.outbox_events(now);
            }
            Wake::Report(report) => {
                self.handle_report(now, report);
                // Every report already here is handled in the same turn: one outbox drain, one
                // publish and one status look for all of them instead of one per confirm.
                for _ in 1..MAX_REPORTS {
                    match self.reports.try_recv() {
                        Ok(report) => self.handle_report(now, report),
                        Err(_) => break,
                    }
                }
                self.outbox_events(now);
            }
            Wake::LinkChanged => {}
            Wake::Input(input) => self.handle_input(now, input),
            Wake::InputsClosed => {
                self.inputs_open = false;
                self.shard.shutdown(now);
            }
        }
    }

    /// Gives one publisher report to the outbox (its events are drained by the caller).
    fn handle_report(&mut self, now: Instant, report: PublishReport) {
        match report.result {
            Ok(confirm) => {
                self.outbox
                    .handle_confirm(now, report.link, report.id, confirm);
                if confirm == Confirm::Nack {
                    metrics::record_confirms("nack", 1);
                }
            }
            Err(reason) => self.link_failed(report.link, "lost", &reason.to_string()),
        }
    }

    /// Acts on what the outbox reports: confirms to the shard, overdue confirms to the broker
    /// supervisor, the rest to logs and metrics.
    fn outbox_events(&mut self, now: Instant) {
        while let Some(event) = self.outbox.poll_event() {
            match event {
                OutboxEvent::Confirmed {
                    id,
                    publication,
                    pushed_at,
                } => {
                    self.metrics
                        .published(publication.event().unwrap_or_default(), now - pushed_at);
                    self.shard.handle_published(now, id);
                }
                OutboxEvent::Nacked {
                    routing_key,
                    retry_in,
                    ..
                } => {
                    tracing::warn!(
                        event = routing_key,
                        ?retry_in,
                        "the broker nacked a publication; publishing it again after a back-off"
                    );
                }
                OutboxEvent::Unroutable {
                    exchange,
                    routing_key,
                    retry_in,
                    ..
                } => {
                    metrics::record_unroutable(&routing_key);
                    match retry_in {
                        Some(retry_in) => tracing::warn!(
                            exchange,
                            event = routing_key,
                            ?retry_in,
                            "no queue is bound for this event; holding it and publishing it again after a back-off"
                        ),
                        None if self.unroutable_logged.insert(routing_key.clone()) => {
                            tracing::info!(
                                exchange,
                                event = routing_key,
                                "no queue is bound for this event: the broker returned it and it is dropped (said once per event name; counted in gatehouse_events_unroutable_total)"
                            )
                        }
                        None => {}
                    }
                }
                OutboxEvent::LinkFailed { link, reason } => {
                    metrics::record_confirms(reason.label(), 1);
                    tracing::warn!(%reason, link, "the broker link failed; publishing again on the next one");
                    self.failed_link = Some(link);
                    self.io.output.report_failure(link);
                }
            }
        }
    }

    /// Link `generation` failed under a publication (a publish error, or the connection went):
    /// the outbox sends what was in flight on it again on the next link.
    fn link_failed(&mut self, generation: u64, result: &'static str, reason: &str) {
        let current = self
            .link
            .as_ref()
            .is_some_and(|l| l.generation() == generation);
        if current && self.failed_link != Some(generation) {
            // Once per link: every publication in flight on it fails the same way.
            self.failed_link = Some(generation);
            tracing::warn!(%reason, "publishing failed; publishing again after reconnecting");
            self.io.output.report_failure(generation);
        }
        metrics::record_confirms(result, 1);
        self.outbox.handle_link_failed(generation);
    }

    /// The next message if one is already waiting and the current burst allows another.
    fn ready_message(&mut self) -> Option<Wake> {
        // A retiring shard looks even after a wait: whether it caught up.
        let looking = self.retiring.is_some() && !self.caught_up;
        if (self.burst == 0 && !looking)
            || self.burst >= MAX_BURST
            || self.shard.should_pause_reading()
        {
            return None;
        }
        let ws = self.ws.as_mut()?;
        let Some(next) = ws.next().now_or_never() else {
            // Nothing more to read: everything the gateway sent so far is handled.
            self.caught_up |= self.retiring.is_some();
            return None;
        };
        match next {
            Some(Ok(message)) => Some(Wake::Message(message)),
            Some(Err(e)) => Some(Wake::SocketEnded(Some(e.to_string()))),
            None => Some(Wake::SocketEnded(None)),
        }
    }

    /// A retiring shard that caught up (or waited long enough) shuts down now.
    fn retire_due(&mut self) -> bool {
        let now = self.io.rt.now();
        let Some(retiring) = self.retiring else {
            return false;
        };
        if !retiring.should_close(now, self.caught_up) {
            return false;
        }
        self.retiring = None;
        if self.caught_up {
            tracing::info!("caught up with the gateway: closing (its shard set is retired)");
        } else {
            tracing::warn!(
                "did not catch up with the gateway (read nothing for 30 s, or still behind 10 \
                 min after its set retired): closing anyway (what it has not read is lost \
                 unless the new set published it)"
            );
        }
        self.shard.shutdown(now);
        true
    }

    fn handle_input(&mut self, now: Instant, input: ShardInput) {
        match input {
            ShardInput::Command { packet, reply } => {
                let _ = reply.send(self.shard.send_command(now, packet));
            }
            ShardInput::Reconnect => self.shard.reconnect(now),
            ShardInput::IdentifyGranted => {
                if !self.shard.handle_identify_granted(now) {
                    self.io.identify.release(self.number);
                }
            }
            ShardInput::Shutdown => {
                self.retiring = None;
                self.shard.shutdown(now);
            }
            ShardInput::Retire => {
                if self.retiring.is_none() {
                    self.retiring = Some(Retiring::new(now));
                    self.caught_up = false;
                }
            }
            ShardInput::Publish(on) => self.shard.set_publishing(now, on),
        }
    }

    /// Executes actions until the shard has none left.
    async fn drain(&mut self) {
        // The publications of an input count from when it arrived (read once, in `run`).
        let arrived = self.input_at.take();
        while let Some(action) = self.shard.poll_action() {
            match action {
                Action::Connect { url } => self.connect(&url).await,
                Action::Send(bytes) => self.send(bytes).await,
                // Boxed: it holds a second socket while closing (see `connect`).
                Action::Close(code) => Box::pin(self.close(code)).await,
                Action::RequestIdentify => self.io.identify.request(self.number),
                Action::Publish {
                    id, publication, ..
                } => {
                    let now = arrived.unwrap_or_else(|| self.io.rt.now());
                    self.outbox.push(now, id, publication);
                }
                Action::PersistSession(snapshot) => self.io.store.save_session(&snapshot),
                Action::Stopped(reason) => {
                    match &reason {
                        StopReason::Shutdown => tracing::info!("shard stopped"),
                        StopReason::Fatal { .. } => {
                            tracing::error!(%reason, "shard stopped for good")
                        }
                    }
                    let unsent = self.shard.take_queued_commands();
                    if !unsent.is_empty() {
                        tracing::warn!(
                            count = unsent.len(),
                            "worker commands were still waiting for the rate limiter and were not sent"
                        );
                    }
                    self.stopped = Some(reason);
                }
            }
        }
        while let Some(event) = self.shard.poll_event() {
            self.metrics.event(&event);
            log_event(&event);
        }
        if let Some(flag) = &self.io.guilds_arrived {
            flag.store(self.shard.guilds_arrived(), Ordering::Relaxed);
        }
    }

    async fn connect(&mut self, url: &str) {
        self.drop_socket();
        self.connects += 1;
        if self.connects > 1 {
            self.metrics.reconnect();
        }
        tracing::info!(url, "connecting to the gateway");
        // Boxed: the connect future (DNS, TCP, TLS, the WebSocket handshake) is several times
        // larger than the rest of the shard's loop, and held inline it would size every
        // shard's task for its whole life (BENCHMARKS.md section 4: memory per idle shard).
        let connect = Box::pin(self.io.rt.connect_websocket(url, self.io.max_message));
        let timeout = self.io.rt.sleep(CONNECT_TIMEOUT);
        let result = match futures_util::future::select(connect, Box::pin(timeout)).await {
            futures_util::future::Either::Left((result, _)) => result.map_err(|e| e.to_string()),
            futures_util::future::Either::Right(_) => Err("timed out".to_owned()),
        };
        let now = self.io.rt.now();
        match result {
            Ok(ws) => {
                self.ws = Some(ws);
                self.peer_close = None;
                self.shard.handle_connected(now);
            }
            Err(error) => {
                tracing::warn!(url, %error, "cannot connect to the gateway");
                self.shard.handle_closed(now, None);
            }
        }
    }

    async fn send(&mut self, bytes: Bytes) {
        let Some(ws) = &mut self.ws else {
            tracing::debug!("dropping a frame: not connected");
            return;
        };
        let message = if self.binary_frames {
            Message::Binary(bytes)
        } else {
            match tungstenite::Utf8Bytes::try_from(bytes.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(bytes),
            }
        };
        if let Err(error) = ws.send(message).await {
            tracing::info!(%error, "gateway connection failed while sending");
            self.ws = None;
            self.shard.handle_closed(self.io.rt.now(), None);
        }
    }

    /// Sends a close frame with `code`, waits briefly for the peer's answer, then reports the
    /// socket closed.
    async fn close(&mut self, code: CloseCode) {
        if let Some(mut ws) = self.ws.take() {
            let frame = CloseFrame {
                code: code.0.into(),
                reason: "".into(),
            };
            if ws.send(Message::Close(Some(frame))).await.is_ok() {
                let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                let timeout = self.io.rt.sleep(CLOSE_TIMEOUT);
                futures_util::pin_mut!(drain);
                futures_util::future::select(drain, Box::pin(timeout)).await;
            }
        }
        self.shard.handle_closed(self.io.rt.now(), None);
    }

    fn drop_socket(&mut self) {
        self.ws = None;
        self.peer_close = None;
    }

    /// Hands what the outbox has to send to the current link's publisher task (never waiting
    /// for the broker). A link that changed since the last look fails the old one in the
    /// outbox: what was in flight on it goes out again on the new one.
    fn publish(&mut self) {
        if self.links.has_changed().unwrap_or(false) || self.link.is_none() {
            let current = self.links.borrow_and_update().clone();
            let changed = match (&self.link, &current) {
                (Some(old), Some(new)) => old.generation() != new.generation(),
                (old, _) => old.is_some(),
            };
            if changed && let Some(old) = self.link.take() {
                self.outbox.handle_link_failed(old.generation());
                self.link_blocked = false;
                tracing::debug!(link = old.generation(), "broker link replaced");
            }
            self.link = current;
        }
        let Some(link) = self.link.clone() else {
            return;
        };
        let now = self.io.rt.now();
        if link.is_blocked() != self.link_blocked {
            self.link_blocked = link.is_blocked();
            self.outbox
                .handle_link_blocked(now, link.generation(), self.link_blocked);
        }
        for (id, publication) in self
            .outbox
            .take_sendable(now, link.generation(), usize::MAX)
        {
            let pushed_at = self.outbox.pushed_at(id).unwrap_or(now);
            if !link.submit_pushed_at(id, publication, &self.reply, pushed_at) {
                self.link_failed(link.generation(), "lost", "the link's publisher is gone");
                break;
            }
        }
        self.outbox_events(now);
    }

    async fn wait(&mut self) -> Wake {
        let deadline = [
            self.shard.poll_timeout(),
            self.outbox.poll_timeout(),
            self.retiring.map(|r| r.deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        match (deadline, &self.sleep) {
            (None, _) => self.sleep = None,
            (Some(d), Some((current, _))) if *current == d => {}
            (Some(d), _) => self.sleep = Some((d, Box::pin(self.io.rt.sleep_until(d)))),
        }
        if deadline.is_some_and(|d| self.io.rt.now() >= d) {
            return Wake::Timer;
        }
        if self.link_wait.is_none() {
            let mut links = self.links.clone();
            self.link_wait = Some(Box::pin(async move {
                let _ = links.changed().await;
            }));
        }
        let paused = self.shard.should_pause_reading();
        poll_fn(|cx| {
            if self.inputs_open {
                match self.io.inputs.poll_recv(cx) {
                    Poll::Ready(Some(input)) => return Poll::Ready(Wake::Input(input)),
                    Poll::Ready(None) => return Poll::Ready(Wake::InputsClosed),
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(Some(report)) = self.reports.poll_recv(cx) {
                return Poll::Ready(Wake::Report(report));
            }
            if let Some((_, sleep)) = &mut self.sleep
                && sleep.as_mut().poll(cx).is_ready()
            {
                self.sleep = None;
                return Poll::Ready(Wake::Timer);
            }
            if let Some(wait) = &mut self.link_wait
                && wait.as_mut().poll(cx).is_ready()
            {
                self.link_wait = None;
                return Poll::Ready(Wake::LinkChanged);
            }
            if !paused && let Some(ws) = &mut self.ws {
                match Pin::new(ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(message))) => return Poll::Ready(Wake::Message(message)),
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Wake::SocketEnded(Some(e.to_string())));
                    }
                    Poll::Ready(None) => return Poll::Ready(Wake::SocketEnded(None)),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes the status to Redis and the state gauge when the coarse state changed.
    fn report_state(&mut self) {
        // Once per burst (before every wait), not per message: the gauges are sampled anyway.
        self.metrics
            .unconfirmed(self.shard.unconfirmed(), self.shard.unconfirmed_bytes());
        self.metrics.observe(&self.shard);
        let state = self.shard.state();
        if self.last_state != Some(state) {
            self.last_state = Some(state);
            self.metrics
                .state(state, self.shard.last_disconnect(), self.io.rt.wall_clock());
        } else if self.shard.last_ack() == self.last_ack_written {
            return;
        }
        self.write_status(store::state_name(state));
    }

    /// Writes the status (on a state change, and on each heartbeat ACK for a fresh latency).
    fn write_status(&mut self, state: &str) {
        let last_ack = self.shard.last_ack();
        self.last_ack_written = last_ack;
        let now_ms = crate::status::epoch_ms(self.io.rt.wall_clock());
        self.io.store.save_status(ShardStatus {
            shard: self.number,
            shard_count: self.total,
            state: state.to_owned(),
            reconnects: self.connects.saturating_sub(1),
            sequence: self.shard.last_sequence(),
            updated_at_ms: 0,
            latency_ms: self.shard.latency().map(|l| l.as_millis() as u64),
            last_ack_ms: last_ack.map(|at| {
                now_ms.saturating_sub(
                    self.io.rt.now().saturating_duration_since(at).as_millis() as u64
                )
            }),
        });
    }
}

/// Logs what the core reports besides actions (drained after them, before the timeout).
fn log_event(event: &ShardEvent) {
    match event {
        ShardEvent::Ready { session } => tracing::info!(session = %session.id, "ready"),
        ShardEvent::Resumed { sequence } => tracing::info!(?sequence, "resumed"),
        ShardEvent::Reconnecting {
            reason,
            attempt,
            delay,
            resume,
        } => {
            tracing::warn!(?reason, attempt, ?delay, resume, "reconnecting")
        }
        ShardEvent::DispatchDropped { seq, event, reason } => {
            tracing::warn!(seq, event, %reason, "dispatch not published")
        }
        ShardEvent::UnknownOpcode { op } => tracing::debug!(op, "ignored unknown opcode"),
        ShardEvent::PublishingStarted { replayed, from_seq } => tracing::info!(
            replayed,
            ?from_seq,
            "publishing; first what was received in the replay window while warming"
        ),
        other => tracing::debug!(?other, "shard event"),
    }
}
