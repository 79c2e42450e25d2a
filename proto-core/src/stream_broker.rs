//! Redis Streams as a broker, the way `@spectacles/brokers` 0.9.3's `Redis` class
//! (`dist/src/Redis.js`, npm) reads and writes them: the decisions, without I/O.
//!
//! What that library does, and what follows from it here:
//! - `publish(event, data)` is `XADD <event> * data <serialize(data)>` (`STREAM_DATA_KEY =
//!   'data'`; `serialize` is `@spectacles/util`'s msgpack `encode`): one stream per event,
//!   named by the event alone, one field `data`. So an event goes to the stream named by its
//!   routing key (the exchange's name where the routing key is empty: a fanout exchange), with
//!   the profile's body as `data` ([`stream_name`], [`DATA_FIELD`]).
//! - Workers `XGROUP CREATE <event> <group> 0 MKSTREAM` and read with `XREADGROUP GROUP
//!   <group> <name> COUNT 10 BLOCK 5000 STREAMS <events...> >` (`name`: 20 random bytes in
//!   hex unless given), and `XACK` what they handled. A worker's `publish('0', packet)` or
//!   `publish('SEND', {...})` appends to the stream `0` or `SEND`: the gateway reads its
//!   commands from the streams named by the routing keys its profile binds its command queues
//!   with on AMQP ([`command_streams`]; wildcard keys such as `guild.#` have no stream).
//! - The library never claims other consumers' pending entries (0.9.3 has no `XCLAIM`), and
//!   skips an entry without `data` without acknowledging it. The gateway, as a consumer of
//!   its command streams, claims entries a dead consumer left pending for
//!   [`CLAIM_MIN_IDLE`] ([`CommandReads`]), and acknowledges an entry without `data` (it could
//!   never be carried out) instead of leaving it pending for ever ([`entry_body`]).
//!
//! Does not own: the connection, the wire encoding of commands, or what a command means (the
//! profile decodes it as it decodes an AMQP delivery with that routing key).

use std::time::{Duration, Instant};

use crate::profile::Topology;

/// The one field of every entry (`STREAM_DATA_KEY` in the library's `Redis.js`).
pub const DATA_FIELD: &str = "data";
/// How long a blocking read waits (the library's default `blockInterval`, 5000 ms).
pub const BLOCK: Duration = Duration::from_secs(5);
/// Entries per read (the library's default `maxChunk`, 10).
pub const READ_COUNT: usize = 10;
/// A pending entry idle this long belongs to a consumer that is gone: it is claimed.
pub const CLAIM_MIN_IDLE: Duration = Duration::from_secs(30);
/// How often the gateway looks for such entries (and at its start).
pub const CLAIM_EVERY: Duration = Duration::from_secs(15);

/// The stream a message goes to: `prefix` then its routing key (the exchange's name where the
/// routing key is empty).
pub fn stream_name(prefix: &str, exchange: &str, routing_key: &str) -> String {
    let name = if routing_key.is_empty() {
        exchange
    } else {
        routing_key
    };
    format!("{prefix}{name}")
}

/// The stream a dead letter goes to: `prefix` then the dead-letter exchange's name (its
/// routing key is the command's, and the command's stream must never get it back).
pub fn dead_letter_stream(prefix: &str, exchange: &str) -> String {
    format!("{prefix}{exchange}")
}

/// One stream the gateway reads commands from, and how its entries count as deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandStream {
    /// The stream's name (with the prefix).
    pub stream: String,
    /// The exchange its commands count as published to.
    pub exchange: String,
    /// The routing key they count as published with.
    pub routing_key: String,
}

/// The streams the gateway reads commands from: one per routing key its profile binds a
/// command queue with (in `topology`), except wildcard keys (`*`, `#`), which no stream name
/// can stand for. No duplicates, in the topology's order.
pub fn command_streams(topology: &Topology, prefix: &str) -> Vec<CommandStream> {
    let mut command_queues = Vec::new();
    let mut last_is_command = false;
    for queue in &topology.queues {
        last_is_command = queue.consume_commands;
        if queue.consume_commands {
            command_queues.push(queue.name.as_str());
        }
    }
    let mut streams: Vec<CommandStream> = Vec::new();
    for binding in &topology.bindings {
        let of_command_queue = if binding.queue.is_empty() {
            last_is_command
        } else {
            command_queues.contains(&binding.queue.as_str())
        };
        if !of_command_queue || binding.routing_key.contains(['*', '#']) {
            continue;
        }
        let stream = stream_name(prefix, &binding.exchange, &binding.routing_key);
        if streams.iter().all(|s| s.stream != stream) {
            streams.push(CommandStream {
                stream,
                exchange: binding.exchange.clone(),
                routing_key: binding.routing_key.clone(),
            });
        }
    }
    streams
}

