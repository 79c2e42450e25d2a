//! The broker wire contracts ("profiles"): what to declare, how a dispatch becomes a message,
//! and how an incoming command becomes packets for shards.
//!
//! Pure data in, routes out: no channel handles, no broker types. The runtime declares the
//! [`Topology`], publishes each [`Publication`] and hands every command delivery to
//! [`Router::decode_command`].
//!
//! One sub-module per profile ([`native`], [`spectacles`], [`cordis`], [`twilight_dispatch`],
//! [`retsu`]) holds that profile's names, topology, dispatch route and command decoding; the
//! shared pieces are the settings ([`ProfileConfig`]; the predecessors' variable names that set
//! them live in the `gatehouse-config` crate), the [`EventFilter`], the lossless [`msgpack`] transcoder, and the command rules of
//! [`crate::command`]. Each sub-module's documentation states its wire contract and where it
//! was read from.
//!
//! Drive order for the runtime:
//! 1. `Router::new(&config, &cluster)` once per process (cheap to clone: one per shard is fine).
//! 2. Declare [`Router::topology`] (exchanges, then queues, then bindings; an empty queue name is
//!    a server-named queue, and an empty binding queue means the one declared just before).
//!    Consume from the queues whose `consume_commands` is set.
//! 3. For each dispatch: [`Router::try_route_dispatch`]. When [`Router::needs_event_topology`]
//!    is true (Retsu), before publishing the first message of an event name this process has
//!    not seen yet, declare [`Router::topology_for_event`] for it (once per name and process).
//! 4. For each command delivery: [`Router::decode_command`]; do what the decision says, then
//!    acknowledge the delivery.
//!
//! Nothing here does I/O, reads a clock (the runtime stamps [`Timestamp`]s) or allocates per
//! event beyond the publication itself.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::codec::Payload;
use crate::command::{CommandError, CommandPolicy, parse_integer};
use crate::sharding::{ShardId, shard_for_guild};

mod config;
pub mod cordis;
mod filter;
pub mod msgpack;
pub mod native;
pub mod retsu;
pub mod spectacles;
pub mod twilight_dispatch;

pub use config::{BodyEncoding, ProfileConfig};
pub use filter::EventFilter;
pub use msgpack::TranscodeError;

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

impl ProfileKind {
    /// The name used in configuration (`gatehouse`, `spectacles`, `cordis`,
    /// `twilight-dispatch`, `retsu`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gatehouse => "gatehouse",
            Self::Spectacles => "spectacles",
            Self::Cordis => "cordis",
            Self::TwilightDispatch => "twilight-dispatch",
            Self::Retsu => "retsu",
        }
    }
}

/// Which shards exist and which this process owns: validated once (the count is positive and
/// every owned shard exists), the owned shards sorted without duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    count: NonZeroU32,
    /// Sorted, without duplicates.
    owned: Vec<u32>,
}

impl ClusterInfo {
    /// The bot's `shard_count` shards, of which this process runs `owned`; an error when the
    /// count is 0 or an owned shard does not exist.
    pub fn new(
        shard_count: u32,
        owned: impl IntoIterator<Item = u32>,
    ) -> Result<Self, ProfileError> {
        let count = NonZeroU32::new(shard_count)
            .ok_or_else(|| ProfileError("the shard count must be at least 1".into()))?;
        let mut owned: Vec<u32> = owned.into_iter().collect();
        if let Some(bad) = owned.iter().find(|&&s| s >= shard_count) {
            return Err(ProfileError(format!(
                "owned shard {bad} does not exist (the shard count is {shard_count})"
            )));
        }
        owned.sort_unstable();
        owned.dedup();
        Ok(Self { count, owned })
    }

    /// The bot's total shard count.
    pub fn shard_count(&self) -> u32 {
        self.count.get()
    }

    /// The shards this process runs, ascending.
    pub fn owned(&self) -> &[u32] {
        &self.owned
    }

    /// Shard `number` of this bot, if it exists.
    pub fn shard(&self, number: u32) -> Option<ShardId> {
        ShardId::new(number, self.count.get())
    }

    /// Whether this process runs `shard`.
    pub(crate) fn owns(&self, shard: u32) -> bool {
        self.owned.binary_search(&shard).is_ok()
    }

