//! The Retsu profile.

use proptest::prelude::*;

use super::*;

fn retsu(count: u32, owned: &[u32]) -> Router {
    router_of(ProfileKind::Retsu, count, owned)
}

#[test]
fn topology_is_exactly_as_specified() {
    let r = retsu(2, &[0, 1]);
    assert_eq!(
        r.topology(),
        Topology {
            exchanges: vec![
                exchange("gateway", ExchangeKind::Direct, true),
                exchange("gateway-command", ExchangeKind::Fanout, true),
            ],
            queues: vec![server_named_queue()],
            bindings: vec![binding("", "gateway-command", "")],
        }
    );
    assert_eq!(
        r.topology_for_event("MESSAGE_CREATE"),
        Some(Topology {
            exchanges: vec![],
            queues: vec![durable_queue("gateway:MESSAGE_CREATE", false)],
            bindings: vec![binding(
                "gateway:MESSAGE_CREATE",
                "gateway",
                "MESSAGE_CREATE"
            )],
        })
    );
}

#[test]
fn ignored_packets_are_neither_published_nor_declared() {
    let r = router(
        ProfileConfig {
            kind: ProfileKind::Retsu,
            ignored_events: vec!["TYPING_START".into(), "PRESENCE_UPDATE".into()],
            ..ProfileConfig::default()
        },
        1,
        &[0],
    );
    assert_eq!(route(&r, &frame("TYPING_START", 1, "{}")), None);
    assert_eq!(r.topology_for_event("TYPING_START"), None);
    assert!(route(&r, &frame("MESSAGE_CREATE", 2, "{}")).is_some());
    assert!(r.topology_for_event("MESSAGE_CREATE").is_some());
}

#[test]
fn dispatch_body_is_the_whole_packet() {
    let json = frame("MESSAGE_CREATE", 77, MESSAGE_CREATE_D);
    let publication = route(&retsu(1, &[0]), &json).unwrap();
    assert_eq!(publication.exchange, "gateway");
    assert_eq!(publication.event(), Some("MESSAGE_CREATE"));
    assert_eq!(publication.body, json.as_bytes());
    assert_eq!(publication.properties, MessageProperties::persistent());
}

#[test]
fn send_and_reconnect_commands_in_both_key_styles() {
    let r = retsu(4, &[2]);
    let d = r#"{"guild_id":"1","query":"a","limit":10}"#;
    let packet = format!(r#"{{"op":8,"d":{d}}}"#);
    let snake = format!(r#"{{"shard_id":2,"opcode":8,"type":null,"data":{d}}}"#);
    let pascal = format!(r#"{{"ShardId":2,"Opcode":8,"Type":null,"Data":{d}}}"#);
    let no_type = format!(r#"{{"shard_id":2,"opcode":8,"data":{d}}}"#);
    for body in [snake, pascal, no_type] {
        assert_eq!(
            command(&r, "gateway-command", "", body.as_bytes()),
            send(&[2], &packet)
        );
    }
    for body in [
        r#"{"shard_id":2,"opcode":0,"type":"reconnect","data":null}"#,
        r#"{"ShardId":2,"Type":"Reconnect"}"#,
    ] {
        assert_eq!(
            command(&r, "gateway-command", "", body.as_bytes()),
            CommandDecision::Reconnect { shards: vec![2] }
        );
    }
    // Another gateway's shard: every gateway receives the fanout, the owner acts.
    let other = format!(r#"{{"shard_id":1,"opcode":8,"type":null,"data":{d}}}"#);
    assert_eq!(
        command(&r, "gateway-command", "", other.as_bytes()),
        CommandDecision::Ignore
    );
}

#[test]
fn refused_commands_say_why_and_have_no_dead_letter() {
    let r = retsu(4, &[0]);
    let cases: [(&str, &str); 9] = [
        (
            r#"{"shard_id":0,"opcode":2,"data":{}}"#,
            "op 2 (Identify) is sent by the gateway itself",
        ),
        (
            r#"{"shard_id":0,"opcode":1,"data":null}"#,
            "op 1 (Heartbeat) is sent by the gateway itself",
        ),
        (
            r#"{"shard_id":0,"opcode":3}"#,
            "command has no `data` field",
        ),
        (
            r#"{"shard_id":0,"data":{}}"#,
            "command has no `opcode` field",
        ),
        (
            r#"{"opcode":3,"data":{}}"#,
            "command has no `shard_id` field",
        ),
        (
            r#"{"shard_id":0,"opcode":3,"type":"restart","data":{}}"#,
            "`type` must be null or \"reconnect\", got `\"restart\"`",
        ),
        (
            r#"{"shard_id":9,"opcode":3,"data":{}}"#,
            "shard 9 does not exist (the shard count is 4)",
        ),
        (
            r#"{"shard_id":0,"ShardId":0,"opcode":3,"data":{}}"#,
            "command is not valid JSON: field `shard_id` is given more than once",
        ),
        (
            r#"{"shard_id":0,"opcode":3,"data":{"x":""#,
            "command is not valid JSON",
        ),
    ];
    for (body, expected) in cases {
        let (reason, dead) = rejected(command(&r, "gateway-command", "", body.as_bytes()));
        assert!(reason.starts_with(expected), "{reason}");
        assert_eq!(dead, None);
    }
}

proptest! {
    /// A command reaches exactly the shard it names, on the gateway that owns it.
    #[test]
    fn commands_reach_exactly_their_shard(count in 1u32..64, owned_bits in any::<u64>(), target in 0u32..64) {
        prop_assume!(target < count);
        let owned: Vec<u32> = (0..count).filter(|s| owned_bits & (1 << s) != 0).collect();
        let body = format!(r#"{{"shard_id":{target},"opcode":3,"type":null,"data":{{}}}}"#);
        let decision = command(&retsu(count, &owned), "gateway-command", "", body.as_bytes());
        if owned.contains(&target) {
            prop_assert_eq!(decision, send(&[target], r#"{"op":3,"d":{}}"#));
        } else {
            prop_assert_eq!(decision, CommandDecision::Ignore);
        }
    }

    /// The published bytes are Discord's, exactly.
    #[test]
    fn bodies_are_the_payload(event in "[A-Z_]{1,20}", seq in any::<u64>(), d in prop_oneof![Just(MESSAGE_CREATE_D), Just(REACTION_ADD_D)]) {
        let json = frame(&event, seq, d);
        let publication = route(&retsu(1, &[0]), &json).unwrap();
        prop_assert_eq!(&publication.body[..], json.as_bytes());
    }
}
