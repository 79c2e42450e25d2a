//! The amqprs publish path (issue 13, item 1; `amqp.client = "amqprs"`, tokio binary only):
//! events go out on a second connection of the link, opened with amqprs, while lapin keeps the
//! topology, the command consumers, forwarded commands and dead letters.
//!
//! Owns: opening that connection (the link's URL, its heartbeat, TLS with Gatehouse's roots),
//! its confirm-mode channel, converting a publication into amqprs' types, and turning amqprs'
//! raw answers into one outcome per publication: every publication on the channel is
//! registered with `proto_core::confirm_tags::ConfirmTags` (which decides which publication an
//! ack, nack or return is for) in the order it is sent, under one lock. It reports what ends
//! the connection (a network failure, the broker closing the connection or the channel) and
//! `connection.blocked`/`unblocked` to the broker supervisor (`broker`), and fails every
//! unsettled publication when the connection ends (the shards' outboxes publish them again).
//! Does not own reconnecting, the topology or which address (`broker`), nor the publisher
//! task (`publisher`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, FieldTable, Nack, Return};
use gatehouse_config::SecretUrl;
use proto_core::confirm_tags::ConfirmTags;
use proto_core::outbox::Confirm;
use proto_core::profile::{FieldValue, MessageProperties, Publication};
use tokio::sync::{mpsc, oneshot};

use crate::output::OutputError;

/// The header that names a publication in a `basic.return` when its profile sets no message id.
pub(crate) const RETURN_KEY_HEADER: &str = "x-gatehouse-publish-id";

/// What amqprs' callbacks return.
type CallbackResult<T> = Result<T, amqprs::error::Error>;

/// Where a publication's outcome goes.
type Reply = oneshot::Sender<Result<Confirm, OutputError>>;

/// What the amqprs connection tells the broker supervisor.
#[derive(Debug)]
pub(crate) enum ClientEvent {
    /// The connection or its channel ended (why).
    Lost(String),
    /// The broker blocked (`true`) or unblocked publishing on it.
    Blocked(bool),
}

/// The confirm bookkeeping the channel's callback and the publisher share.
struct Shared {
    tags: std::sync::Mutex<Tags>,
    events: mpsc::UnboundedSender<ClientEvent>,
}

struct Tags {
    tags: ConfirmTags<Reply>,
    /// Why the channel ended, once it has: nothing more is published or answered on it.
    ended: Option<String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tags> {
        self.tags.lock().expect("not poisoned")
    }

    /// The channel ended: every unsettled publication fails with `reason`; the supervisor is
    /// told (once).
    fn end(&self, reason: String) {
        let failed = {
            let mut tags = self.lock();
            if tags.ended.is_some() {
                return;
            }
            tags.ended = Some(reason.clone());
            tags.tags.fail_all()
        };
        for reply in failed {
            let _ = reply.send(Err(OutputError::Client(reason.clone())));
        }
        let _ = self.events.send(ClientEvent::Lost(reason));
    }

    fn confirm(&self, tag: u64, multiple: bool, ack: bool) {
        let settled = self.lock().tags.handle_confirm(tag, multiple, ack);
        for (reply, confirm) in settled {
            let _ = reply.send(Ok(confirm));
        }
    }
}

/// The amqprs side of one link: its connection and the confirm channel every event goes
/// through.
pub(crate) struct Publisher {
    connection: Connection,
    channel: Channel,
    shared: Arc<Shared>,
    /// Held from registering a publication's tag until amqprs has queued its frames, so tags
    /// follow the order on the wire (tokio's lock is first come, first served).
    order: tokio::sync::Mutex<()>,
    /// The next value of [`RETURN_KEY_HEADER`].
    next_key: AtomicU64,
    /// Ends the connection's failure watcher when dropped.
    _watching: oneshot::Sender<()>,
}

/// A publication's outcome, once the broker answered (or the connection ended).
pub(crate) struct Confirmation(oneshot::Receiver<Result<Confirm, OutputError>>);

impl std::future::Future for Confirmation {
    type Output = Result<Confirm, OutputError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(OutputError::Client(
                    "the amqprs connection ended before the broker answered".into(),
                ))
            })
        })
    }
}