    /// The shard of a guild.
    pub(crate) fn shard_for_guild(&self, guild_id: u64) -> u32 {
        shard_for_guild(guild_id, self.count)
    }

    /// Checks that a shard number exists, with the reason to give when it does not.
    pub(crate) fn check_exists(&self, shard: u64) -> Result<u32, String> {
        match u32::try_from(shard) {
            Ok(s) if s < self.count.get() => Ok(s),
            _ => Err(format!(
                "shard {shard} does not exist (the shard count is {})",
                self.count
            )),
        }
    }

    /// The shard a command names, if this process runs it: `Ok(None)` for one it does not run,
    /// the reason to refuse the command for one that does not exist.
    pub(crate) fn owned_shard(&self, shard: u64) -> Result<Option<u32>, String> {
        let shard = self.check_exists(shard)?;
        Ok(self.owns(shard).then_some(shard))
    }
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

impl MessageProperties {
    /// Persistent (delivery mode 2) and nothing else: what an event gets in a profile whose
    /// contract sets no properties (a confirmed event in a durable queue survives a broker
    /// restart).
    pub fn persistent() -> Self {
        Self {
            persistent: true,
            ..Self::default()
        }
    }
}

/// What a publication the broker returned as unroutable (mandatory, no binding) becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unroutable {
    /// Confirmed (the sequence moves on), and reported (`OutboxEvent::Unroutable` in [`crate::outbox`]): for
    /// profiles whose workers bind only the events they want, so that unwanted events are
    /// expected to be unroutable.
    Confirm,
    /// Reported and sent again after a back-off, like a nack, until a queue takes it: for
    /// profiles that declare a queue for every event themselves.
    Hold,
}

/// What a publication is, and so its routing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKey {
    /// A dispatch. Every profile routes a dispatch by its event name (`MESSAGE_CREATE`), so the
    /// name is the routing key; metrics, logs and the stdio and Redis Streams outputs read it
    /// through [`Publication::event`].
    Event(String),
    /// Anything else (a dead-lettered or forwarded worker command), with its routing key.
    Other(String),
}

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The exchange.
    pub exchange: String,
    /// What it is, and its routing key.
    pub key: MessageKey,
    /// The body.
    pub body: Bytes,
    /// The properties.
    pub properties: MessageProperties,
}

impl Publication {
    /// The routing key.
    pub fn routing_key(&self) -> &str {
        match &self.key {
            MessageKey::Event(key) | MessageKey::Other(key) => key,
        }
    }

    /// The event name, when this publication is a dispatch.
    pub fn event(&self) -> Option<&str> {
        match &self.key {
            MessageKey::Event(event) => Some(event),
            MessageKey::Other(_) => None,
        }
    }
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

/// The type of the queues Gatehouse declares (`profile.queue_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Classic queues: declared without `x-queue-type`, exactly as before the option existed
    /// (so a queue that already exists is declared with the same arguments).
    #[default]
    Classic,
    /// Quorum queues (`x-queue-type: quorum`), replicated over a RabbitMQ cluster. RabbitMQ refuses to
    /// redeclare a queue with another type (406 `inequivalent arg 'x-queue-type'`): an existing
    /// classic queue has to be deleted (or drained and re-created) before switching, and
    /// workers that declare the same queues must declare them as quorum queues too. Only
    /// queues that can be quorum queues become ones ([`QueueDecl::can_be_quorum`]); a profile
    /// with none (Cordis) refuses this type when its router is built.
    Quorum,
}

