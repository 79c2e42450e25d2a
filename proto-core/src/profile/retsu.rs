//! The Retsu profile (Mikibot/retsu `src/Retsu.Publisher/Program.cs`; the Retsu README).
//!
//! Events: exchange `gateway` (configurable), direct, durable. The first time this process
//! sees an event name it declares the durable queue `gateway:<EVENT>` bound with `<EVENT>`
//! ([`super::Router::topology_for_event`]), so consumers subscribe to `gateway:MESSAGE_CREATE`
//! and so on. Body = the whole dispatch packet exactly as received, persistent (delivery mode
//! 2). Events named in
//! `ignored_packets` (`ignored_events`) are dropped.
//!
//! Commands: fanout exchange `gateway-command`, durable; each gateway binds a server-named
//! (exclusive, auto-delete) queue. Body `{"shard_id":<id>,"opcode":<op>,"type":null|"reconnect",
//! "data":{...}}`, with the PascalCase keys `ShardId`, `Opcode`, `Type`, `Data` accepted too.
//! `type` null (or absent): send `{"op":opcode,"d":data}` on that shard; `"reconnect"`:
//! reconnect it. Every gateway receives every command and ignores shards it does not own. Retsu
//! has no dead-letter convention: refused commands are dropped with a reason.

use super::{
    BindingDecl, CommandDecision, CommandDelivery, MessageKey, MessageProperties, ProfileConfig,
    Publication, QueueDecl, Shared, Topology, command_json, fanout_commands_topology, reject,
    required_integer,
};
use crate::codec::Payload;
use crate::command::{CommandError, packet_from_parts, pick_fields, preview};

/// The commands exchange.
pub const COMMANDS_EXCHANGE: &str = "gateway-command";

/// The Retsu profile's names.
#[derive(Clone, Debug)]
pub(crate) struct Retsu {
    exchange: String,
}

impl Retsu {
    pub(crate) fn new(config: &ProfileConfig) -> Self {
        Self {
            exchange: config.exchange_name().to_owned(),
        }
    }

    pub(crate) fn topology(&self) -> Topology {
        fanout_commands_topology(&self.exchange, true, COMMANDS_EXCHANGE)
    }

    /// The queue `<exchange>:<EVENT>` and its binding.
    pub(crate) fn topology_for_event(&self, event: &str) -> Topology {
        let queue = format!("{}:{event}", self.exchange);
        Topology {
            exchanges: Vec::new(),
            queues: vec![QueueDecl {
                name: queue.clone(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: Vec::new(),
                consume_commands: false,
            }],
            bindings: vec![BindingDecl {
                queue,
                exchange: self.exchange.clone(),
                routing_key: event.to_owned(),
            }],
        }
    }

    pub(crate) fn route(&self, payload: &Payload, event: &str) -> Publication {
        Publication {
            exchange: self.exchange.clone(),
            key: MessageKey::Event(event.to_owned()),
            body: payload.bytes.clone(),
            properties: MessageProperties::persistent(),
        }
    }

    pub(crate) fn decode_command(
        &self,
        shared: &Shared,
        delivery: &CommandDelivery<'_>,
    ) -> CommandDecision {
        decode(shared, delivery.body).unwrap_or_else(reject)
    }
}

fn decode(shared: &Shared, body: &[u8]) -> Result<CommandDecision, String> {
    let json = command_json(body, false).map_err(|e| e.to_string())?;
    let [shard, opcode, kind, data] = pick_fields(
        &json,
        "command",
        [
            &["shard_id", "ShardId"],
            &["opcode", "Opcode"],
            &["type", "Type"],
            &["data", "Data"],
        ],
    )
    .map_err(|e| e.to_string())?;
    let shard = required_integer(shard, "shard_id", "a shard number")?;
    let shard = shared.cluster.check_exists(shard)?;
    let reconnect = match kind.map(|raw| raw.get()) {
        None | Some("null") => false,
        Some(raw) => match serde_json::from_str::<String>(raw) {
            Ok(t) if t.eq_ignore_ascii_case("reconnect") => true,
            _ => {
                return Err(CommandError::InvalidField {
                    field: "type",
                    expected: "null or \"reconnect\"",
                    got: preview(raw),
                }
                .to_string());
            }
        },
    };
    if !shared.cluster.owns(shard) {
        return Ok(CommandDecision::Ignore);
    }
    if reconnect {
        return Ok(CommandDecision::Reconnect {
            shards: vec![shard],
        });
    }
    let opcode = required_integer(opcode, "opcode", "an integer opcode")?;
    let data = data.ok_or_else(|| CommandError::MissingField { field: "data" }.to_string())?;
    let packet = packet_from_parts(opcode, data, &shared.policy).map_err(|e| e.to_string())?;
    Ok(CommandDecision::Send {
        shards: vec![shard],
        packet: packet.into_bytes(),
    })
}
