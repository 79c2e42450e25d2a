//! The native profile (`gatehouse`, the default): Gatehouse's own wire contract, the superset
//! with the strongest guarantees.
//!
//! Events: exchange `gateway` (configurable), topic, durable. Routing key = event name. Body =
//! the dispatch packet exactly as received (a slice of the frame). Properties: persistent,
//! `application/json`, message id `<session_id>:<seq>` (stable across redelivery), headers
//! `x-shard-id`, `x-shard-count`, `x-sequence`, `x-session-id`, and a timestamp in seconds.
//!
//! Commands: exchange `gateway.commands` (configurable), topic, durable. Each node declares one
//! durable queue (by default `gateway.commands.shards-<first>-<last>`, after the shards it owns)
//! with `x-dead-letter-exchange` set, bound with `shard.<id>` for every owned shard, `guild.#`
//! and `all`. Routing keys:
//! - `shard.<id>`: to that shard (ignored by a node that does not own it);
//! - `guild.<guild_id>`: every node receives it and the node owning `(guild_id >> 22) % count`
//!   sends it; the others ignore it;
//! - `all`: every shard of every node.
//!
//! The body is the packet `{"op":N,"d":{...}}`, validated by [`crate::command`]. A command that
//! fails is published to the dead-letter exchange `gateway.commands.dlx` (topic, durable; its
//! durable queue of the same name is bound with `#`) with the original body and routing key and
//! the header `x-gatehouse-error` saying why (plus `x-original-exchange`). An `all` command that
//! fails is dead-lettered by every node that receives it.

use bytes::Bytes;

use super::{
    BindingDecl, ClusterInfo, CommandDecision, CommandDelivery, DispatchContext, ExchangeDecl,
    ExchangeKind, FieldValue, MessageKey, MessageProperties, ProfileConfig, Publication, QueueDecl,
    Shared, Timestamp, Topology,
};
use crate::codec::Payload;
use crate::command::{parse_decimal, validate_packet};

/// The default commands exchange.
pub const COMMANDS_EXCHANGE: &str = "gateway.commands";

/// The suffix of the dead-letter exchange (and queue) after the commands exchange's name.
pub const DEAD_LETTER_SUFFIX: &str = ".dlx";

/// The header of a dead letter that says why the command was refused.
pub const ERROR_HEADER: &str = "x-gatehouse-error";

/// The native profile's names.
#[derive(Clone, Debug)]
pub(crate) struct Native {
    events_exchange: String,
    commands_exchange: String,
    dead_letter_exchange: String,
    command_queue: String,
}

impl Native {
    pub(crate) fn new(config: &ProfileConfig, cluster: &ClusterInfo) -> Self {
        let commands_exchange = config
            .commands_exchange
            .clone()
            .unwrap_or_else(|| COMMANDS_EXCHANGE.to_owned());
        let command_queue = config
            .command_queue
            .clone()
            .unwrap_or_else(|| default_command_queue(&commands_exchange, cluster.owned()));
        Self {
            events_exchange: config.exchange_name().to_owned(),
            dead_letter_exchange: format!("{commands_exchange}{DEAD_LETTER_SUFFIX}"),
            commands_exchange,
            command_queue,
        }
    }

    pub(crate) fn topology(&self, shared: &Shared) -> Topology {
        let exchange = |name: &str| ExchangeDecl {
            name: name.to_owned(),
            kind: ExchangeKind::Topic,
            durable: true,
            auto_delete: false,
        };
        let mut bindings = vec![BindingDecl {
            queue: self.dead_letter_exchange.clone(),
            exchange: self.dead_letter_exchange.clone(),
            routing_key: "#".into(),
        }];
        let bind = |routing_key: String| BindingDecl {
            queue: self.command_queue.clone(),
            exchange: self.commands_exchange.clone(),
            routing_key,
        };
        bindings.extend(
            shared
                .cluster
                .owned()
                .iter()
                .map(|id| bind(format!("shard.{id}"))),
        );
        bindings.push(bind("guild.#".into()));
        bindings.push(bind("all".into()));
        Topology {
            exchanges: vec![
                exchange(&self.events_exchange),
                exchange(&self.commands_exchange),
                exchange(&self.dead_letter_exchange),
            ],
            queues: vec![
                QueueDecl {
                    name: self.dead_letter_exchange.clone(),
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    arguments: Vec::new(),
                    consume_commands: false,
                },
                QueueDecl {
                    name: self.command_queue.clone(),
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    arguments: vec![(
                        "x-dead-letter-exchange".into(),
                        FieldValue::Str(self.dead_letter_exchange.clone()),
                    )],
                    consume_commands: true,
                },
            ],
            bindings,
        }
    }

