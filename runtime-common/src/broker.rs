//! The AMQP side: one supervised connection to RabbitMQ, the profile's topology, and the
//! conversion of the core's publications into lapin calls.
//!
//! Owns: connecting (to the configured addresses in turn, with the back-off and the choice
//! of the next address made by `proto_core::broker_failover`), declaring the
//! [`Topology`] on every (re)connect, the confirm-mode publishing channel and its publisher task
//! (`publisher`), noticing that the connection is lost, and announcing each new [`Link`] to the
//! shards through a watch channel. With `amqp.client = "amqprs"` a link is two connections to
//! the same address: lapin's (topology, command consumers, forwarded commands, dead letters)
//! and amqprs' for the events (`amqprs_link`); losing either loses the link. The topology is
//! declared with lapin, once per link, because the command consumers are lapin's and an
//! exclusive command queue can only be consumed on the connection that declared it. Does not own: which publications exist (the shards' outboxes,
//! see `outbox`), what a command means (`commands`), or the topology itself (the profile in the
//! core).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto_core::broker_failover::Failover;
use proto_core::shard::PublishId;

use futures_util::StreamExt;
use gatehouse_config::{AmqpClient, SecretUrl};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use proto_core::profile::{
    ExchangeKind, FieldValue, MessageProperties, Publication, Router, Timestamp, Topology,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::output::{Output, OutputClient, OutputError, ReportSender};
use crate::publisher::{self, PublishRequest};
use crate::runtime::Runtime;

/// How long opening a connection (TCP, AMQP handshake, topology) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a failed connection may take (a stalled or blocked one never answers).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The runtime's wall clock, for the timestamps of messages.
type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// One live AMQP connection with its declared topology and publishing channel.
pub struct Link {
    /// Increases with every connection, so a failure report names the link it saw fail.
    pub generation: u64,
    /// The connection.
    pub connection: Connection,
    /// The channel in confirm mode all publications go through.
    pub publish: Channel,
    /// The declared names of the queues the gateway consumes commands from.
    pub command_queues: Vec<String>,
    /// Event names whose per-event topology (Retsu) is declared on this connection.
    declared_events: std::sync::Mutex<std::collections::HashSet<String>>,
    /// This link's publisher task.
    publisher: publisher::Requests,
    /// Whether the broker blocks this connection (`connection.blocked`: a resource alarm).
    blocked: std::sync::atomic::AtomicBool,
    wall_clock: WallClock,
    /// The events connection, when amqprs publishes them (`amqp.client = "amqprs"`).
    #[cfg(feature = "amqprs")]
    amqprs: Option<crate::amqprs_link::Publisher>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("generation", &self.generation)
            .field("command_queues", &self.command_queues)
            .finish_non_exhaustive()
    }
}

/// AMQP as an [`Output`]: publications go to the link's publisher task, which reports the
/// broker's confirms.
impl Link {
    /// Hands a publication to this link's publisher task; `false` once the task is gone.
    fn request(
        &self,
        id: PublishId,
        publication: Arc<Publication>,
        reply: &ReportSender,
        pushed_at: Option<std::time::Instant>,
    ) -> bool {
        self.publisher
            .send(PublishRequest {
                id,
                publication,
                reply: reply.clone(),
                pushed_at,
            })
            .is_ok()
    }
}

