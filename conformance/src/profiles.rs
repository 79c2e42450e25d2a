//! The broker profiles as their *workers* see them (PROFILES.md): which exchanges and queues a
//! worker of that system declares and binds, how it decodes an event body, and how it publishes a
//! command for each addressing mode. Also the topology the gateway itself must declare.
//!
//! This is written from the published contracts, independently of any implementation: it does not
//! use Gatehouse's own routing code, so it can judge it. It owns no connections (see
//! [`crate::broker`]).

use std::fmt;
use std::str::FromStr;

use crate::body::{self, Value};
use crate::broker::{Delivery, ExchangeType, HeaderValue};
pub use crate::broker::{ExchangeSpec, OutgoingMessage};

/// A broker profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Profile {
    /// Gatehouse's native profile.
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

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 5] = [
        Profile::Gatehouse,
        Profile::Spectacles,
        Profile::Cordis,
        Profile::TwilightDispatch,
        Profile::Retsu,
    ];

    /// The name used on the command line and in `BROKER_PROFILE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gatehouse => "gatehouse",
            Self::Spectacles => "spectacles",
            Self::Cordis => "cordis",
            Self::TwilightDispatch => "twilight-dispatch",
            Self::Retsu => "retsu",
        }
    }

    /// The body encoding a worker of this profile expects by default.
    pub fn default_body_encoding(self) -> BodyEncoding {
        match self {
            Self::Spectacles | Self::Cordis => BodyEncoding::Msgpack,
            _ => BodyEncoding::Json,
        }
    }

    /// Whether the profile lets the operator choose the body encoding.
    pub fn offers_json_and_msgpack(self) -> bool {
        matches!(self, Self::Spectacles | Self::Cordis)
    }

    /// The events exchange as the profile's workers declare it.
    pub fn events_exchange(self) -> ExchangeSpec {
        let (kind, durable) = match self {
            Self::Gatehouse | Self::TwilightDispatch => (ExchangeType::Topic, true),
            Self::Spectacles | Self::Retsu => (ExchangeType::Direct, true),
            Self::Cordis => (ExchangeType::Direct, false),
        };
        ExchangeSpec {
            name: "gateway",
            kind,
            durable,
            auto_delete: false,
        }
    }

    /// How a worker of this profile subscribes to events.
    pub fn subscription(self) -> Subscription {
        match self {
            Self::Gatehouse | Self::TwilightDispatch => Subscription::Wildcard,
            Self::Spectacles | Self::Retsu => Subscription::NamedQueuePerEvent,
            Self::Cordis => Subscription::OwnQueueBoundPerEvent,
        }
    }

    /// The command addressing modes the profile defines.
    pub fn command_modes(self) -> &'static [CommandMode] {
        match self {
            Self::Gatehouse => &[
                CommandMode::Shard,
                CommandMode::Guild,
                CommandMode::AllShards,
            ],
            Self::Spectacles => &[CommandMode::Shard, CommandMode::Guild],
            Self::Cordis => &[CommandMode::AllShards],
            Self::TwilightDispatch | Self::Retsu => &[CommandMode::Shard],
        }
    }

    /// What must exist on the broker before a worker's command can reach the gateway (the
    /// gateway declares it; a worker publishing earlier would lose the command).
    pub fn command_entry(self, target: Target) -> CommandEntry {
        match self {
            Self::Gatehouse => CommandEntry::BoundExchange {
                exchange: "gateway.commands",
                routing_key: None,
            },
            Self::Spectacles => CommandEntry::BoundExchange {
                exchange: "gateway",
                routing_key: Some(match target {
                    Target::Shard(id) => id.to_string(),
                    Target::Guild(_) | Target::AllShards => "SEND".into(),
                }),
            },
            Self::Cordis => CommandEntry::BoundExchange {
                exchange: "gateway_commands",
                routing_key: None,
            },
            Self::TwilightDispatch => CommandEntry::Queue("gateway.send"),
            Self::Retsu => CommandEntry::BoundExchange {
                exchange: "gateway-command",
                routing_key: None,
            },
        }
    }

    /// The message a worker publishes to send `packet` (`{"op":N,"d":...}`) to `target`, or
    /// `None` when the profile has no such addressing mode.
    pub fn command(
        self,
        encoding: BodyEncoding,
        target: Target,
        packet: &serde_json::Value,
    ) -> Option<OutgoingMessage> {
        use serde_json::json;
        let (exchange, routing_key, body) = match (self, target) {
            (Self::Gatehouse, Target::Shard(id)) => {
                ("gateway.commands", format!("shard.{id}"), packet.clone())
            }
            (Self::Gatehouse, Target::Guild(g)) => {
                ("gateway.commands", format!("guild.{g}"), packet.clone())
            }
            (Self::Gatehouse, Target::AllShards) => {
                ("gateway.commands", "all".into(), packet.clone())
            }
            (Self::Spectacles, Target::Shard(id)) => ("gateway", id.to_string(), packet.clone()),
            (Self::Spectacles, Target::Guild(g)) => (
                "gateway",
                "SEND".into(),
                json!({"guild_id": g.to_string(), "packet": packet}),
            ),
            (Self::Cordis, Target::AllShards) => {
                ("gateway_commands", String::new(), packet.clone())
            }
            (Self::TwilightDispatch, Target::Shard(id)) => (
                "",
                "gateway.send".into(),
                json!({"op": 0, "shard": id, "data": packet}),
            ),
            (Self::Retsu, Target::Shard(id)) => (
                "gateway-command",
                String::new(),
                json!({"shard_id": id, "opcode": packet["op"], "type": null, "data": packet["d"]}),
            ),
            _ => return None,
        };
        Some(OutgoingMessage {
            exchange: exchange.to_owned(),
            routing_key,
            body: encoding.encode(&body),
        })
    }

    /// A raw (possibly malformed) body published where this profile's valid commands for
    /// `shard` go.
    pub fn raw_command(self, shard: u32, body: Vec<u8>) -> OutgoingMessage {
        let (exchange, routing_key) = match self {
            Self::Gatehouse => ("gateway.commands", format!("shard.{shard}")),
            Self::Spectacles => ("gateway", shard.to_string()),
            Self::Cordis => ("gateway_commands", String::new()),
            Self::TwilightDispatch => ("", "gateway.send".into()),
            Self::Retsu => ("gateway-command", String::new()),
        };
        OutgoingMessage {
            exchange: exchange.to_owned(),
            routing_key,
            body,
        }
    }

    /// The dead-letter convention: `(exchange, header)` for profiles that have one.
    pub fn dead_letter(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Gatehouse => Some(("gateway.commands.dlx", "x-gatehouse-error")),
            _ => None,
        }
    }

    /// What the gateway itself must declare (before or while it runs), checked through the
    /// management API.
    pub fn expected_topology(self) -> ExpectedTopology {
        let events = self.events_exchange();
        let mut exchanges = vec![events];
        let mut queues = Vec::new();
        match self {
            Self::Gatehouse => {
                exchanges.push(ExchangeSpec {
                    name: "gateway.commands",
                    kind: ExchangeType::Topic,
                    durable: true,
                    auto_delete: false,
                });
            }
            Self::Spectacles => {}
            Self::Cordis => exchanges.push(ExchangeSpec {
                name: "gateway_commands",
                kind: ExchangeType::Fanout,
                durable: true,
                auto_delete: false,
            }),
            Self::TwilightDispatch => queues.push(QueueSpec {
                name: "gateway.send",
                durable: true,
            }),
            Self::Retsu => exchanges.push(ExchangeSpec {
                name: "gateway-command",
                kind: ExchangeType::Fanout,
                durable: true,
                auto_delete: false,
            }),
        }
        ExpectedTopology {
            exchanges,
            queues,
            dead_letter_exchange: self.dead_letter().map(|(name, _)| name),
        }
    }

    /// Checks one delivered event against the dispatch frame the mock sent (its exact JSON text;
    /// for ETF connections, the JSON the frame was encoded from). `ctx` names the session and
    /// shard the frame belongs to. `fidelity` says whether bytes must be identical (JSON
    /// connections) or only the values (ETF connections).
    pub fn check_event(
        self,
        encoding: BodyEncoding,
        fidelity: Fidelity,
        frame: &[u8],
        ctx: &EventContext<'_>,
        delivery: &Delivery,
    ) -> Result<(), String> {
        let raw = body::raw_dispatch(frame)?;
        let event = raw.event.clone().unwrap_or_default();
        if delivery.routing_key != event {
            return Err(format!(
                "routing key {:?}, expected the event name {event:?}",
                delivery.routing_key
            ));
        }
        let order = match fidelity {
            Fidelity::Bytes => body::Match::Exact,
            Fidelity::Values => body::Match::EtfValues,
        };
        let exact = |what: &str, expected: &[u8]| -> Result<(), String> {
            if fidelity == Fidelity::Values {
                let e = Value::from_json(expected)?;
                let a = Value::from_json(&delivery.body)
                    .map_err(|err| format!("{event} s={:?}: body {err}", raw.seq))?;
                return match body::first_difference_in(&e, &a, order) {
                    None => Ok(()),
                    Some(d) => Err(format!(
                        "{event} s={:?}: body differs from {what}: {d}",
                        raw.seq
                    )),
                };
            }
            if delivery.body == expected {
                Ok(())
            } else {
                Err(format!(
                    "{event} s={:?}: body is not byte-identical to {what} ({} bytes expected, {} received{})",
                    raw.seq,
                    expected.len(),
                    delivery.body.len(),
                    first_json_difference(expected, &delivery.body)
                ))
            }
        };
        let decoded_equal = |what: &str, expected: &[u8], actual: &Value| -> Result<(), String> {
            let expected = Value::from_json(expected)?;
            match body::first_difference_in(&expected, actual, order) {
                None => Ok(()),
                Some(d) => Err(format!("{event} s={:?}: {what} differs: {d}", raw.seq)),
            }
        };
        match (self, encoding) {
            (Self::Gatehouse, _) => {
                exact("the dispatch frame", frame)?;
                check_native_properties(&event, raw.seq, ctx, delivery)
            }
            (Self::Retsu, _) | (Self::Cordis, BodyEncoding::Json) => {
                exact("the dispatch frame", frame)?;
                if self == Self::Cordis {
                    check_millisecond_timestamp(delivery)?;
                }
                Ok(())
            }
            (Self::Spectacles, BodyEncoding::Json) => exact("the frame's `d`", raw.d.as_bytes()),
            (Self::Spectacles, BodyEncoding::Msgpack) => {
                let actual = Value::from_msgpack(&delivery.body)
                    .map_err(|e| format!("{event} s={:?}: {e}", raw.seq))?;
                decoded_equal("msgpack of `d`", raw.d.as_bytes(), &actual)
            }
            (Self::Cordis, BodyEncoding::Msgpack) => {
                let actual = Value::from_msgpack(&delivery.body)
                    .map_err(|e| format!("{event} s={:?}: {e}", raw.seq))?;
                match actual.get("type").and_then(Value::as_str) {
                    Some(t) if t == event => {}
                    other => {
                        return Err(format!(
                            "{event}: msgpack envelope `type` is {other:?}, expected {event:?}"
                        ));
                    }
                }
                let data = actual
                    .get("data")
                    .ok_or_else(|| format!("{event}: msgpack envelope has no `data`"))?;
                decoded_equal("`data`", raw.d.as_bytes(), data)?;
                check_millisecond_timestamp(delivery)
            }
            (Self::TwilightDispatch, _) => {
                let got =
                    body::raw_dispatch(&delivery.body).map_err(|e| format!("{event}: body {e}"))?;
                if got.op != Some(0) {
                    return Err(format!("{event}: body op is {:?}, expected 0", got.op));
                }
                if got.event.as_deref() != Some(event.as_str()) {
                    return Err(format!("{event}: body t is {:?}", got.event));
                }
                if fidelity == Fidelity::Values {
                    let e = Value::from_json(raw.d.as_bytes())?;
                    let a = Value::from_json(got.d.as_bytes())?;
                    if let Some(d) = body::first_difference_in(&e, &a, order) {
                        return Err(format!("{event} s={:?}: body `d` differs: {d}", raw.seq));
                    }
                } else if got.d != raw.d {
                    return Err(format!(
                        "{event} s={:?}: body `d` is not byte-identical to the frame's `d`",
                        raw.seq
                    ));
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
                format!("unknown profile {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// How faithful an event body must be to Discord's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fidelity {
    /// JSON connection: passed-through bytes are identical, transcodings keep key order.
    Bytes,
    /// ETF connection: the same keys and values (ETF maps have no order, numbers no spelling,
    /// and integers beyond 2^53 may be delivered as strings, as snowflakes are).
    Values,
}

/// The encoding of event and command bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// JSON text.
    Json,
    /// msgpack.
    Msgpack,
}

impl BodyEncoding {
    /// `json` or `msgpack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Msgpack => "msgpack",
        }
    }

    /// Encodes a JSON value in this encoding.
    pub fn encode(self, value: &serde_json::Value) -> Vec<u8> {
        match self {
            Self::Json => serde_json::to_vec(value).expect("a JSON value serialises"),
            Self::Msgpack => body::json_to_msgpack(value),
        }
    }
}

/// A queue the gateway must declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Name.
    pub name: &'static str,
    /// Durable.
    pub durable: bool,
}