/// amqprs' connection settings for `url` (parsed as lapin parses it): host, port, virtual
/// host, credentials, the URL's `heartbeat` (amqprs' 60 s without one), TLS for `amqps://`.
fn open_arguments(
    url: &SecretUrl,
    connection_name: &str,
    tls: impl FnOnce() -> anyhow::Result<tokio_rustls::TlsConnector>,
) -> anyhow::Result<OpenConnectionArguments> {
    let uri: lapin::uri::AMQPUri = url
        .expose()
        .parse()
        .map_err(|e: String| anyhow::anyhow!(url.scrub(&e)))?;
    let authority = &uri.authority;
    let mut arguments = OpenConnectionArguments::new(
        &authority.host,
        authority.port,
        &authority.userinfo.username,
        &authority.userinfo.password,
    );
    arguments
        .virtual_host(&uri.vhost)
        .connection_name(connection_name);
    if let Some(heartbeat) = uri.query.heartbeat {
        arguments.heartbeat(heartbeat);
    }
    if uri.scheme == lapin::uri::AMQPScheme::AMQPS {
        arguments.tls_adaptor(amqprs::tls::TlsAdaptor::new(tls()?, authority.host.clone()));
    }
    Ok(arguments)
}

impl Publisher {
    /// Opens the events connection to `url` and its confirm channel; what ends it or blocks it
    /// goes to `events`.
    pub(crate) async fn open(
        url: &SecretUrl,
        connection_name: &str,
        events: mpsc::UnboundedSender<ClientEvent>,
    ) -> anyhow::Result<Self> {
        Self::open_trusting(url, connection_name, events, crate::tls::roots()).await
    }

    /// [`Publisher::open`], trusting `roots` for `amqps://`.
    async fn open_trusting(
        url: &SecretUrl,
        connection_name: &str,
        events: mpsc::UnboundedSender<ClientEvent>,
        roots: &crate::tls::TlsRoots,
    ) -> anyhow::Result<Self> {
        let arguments =
            open_arguments(url, connection_name, || crate::tls::amqprs_connector(roots))?;
        let scrub = |e: amqprs::error::Error| anyhow::anyhow!(url.scrub(&e.to_string()));
        let connection = Connection::open(&arguments).await.map_err(scrub)?;
        let shared = Arc::new(Shared {
            tags: std::sync::Mutex::new(Tags {
                tags: ConfirmTags::new(),
                ended: None,
            }),
            events,
        });
        // Subscribed now, before anything can fail. The watcher holds a handle of the
        // connection (which keeps it open): it ends when this publisher is dropped. A tokio
        // task, as amqprs' own reader and writer are (amqprs runs on tokio only).
        let (watching, dropped) = oneshot::channel::<()>();
        let watcher = connection.clone();
        let on_failure = shared.clone();
        tokio::spawn(async move {
            let failed = watcher.listen_network_io_failure();
            futures_util::pin_mut!(failed);
            if let futures_util::future::Either::Left((network, _)) =
                futures_util::future::select(failed, dropped).await
            {
                on_failure.end(if network {
                    "the amqprs connection failed (network I/O)".into()
                } else {
                    "the amqprs connection ended".into()
                });
            }
        });
        let channel = match Self::open_channel(&connection, &shared).await {
            Ok(channel) => channel,
            Err(e) => {
                let _ = connection.close().await;
                return Err(scrub(e));
            }
        };
        Ok(Self {
            connection,
            channel,
            shared,
            order: tokio::sync::Mutex::new(()),
            next_key: AtomicU64::new(1),
            _watching: watching,
        })
    }

    /// Registers the callbacks and opens the confirm-mode channel.
    async fn open_channel(
        connection: &Connection,
        shared: &Arc<Shared>,
    ) -> Result<Channel, amqprs::error::Error> {
        connection
            .register_callback(ConnectionEvents(shared.clone()))
            .await?;
        let channel = connection.open_channel(None).await?;
        channel
            .register_callback(ChannelEvents(shared.clone()))
            .await?;
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await?;
        Ok(channel)
    }