impl Output for Link {
    fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the broker blocks this connection now (a memory or disk alarm); a change is
    /// announced through the watch channel with the same link.
    fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Hands a shard's publication to this link's publisher task (which publishes it outside
    /// the shard's loop and reports to `reply`). False when the publisher is gone.
    fn submit(&self, id: PublishId, publication: Arc<Publication>, reply: &ReportSender) -> bool {
        self.request(id, publication, reply, None)
    }

    /// The same; the publisher records the time from `pushed_at` to lapin's hand-off.
    fn submit_pushed_at(
        &self,
        id: PublishId,
        publication: Arc<Publication>,
        reply: &ReportSender,
        pushed_at: std::time::Instant,
    ) -> bool {
        self.request(id, publication, reply, Some(pushed_at))
    }
}

/// Why a call to RabbitMQ failed, in the words logged (never with the URL's secrets).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A lapin call failed.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// Declaring one object of the topology (`what`: which one) failed.
    #[error("{what}: {source}")]
    Declare {
        /// The object, e.g. `declaring queue "gateway"`.
        what: String,
        /// lapin's error.
        source: lapin::Error,
    },
    /// Opening the connection failed (lapin's text, scrubbed: it may quote the URL).
    #[error("{0}")]
    Connect(String),
    /// No connection within the connect timeout (in seconds).
    #[error("no connection within {0} s")]
    Timeout(u64),
    /// The broker nacked a message.
    #[error("the broker refused the message (nack)")]
    Nacked,
}

impl Link {
    /// Declares what the profile wants declared before the first publication of `event`
    /// (Retsu's `gateway:<EVENT>` queue), once per event name and connection.
    pub async fn ensure_event_topology(
        &self,
        router: &Router,
        event: &str,
    ) -> Result<(), BrokerError> {
        if self
            .declared_events
            .lock()
            .expect("not poisoned")
            .contains(event)
        {
            return Ok(());
        }
        if let Some(topology) = router.topology_for_event(event) {
            declare_topology(&self.publish, &topology).await?;
        }
        self.declared_events
            .lock()
            .expect("not poisoned")
            .insert(event.to_owned());
        Ok(())
    }

    /// Forgets that `event`'s per-event topology is declared (its queue may have been
    /// deleted: the broker returned a message for it), so the next publication declares it.
    pub(crate) fn forget_event(&self, event: &str) {
        self.declared_events
            .lock()
            .expect("not poisoned")
            .remove(event);
    }

    /// Publishes one message; the returned confirm resolves when the broker acks or nacks it.
    pub async fn publish(&self, publication: &Publication) -> lapin::Result<PublisherConfirm> {
        self.publish_with(publication, BasicPublishOptions::default())
            .await
    }

    /// Publishes one event, mandatory: the broker returns it if no queue is bound for it
    /// (lapin then resolves the confirm as an ack carrying the returned message).
    pub(crate) async fn publish_event(
        &self,
        publication: &Publication,
    ) -> lapin::Result<PublisherConfirm> {
        self.publish_with(publication, event_publish_options())
            .await
    }

    async fn publish_with(
        &self,
        publication: &Publication,
        options: BasicPublishOptions,
    ) -> lapin::Result<PublisherConfirm> {
        self.publish
            .basic_publish(
                ShortString::from(publication.exchange.as_str()),
                ShortString::from(publication.routing_key()),
                options,
                &publication.body,
                basic_properties(&publication.properties, (self.wall_clock)()),
            )
            .await
    }

    /// Publishes and waits for the broker's ack (for the rare messages outside the shards'
    /// outboxes: forwarded commands and dead letters).
    pub async fn publish_confirmed(&self, publication: &Publication) -> Result<(), BrokerError> {
        let confirm = self.publish(publication).await?;
        match confirm.await {
            Ok(c) if c.is_ack() => Ok(()),
            Ok(_) => Err(BrokerError::Nacked),
            Err(e) => Err(e.into()),
        }
    }
}

impl publisher::PublishLink for Link {
    fn generation(&self) -> u64 {
        self.generation
    }

    type Error = BrokerError;
    type Confirmation = publisher::LapinConfirmation;

    fn ensure_event_topology(
        &self,
        router: &Router,
        event: &str,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send {
        Link::ensure_event_topology(self, router, event)
    }

    async fn publish_event(
        &self,
        publication: &Publication,
    ) -> Result<publisher::LapinConfirmation, OutputError> {
        Link::publish_event(self, publication)
            .await
            .map(publisher::LapinConfirmation)
            .map_err(|e| OutputError::Client(e.to_string()))
    }

    fn forget_event(&self, event: &str) {
        Link::forget_event(self, event);
    }
}

/// A link whose events amqprs publishes (its events connection); the per-event topology stays
/// the lapin connection's.
#[cfg(feature = "amqprs")]
struct AmqprsEvents(Arc<Link>);

#[cfg(feature = "amqprs")]
impl publisher::PublishLink for AmqprsEvents {
    fn generation(&self) -> u64 {
        self.0.generation
    }

