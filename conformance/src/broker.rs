//! RabbitMQ through AMQP (lapin), as a worker uses it: declare and bind, consume into an inbox,
//! publish commands with confirms, and check whether the gateway's exchanges and queues exist.
//!
//! Owns one connection to one scenario's vhost, and the shapes it declares and publishes
//! ([`ExchangeSpec`], [`OutgoingMessage`]). It does not create vhosts (see
//! [`crate::isolation`]) and does not read topology details such as exchange types (see
//! [`rabbitmq_management`]), which AMQP cannot report.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// An exchange type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeType {
    /// direct
    Direct,
    /// topic
    Topic,
    /// fanout
    Fanout,
    /// headers
    Headers,
}

impl ExchangeType {
    /// The broker's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Topic => "topic",
            Self::Fanout => "fanout",
            Self::Headers => "headers",
        }
    }

    /// Parses the broker's name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Direct, Self::Topic, Self::Fanout, Self::Headers]
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    fn lapin(self) -> ExchangeKind {
        match self {
            Self::Direct => ExchangeKind::Direct,
            Self::Topic => ExchangeKind::Topic,
            Self::Fanout => ExchangeKind::Fanout,
            Self::Headers => ExchangeKind::Headers,
        }
    }
}

/// An exchange as declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Name.
    pub name: &'static str,
    /// Type.
    pub kind: ExchangeType,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
}

/// One message a worker publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The exchange (empty: the default exchange).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A header value, simplified.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    /// Any integer type.
    Int(i64),
    /// A short or long string (long strings that are not UTF-8 are shown lossily).
    Str(String),
    /// A boolean.
    Bool(bool),
    /// Anything else, debug-printed.
    Other(String),
}

impl HeaderValue {
    /// Equality that also accepts an integer sent as a decimal string.
    pub fn same_as(&self, other: &HeaderValue) -> bool {
        match (self, other) {
            (Self::Int(a), Self::Str(b)) | (Self::Str(b), Self::Int(a)) => {
                b.parse::<i64>().ok() == Some(*a)
            }
            (a, b) => a == b,
        }
    }

    fn from_amqp(value: &AMQPValue) -> Self {
        match value {
            AMQPValue::Boolean(b) => Self::Bool(*b),
            AMQPValue::ShortShortInt(i) => Self::Int((*i).into()),
            AMQPValue::ShortShortUInt(i) => Self::Int((*i).into()),
            AMQPValue::ShortInt(i) => Self::Int((*i).into()),
            AMQPValue::ShortUInt(i) => Self::Int((*i).into()),
            AMQPValue::LongInt(i) => Self::Int((*i).into()),
            AMQPValue::LongUInt(i) => Self::Int((*i).into()),
            AMQPValue::LongLongInt(i) => Self::Int(*i),
            AMQPValue::Timestamp(t) => Self::Int(*t as i64),
            AMQPValue::ShortString(s) => Self::Str(s.as_str().to_owned()),
            AMQPValue::LongString(s) => {
                Self::Str(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            other => Self::Other(format!("{other:?}")),
        }
    }
}

/// The properties of a delivered message that the suite checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    /// `delivery_mode`.
    pub delivery_mode: Option<u8>,
    /// `content_type`.
    pub content_type: Option<String>,
    /// `message_id`.
    pub message_id: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<u64>,
    /// `expiration`.
    pub expiration: Option<String>,
    /// Headers, in the broker's order.
    pub headers: Vec<(String, HeaderValue)>,
}

/// One message a worker received.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The queue it was consumed from.
    pub queue: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its body.
    pub body: Vec<u8>,
    /// Its properties.
    pub properties: Properties,
    /// When the worker got it.
    pub received_at: Instant,
}

impl Delivery {
    /// A header by name.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.properties
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Messages consumed so far, shared with the consumer tasks.
#[derive(Clone, Debug, Default)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<Delivery>>>,
}

impl Inbox {
    /// A copy of everything received so far, in arrival order.
    pub fn snapshot(&self) -> Vec<Delivery> {
        self.messages.lock().expect("inbox lock").clone()
    }

    /// How many messages arrived so far.
    pub fn len(&self) -> usize {
        self.messages.lock().expect("inbox lock").len()
    }

    /// Whether nothing arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `done(messages)` holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.messages.lock().expect("inbox lock")) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn push(&self, delivery: Delivery) {
        self.messages.lock().expect("inbox lock").push(delivery);
    }
}

/// An AMQP error with context.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct BrokerError {
    what: String,
    source: lapin::Error,
}

fn ctx<T>(what: impl Into<String>, r: lapin::Result<T>) -> Result<T, BrokerError> {
    r.map_err(|source| BrokerError {
        what: what.into(),
        source,
    })
}

