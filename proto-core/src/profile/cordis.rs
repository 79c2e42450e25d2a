//! The Cordis profile (the Cordis spec; `cordis-lib/cordis`, `@cordis/brokers`).
//!
//! Events: exchange `gateway` (configurable), direct, **not durable** (what `@cordis/brokers`
//! 1.2 declares: a durable declaration would make the workers' own declaration fail with 406,
//! so this profile cannot share a vhost with one that declares `gateway` durable). Routing key
//! = the packet's `t`. Body: msgpack of the envelope `{"type": t, "data": d}` (the default, what
//! the worker library decodes; it takes the event name from `type`) or the dispatch packet's
//! bytes untouched (`body = "json"`, the spec's "as it comes in, no mutations"). The
//! `timestamp` property is set in **milliseconds** since the epoch, as the library's publisher
//! does: workers with a maximum message age compare against milliseconds. Events are persistent
//! (delivery mode 2): the exchange is not durable, but the workers' queues may be.
//!
//! Commands: fanout exchange `gateway_commands`, durable; each gateway binds a server-named,
//! exclusive, auto-delete queue to it and sends every command it receives, as is, on every
//! shard it runs. Body: the packet `{"op":N,"d":{...}}`, msgpack by default, JSON accepted.
//! Cordis has no dead-letter convention: refused commands are dropped with a reason.

use bytes::Bytes;

use super::msgpack::{append_json_as_msgpack, append_json_str_contents_as_msgpack};
use super::{
    BodyEncoding, CommandDecision, CommandDelivery, MessageKey, MessageProperties, ProfileConfig,
    Publication, RouteError, Shared, Timestamp, Topology, command_json, fanout_commands_topology,
    msgpack, reject,
};
use crate::codec::Payload;
use crate::command::validate_packet;

/// The commands exchange.
pub const COMMANDS_EXCHANGE: &str = "gateway_commands";

/// The Cordis profile's names and options.
#[derive(Clone, Debug)]
pub(crate) struct Cordis {
    exchange: String,
    body: BodyEncoding,
}

impl Cordis {
    pub(crate) fn new(config: &ProfileConfig) -> Self {
        Self {
            exchange: config.exchange_name().to_owned(),
            body: config.body_encoding(),
        }
    }

    pub(crate) fn topology(&self) -> Topology {
        fanout_commands_topology(&self.exchange, false, COMMANDS_EXCHANGE)
    }

    pub(crate) fn route(&self, payload: &Payload, event: &str) -> Result<Publication, RouteError> {
        let body = match self.body {
            BodyEncoding::Json => payload.bytes.clone(),
            BodyEncoding::Msgpack => {
                Bytes::from(
                    envelope(payload, event).map_err(|source| RouteError::Transcode {
                        event: event.to_owned(),
                        source,
                    })?,
                )
            }
        };
        Ok(Publication {
            exchange: self.exchange.clone(),
            key: MessageKey::Event(event.to_owned()),
            body,
            properties: MessageProperties {
                persistent: true,
                timestamp: Timestamp::Millis,
                ..MessageProperties::default()
            },
        })
    }

    pub(crate) fn decode_command(
        &self,
        shared: &Shared,
        delivery: &CommandDelivery<'_>,
    ) -> CommandDecision {
        let owned = shared.cluster.owned();
        if owned.is_empty() {
            return CommandDecision::Ignore;
        }
        let packet = command_json(delivery.body, true)
            .and_then(|json| validate_packet(&json, &shared.policy));
        match packet {
            Ok(packet) => CommandDecision::Send {
                shards: owned.to_vec(),
                packet: packet.into_bytes(),
            },
            Err(e) => reject(e.to_string()),
        }
    }
}

/// msgpack of `{"type": <t>, "data": <d>}`.
fn envelope(payload: &Payload, event: &str) -> Result<Vec<u8>, msgpack::TranscodeError> {
    let data = payload.data();
    let mut out = Vec::with_capacity(data.len() + event.len() + 16);
    msgpack::write_map_len(&mut out, 2);
    msgpack::write_str(&mut out, "type");
    append_json_str_contents_as_msgpack(event.as_bytes(), &mut out)?;
    msgpack::write_str(&mut out, "data");
    append_json_as_msgpack(data, &mut out)?;
    Ok(out)
}