impl QueueType {
    /// The name used in configuration (`classic`, `quorum`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
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

impl QueueDecl {
    /// Whether the queue can be a quorum queue: durable, named, not exclusive, not
    /// auto-delete. The others are per-connection queues (a server-named, exclusive copy of
    /// a fanout exchange for one gateway process), which vanish with their connection anyway:
    /// there is nothing in them to replicate.
    pub fn can_be_quorum(&self) -> bool {
        self.durable && !self.name.is_empty() && !self.exclusive && !self.auto_delete
    }
}

impl Topology {
    /// Declares the queues as `queue_type`: for quorum, adds `x-queue-type: quorum` to every
    /// queue that [can be one](QueueDecl::can_be_quorum) (unless it already names a type);
    /// per-connection queues stay classic. Classic leaves every argument as it was.
    pub fn apply_queue_type(&mut self, queue_type: QueueType) {
        if queue_type == QueueType::Classic {
            return;
        }
        for queue in &mut self.queues {
            if queue.can_be_quorum() && !queue.arguments.iter().any(|(k, _)| k == "x-queue-type") {
                queue.arguments.push((
                    "x-queue-type".to_owned(),
                    FieldValue::Str(queue_type.name().to_owned()),
                ));
            }
        }
    }
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

/// A dispatch that could not be turned into a message. The runtime logs it; the event is not
/// published (a body the workers cannot decode would be worse).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The dispatch's JSON could not be transcoded to msgpack.
    #[error("{event} cannot be published as msgpack: {source}")]
    Transcode {
        /// The event name.
        event: String,
        /// Why.
        source: TranscodeError,
    },
}

/// What every profile's command decoding needs.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) cluster: ClusterInfo,
    pub(crate) policy: CommandPolicy,
}

#[derive(Clone, Debug)]
enum Profile {
    Native(native::Native),
    Spectacles(spectacles::Spectacles),
    Cordis(cordis::Cordis),
    TwilightDispatch(twilight_dispatch::TwilightDispatch),
    Retsu(retsu::Retsu),
}

#[derive(Debug)]
struct RouterInner {
    kind: ProfileKind,
    queue_type: QueueType,
    filter: EventFilter,
    shared: Shared,
    profile: Profile,
}

/// The routing rules of the configured profile. Cloning is cheap (one reference count).
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<RouterInner>,
}

impl Router {
    /// The router of a configured profile, or why the configuration cannot work.
    pub fn new(config: &ProfileConfig, cluster: &ClusterInfo) -> Result<Self, ProfileError> {
        config.validate()?;
        let policy = CommandPolicy::new(&config.extra_allowed_ops).map_err(ProfileError)?;
        let profile = match config.kind {
            ProfileKind::Gatehouse => Profile::Native(native::Native::new(config, cluster)),
            ProfileKind::Spectacles => Profile::Spectacles(spectacles::Spectacles::new(config)),
            ProfileKind::Cordis => Profile::Cordis(cordis::Cordis::new(config)),
            ProfileKind::TwilightDispatch => {
                Profile::TwilightDispatch(twilight_dispatch::TwilightDispatch::new(config))
            }
            ProfileKind::Retsu => Profile::Retsu(retsu::Retsu::new(config)),
        };
        let router = Self {
            inner: Arc::new(RouterInner {
                kind: config.kind,
                queue_type: config.queue_type,
                filter: EventFilter::new(&config.events, &config.ignored_events),
                shared: Shared {
                    cluster: cluster.clone(),
                    policy,
                },
                profile,
            }),
        };
        router.check_queue_type()?;
        Ok(router)
    }

    /// The native profile with default names, for a bot of one shard that this process runs
    /// (tests and tools).
    pub fn native() -> Self {
        let cluster = ClusterInfo::new(1, [0]);
        match cluster.and_then(|cluster| Self::new(&ProfileConfig::default(), &cluster)) {
            Ok(router) => router,
            Err(e) => unreachable!("the default configuration is valid: {e}"),
        }
    }

    /// Which profile this is.
    pub fn kind(&self) -> ProfileKind {
        self.inner.kind
    }

    /// The opcodes workers may send.
    pub fn command_policy(&self) -> &CommandPolicy {
        &self.inner.shared.policy
    }

    /// Whether an event with this name is published at all (the event filter).
    pub fn publishes(&self, event: &str) -> bool {
        self.inner.filter.allows(event)
    }

    /// What to declare before publishing and consuming (with `profile.queue_type` applied).
    pub fn topology(&self) -> Topology {
        let mut topology = self.topology_of_profile();
        topology.apply_queue_type(self.inner.queue_type);
        topology
    }

    /// The queue type the router declares its queues with.
    pub fn queue_type(&self) -> QueueType {
        self.inner.queue_type
    }

