//! The twilight-dispatch profile (chamburr/twilight-dispatch `src/main.rs`, `src/handler.rs`,
//! `src/models.rs`).
//!
//! Events: exchange `gateway` (configurable), topic, durable. Routing key = event name. Body =
//! `{"op":0,"t":"<event>","d":<d>}`, assembled from the original bytes of `t` and `d` (no `s`;
//! the original's optional `old` field needs a cache and is not produced; `d` is never
//! re-serialised). No properties but persistence (delivery mode 2; the original published
//! transient messages, which a broker restart drops). With `default_queue` (`DEFAULT_QUEUE=true`)
//! also the durable queue `gateway.recv` bound with `#`.
//!
//! Commands: the durable queue `gateway.send` (workers publish to it through the default
//! exchange). Body `{"op":0,"shard":<id>,"data":{<gateway packet>}}` sends `data` on that
//! shard; `{"op":1,"shard":<id>}` reconnects it. The queue is shared by every consumer, so a
//! command for a shard this process does not run cannot reach its owner: it is refused with a
//! reason (the original ran all shards in one process and logged the same case). The profile has
//! no dead-letter convention: refused commands are dropped with a reason.

use bytes::Bytes;

use super::{
    BindingDecl, CommandDecision, CommandDelivery, ExchangeDecl, ExchangeKind, MessageKey,
    MessageProperties, ProfileConfig, Publication, QueueDecl, Shared, Topology, command_json,
    reject, required_integer,
};
use crate::codec::Payload;
use crate::command::{CommandError, pick_fields, validate_packet_in};

/// The queue commands are consumed from.
pub const SEND_QUEUE: &str = "gateway.send";

/// The optional catch-all events queue.
pub const RECV_QUEUE: &str = "gateway.recv";

/// The twilight-dispatch profile's names and options.
#[derive(Clone, Debug)]
pub(crate) struct TwilightDispatch {
    exchange: String,
    default_queue: bool,
}

impl TwilightDispatch {
    pub(crate) fn new(config: &ProfileConfig) -> Self {
        Self {
            exchange: config.exchange_name().to_owned(),
            default_queue: config.default_queue,
        }
    }

    /// Whether every event has a queue the gateway declared (`gateway.recv`, bound with `#`).
    pub(crate) fn declares_catch_all_queue(&self) -> bool {
        self.default_queue
    }

    pub(crate) fn topology(&self) -> Topology {
        let queue = |name: &str, consume_commands: bool| QueueDecl {
            name: name.to_owned(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: Vec::new(),
            consume_commands,
        };
        let mut topology = Topology {
            exchanges: vec![ExchangeDecl {
                name: self.exchange.clone(),
                kind: ExchangeKind::Topic,
                durable: true,
                auto_delete: false,
            }],
            queues: vec![queue(SEND_QUEUE, true)],
            bindings: Vec::new(),
        };
        if self.default_queue {
            topology.queues.push(queue(RECV_QUEUE, false));
            topology.bindings.push(BindingDecl {
                queue: RECV_QUEUE.to_owned(),
                exchange: self.exchange.clone(),
                routing_key: "#".to_owned(),
            });
        }
        topology
    }

    pub(crate) fn route(&self, payload: &Payload, event: &str) -> Publication {
        // `t` as Discord wrote it (between the quotes), `d` as Discord wrote it.
        let t = payload
            .t
            .as_ref()
            .map_or(event.as_bytes(), |r| &payload.bytes[r.clone()]);
        let d = payload.data();
        let mut body = Vec::with_capacity(t.len() + d.len() + 22);
        body.extend_from_slice(b"{\"op\":0,\"t\":\"");
        body.extend_from_slice(t);
        body.extend_from_slice(b"\",\"d\":");
        body.extend_from_slice(d);
        body.push(b'}');
        Publication {
            exchange: self.exchange.clone(),
            key: MessageKey::Event(event.to_owned()),
            body: Bytes::from(body),
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
    let [op, shard, data] = pick_fields(&json, "command", [&["op"], &["shard"], &["data"]])
        .map_err(|e| e.to_string())?;
    let op = required_integer(op, "op", "0 (send) or 1 (reconnect)")?;
    let shard = required_integer(shard, "shard", "a shard number")?;
    let shard = shared.cluster.check_exists(shard)?;
    if op > 1 {
        return Err(CommandError::InvalidField {
            field: "op",
            expected: "0 (send) or 1 (reconnect)",
            got: op.to_string(),
        }
        .to_string());
    }
    if !shared.cluster.owns(shard) {
        return Err(format!(
            "shard {shard} is not run by this process (twilight-dispatch commands share one queue; run every shard in one process)"
        ));
    }
    if op == 1 {
        return Ok(CommandDecision::Reconnect {
            shards: vec![shard],
        });
    }
    let packet = data
        .ok_or(CommandError::MissingField { field: "data" })
        .and_then(|raw| validate_packet_in(raw.get().as_bytes(), "`data`", &shared.policy))
        .map_err(|e| e.to_string())?;
    Ok(CommandDecision::Send {
        shards: vec![shard],
        packet: packet.into_bytes(),
    })
}
