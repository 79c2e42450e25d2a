//! The broker wire contracts ("profiles"): what to declare, how a dispatch becomes a message,
//! and how an incoming command becomes packets for shards.
//!
//! Pure data in, routes out: no channel handles, no broker types. The runtime declares the
//! [`Topology`], publishes each [`Publication`] and hands every command delivery to
//! [`Router::decode_command`].
//!
//! CONTRACT STUB: only the native profile's dispatch route is sketched; the real module has one
//! sub-module per profile.

use bytes::Bytes;

use crate::codec::Payload;
use crate::sharding::ShardId;

/// Which wire contract to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// Gatehouse's own contract (the default).
    #[default]
    Gatehouse,
    /// The Spectacles spec.
    Spectacles,
    /// The Cordis spec.
    Cordis,
    /// twilight-dispatch.
    TwilightDispatch,
    /// Retsu.
    Retsu,
}

/// The profile's settings (the `[profile]` table of the configuration file).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    /// Which profile.
    pub kind: ProfileKind,
    /// The events exchange (or Spectacles group) name; the profile's default when absent.
    pub exchange: Option<String>,
}

/// Which shards exist and which this process owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The bot's total shard count.
    pub shard_count: u32,
    /// The shard numbers this process runs.
    pub owned: Vec<u32>,
}

/// A profile configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid profile configuration: {0}")]
pub struct ProfileError(pub String);

/// A value of an AMQP header or argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// A signed integer.
    Int(i64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

/// When the runtime must stamp a message with the wall clock (the core has no wall clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Timestamp {
    /// No timestamp property.
    #[default]
    None,
    /// Seconds since the Unix epoch (the AMQP convention).
    Seconds,
    /// Milliseconds since the Unix epoch (what Cordis workers expect).
    Millis,
}

/// AMQP basic properties of a publication.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MessageProperties {
    /// Delivery mode 2 (persistent) when true, 1 otherwise.
    pub persistent: bool,
    /// The `content_type` property.
    pub content_type: Option<&'static str>,
    /// The `message_id` property.
    pub message_id: Option<String>,
    /// The `timestamp` property, stamped by the runtime.
    pub timestamp: Timestamp,
    /// The `expiration` property in milliseconds.
    pub expiration_ms: Option<u64>,
    /// Headers.
    pub headers: Vec<(&'static str, FieldValue)>,
}

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The exchange.
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The body.
    pub body: Bytes,
    /// The properties.
    pub properties: MessageProperties,
}

/// What a shard knows about a dispatch besides its payload.
#[derive(Clone, Copy, Debug)]
pub struct DispatchContext<'a> {
    /// The shard that received it.
    pub shard: ShardId,
    /// The current session id.
    pub session_id: &'a str,
}

/// Exchange types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// direct
    Direct,
    /// topic
    Topic,
    /// fanout
    Fanout,
}

/// An exchange to declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeDecl {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
}

/// A queue to declare. An empty name asks the broker for a server-named queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDecl {
    /// Name, or empty for server-named.
    pub name: String,
    /// Durable.
    pub durable: bool,
    /// Exclusive.
    pub exclusive: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Arguments (for example `x-dead-letter-exchange`).
    pub arguments: Vec<(String, FieldValue)>,
    /// Whether the gateway consumes commands from this queue.
    pub consume_commands: bool,
}

/// A binding. An empty `queue` means the server-named queue declared just before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingDecl {
    /// Queue name.
    pub queue: String,
    /// Exchange name.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
}

/// Everything to declare, in order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Topology {
    /// Exchanges, declared first.
    pub exchanges: Vec<ExchangeDecl>,
    /// Queues, declared next.
    pub queues: Vec<QueueDecl>,
    /// Bindings, declared last.
    pub bindings: Vec<BindingDecl>,
}

/// Where a command delivery came from.
#[derive(Clone, Copy, Debug)]
pub struct CommandDelivery<'a> {
    /// The exchange it was published to.
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// The queue it was consumed from.
    pub queue: &'a str,
    /// Its body.
    pub body: &'a [u8],
}

/// What to do with a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandDecision {
    /// Send `packet` (a JSON gateway packet `{"op":N,"d":...}`) on each of these shard numbers.
    Send {
        /// Shard numbers owned by this process.
        shards: Vec<u32>,
        /// The packet.
        packet: Bytes,
    },
    /// Reconnect (and resume) these shards.
    Reconnect {
        /// Shard numbers owned by this process.
        shards: Vec<u32>,
    },
    /// Publish this message instead (a command for a shard another process owns).
    Forward(Publication),
    /// Not for this process; acknowledge and drop.
    Ignore,
    /// Invalid: log it, and publish `dead_letter` (where the profile has a dead-letter
    /// convention) before acknowledging the delivery.
    Reject {
        /// Why, for the `x-gatehouse-error` header and the log.
        reason: String,
        /// The dead-letter message to publish, if the profile has one.
        dead_letter: Option<Publication>,
    },
}

/// The routing rules of the configured profile.
#[derive(Clone, Debug)]
pub struct Router {
    exchange: String,
}

impl Router {
    /// The router of a configured profile.
    pub fn new(config: &ProfileConfig, cluster: &ClusterInfo) -> Result<Self, ProfileError> {
        let _ = cluster;
        Ok(Self {
            exchange: config.exchange.clone().unwrap_or_else(|| "gateway".into()),
        })
    }

    /// The native profile with default names (stub).
    pub fn native() -> Self {
        Self {
            exchange: "gateway".into(),
        }
    }

    /// What to declare before publishing and consuming.
    pub fn topology(&self) -> Topology {
        Topology {
            exchanges: vec![ExchangeDecl {
                name: self.exchange.clone(),
                kind: ExchangeKind::Topic,
                durable: true,
                auto_delete: false,
            }],
            ..Topology::default()
        }
    }

    /// What to do with one command delivery.
    pub fn decode_command(&self, delivery: &CommandDelivery<'_>) -> CommandDecision {
        let _ = delivery;
        CommandDecision::Reject {
            reason: "commands are not implemented yet".into(),
            dead_letter: None,
        }
    }

    /// The message for a dispatch, or `None` when the profile drops it.
    pub fn route_dispatch(
        &self,
        ctx: &DispatchContext<'_>,
        payload: &Payload,
    ) -> Option<Publication> {
        let name = payload.event_name()?;
        let seq = payload.s.unwrap_or(0);
        Some(Publication {
            exchange: self.exchange.clone(),
            routing_key: name.to_owned(),
            body: payload.bytes.clone(),
            properties: MessageProperties {
                persistent: true,
                content_type: Some("application/json"),
                message_id: Some(format!("{}:{}", ctx.session_id, seq)),
                timestamp: Timestamp::Seconds,
                expiration_ms: None,
                headers: vec![
                    ("x-shard-id", FieldValue::Int(ctx.shard.number().into())),
                    ("x-shard-count", FieldValue::Int(ctx.shard.total().into())),
                    ("x-sequence", FieldValue::Int(seq as i64)),
                    ("x-session-id", FieldValue::Str(ctx.session_id.to_owned())),
                ],
            },
        })
    }
}