    /// A quorum queue type is refused where it would change nothing: when no queue the
    /// profile declares can be a quorum queue (Cordis: its only queue is the per-connection
    /// command queue).
    fn check_queue_type(&self) -> Result<(), ProfileError> {
        let queue_type = self.inner.queue_type;
        if queue_type == QueueType::Classic {
            return Ok(());
        }
        let mut queues = self.topology_of_profile().queues;
        if let Profile::Retsu(p) = &self.inner.profile {
            queues.extend(p.topology_for_event("READY").queues);
        }
        if queues.iter().any(QueueDecl::can_be_quorum) {
            return Ok(());
        }
        Err(ProfileError(format!(
            "`queue_type = \"{}\"` would change nothing with the {} profile: its only queues \
             are per-connection ones (server-named, exclusive, auto-delete, by its wire \
             contract), which cannot be quorum queues. Leave `queue_type` at \"classic\"",
            queue_type.name(),
            self.inner.kind.name(),
        )))
    }

    fn topology_of_profile(&self) -> Topology {
        let shared = &self.inner.shared;
        match &self.inner.profile {
            Profile::Native(p) => p.topology(shared),
            Profile::Spectacles(p) => p.topology(shared),
            Profile::Cordis(p) => p.topology(),
            Profile::TwilightDispatch(p) => p.topology(),
            Profile::Retsu(p) => p.topology(),
        }
    }

    /// What an event the broker returns as unroutable becomes: held (published again until a
    /// queue takes it) where the profile declares a queue for every event itself (Retsu's
    /// `gateway:<EVENT>`, twilight-dispatch's `gateway.recv` with `default_queue`), so that
    /// unroutable means a queue was deleted; confirmed and counted elsewhere, where workers
    /// bind only the events they want and the others are unroutable by design.
    pub fn unroutable(&self) -> Unroutable {
        match &self.inner.profile {
            Profile::Retsu(_) => Unroutable::Hold,
            Profile::TwilightDispatch(p) if p.declares_catch_all_queue() => Unroutable::Hold,
            _ => Unroutable::Confirm,
        }
    }

    /// Whether the profile declares something per event name ([`Router::topology_for_event`]).
    pub fn needs_event_topology(&self) -> bool {
        matches!(self.inner.profile, Profile::Retsu(_))
    }

    /// What to declare before the first publication of `event` by this process, for profiles
    /// that declare per event (Retsu: the durable queue `gateway:<EVENT>` bound with the event
    /// name). `None` for the other profiles and for events the filter drops. The runtime calls
    /// it once per event name it has not seen yet, and may call it again after a broker
    /// reconnect (declarations are idempotent).
    pub fn topology_for_event(&self, event: &str) -> Option<Topology> {
        let mut topology = self.event_topology_of_profile(event)?;
        topology.apply_queue_type(self.inner.queue_type);
        Some(topology)
    }

    fn event_topology_of_profile(&self, event: &str) -> Option<Topology> {
        match &self.inner.profile {
            Profile::Retsu(p) if self.inner.filter.allows(event) => {
                Some(p.topology_for_event(event))
            }
            _ => None,
        }
    }

    /// What to do with one command delivery.
    pub fn decode_command(&self, delivery: &CommandDelivery<'_>) -> CommandDecision {
        let shared = &self.inner.shared;
        match &self.inner.profile {
            Profile::Native(p) => p.decode_command(shared, delivery),
            Profile::Spectacles(p) => p.decode_command(shared, delivery),
            Profile::Cordis(p) => p.decode_command(shared, delivery),
            Profile::TwilightDispatch(p) => p.decode_command(shared, delivery),
            Profile::Retsu(p) => p.decode_command(shared, delivery),
        }
    }

    /// The rejection of a command the profile decoded but that cannot be carried out (a shard
    /// refused it, its lane was full, a reconnect came too soon): like a validation failure,
    /// logged with `reason` and dead-lettered where the profile has a dead-letter exchange.
    pub fn reject_command(
        &self,
        delivery: &CommandDelivery<'_>,
        reason: impl Into<String>,
    ) -> CommandDecision {
        match &self.inner.profile {
            Profile::Native(p) => p.reject(reason.into(), delivery),
            Profile::Spectacles(_)
            | Profile::Cordis(_)
            | Profile::TwilightDispatch(_)
            | Profile::Retsu(_) => reject(reason),
        }
    }

