//! Worker command decoding (`Router::decode_command`) in every profile, JSON and msgpack bodies.
//!
//! Input layout: one byte picks the profile (`b % 5`: gatehouse, spectacles, cordis,
//! twilight-dispatch, retsu) and, for spectacles and cordis, the body encoding (bit 3 set: JSON,
//! else msgpack); one byte picks the routing key from the keys the profiles use; the rest is the
//! body. The process owns shards 1 and 2 of 4.
//!
//! Checks: no panic; a `Send` packet passes the command policy (what the shard will send) and
//! names only owned shards; a `Reconnect` names only owned shards; a rejection says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::command::validate_packet;
use proto_core::profile::{
    BodyEncoding, ClusterInfo, CommandDecision, CommandDelivery, ProfileConfig, ProfileKind, Router,
};

const PROFILES: [(ProfileKind, &str); 5] = [
    (ProfileKind::Gatehouse, "gateway.commands"),
    (ProfileKind::Spectacles, "gateway"),
    (ProfileKind::Cordis, "gateway_commands"),
    (ProfileKind::TwilightDispatch, ""),
    (ProfileKind::Retsu, "gateway-command"),
];

const ROUTING_KEYS: [&str; 12] = [
    "",
    "0",
    "1",
    "2",
    "3",
    "shard.0",
    "shard.1",
    "shard.2",
    "all",
    "SEND",
    "gateway.send",
    "nope",
];

fuzz_target!(|data: &[u8]| {
    let [mode, key, body @ ..] = data else { return };
    let (kind, exchange) = PROFILES[usize::from(mode % 5)];
    let json_body = mode & 8 != 0 && matches!(kind, ProfileKind::Spectacles | ProfileKind::Cordis);
    let config = ProfileConfig {
        kind,
        body: json_body.then_some(BodyEncoding::Json),
        ..ProfileConfig::default()
    };
    let owned = vec![1, 2];
    let cluster = ClusterInfo::new(4, owned.iter().copied()).expect("valid shards");
    let router = Router::new(&config, &cluster).expect("a valid profile");
    let delivery = CommandDelivery {
        exchange,
        routing_key: ROUTING_KEYS[usize::from(*key) % ROUTING_KEYS.len()],
        queue: "commands",
        body,
    };
    match router.decode_command(&delivery) {
        CommandDecision::Send { shards, packet } => {
            assert!(shards.iter().all(|s| owned.contains(s)), "{shards:?}");
            if let Err(e) = validate_packet(&packet, router.command_policy()) {
                panic!(
                    "sends an invalid packet ({e}): {}",
                    String::from_utf8_lossy(&packet)
                );
            }
        }
        CommandDecision::Reconnect { shards } => {
            assert!(shards.iter().all(|s| owned.contains(s)), "{shards:?}");
        }
        CommandDecision::Reject { reason, .. } => assert!(!reason.is_empty()),
        CommandDecision::Forward(_) | CommandDecision::Ignore => {}
    }
});