/// What the gateway must declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTopology {
    /// Exchanges with their exact type and flags.
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues.
    pub queues: Vec<QueueSpec>,
    /// A dead-letter exchange that must exist (any type).
    pub dead_letter_exchange: Option<&'static str>,
}

/// How a worker subscribes to events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// One server-named queue bound with `#` (topic exchanges).
    Wildcard,
    /// A durable queue `gateway:<EVENT>` per event, bound with the event name.
    NamedQueuePerEvent,
    /// One server-named queue bound once per event name (direct exchanges).
    OwnQueueBoundPerEvent,
}

/// How a command names its shard(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandMode {
    /// One shard by id.
    Shard,
    /// The shard of a guild.
    Guild,
    /// Every shard.
    AllShards,
}

impl CommandMode {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Shard => "by shard",
            Self::Guild => "by guild",
            Self::AllShards => "to every shard",
        }
    }
}

/// The addressee of one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A shard id.
    Shard(u32),
    /// A guild id.
    Guild(u64),
    /// Every shard.
    AllShards,
}

/// What must exist before a command can be published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandEntry {
    /// An exchange with at least one binding (with this routing key, if given).
    BoundExchange {
        /// The exchange.
        exchange: &'static str,
        /// The binding's routing key, if a particular one is needed.
        routing_key: Option<String>,
    },
    /// A queue, published to through the default exchange.
    Queue(&'static str),
}

