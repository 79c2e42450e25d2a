//! The native (`gatehouse`) profile.

use proptest::prelude::*;

use super::*;

fn native(count: u32, owned: &[u32]) -> Router {
    router_of(ProfileKind::Gatehouse, count, owned)
}

#[test]
fn topology_is_exactly_as_specified() {
    let topology = native(8, &[2, 3]).topology();
    assert_eq!(
        topology.exchanges,
        [
            exchange("gateway", ExchangeKind::Topic, true),
            exchange("gateway.commands", ExchangeKind::Topic, true),
            exchange("gateway.commands.dlx", ExchangeKind::Topic, true),
        ]
    );
    assert_eq!(
        topology.queues,
        [
            durable_queue("gateway.commands.dlx", false),
            QueueDecl {
                arguments: vec![(
                    "x-dead-letter-exchange".into(),
                    FieldValue::Str("gateway.commands.dlx".into())
                )],
                ..durable_queue("gateway.commands.shards-2-3", true)
            },
        ]
    );
    let node = "gateway.commands.shards-2-3";
    assert_eq!(
        topology.bindings,
        [
            binding("gateway.commands.dlx", "gateway.commands.dlx", "#"),
            binding(node, "gateway.commands", "shard.2"),
            binding(node, "gateway.commands", "shard.3"),
            binding(node, "gateway.commands", "guild.#"),
            binding(node, "gateway.commands", "all"),
        ]
    );
}

#[test]
fn names_are_configurable() {
    let r = router(
        ProfileConfig {
            exchange: Some("events".into()),
            commands_exchange: Some("cmds".into()),
            command_queue: Some("cmds.node-a".into()),
            ..ProfileConfig::default()
        },
        2,
        &[0, 1],
    );
    let topology = r.topology();
    let names: Vec<&str> = topology.exchanges.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["events", "cmds", "cmds.dlx"]);
    assert_eq!(topology.queues[1].name, "cmds.node-a");
    assert!(
        topology
            .bindings
            .contains(&binding("cmds.node-a", "cmds", "all"))
    );
    let publication = route(&r, &frame("READY", 1, "{}")).unwrap();
    assert_eq!(publication.exchange, "events");
    let (_, dead) = rejected(command(&r, "cmds", "nope", b"{}"));
    assert_eq!(dead.unwrap().exchange, "cmds.dlx");
}

#[test]
fn dispatch_is_the_packet_as_received_with_properties() {
    let r = native(16, &[5]);
    let json = frame("MESSAGE_CREATE", 42, MESSAGE_CREATE_D);
    let p = payload(&json);
    let publication = r.route_dispatch(&ctx(5, 16, "abc123"), &p).unwrap();
    assert_eq!(publication.exchange, "gateway");
    assert_eq!(publication.event(), Some("MESSAGE_CREATE"));
    assert_eq!(publication.body, json.as_bytes());
    // Zero copy: the body is the payload's buffer.
    assert_eq!(publication.body.as_ptr(), p.bytes.as_ptr());
    assert_eq!(
        publication.properties,
        MessageProperties {
            persistent: true,
            content_type: Some("application/json"),
            message_id: Some("abc123:42".into()),
            timestamp: Timestamp::Seconds,
            expiration_ms: None,
            headers: vec![
                ("x-shard-id", FieldValue::Int(5)),
                ("x-shard-count", FieldValue::Int(16)),
                ("x-sequence", FieldValue::Int(42)),
                ("x-session-id", FieldValue::Str("abc123".into())),
            ],
        }
    );
}

#[test]
fn unknown_events_and_any_field_order_pass_through() {
    let r = native(1, &[0]);
    let json = r#"{"op":0,"d":{"x":[1,2.5,"\u00e9"]},"s":7,"t":"SOME_FUTURE_EVENT"}"#;
    let publication = route(&r, json).unwrap();
    assert_eq!(publication.event(), Some("SOME_FUTURE_EVENT"));
    assert_eq!(publication.body, json.as_bytes());
    assert_eq!(publication.properties.message_id.as_deref(), Some("s:7"));
}