    type Error = BrokerError;
    type Confirmation = crate::amqprs_link::Confirmation;

    fn ensure_event_topology(
        &self,
        router: &Router,
        event: &str,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.0.ensure_event_topology(router, event)
    }

    async fn publish_event(
        &self,
        publication: &Publication,
    ) -> Result<crate::amqprs_link::Confirmation, OutputError> {
        match &self.0.amqprs {
            Some(events) => {
                events
                    .publish_event(publication, (self.0.wall_clock)())
                    .await
            }
            None => Err(OutputError::NotConnected("RabbitMQ (amqprs)")),
        }
    }

    fn forget_event(&self, event: &str) {
        self.0.forget_event(event);
    }
}

/// How events are published: mandatory, so that an event no queue is bound for comes back
/// (`basic.return`) instead of being confirmed silently.
pub(crate) fn event_publish_options() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    }
}

/// The shards' and consumers' view of the broker: the current link (if connected) and a way to
/// report that it failed.
#[derive(Clone, Debug)]
pub struct BrokerClient {
    link: watch::Receiver<Option<Arc<Link>>>,
    output: watch::Receiver<Option<Arc<dyn Output>>>,
    failures: mpsc::UnboundedSender<u64>,
}

impl BrokerClient {
    /// The current link, if connected.
    pub fn current(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    /// A receiver that wakes when the link changes.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Link>>> {
        self.link.clone()
    }

    /// The same links as the shards publish through them (the broker seam).
    pub(crate) fn output(&self) -> OutputClient {
        OutputClient::new(self.output.clone(), self.failures.clone())
    }

    /// Tells the supervisor that link `generation` failed (a publish error, for example); it
    /// reconnects unless it already has.
    pub fn report_failure(&self, generation: u64) {
        let _ = self.failures.send(generation);
    }
}

/// Settings of the supervisor.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// The AMQP URLs (at least one): a cluster's nodes, tried in turn.
    pub urls: Vec<SecretUrl>,
    /// What to declare on every connect.
    pub topology: Topology,
    /// The connection name shown in the management UI.
    pub connection_name: String,
    /// The router, for profiles that declare per event (`Router::needs_event_topology`).
    pub event_router: Option<Router>,
    /// The client events are published with (`amqp.client`; amqprs needs the feature and a
    /// tokio runtime: `outputs` refuses it otherwise).
    pub client: AmqpClient,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Starts the supervisor task; it connects, declares, and reconnects until `stop` is set.
pub fn start<R: Runtime>(
    rt: &R,
    settings: BrokerSettings,
    stop: watch::Receiver<bool>,
) -> BrokerClient {
    let (links, link_rx) = watch::channel(None);
    let (outputs, output_rx) = watch::channel(None);
    let (failure_tx, failure_rx) = mpsc::unbounded_channel();
    let link_tx = Announce { links, outputs };
    let supervisor = supervise(rt.clone(), settings, link_tx, failure_rx, stop);
    rt.spawn(supervisor);
    BrokerClient {
        link: link_rx,
        output: output_rx,
        failures: failure_tx,
    }
}

/// Announces the current link twice: as AMQP's (the command consumers) and as an [`Output`]
/// (the shards).
struct Announce {
    links: watch::Sender<Option<Arc<Link>>>,
    outputs: watch::Sender<Option<Arc<dyn Output>>>,
}

impl Announce {
    fn send_replace(&self, link: Option<Arc<Link>>) {
        self.outputs
            .send_replace(link.clone().map(|link| link as Arc<dyn Output>));
        self.links.send_replace(link);
    }
}