/// The session facts an event is checked against.
#[derive(Clone, Copy, Debug)]
pub struct EventContext<'a> {
    /// The session id the mock gave the shard.
    pub session_id: &'a str,
    /// The shard that received the frame.
    pub shard: u32,
    /// The shard count.
    pub shard_count: u32,
}

fn check_native_properties(
    event: &str,
    seq: Option<u64>,
    ctx: &EventContext<'_>,
    delivery: &Delivery,
) -> Result<(), String> {
    let seq = seq.unwrap_or_default();
    let p = &delivery.properties;
    let mut problems = Vec::new();
    if p.delivery_mode != Some(2) {
        problems.push(format!("delivery mode {:?}, expected 2", p.delivery_mode));
    }
    if p.content_type.as_deref() != Some("application/json") {
        problems.push(format!("content type {:?}", p.content_type));
    }
    let id = format!("{}:{seq}", ctx.session_id);
    if p.message_id.as_deref() != Some(id.as_str()) {
        problems.push(format!("message id {:?}, expected {id:?}", p.message_id));
    }
    if p.timestamp.is_none() {
        problems.push("no timestamp".into());
    }
    let expect_header =
        |name: &str, want: HeaderValue, problems: &mut Vec<String>| match delivery.header(name) {
            Some(got) if got.same_as(&want) => {}
            got => problems.push(format!("header {name} = {got:?}, expected {want:?}")),
        };
    expect_header(
        "x-shard-id",
        HeaderValue::Int(ctx.shard.into()),
        &mut problems,
    );
    expect_header(
        "x-shard-count",
        HeaderValue::Int(ctx.shard_count.into()),
        &mut problems,
    );
    expect_header("x-sequence", HeaderValue::Int(seq as i64), &mut problems);
    expect_header(
        "x-session-id",
        HeaderValue::Str(ctx.session_id.into()),
        &mut problems,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{event} s={seq}: {}", problems.join("; ")))
    }
}