    /// Publishes one event, mandatory; the confirmation resolves when the broker acks, nacks or
    /// returns it, or the connection ends.
    pub(crate) async fn publish_event(
        &self,
        publication: &Publication,
        wall_clock: SystemTime,
    ) -> Result<Confirmation, OutputError> {
        let (reply, answer) = oneshot::channel();
        let _in_order = self.order.lock().await;
        let header_key = match publication.properties.message_id {
            Some(_) => None,
            None => Some(self.next_key.fetch_add(1, Ordering::Relaxed)),
        };
        let (properties, key) = properties(&publication.properties, wall_clock, header_key);
        {
            let mut tags = self.shared.lock();
            if let Some(reason) = &tags.ended {
                return Err(OutputError::Client(reason.clone()));
            }
            tags.tags.publish(key, reply);
        }
        let arguments = BasicPublishArguments {
            exchange: publication.exchange.clone(),
            routing_key: publication.routing_key().to_owned(),
            mandatory: true,
            immediate: false,
        };
        if let Err(e) = self
            .channel
            .basic_publish(properties, publication.body.to_vec(), arguments)
            .await
        {
            // The writer is gone: nothing more is answered on this channel.
            self.shared
                .end(format!("cannot publish on the amqprs connection: {e}"));
        }
        Ok(Confirmation(answer))
    }

    /// Whether the connection and its channel are still open.
    pub(crate) fn is_open(&self) -> bool {
        self.connection.is_open() && self.channel.is_open()
    }

    /// Fails every unsettled publication (`reason`) and closes the connection.
    pub(crate) async fn close(&self, reason: &str) {
        self.shared.end(reason.to_owned());
        let _ = self.connection.clone().close().await;
    }

    /// Publications registered and not yet answered.
    #[cfg(test)]
    fn unsettled(&self) -> usize {
        self.shared.lock().tags.unsettled()
    }
}

/// Opens an events connection to `url` as a link does, trusting `roots` for `amqps://`, and
/// closes it again: whether amqprs gets through (the TLS test, `tests/tls.rs`).
pub async fn try_connection(url: &str, roots: &crate::tls::TlsRoots) -> anyhow::Result<()> {
    let (events, _) = mpsc::unbounded_channel();
    let publisher =
        Publisher::open_trusting(&SecretUrl::new(url), "gatehouse try", events, roots).await?;
    publisher.close("done").await;
    Ok(())
}

/// The key a `basic.return` is matched by: the message id where the profile sets one,
/// otherwise the value of [`RETURN_KEY_HEADER`].
fn return_key(properties: &BasicProperties) -> Option<String> {
    if let Some(id) = properties.message_id() {
        return Some(id.clone());
    }
    let name: amqprs::FieldName = RETURN_KEY_HEADER.try_into().ok()?;
    match properties.headers()?.get(&name)? {
        amqprs::FieldValue::l(key) => Some(key.to_string()),
        _ => None,
    }
}

fn field_value(value: &FieldValue) -> amqprs::FieldValue {
    match value {
        FieldValue::Int(i) => amqprs::FieldValue::l(*i),
        FieldValue::Str(s) => amqprs::FieldValue::from(s.as_str()),
        FieldValue::Bool(b) => amqprs::FieldValue::t(*b),
    }
}

fn field_name(name: &str) -> amqprs::FieldName {
    name.try_into().expect("header names are short strings")
}

/// amqprs' properties of a publication (as `broker::basic_properties` makes lapin's), stamped
/// from `wall_clock`, and the key its return would be matched by: the message id, or
/// `header_key` put in [`RETURN_KEY_HEADER`] when the profile sets no message id.
fn properties(
    properties: &MessageProperties,
    wall_clock: SystemTime,
    header_key: Option<u64>,
) -> (BasicProperties, String) {
    let mut out = BasicProperties::default();
    out.with_delivery_mode(if properties.persistent { 2 } else { 1 });
    if let Some(content_type) = properties.content_type {
        out.with_content_type(content_type);
    }
    if let Some(timestamp) = crate::broker::message_timestamp(properties.timestamp, wall_clock) {
        out.with_timestamp(timestamp);
    }
    if let Some(ms) = properties.expiration_ms {
        out.with_expiration(&ms.to_string());
    }
    let mut headers = FieldTable::new();
    for (key, value) in &properties.headers {
        headers.insert(field_name(key), field_value(value));
    }
    let key = match (&properties.message_id, header_key) {
        (Some(id), _) => {
            out.with_message_id(id);
            id.clone()
        }
        (None, key) => {
            let key = key.unwrap_or_default();
            headers.insert(
                field_name(RETURN_KEY_HEADER),
                amqprs::FieldValue::l(key as i64),
            );
            key.to_string()
        }
    };
    if !headers.as_ref().is_empty() {
        out.with_headers(headers);
    }
    (out, key)
}