async fn supervise<R: Runtime>(
    rt: R,
    settings: BrokerSettings,
    link_tx: Announce,
    mut failures: mpsc::UnboundedReceiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failover = Failover::new(settings.urls.len());
    let mut connected_before = false;
    while !*stop.borrow() {
        let index = failover.current();
        let Some(url) = settings.urls.get(index) else {
            tracing::error!("no AMQP URL configured");
            break;
        };
        let connecting = connect(&rt, &settings, url);
        let timeout = rt.sleep(CONNECT_TIMEOUT);
        futures_util::pin_mut!(connecting, timeout);
        let connected = match futures_util::future::select(connecting, timeout).await {
            futures_util::future::Either::Left((result, _)) => result,
            futures_util::future::Either::Right(_) => {
                Err(BrokerError::Timeout(CONNECT_TIMEOUT.as_secs()))
            }
        };
        let next = match connected {
            Ok((link, requests, mut client_events)) => {
                let link = Arc::new(link);
                let (retire, retired) = oneshot::channel::<()>();
                spawn_publisher(rt.clone(), &link, requests, &settings, retired);
                tracing::info!(
                    url = %url,
                    address = index,
                    generation = link.generation,
                    "connected to RabbitMQ and declared the topology"
                );
                crate::metrics::record_amqp_connected(Some(index), connected_before);
                connected_before = true;
                failover.handle_connected();
                link_tx.send_replace(Some(link.clone()));
                let lost = wait_until_lost(
                    &rt,
                    &link,
                    &link_tx,
                    &mut client_events,
                    &mut failures,
                    &mut stop,
                )
                .await;
                link_tx.send_replace(None);
                drop(retire);
                crate::metrics::record_amqp_connected(None, false);
                if *stop.borrow() {
                    close(&rt, &link, 200, "shutting down").await;
                    break;
                }
                let next = failover.handle_lost();
                tracing::warn!(
                    url = %url,
                    reason = %lost,
                    next = %settings.urls[next.address],
                    after_ms = next.after.as_millis() as u64,
                    "lost the RabbitMQ connection; reconnecting"
                );
                close(&rt, &link, 320, "reconnecting").await;
                next
            }
            Err(e) => {
                let advice = crate::advice::amqp(&e.to_string(), &url.redacted());
                let next = failover.handle_failed();
                tracing::warn!(
                    url = %url,
                    error = %e,
                    advice = advice.as_deref(),
                    rounds = failover.rounds(),
                    next = %settings.urls[next.address],
                    after_ms = next.after.as_millis() as u64,
                    "cannot connect to RabbitMQ"
                );
                next
            }
        };
        if next.after.is_zero() {
            continue;
        }
        let sleep = rt.sleep(next.after);
        let stopped = stop.wait_for(|s| *s);
        futures_util::pin_mut!(sleep, stopped);
        futures_util::future::select(sleep, stopped).await;
    }
    link_tx.send_replace(None);
}

/// Starts `link`'s publisher task, on the client its events go through.
fn spawn_publisher<R: Runtime>(
    rt: R,
    link: &Arc<Link>,
    requests: mpsc::UnboundedReceiver<PublishRequest>,
    settings: &BrokerSettings,
    retired: oneshot::Receiver<()>,
) {
    let router = settings.event_router.clone();
    #[cfg(feature = "amqprs")]
    if link.amqprs.is_some() {
        let events = Arc::new(AmqprsEvents(link.clone()));
        rt.spawn(publisher::run(events, requests, router, retired));
        return;
    }
    rt.spawn(publisher::run(link.clone(), requests, router, retired));
}

/// What the link's events connection reports, when amqprs publishes the events (nothing
/// otherwise).
#[cfg(feature = "amqprs")]
type ClientEvents = Option<mpsc::UnboundedReceiver<crate::amqprs_link::ClientEvent>>;
#[cfg(not(feature = "amqprs"))]
type ClientEvents = ();