/// A worker's connection to one vhost.
pub struct Broker {
    connection: Connection,
    channel: Channel,
    inbox: Inbox,
}

impl Broker {
    /// Connects (the URL names the vhost) and opens a channel with publisher confirms.
    pub async fn connect(amqp_url: &str) -> Result<Self, BrokerError> {
        let connection = ctx(
            "connecting to RabbitMQ",
            Connection::connect_with_runtime(
                amqp_url,
                ConnectionProperties::default(),
                async_rs::Runtime::tokio_current(),
            )
            .await,
        )?;
        let channel = ctx("opening a channel", connection.create_channel().await)?;
        ctx(
            "enabling confirms",
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await,
        )?;
        Ok(Self {
            connection,
            channel,
            inbox: Inbox::default(),
        })
    }

    /// Everything consumed by this worker.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Declares an exchange as a worker of a profile does.
    pub async fn declare_exchange(&self, spec: &ExchangeSpec) -> Result<(), BrokerError> {
        let options = ExchangeDeclareOptions {
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            ..ExchangeDeclareOptions::default()
        };
        ctx(
            format!("declaring exchange {}", spec.name),
            self.channel
                .exchange_declare(
                    spec.name.into(),
                    spec.kind.lapin(),
                    options,
                    FieldTable::default(),
                )
                .await,
        )
    }

    /// Declares a named durable, shared queue (`gateway:<EVENT>` style).
    pub async fn declare_durable_queue(&self, name: &str) -> Result<(), BrokerError> {
        ctx(
            format!("declaring queue {name}"),
            self.channel
                .queue_declare(
                    name.into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await,
        )
        .map(drop)
    }

    /// Declares a server-named, exclusive, auto-delete queue and returns its name.
    pub async fn declare_private_queue(&self) -> Result<String, BrokerError> {
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = ctx(
            "declaring a private queue",
            self.channel
                .queue_declare("".into(), options, FieldTable::default())
                .await,
        )?;
        Ok(queue.name().as_str().to_owned())
    }

    /// Binds a queue.
    pub async fn bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), BrokerError> {
        ctx(
            format!("binding {queue} to {exchange} with {routing_key:?}"),
            self.channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await,
        )
    }

    /// Starts consuming a queue into the inbox (acknowledging each message).
    pub async fn consume(&self, queue: &str) -> Result<(), BrokerError> {
        let mut consumer = ctx(
            format!("consuming {queue}"),
            self.channel
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await,
        )?;
        let inbox = self.inbox.clone();
        let queue = queue.to_owned();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let _ = delivery.ack(BasicAckOptions::default()).await;
                inbox.push(Delivery {
                    queue: queue.clone(),
                    exchange: delivery.exchange.as_str().to_owned(),
                    routing_key: delivery.routing_key.as_str().to_owned(),
                    properties: properties(&delivery.properties),
                    body: delivery.data,
                    received_at: Instant::now(),
                });
            }
        });
        Ok(())
    }

    /// Publishes a command (no properties, as the predecessors' worker libraries do) and waits for
    /// the broker's confirm.
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), BrokerError> {
        let what = format!(
            "publishing to {:?} with {:?}",
            message.exchange, message.routing_key
        );
        let confirm = ctx(
            what.clone(),
            self.channel
                .basic_publish(
                    message.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &message.body,
                    BasicProperties::default(),
                )
                .await,
        )?;
        ctx(what, confirm.await).map(drop)
    }

    /// Whether an exchange exists (a passive declare on a throw-away channel).
    pub async fn exchange_exists(&self, name: &str) -> bool {
        let Ok(channel) = self.connection.create_channel().await else {
            return false;
        };
        let options = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let exists = channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                options,
                FieldTable::default(),
            )
            .await
            .is_ok();
        let _ = channel.close(200, "".into()).await;
        exists
    }

    /// Whether a queue exists (a passive declare on a throw-away channel).
    pub async fn queue_exists(&self, name: &str) -> bool {
        let Ok(channel) = self.connection.create_channel().await else {
            return false;
        };
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let exists = channel
            .queue_declare(name.into(), options, FieldTable::default())
            .await
            .is_ok();
        let _ = channel.close(200, "".into()).await;
        exists
    }

    /// Closes the connection (the private queues go with it).
    pub async fn close(&self) {
        let _ = self.connection.close(200, "".into()).await;
    }
}

fn properties(p: &BasicProperties) -> Properties {
    Properties {
        delivery_mode: *p.delivery_mode(),
        content_type: p.content_type().as_ref().map(|s| s.as_str().to_owned()),
        message_id: p.message_id().as_ref().map(|s| s.as_str().to_owned()),
        timestamp: *p.timestamp(),
        expiration: p.expiration().as_ref().map(|s| s.as_str().to_owned()),
        headers: p
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), HeaderValue::from_amqp(v)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
