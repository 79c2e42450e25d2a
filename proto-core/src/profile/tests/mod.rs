//! Table and property tests of every profile, through the public [`Router`] API only.

use bytes::Bytes;

use super::*;
use crate::codec::{Payload, scan_json};

mod common;
mod cordis;
mod native;
mod queue_type;
mod retsu;
mod spectacles;
mod twilight_dispatch;

pub(super) const MESSAGE_CREATE_D: &str =
    include_str!("../testdata/message_create_1.json").trim_ascii_end();
pub(super) const REACTION_ADD_D: &str =
    include_str!("../testdata/message_reaction_add_2.json").trim_ascii_end();
pub(super) const ACTIVITY_D: &str = include_str!("../testdata/activity_3.json").trim_ascii_end();

/// A router for `kind` with otherwise default settings.
pub(super) fn router_of(kind: ProfileKind, count: u32, owned: &[u32]) -> Router {
    router(
        ProfileConfig {
            kind,
            ..ProfileConfig::default()
        },
        count,
        owned,
    )
}

pub(super) fn router(config: ProfileConfig, count: u32, owned: &[u32]) -> Router {
    Router::new(
        &config,
        &ClusterInfo::new(count, owned.iter().copied()).unwrap(),
    )
    .unwrap()
}

/// A dispatch frame in Discord's usual field order.
pub(super) fn frame(event: &str, seq: u64, d: &str) -> String {
    format!(r#"{{"t":"{event}","s":{seq},"op":0,"d":{d}}}"#)
}

pub(super) fn payload(json: &str) -> Payload {
    scan_json(Bytes::from(json.to_owned())).unwrap()
}

pub(super) fn ctx(shard: u32, total: u32, session_id: &str) -> DispatchContext<'_> {
    DispatchContext {
        shard: ShardId::new(shard, total).unwrap(),
        session_id,
    }
}

/// Routes `json` from shard 0 of 1, session `s`.
pub(super) fn route(router: &Router, json: &str) -> Option<Publication> {
    router.route_dispatch(&ctx(0, 1, "s"), &payload(json))
}

pub(super) fn command(router: &Router, exchange: &str, key: &str, body: &[u8]) -> CommandDecision {
    router.decode_command(&CommandDelivery {
        exchange,
        routing_key: key,
        queue: "q",
        body,
    })
}

pub(super) fn send(shards: &[u32], packet: &str) -> CommandDecision {
    CommandDecision::Send {
        shards: shards.to_vec(),
        packet: Bytes::from(packet.to_owned()),
    }
}

/// The reason of a `Reject`, or a panic.
pub(super) fn rejected(decision: CommandDecision) -> (String, Option<Publication>) {
    match decision {
        CommandDecision::Reject {
            reason,
            dead_letter,
        } => (reason, dead_letter),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

pub(super) fn exchange(name: &str, kind: ExchangeKind, durable: bool) -> ExchangeDecl {
    ExchangeDecl {
        name: name.to_owned(),
        kind,
        durable,
        auto_delete: false,
    }
}

pub(super) fn durable_queue(name: &str, consume_commands: bool) -> QueueDecl {
    QueueDecl {
        name: name.to_owned(),
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: Vec::new(),
        consume_commands,
    }
}

pub(super) fn server_named_queue() -> QueueDecl {
    QueueDecl {
        name: String::new(),
        durable: false,
        exclusive: true,
        auto_delete: true,
        arguments: Vec::new(),
        consume_commands: true,
    }
}

pub(super) fn binding(queue: &str, exchange: &str, routing_key: &str) -> BindingDecl {
    BindingDecl {
        queue: queue.to_owned(),
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
    }
}

/// msgpack bytes of a JSON text (through the tests' independent route: serde_json -> rmpv is
/// not order-preserving, so this uses our transcoder and is only for building inputs).
pub(super) fn to_msgpack(json: &str) -> Vec<u8> {
    msgpack::json_to_msgpack(json.as_bytes()).unwrap()
}

/// rmpv's reading of a msgpack body.
pub(super) fn read_msgpack(bytes: &[u8]) -> rmpv::Value {
    let mut rd = bytes;
    let value = rmpv::decode::read_value(&mut rd).unwrap();
    assert!(rd.is_empty());
    value
}