/// The next report of the events connection: `Err(reason)` when it ended, `Ok(blocked)` when
/// the broker blocked or unblocked it. Never resolves without one.
async fn next_client_event(events: &mut ClientEvents) -> Result<bool, String> {
    #[cfg(feature = "amqprs")]
    if let Some(events) = events {
        use crate::amqprs_link::ClientEvent;
        return match events.recv().await {
            Some(ClientEvent::Blocked(blocked)) => Ok(blocked),
            Some(ClientEvent::Lost(reason)) => Err(reason),
            None => Err("the amqprs connection's reports ended".into()),
        };
    }
    let _ = events;
    std::future::pending().await
}

/// `text` with the secrets of every configured URL scrubbed (an error may quote any of them).
fn scrub_all(urls: &[SecretUrl], text: &str) -> String {
    urls.iter()
        .fold(text.to_owned(), |text, url| url.scrub(&text))
}

/// Closes a connection, giving up after [`CLOSE_TIMEOUT`] (a stalled or blocked broker never
/// answers; dropping the connection then ends it).
async fn close<R: Runtime>(rt: &R, link: &Link, code: u16, reason: &str) {
    #[cfg(feature = "amqprs")]
    if let Some(events) = &link.amqprs {
        let closing = events.close(reason);
        let timeout = rt.sleep(CLOSE_TIMEOUT);
        futures_util::pin_mut!(closing, timeout);
        futures_util::future::select(closing, timeout).await;
    }
    let closing = link.connection.close(code, reason.into());
    let timeout = rt.sleep(CLOSE_TIMEOUT);
    futures_util::pin_mut!(closing, timeout);
    futures_util::future::select(closing, timeout).await;
}

/// Waits until the link fails (an error event, a closed channel, a failure report: a publish
/// error or an overdue confirm) or `stop`. While the broker blocks the connection (a memory or
/// disk alarm), publications wait in the link's publisher task, never in a shard's loop; the
/// block is announced to the shards (the same link again on the watch channel, with
/// `Output::is_blocked` changed), whose outboxes then do not count its confirms as overdue.
async fn wait_until_lost<R: Runtime>(
    rt: &R,
    link: &Arc<Link>,
    link_tx: &Announce,
    client_events: &mut ClientEvents,
    failures: &mut mpsc::UnboundedReceiver<u64>,
    stop: &mut watch::Receiver<bool>,
) -> String {
    use futures_util::future::{Either, select};
    enum Seen {
        Lost(String),
        Blocked(bool),
        Failure(u64),
        Nothing,
    }
    let mut events = link.connection.events_listener();
    loop {
        let seen = {
            let tick = rt.sleep(Duration::from_millis(500));
            let event = events.next();
            let failure = failures.recv();
            let stopped = stop.wait_for(|s| *s);
            let client_event = next_client_event(client_events);
            futures_util::pin_mut!(tick, event, failure, stopped, client_event);
            match select(
                select(select(event, failure), client_event),
                select(tick, stopped),
            )
            .await
            {
                Either::Left((Either::Right((Err(reason), _)), _)) => Seen::Lost(reason),
                Either::Left((Either::Right((Ok(blocked), _)), _)) => {
                    if blocked {
                        tracing::warn!("RabbitMQ blocked publishing (amqprs); pausing");
                    } else {
                        tracing::info!("RabbitMQ unblocked publishing (amqprs); resuming");
                    }
                    Seen::Blocked(blocked)
                }
                Either::Left((Either::Left((lapin_side, _)), _)) => match lapin_side {
                    Either::Left((Some(lapin::Event::Error(e)), _)) => Seen::Lost(e.to_string()),
                    Either::Left((None, _)) => {
                        Seen::Lost("the connection's event stream ended".into())
                    }
                    Either::Left((Some(lapin::Event::ConnectionBlocked(why)), _)) => {
                        tracing::warn!(reason = %why, "RabbitMQ blocked publishing; pausing");
                        Seen::Blocked(true)
                    }
                    Either::Left((Some(lapin::Event::ConnectionUnblocked), _)) => {
                        tracing::info!("RabbitMQ unblocked publishing; resuming");
                        Seen::Blocked(false)
                    }
                    Either::Right((Some(generation), _)) => Seen::Failure(generation),
                    _ => Seen::Nothing,
                },
                _ => Seen::Nothing,
            }
        };
        match seen {
            Seen::Lost(reason) => return reason,
            Seen::Failure(generation) if generation == link.generation => {
                return "a publish failed or a confirm is overdue".into();
            }
            Seen::Blocked(blocked) => {
                link.blocked.store(blocked, Ordering::Relaxed);
                link_tx.send_replace(Some(link.clone()));
            }
            Seen::Failure(_) | Seen::Nothing => {}
        }
        if *stop.borrow() {
            return "shutting down".into();
        }
        if !link.connection.status().connected() {
            return "the connection closed".into();
        }
        if !link.publish.status().connected() {
            return "the publishing channel closed".into();
        }
        #[cfg(feature = "amqprs")]
        if link.amqprs.as_ref().is_some_and(|events| !events.is_open()) {
            return "the amqprs events connection or its channel closed".into();
        }
    }
}