/// The connection's callback: a close by the broker ends the link; blocks are announced.
struct ConnectionEvents(Arc<Shared>);

#[async_trait::async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(&mut self, _connection: &Connection, close: Close) -> CallbackResult<()> {
        self.0
            .end(format!("RabbitMQ closed the amqprs connection: {close}"));
        Ok(())
    }

    async fn blocked(&mut self, _connection: &Connection, reason: String) {
        tracing::warn!(%reason, "RabbitMQ blocked the amqprs connection");
        let _ = self.0.events.send(ClientEvent::Blocked(true));
    }

    async fn unblocked(&mut self, _connection: &Connection) {
        let _ = self.0.events.send(ClientEvent::Blocked(false));
    }

    async fn secret_updated(&mut self, _connection: &Connection) {}
}

/// The channel's callback: acks, nacks and returns settle publications; a close ends the link.
struct ChannelEvents(Arc<Shared>);

#[async_trait::async_trait]
impl ChannelCallback for ChannelEvents {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> CallbackResult<()> {
        self.0.end(format!(
            "RabbitMQ closed the amqprs publishing channel: {close}"
        ));
        Ok(())
    }

    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> CallbackResult<()> {
        Ok(())
    }

    async fn flow(&mut self, _channel: &Channel, _active: bool) -> CallbackResult<bool> {
        Ok(true)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.0.confirm(ack.delivery_tag(), ack.mutiple(), true);
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.0.confirm(nack.delivery_tag(), nack.multiple(), false);
    }

    async fn publish_return(
        &mut self,
        _channel: &Channel,
        ret: Return,
        properties: BasicProperties,
        _body: Vec<u8>,
    ) {
        let matched =
            return_key(&properties).is_some_and(|key| self.0.lock().tags.handle_return(&key));
        if !matched {
            tracing::warn!(
                reply = %ret,
                "RabbitMQ returned a message that matches no unconfirmed publication"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::time::UNIX_EPOCH;

    use proto_core::profile::{MessageKey, Timestamp};

    use super::*;

    #[test]
    fn a_return_is_matched_by_message_id_or_else_by_the_added_header() {
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let with_id = MessageProperties {
            persistent: true,
            content_type: Some("application/json"),
            message_id: Some("abc:1".into()),
            timestamp: Timestamp::Millis,
            expiration_ms: Some(120_000),
            headers: vec![("x-shard-id", FieldValue::Int(3))],
        };
        let (out, key) = properties(&with_id, wall, None);
        assert_eq!(key, "abc:1");
        assert_eq!(return_key(&out).as_deref(), Some("abc:1"));
        assert_eq!(out.delivery_mode(), Some(2));
        assert_eq!(out.timestamp(), Some(1_700_000_000_123));
        assert_eq!(out.expiration().map(String::as_str), Some("120000"));
        assert_eq!(
            out.content_type().map(String::as_str),
            Some("application/json")
        );
        let headers = out.headers().unwrap();
        assert_eq!(
            headers.get(&field_name("x-shard-id")),
            Some(&amqprs::FieldValue::l(3))
        );
        assert_eq!(headers.get(&field_name(RETURN_KEY_HEADER)), None);

        let (out, key) = properties(&MessageProperties::persistent(), wall, Some(42));
        assert_eq!(key, "42");
        assert_eq!(out.message_id(), None);
        assert_eq!(return_key(&out).as_deref(), Some("42"));
        assert_eq!(out.timestamp(), None);
        assert_eq!(out.delivery_mode(), Some(2));
    }

    #[test]
    fn urls_become_amqprs_arguments_with_their_heartbeat() {
        let url = SecretUrl::new("amqp://user:p%40ss@broker:5673/my%2fvhost?heartbeat=7");
        let arguments = open_arguments(&url, "gatehouse events", || unreachable!()).unwrap();
        assert_eq!(arguments.get_host(), "broker");
        assert_eq!(arguments.get_port(), 5673);
        assert_eq!(arguments.get_virtual_host(), "my/vhost");
        assert_eq!(arguments.get_heartbeat(), 7);
        assert!(arguments.get_tls_adaptor().is_none());
        let tls = SecretUrl::new("amqps://u:secret@broker/%2f");
        let arguments = open_arguments(&tls, "gatehouse events", || {
            crate::install_crypto_provider();
            crate::tls::amqprs_connector(&crate::tls::TlsRoots::default())
        })
        .unwrap();
        assert_eq!(arguments.get_port(), 5671);
        assert!(arguments.get_tls_adaptor().is_some());
    }

    fn event(exchange: &str, key: &str, message_id: Option<String>) -> Publication {
        Publication {
            exchange: exchange.to_owned(),
            key: MessageKey::Event(key.to_owned()),
            body: bytes::Bytes::from_static(b"{}"),
            properties: MessageProperties {
                message_id,
                ..MessageProperties::persistent()
            },
        }
    }

    /// Against the real RabbitMQ (127.0.0.1:5672, uniquely named exchange and queue, deleted
    /// after): with no queue bound an event comes back `Returned` (matched by message id or by
    /// the added header), a routed one is an `Ack`, one refused by a full queue
    /// (`x-overflow: reject-publish`) a `Nack`; each answer reaches its own publication, also
    /// when many are in flight. Closing the connection fails what is unsettled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_real_broker_acks_returns_and_nacks_each_publication() {
        use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions};
        use lapin::types::{AMQPValue, FieldTable as LapinTable};

        let url = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let lapin = lapin::Connection::connect_with_config(
            &url,
            lapin::ConnectionProperties::default(),
            Default::default(),
            async_rs::Runtime::tokio_current(),
        )
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (scripts/services.sh)");
        let declare = lapin.create_channel().await.unwrap();
        let exchange = format!("gatehouse-test-amqprs-{}", std::process::id());
        declare
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                LapinTable::default(),
            )
            .await
            .unwrap();
        let mut arguments = LapinTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(3));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        let queue = declare
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .unwrap();
        declare
            .queue_bind(
                queue.name().as_str().into(),
                exchange.as_str().into(),
                "FULL".into(),
                Default::default(),
                LapinTable::default(),
            )
            .await
            .unwrap();