/// The `data` of an entry's fields (name, value pairs), or `None` when it has none (the
/// library's readers skip such an entry; the gateway acknowledges it and logs).
pub fn entry_body(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
    fields
        .iter()
        .find(|(name, _)| name == DATA_FIELD.as_bytes())
        .map(|(_, value)| value.as_slice())
}

/// What the command reader does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRead {
    /// Claim entries pending longer than [`CLAIM_MIN_IDLE`] (`XAUTOCLAIM`), then read on.
    Claim,
    /// Read new entries, blocking up to [`BLOCK`] (`XREADGROUP ... >`).
    New,
}

/// When the command reader claims a gone consumer's entries: at the start, then every
/// [`CLAIM_EVERY`].
#[derive(Clone, Debug, Default)]
pub struct CommandReads {
    next_claim: Option<Instant>,
}

impl CommandReads {
    /// A reader that claims first.
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do at `now`.
    pub fn next(&mut self, now: Instant) -> StreamRead {
        match self.next_claim {
            Some(at) if now < at => StreamRead::New,
            _ => {
                self.next_claim = Some(now + CLAIM_EVERY);
                StreamRead::Claim
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ClusterInfo, ProfileConfig, ProfileKind, Router};

    fn router(kind: ProfileKind, owned: Vec<u32>) -> Router {
        let config = ProfileConfig {
            kind,
            ..ProfileConfig::default()
        };
        Router::new(
            &config,
            &ClusterInfo {
                shard_count: 4,
                owned,
            },
        )
        .unwrap()
    }

    #[test]
    fn spectacles_commands_come_from_the_shard_streams_and_send() {
        let streams = command_streams(&router(ProfileKind::Spectacles, vec![1, 2]).topology(), "");
        let names: Vec<_> = streams.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(names, ["1", "2", "SEND"]);
        assert_eq!(streams[2].routing_key, "SEND");
        assert_eq!(streams[2].exchange, "gateway");
    }

    #[test]
    fn wildcards_have_no_stream_and_fanout_reads_the_exchange() {
        let native = command_streams(&router(ProfileKind::Gatehouse, vec![0]).topology(), "p:");
        let names: Vec<_> = native.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(names, ["p:shard.0", "p:all"]);
        let cordis = command_streams(&router(ProfileKind::Cordis, vec![0]).topology(), "");
        let names: Vec<_> = cordis.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(names, ["gateway_commands"]);
    }

    #[test]
    fn events_go_to_the_stream_of_their_name() {
        assert_eq!(
            stream_name("", "gateway", "MESSAGE_CREATE"),
            "MESSAGE_CREATE"
        );
        assert_eq!(
            stream_name("x:", "gateway_commands", ""),
            "x:gateway_commands"
        );
        assert_eq!(
            dead_letter_stream("", "gateway.commands.dlx"),
            "gateway.commands.dlx"
        );
    }

    #[test]
    fn the_data_field_is_found_among_others() {
        let fields = vec![
            (b"other".to_vec(), b"1".to_vec()),
            (b"data".to_vec(), b"\x81\xa1a\x01".to_vec()),
        ];
        assert_eq!(entry_body(&fields), Some(b"\x81\xa1a\x01".as_slice()));
        assert_eq!(entry_body(&fields[..1]), None);
    }

    #[test]
    fn claims_at_start_and_then_every_interval() {
        let start = crate::tests::epoch();
        let mut reads = CommandReads::new();
        assert_eq!(reads.next(start), StreamRead::Claim);
        assert_eq!(reads.next(start + Duration::from_secs(1)), StreamRead::New);
        assert_eq!(reads.next(start + CLAIM_EVERY), StreamRead::Claim);
        assert_eq!(reads.next(start + CLAIM_EVERY), StreamRead::New);
    }
}