    pub(crate) fn route(
        &self,
        ctx: &DispatchContext<'_>,
        payload: &Payload,
        event: &str,
    ) -> Publication {
        let seq = payload.s.unwrap_or(0);
        let mut message_id = String::with_capacity(ctx.session_id.len() + 21);
        message_id.push_str(ctx.session_id);
        message_id.push(':');
        message_id.push_str(&seq.to_string());
        Publication {
            exchange: self.events_exchange.clone(),
            key: MessageKey::Event(event.to_owned()),
            body: payload.bytes.clone(),
            properties: MessageProperties {
                persistent: true,
                content_type: Some("application/json"),
                message_id: Some(message_id),
                timestamp: Timestamp::Seconds,
                expiration_ms: None,
                headers: vec![
                    ("x-shard-id", FieldValue::Int(ctx.shard.number().into())),
                    ("x-shard-count", FieldValue::Int(ctx.shard.total().into())),
                    // Sequence numbers are far below i64::MAX; saturate rather than wrap.
                    (
                        "x-sequence",
                        FieldValue::Int(i64::try_from(seq).unwrap_or(i64::MAX)),
                    ),
                    ("x-session-id", FieldValue::Str(ctx.session_id.to_owned())),
                ],
            },
        }
    }

    pub(crate) fn decode_command(
        &self,
        shared: &Shared,
        delivery: &CommandDelivery<'_>,
    ) -> CommandDecision {
        let cluster = &shared.cluster;
        let key = delivery.routing_key;
        let targets: Result<Vec<u32>, String> = if key == "all" {
            Ok(cluster.owned().to_vec())
        } else if let Some(id) = key.strip_prefix("shard.") {
            match parse_decimal(id) {
                Some(id) => cluster.owned_shard(id).map(Vec::from_iter),
                None => Err(format!(
                    "routing key `{key}`: `shard.` must be followed by a shard number"
                )),
            }
        } else if let Some(guild) = key.strip_prefix("guild.") {
            match parse_decimal(guild) {
                Some(guild) => {
                    let s = cluster.shard_for_guild(guild);
                    Ok(if cluster.owns(s) { vec![s] } else { Vec::new() })
                }
                None => Err(format!(
                    "routing key `{key}`: `guild.` must be followed by a guild id"
                )),
            }
        } else {
            Err(format!(
                "unknown routing key `{key}`; use `shard.<id>`, `guild.<guild_id>` or `all`"
            ))
        };
        let shards = match targets {
            Ok(shards) if shards.is_empty() => return CommandDecision::Ignore,
            Ok(shards) => shards,
            Err(reason) => return self.reject(reason, delivery),
        };
        match validate_packet(delivery.body, &shared.policy) {
            Ok(packet) => CommandDecision::Send {
                shards,
                packet: packet.into_bytes(),
            },
            Err(e) => self.reject(e.to_string(), delivery),
        }
    }

    pub(crate) fn reject(&self, reason: String, delivery: &CommandDelivery<'_>) -> CommandDecision {
        let dead_letter = Publication {
            exchange: self.dead_letter_exchange.clone(),
            key: MessageKey::Other(delivery.routing_key.to_owned()),
            body: Bytes::copy_from_slice(delivery.body),
            properties: MessageProperties {
                persistent: true,
                content_type: None,
                message_id: None,
                timestamp: Timestamp::Seconds,
                expiration_ms: None,
                headers: vec![
                    (ERROR_HEADER, FieldValue::Str(reason.clone())),
                    (
                        "x-original-exchange",
                        FieldValue::Str(delivery.exchange.to_owned()),
                    ),
                ],
            },
        };
        CommandDecision::Reject {
            reason,
            dead_letter: Some(dead_letter),
        }
    }
}

/// `<commands exchange>.shards-<first>-<last>`, plus a hash of the list when the owned shards
/// are not one contiguous range (so that two nodes with interleaved shards get distinct queues).
fn default_command_queue(commands_exchange: &str, owned: &[u32]) -> String {
    let (Some(first), Some(last)) = (owned.first(), owned.last()) else {
        return format!("{commands_exchange}.shards-none");
    };
    let contiguous = u64::from(last - first) + 1 == owned.len() as u64;
    if contiguous {
        format!("{commands_exchange}.shards-{first}-{last}")
    } else {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = owned.iter().fold(0x811c_9dc5_u32, |h, s| {
            s.to_le_bytes()
                .iter()
                .fold(h, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
        });
        format!("{commands_exchange}.shards-{first}-{last}-{hash:08x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_queue_names() {
        assert_eq!(
            default_command_queue("gateway.commands", &[0, 1, 2, 3]),
            "gateway.commands.shards-0-3"
        );
        assert_eq!(
            default_command_queue("gateway.commands", &[5]),
            "gateway.commands.shards-5-5"
        );
        let a = default_command_queue("gateway.commands", &[0, 2, 4]);
        let b = default_command_queue("gateway.commands", &[0, 3, 4]);
        assert!(a.starts_with("gateway.commands.shards-0-4-"));
        assert_ne!(a, b);
        assert_eq!(
            default_command_queue("gateway.commands", &[]),
            "gateway.commands.shards-none"
        );
    }
}