        let (events, mut events_rx) = mpsc::unbounded_channel();
        let publisher = Publisher::open(&SecretUrl::new(url.as_str()), "gatehouse test", events)
            .await
            .unwrap();
        // 40 in flight: every 4th to a key nothing binds (every other one of those with a
        // message id), the others to the queue of 3.
        let mut confirmations = Vec::new();
        for i in 0..40 {
            let key = if i % 4 == 0 { "NOBODY_BINDS" } else { "FULL" };
            let id = (i % 8 == 0).then(|| format!("m:{i}"));
            let publication = event(&exchange, key, id);
            confirmations.push(
                publisher
                    .publish_event(&publication, SystemTime::now())
                    .await
                    .unwrap(),
            );
        }
        let mut answers = Vec::new();
        for confirmation in confirmations {
            answers.push(
                tokio::time::timeout(Duration::from_secs(10), confirmation)
                    .await
                    .expect("answered")
                    .unwrap(),
            );
        }
        let expected: Vec<Confirm> = (0..40)
            .map(|i| match i {
                i if i % 4 == 0 => Confirm::Returned,
                1..=3 => Confirm::Ack,
                _ => Confirm::Nack,
            })
            .collect();
        assert_eq!(answers, expected);
        assert_eq!(publisher.unsettled(), 0);
        assert!(publisher.is_open());

        // Unsettled publications fail when the connection ends, and the end is reported.
        let late = publisher
            .publish_event(&event(&exchange, "FULL", None), SystemTime::now())
            .await
            .unwrap();
        publisher.close("test over").await;
        let answer = tokio::time::timeout(Duration::from_secs(10), late)
            .await
            .expect("failed, not forgotten");
        assert!(
            matches!(answer, Err(OutputError::Client(_)) | Ok(Confirm::Nack)),
            "{answer:?}"
        );
        assert!(matches!(events_rx.recv().await, Some(ClientEvent::Lost(_))));
        assert!(!publisher.is_open());
        assert!(
            publisher
                .publish_event(&event(&exchange, "FULL", None), SystemTime::now())
                .await
                .is_err(),
            "nothing is published on an ended connection"
        );

        declare
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        let _ = lapin.close(200, "done".into()).await;
    }
}