#[test]
fn commands_by_shard_guild_and_all() {
    let r = native(4, &[1, 2]);
    let packet = r#"{"op":3,"d":{"status":"idle","since":null,"activities":[],"afk":false}}"#;
    let ex = "gateway.commands";
    assert_eq!(
        command(&r, ex, "shard.1", packet.as_bytes()),
        send(&[1], packet)
    );
    assert_eq!(
        command(&r, ex, "shard.2", packet.as_bytes()),
        send(&[2], packet)
    );
    assert_eq!(
        command(&r, ex, "shard.0", packet.as_bytes()),
        CommandDecision::Ignore
    );
    assert_eq!(
        command(&r, ex, "all", packet.as_bytes()),
        send(&[1, 2], packet)
    );
    // Guild 81384788765712384 >> 22 = 19403678566, % 4 = 2.
    let guild = 81_384_788_765_712_384u64;
    assert_eq!((guild >> 22) % 4, 2);
    assert_eq!(
        command(&r, ex, &format!("guild.{guild}"), packet.as_bytes()),
        send(&[2], packet)
    );
    // A guild on shard 0 belongs to another node.
    assert_eq!(
        command(&r, ex, "guild.0", packet.as_bytes()),
        CommandDecision::Ignore
    );
}

#[test]
fn packets_are_normalised() {
    let r = native(1, &[0]);
    let body =
        br#"{ "d": {"guild_id": "1", "query": "", "limit": 0}, "op": 8, "s": null, "t": null }"#;
    assert_eq!(
        command(&r, "gateway.commands", "all", body),
        send(
            &[0],
            r#"{"op":8,"d":{"guild_id": "1", "query": "", "limit": 0}}"#
        )
    );
}