fn check_millisecond_timestamp(delivery: &Delivery) -> Result<(), String> {
    let Some(ts) = delivery.properties.timestamp else {
        return Err("no timestamp property (Cordis workers expect milliseconds)".into());
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // within a day of now, in milliseconds
    if ts.abs_diff(now_ms) > 86_400_000 {
        return Err(format!(
            "timestamp {ts} is not milliseconds since the epoch (now is {now_ms})"
        ));
    }
    Ok(())
}

fn first_json_difference(expected: &[u8], actual: &[u8]) -> String {
    let Ok(e) = Value::from_json(expected) else {
        return String::new();
    };
    let Ok(a) = Value::from_json(actual) else {
        return "; the body is not JSON".into();
    };
    match body::first_difference(&e, &a) {
        Some(d) => format!("; {d}"),
        None => "; same JSON value, different bytes (re-serialised?)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
        }
        assert!("nope".parse::<Profile>().is_err());
    }

    #[test]
    fn commands_follow_each_profile() {
        let packet = serde_json::json!({"op": 8, "d": {"guild_id": "1", "nonce": "n"}});
        let m = Profile::Gatehouse
            .command(BodyEncoding::Json, Target::Guild(42), &packet)
            .unwrap();
        assert_eq!(
            (m.exchange.as_str(), m.routing_key.as_str()),
            ("gateway.commands", "guild.42")
        );
        let m = Profile::Retsu
            .command(BodyEncoding::Json, Target::Shard(3), &packet)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(v["shard_id"], 3);
        assert_eq!(v["opcode"], 8);
        assert!(
            Profile::Cordis
                .command(BodyEncoding::Msgpack, Target::Shard(0), &packet)
                .is_none()
        );
    }
}