    /// The message for a dispatch, or `None` when the profile drops it (not op 0, no event
    /// name, filtered out) or cannot encode it (see [`Router::try_route_dispatch`], which says
    /// why).
    pub fn route_dispatch(
        &self,
        ctx: &DispatchContext<'_>,
        payload: &Payload,
    ) -> Option<Publication> {
        self.try_route_dispatch(ctx, payload).ok().flatten()
    }

    /// The message for a dispatch; `Ok(None)` when the profile drops it (not op 0, no event
    /// name, filtered out); `Err` when its body cannot be encoded (the event is not published).
    pub fn try_route_dispatch(
        &self,
        ctx: &DispatchContext<'_>,
        payload: &Payload,
    ) -> Result<Option<Publication>, RouteError> {
        if payload.op != 0 {
            return Ok(None);
        }
        let Some(event) = payload.event_name() else {
            return Ok(None);
        };
        if !self.inner.filter.allows(event) {
            return Ok(None);
        }
        let publication = match &self.inner.profile {
            Profile::Native(p) => p.route(ctx, payload, event),
            Profile::Spectacles(p) => p.route(payload, event)?,
            Profile::Cordis(p) => p.route(payload, event)?,
            Profile::TwilightDispatch(p) => p.route(payload, event),
            Profile::Retsu(p) => p.route(payload, event),
        };
        Ok(Some(publication))
    }
}

/// A `Reject` without a dead letter (profiles without a dead-letter convention).
pub(crate) fn reject(reason: impl Into<String>) -> CommandDecision {
    CommandDecision::Reject {
        reason: reason.into(),
        dead_letter: None,
    }
}

/// The topology of a profile whose commands come through a fanout exchange: the direct events
/// exchange (durable or not), the durable fanout `commands_exchange`, and one server-named,
/// exclusive, auto-delete queue bound to it that commands are consumed from (every gateway
/// receives every command).
pub(crate) fn fanout_commands_topology(
    events_exchange: &str,
    events_durable: bool,
    commands_exchange: &str,
) -> Topology {
    Topology {
        exchanges: vec![
            ExchangeDecl {
                name: events_exchange.to_owned(),
                kind: ExchangeKind::Direct,
                durable: events_durable,
                auto_delete: false,
            },
            ExchangeDecl {
                name: commands_exchange.to_owned(),
                kind: ExchangeKind::Fanout,
                durable: true,
                auto_delete: false,
            },
        ],
        queues: vec![QueueDecl {
            name: String::new(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: Vec::new(),
            consume_commands: true,
        }],
        bindings: vec![BindingDecl {
            queue: String::new(),
            exchange: commands_exchange.to_owned(),
            routing_key: String::new(),
        }],
    }
}

/// A command field that must be present and hold a non-negative integer, as the reason to refuse
/// the command when it does not (naming `field` and what was `expected`).
pub(crate) fn required_integer(
    raw: Option<&RawValue>,
    field: &'static str,
    expected: &'static str,
) -> Result<u64, String> {
    raw.ok_or(CommandError::MissingField { field })
        .and_then(|raw| parse_integer(raw, field, expected))
        .map_err(|e| e.to_string())
}

/// The JSON of a command body: JSON as is, or msgpack converted to JSON when `accept_msgpack`
/// (a body whose first non-blank byte is `{` is JSON; in msgpack that byte would be the whole
/// value 123, never a command).
pub(crate) fn command_json(
    body: &[u8],
    accept_msgpack: bool,
) -> Result<std::borrow::Cow<'_, [u8]>, crate::command::CommandError> {
    use crate::command::MAX_COMMAND_BODY_BYTES;
    if body.len() > MAX_COMMAND_BODY_BYTES {
        return Err(CommandError::BodyTooLarge {
            size: body.len(),
            limit: MAX_COMMAND_BODY_BYTES,
        });
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if !accept_msgpack || first == Some(&b'{') || first.is_none() {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    msgpack::msgpack_to_json(body)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| CommandError::Malformed {
            format: "msgpack",
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests;