#[test]
fn refused_commands_are_dead_lettered_with_the_reason() {
    let r = native(4, &[0, 1]);
    let cases: [(&str, &[u8], &str); 10] = [
        (
            "shard.0",
            br#"{"op":2,"d":{}}"#,
            "op 2 (Identify) is sent by the gateway itself; workers may not send it",
        ),
        (
            "shard.0",
            br#"{"op":1,"d":null}"#,
            "op 1 (Heartbeat) is sent by the gateway itself",
        ),
        (
            "shard.0",
            br#"{"op":6,"d":{}}"#,
            "op 6 (Resume) is sent by the gateway itself",
        ),
        (
            "shard.0",
            br#"{"op":43,"d":{}}"#,
            "op 43 is not allowed; allowed ops: 3, 4, 8, 31",
        ),
        ("shard.0", b"not json", "command is not valid JSON"),
        ("shard.0", br#"{"d":{}}"#, "command has no `op` field"),
        ("all", br#"{"op":3}"#, "command has no `d` field"),
        (
            "shard.9",
            br#"{"op":3,"d":{}}"#,
            "shard 9 does not exist (the shard count is 4)",
        ),
        (
            "shard.x",
            br#"{"op":3,"d":{}}"#,
            "routing key `shard.x`: `shard.` must be followed by a shard number",
        ),
        (
            "presence",
            br#"{"op":3,"d":{}}"#,
            "unknown routing key `presence`; use `shard.<id>`, `guild.<guild_id>` or `all`",
        ),
    ];
    for (key, body, expected) in cases {
        let (reason, dead) = rejected(command(&r, "gateway.commands", key, body));
        assert!(
            reason.starts_with(expected),
            "{key} {:?}: {reason}",
            String::from_utf8_lossy(body)
        );
        let dead = dead.expect("native rejects carry a dead letter");
        assert_eq!(dead.exchange, "gateway.commands.dlx");
        assert_eq!(dead.routing_key(), key);
        assert_eq!(dead.body, body);
        assert!(dead.properties.persistent);
        assert_eq!(
            dead.properties.headers,
            [
                (
                    crate::profile::native::ERROR_HEADER,
                    FieldValue::Str(reason.clone())
                ),
                (
                    "x-original-exchange",
                    FieldValue::Str("gateway.commands".into())
                ),
            ]
        );
    }
    let (reason, _) = rejected(command(
        &r,
        "gateway.commands",
        "guild.abc",
        br#"{"op":3,"d":{}}"#,
    ));
    assert!(reason.contains("`guild.` must be followed by a guild id"));
}

#[test]
fn extra_allowed_ops_are_honoured() {
    let r = router(
        ProfileConfig {
            extra_allowed_ops: vec![43],
            ..ProfileConfig::default()
        },
        1,
        &[0],
    );
    let packet = r#"{"op":43,"d":{"guild_id":"1","fields":["status"]}}"#;
    assert_eq!(
        command(&r, "gateway.commands", "all", packet.as_bytes()),
        send(&[0], packet)
    );
}

#[test]
fn a_command_for_another_node_is_not_validated_here() {
    // Its owner validates it (and dead-letters it once), not every node.
    let r = native(4, &[0]);
    assert_eq!(
        command(&r, "gateway.commands", "shard.3", b"garbage"),
        CommandDecision::Ignore
    );
}

#[test]
fn explicit_ranges_of_one_cluster_get_their_own_command_queues() {
    // Cluster mode with the predecessors' explicit ranges: three processes, overlapping.
    let ranges: [&[u32]; 3] = [&[0, 1, 2, 3], &[2, 3, 4, 5], &[0, 2, 4]];
    let routers: Vec<Router> = ranges.iter().map(|owned| native(6, owned)).collect();
    let queues: Vec<String> = routers
        .iter()
        .map(|r| {
            let consumed: Vec<String> = r
                .topology()
                .queues
                .into_iter()
                .filter(|q| q.consume_commands)
                .map(|q| q.name)
                .collect();
            assert_eq!(consumed.len(), 1);
            consumed[0].clone()
        })
        .collect();
    assert_eq!(queues[0], "gateway.commands.shards-0-3");
    assert_eq!(queues[1], "gateway.commands.shards-2-5");
    assert!(queues[2].starts_with("gateway.commands.shards-0-4-"));
    // Every shard's routing key is bound to the queue of every process that may run it, so a
    // command reaches whichever holds the lease (the others put it back).
    for shard in 0..6u32 {
        let key = format!("shard.{shard}");
        for (router, owned) in routers.iter().zip(ranges) {
            let bound = router
                .topology()
                .bindings
                .iter()
                .any(|b| b.exchange == "gateway.commands" && b.routing_key == key);
            assert_eq!(bound, owned.contains(&shard), "shard {shard} on {owned:?}");
        }
    }
}

proptest! {
    /// `guild.<id>` reaches exactly the shard `(id >> 22) % count`, on the node that owns it.
    #[test]
    fn guild_commands_reach_their_shard(guild in any::<u64>(), count in 1u32..2048, owned_bits in any::<u64>()) {
        let owned: Vec<u32> = (0..count.min(64)).filter(|s| owned_bits & (1 << s) != 0).collect();
        let r = native(count, &owned);
        let packet = r#"{"op":4,"d":{"guild_id":"1","channel_id":null,"self_mute":false,"self_deaf":false}}"#;
        let decision = command(&r, "gateway.commands", &format!("guild.{guild}"), packet.as_bytes());
        let shard = ((guild >> 22) % u64::from(count)) as u32;
        if owned.contains(&shard) {
            prop_assert_eq!(decision, send(&[shard], packet));
        } else {
            prop_assert_eq!(decision, CommandDecision::Ignore);
        }
    }

    /// `shard.<id>` and `all` reach exactly the shards they name that this node owns.
    #[test]
    fn shard_and_all_commands_reach_exactly_their_shards(count in 1u32..64, owned_bits in any::<u64>(), target in 0u32..80) {
        let owned: Vec<u32> = (0..count).filter(|s| owned_bits & (1 << s) != 0).collect();
        let r = native(count, &owned);
        let packet = r#"{"op":3,"d":{}}"#;
        let decision = command(&r, "gateway.commands", &format!("shard.{target}"), packet.as_bytes());
        if target >= count {
            let is_reject = matches!(decision, CommandDecision::Reject { .. });
            prop_assert!(is_reject);
        } else if owned.contains(&target) {
            prop_assert_eq!(decision, send(&[target], packet));
        } else {
            prop_assert_eq!(decision, CommandDecision::Ignore);
        }
        let all = command(&r, "gateway.commands", "all", packet.as_bytes());
        if owned.is_empty() {
            prop_assert_eq!(all, CommandDecision::Ignore);
        } else {
            prop_assert_eq!(all, send(&owned, packet));
        }
    }

    /// The body is always the payload's bytes, whatever the event.
    #[test]
    fn dispatch_bodies_are_the_payload(event in "[A-Z_]{1,30}", seq in any::<u64>(), d in prop_oneof![Just(MESSAGE_CREATE_D), Just(REACTION_ADD_D), Just(ACTIVITY_D), Just("null"), Just("[]")]) {
        let json = frame(&event, seq, d);
        let publication = route(&native(1, &[0]), &json).unwrap();
        prop_assert_eq!(&publication.body[..], json.as_bytes());
        prop_assert_eq!(publication.event(), Some(event.as_str()));
        prop_assert_eq!(publication.properties.message_id, Some(format!("s:{seq}")));
    }
}