async fn connect<R: Runtime>(
    rt: &R,
    settings: &BrokerSettings,
    url: &SecretUrl,
) -> Result<(Link, mpsc::UnboundedReceiver<PublishRequest>, ClientEvents), BrokerError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(settings.connection_name.clone().into());
    let connection = Connection::connect_with_config(
        url.expose(),
        properties,
        crate::tls::amqp(),
        rt.amqp_runtime(),
    )
    .await
    // lapin's URI errors may quote the URL.
    .map_err(|e| BrokerError::Connect(scrub_all(&settings.urls, &e.to_string())))?;
    let declare = connection.create_channel().await?;
    let command_queues = declare_topology(&declare, &settings.topology).await?;
    let _ = declare.close(200, "declared".into()).await;
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    #[cfg(feature = "amqprs")]
    let (amqprs, client_events) = match settings.client {
        AmqpClient::Amqprs => {
            let (events, events_rx) = mpsc::unbounded_channel();
            let name = format!("{} events (amqprs)", settings.connection_name);
            let publisher = crate::amqprs_link::Publisher::open(url, &name, events)
                .await
                .map_err(|e| BrokerError::Connect(format!("amqprs: {e:#}")))?;
            (Some(publisher), Some(events_rx))
        }
        AmqpClient::Lapin => (None, None),
    };
    #[cfg(not(feature = "amqprs"))]
    let client_events = ();
    let (requests, requests_rx) = publisher::channel();
    let clock = rt.clone();
    let link = Link {
        generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        connection,
        publish,
        command_queues,
        declared_events: Default::default(),
        publisher: requests,
        blocked: Default::default(),
        wall_clock: Arc::new(move || clock.wall_clock()),
        #[cfg(feature = "amqprs")]
        amqprs,
    };
    Ok((link, requests_rx, client_events))
}

/// Declares exchanges, queues and bindings in order. Returns the (possibly server-generated)
/// names of the queues marked `consume_commands`.
pub async fn declare_topology(
    channel: &Channel,
    topology: &Topology,
) -> Result<Vec<String>, BrokerError> {
    for exchange in &topology.exchanges {
        let kind = match exchange.kind {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        };
        let options = ExchangeDeclareOptions {
            durable: exchange.durable,
            auto_delete: exchange.auto_delete,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                exchange.name.as_str().into(),
                kind,
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: format!("declaring exchange {:?}", exchange.name),
                source,
            })?;
    }
    let mut last_queue = String::new();
    let mut command_queues = Vec::new();
    for queue in &topology.queues {
        let options = QueueDeclareOptions {
            durable: queue.durable,
            exclusive: queue.exclusive,
            auto_delete: queue.auto_delete,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(
                queue.name.as_str().into(),
                options,
                field_table(&queue.arguments),
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: format!("declaring queue {:?}", queue.name),
                source,
            })?;
        last_queue = declared.name().as_str().to_owned();
        if queue.consume_commands {
            command_queues.push(last_queue.clone());
        }
    }
    for binding in &topology.bindings {
        let queue = if binding.queue.is_empty() {
            last_queue.as_str()
        } else {
            binding.queue.as_str()
        };
        channel
            .queue_bind(
                queue.into(),
                binding.exchange.as_str().into(),
                binding.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: format!("binding {queue:?} to {:?}", binding.exchange),
                source,
            })?;
    }
    Ok(command_queues)
}

