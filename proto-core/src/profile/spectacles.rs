//! The Spectacles profile (the Spectacles spec; `spec-tacles/gateway`, `@spectacles/brokers`).
//!
//! Events: exchange named by the *group* (default `gateway`), direct, durable, not auto-delete
//! (exactly what `@spectacles/brokers` declares). Routing key = event name. Body = only the `d`
//! of the dispatch: msgpack of `d` (the default, what `@spectacles/brokers` 0.9 decodes) or the
//! JSON bytes of `d` untouched (`body = "json"`, the spec's bytes). No properties, except
//! persistence (delivery mode 2, so a broker restart keeps what the durable queues hold) and an
//! optional `expiration` (`message_timeout_ms`, the Go gateway's `BROKER_MESSAGE_TIMEOUT`).
//!
//! Queues: for each event in `declare_queues` the consumer queue `<group>:[<subgroup>:]<event>`
//! (durable, not exclusive, not auto-delete, no arguments) bound with the event name, once per
//! subgroup in `subgroups` (or once without a subgroup), so that nothing published before the
//! workers start is lost.
//!
//! Commands arrive on the same exchange in the same body encoding (JSON is accepted too). The
//! gateway consumes, like the Go gateway, the queues `<group>:<shard_id>` (bound with
//! `<shard_id>`, one per owned shard) and `<group>:SEND` (bound with `SEND`, shared by every
//! gateway):
//! - routing key `<shard_id>`: the body is the packet to send on that shard;
//! - routing key `SEND`: the body is `{"guild_id": "<snowflake>", "packet": {...}}`; the packet
//!   goes to shard `(guild_id >> 22) % shard_count`, and a gateway that does not own that
//!   shard re-publishes the packet with routing key `<shard_id>` for the gateway that does.
//!
//! Spectacles has no dead-letter convention: refused commands are dropped with a reason.

use bytes::Bytes;

use super::msgpack::json_to_msgpack;
use super::{
    BindingDecl, BodyEncoding, CommandDecision, CommandDelivery, ExchangeDecl, ExchangeKind,
    MessageKey, MessageProperties, ProfileConfig, Publication, QueueDecl, RouteError, Shared,
    Topology, command_json, reject,
};
use crate::codec::Payload;
use crate::command::{CommandError, parse_decimal, parse_id, pick_fields, validate_packet_in};

/// The routing key of guild-addressed commands.
pub const SEND_KEY: &str = "SEND";

/// The Spectacles profile's names and options.
#[derive(Clone, Debug)]
pub(crate) struct Spectacles {
    group: String,
    subgroups: Vec<String>,
    declare_queues: Vec<String>,
    body: BodyEncoding,
    expiration_ms: Option<u64>,
}

impl Spectacles {
    pub(crate) fn new(config: &ProfileConfig) -> Self {
        Self {
            group: config.exchange_name().to_owned(),
            subgroups: config.subgroups.clone(),
            declare_queues: config.declare_queues.clone(),
            body: config.body_encoding(),
            expiration_ms: config.message_timeout_ms,
        }
    }

    pub(crate) fn topology(&self, shared: &Shared) -> Topology {
        let mut topology = Topology {
            exchanges: vec![ExchangeDecl {
                name: self.group.clone(),
                kind: ExchangeKind::Direct,
                durable: true,
                auto_delete: false,
            }],
            ..Topology::default()
        };
        let mut add = |queue: String, routing_key: String, consume_commands: bool| {
            topology.queues.push(QueueDecl {
                name: queue.clone(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: Vec::new(),
                consume_commands,
            });
            topology.bindings.push(BindingDecl {
                queue,
                exchange: self.group.clone(),
                routing_key,
            });
        };
        for event in &self.declare_queues {
            if self.subgroups.is_empty() {
                add(format!("{}:{event}", self.group), event.clone(), false);
            }
            for sub in &self.subgroups {
                add(
                    format!("{}:{sub}:{event}", self.group),
                    event.clone(),
                    false,
                );
            }
        }
        for shard in shared.cluster.owned() {
            add(format!("{}:{shard}", self.group), shard.to_string(), true);
        }
        add(
            format!("{}:{SEND_KEY}", self.group),
            SEND_KEY.to_owned(),
            true,
        );
        topology
    }

    pub(crate) fn route(&self, payload: &Payload, event: &str) -> Result<Publication, RouteError> {
        let body = match self.body {
            BodyEncoding::Json => payload.data_bytes(),
            BodyEncoding::Msgpack => {
                Bytes::from(json_to_msgpack(payload.data()).map_err(|source| {
                    RouteError::Transcode {
                        event: event.to_owned(),
                        source,
                    }
                })?)
            }
        };
        Ok(Publication {
            exchange: self.group.clone(),
            key: MessageKey::Event(event.to_owned()),
            body,
            properties: MessageProperties {
                persistent: true,
                expiration_ms: self.expiration_ms,
                ..MessageProperties::default()
            },
        })
    }

    pub(crate) fn decode_command(
        &self,
        shared: &Shared,
        delivery: &CommandDelivery<'_>,
    ) -> CommandDecision {
        let cluster = &shared.cluster;
        let key = delivery.routing_key;
        if key == SEND_KEY {
            return match self.guild_command(shared, delivery.body) {
                Ok(decision) => decision,
                Err(e) => reject(format!("SEND: {e}")),
            };
        }
        let Some(shard) = parse_decimal(key) else {
            return reject(format!(
                "unknown routing key `{key}`; use a shard number or `{SEND_KEY}`"
            ));
        };
        let shard = match cluster.owned_shard(shard) {
            Ok(Some(s)) => s,
            Ok(None) => return CommandDecision::Ignore,
            Err(reason) => return reject(reason),
        };
        let packet = command_json(delivery.body, true)
            .and_then(|json| validate_packet_in(&json, "command", &shared.policy));
        match packet {
            Ok(packet) => CommandDecision::Send {
                shards: vec![shard],
                packet: packet.into_bytes(),
            },
            Err(e) => reject(e.to_string()),
        }
    }

    fn guild_command(&self, shared: &Shared, body: &[u8]) -> Result<CommandDecision, String> {
        let json = command_json(body, true).map_err(|e| e.to_string())?;
        let [guild_id, packet] = pick_fields(&json, "command", [&["guild_id"], &["packet"]])
            .map_err(|e| e.to_string())?;
        let guild_id = guild_id.ok_or(CommandError::MissingField { field: "guild_id" });
        let guild_id = guild_id
            .and_then(|raw| parse_id(raw, "guild_id", "a guild id"))
            .map_err(|e| e.to_string())?;
        let packet = packet
            .ok_or(CommandError::MissingField { field: "packet" })
            .and_then(|raw| validate_packet_in(raw.get().as_bytes(), "`packet`", &shared.policy))
            .map_err(|e| e.to_string())?;
        let shard = shared.cluster.shard_for_guild(guild_id);
        if shared.cluster.owns(shard) {
            return Ok(CommandDecision::Send {
                shards: vec![shard],
                packet: packet.into_bytes(),
            });
        }
        let body = match self.body {
            BodyEncoding::Json => packet.into_bytes(),
            BodyEncoding::Msgpack => Bytes::from(
                json_to_msgpack(packet.bytes()).map_err(|e| format!("re-encoding: {e}"))?,
            ),
        };
        Ok(CommandDecision::Forward(Publication {
            exchange: self.group.clone(),
            key: MessageKey::Other(shard.to_string()),
            body,
            properties: MessageProperties::persistent(),
        }))
    }
}