fn field_value(value: &FieldValue) -> AMQPValue {
    match value {
        FieldValue::Int(i) => AMQPValue::LongLongInt(*i),
        FieldValue::Str(s) => AMQPValue::LongString(s.as_str().into()),
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
    }
}

fn field_table(arguments: &[(String, FieldValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        table.insert(key.as_str().into(), field_value(value));
    }
    table
}

/// The `timestamp` property the profile wants (`None`: no timestamp), from `wall_clock`.
pub(crate) fn message_timestamp(timestamp: Timestamp, wall_clock: SystemTime) -> Option<u64> {
    let since_epoch = wall_clock.duration_since(UNIX_EPOCH).unwrap_or_default();
    match timestamp {
        Timestamp::None => None,
        Timestamp::Seconds => Some(since_epoch.as_secs()),
        Timestamp::Millis => Some(since_epoch.as_millis() as u64),
    }
}

/// The lapin properties of a publication, with the timestamp stamped from `wall_clock`.
pub fn basic_properties(properties: &MessageProperties, wall_clock: SystemTime) -> BasicProperties {
    let mut out =
        BasicProperties::default().with_delivery_mode(if properties.persistent { 2 } else { 1 });
    if let Some(content_type) = properties.content_type {
        out = out.with_content_type(content_type.into());
    }
    if let Some(id) = &properties.message_id {
        out = out.with_message_id(id.as_str().into());
    }
    if let Some(timestamp) = message_timestamp(properties.timestamp, wall_clock) {
        out = out.with_timestamp(timestamp);
    }
    if let Some(ms) = properties.expiration_ms {
        out = out.with_expiration(ms.to_string().into());
    }
    if !properties.headers.is_empty() {
        let mut headers = FieldTable::default();
        for (key, value) in &properties.headers {
            headers.insert((*key).into(), field_value(value));
        }
        out = out.with_headers(headers);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_hide_every_configured_password() {
        let urls = vec![
            SecretUrl::new("amqp://u:first-secret@a:5672/%2f"),
            SecretUrl::new("amqp://u:second-secret@b:5673/%2f"),
        ];
        let text = scrub_all(
            &urls,
            "cannot parse amqp://u:second-secret@b:5673/%2f (first-secret)",
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("amqp://u:***@b:5673/%2f"), "{text}");
    }

    #[test]
    fn properties_follow_the_publication() {
        let properties = MessageProperties {
            persistent: true,
            content_type: Some("application/json"),
            message_id: Some("abc:1".into()),
            timestamp: Timestamp::Millis,
            expiration_ms: Some(120_000),
            headers: vec![
                ("x-shard-id", FieldValue::Int(3)),
                ("x-session-id", FieldValue::Str("abc".into())),
            ],
        };
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let out = basic_properties(&properties, wall);
        assert_eq!(out.delivery_mode(), &Some(2));
        assert_eq!(out.timestamp(), &Some(1_700_000_000_123));
        assert_eq!(
            out.expiration().as_ref().map(|s| s.as_str()),
            Some("120000")
        );
        assert_eq!(out.message_id().as_ref().map(|s| s.as_str()), Some("abc:1"));
        let headers = out.headers().as_ref().unwrap().inner();
        assert_eq!(headers.get("x-shard-id"), Some(&AMQPValue::LongLongInt(3)));

        let seconds = MessageProperties {
            timestamp: Timestamp::Seconds,
            ..MessageProperties::default()
        };
        let out = basic_properties(&seconds, wall);
        assert_eq!(out.timestamp(), &Some(1_700_000_000));
        assert_eq!(out.delivery_mode(), &Some(1));
        assert_eq!(out.headers(), &None);
    }
}
