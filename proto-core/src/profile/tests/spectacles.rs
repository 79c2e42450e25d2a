//! The Spectacles profile.

use proptest::prelude::*;

use super::*;

fn spectacles(count: u32, owned: &[u32]) -> Router {
    router_of(ProfileKind::Spectacles, count, owned)
}

fn json_body(count: u32, owned: &[u32]) -> Router {
    router(
        ProfileConfig {
            kind: ProfileKind::Spectacles,
            body: Some(BodyEncoding::Json),
            ..ProfileConfig::default()
        },
        count,
        owned,
    )
}

#[test]
fn topology_is_exactly_as_specified() {
    let r = router(
        ProfileConfig {
            kind: ProfileKind::Spectacles,
            exchange: Some("bot".into()),
            declare_queues: vec!["MESSAGE_CREATE".into(), "READY".into()],
            ..ProfileConfig::default()
        },
        4,
        &[1, 3],
    );
    let topology = r.topology();
    assert_eq!(
        topology.exchanges,
        [exchange("bot", ExchangeKind::Direct, true)]
    );
    assert_eq!(
        topology.queues,
        [
            durable_queue("bot:MESSAGE_CREATE", false),
            durable_queue("bot:READY", false),
            durable_queue("bot:1", true),
            durable_queue("bot:3", true),
            durable_queue("bot:SEND", true),
        ]
    );
    assert_eq!(
        topology.bindings,
        [
            binding("bot:MESSAGE_CREATE", "bot", "MESSAGE_CREATE"),
            binding("bot:READY", "bot", "READY"),
            binding("bot:1", "bot", "1"),
            binding("bot:3", "bot", "3"),
            binding("bot:SEND", "bot", "SEND"),
        ]
    );
}

#[test]
fn subgroup_queues() {
    let r = router(
        ProfileConfig {
            kind: ProfileKind::Spectacles,
            subgroups: vec!["cache".into(), "commands".into()],
            declare_queues: vec!["MESSAGE_CREATE".into()],
            ..ProfileConfig::default()
        },
        1,
        &[0],
    );
    let topology = r.topology();
    let names: Vec<&str> = topology.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gateway:cache:MESSAGE_CREATE",
            "gateway:commands:MESSAGE_CREATE",
            "gateway:0",
            "gateway:SEND"
        ]
    );
    assert_eq!(
        topology.bindings[1],
        binding(
            "gateway:commands:MESSAGE_CREATE",
            "gateway",
            "MESSAGE_CREATE"
        )
    );
}

#[test]
fn dispatch_body_is_msgpack_of_d_by_default() {
    let r = spectacles(1, &[0]);
    let publication = route(&r, &frame("MESSAGE_CREATE", 3, MESSAGE_CREATE_D)).unwrap();
    assert_eq!(publication.exchange, "gateway");
    assert_eq!(publication.event(), Some("MESSAGE_CREATE"));
    assert_eq!(publication.properties, MessageProperties::persistent());
    let value = read_msgpack(&publication.body);
    assert_eq!(value["content"].as_str(), Some("a"));
    assert_eq!(value["id"].as_str(), Some("302917639565475840"));
    assert!(value["edited_timestamp"].is_nil());
    // Same values, same order as Discord's JSON.
    let back = msgpack::msgpack_to_json(&publication.body).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&back).unwrap(),
        serde_json::from_str::<serde_json::Value>(MESSAGE_CREATE_D).unwrap()
    );
    let keys: Vec<&str> = value
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(keys[..3], ["attachments", "author", "channel_id"]);
}

#[test]
fn big_snowflake_integers_stay_exact() {
    let r = spectacles(1, &[0]);
    let publication = route(
        &r,
        &frame(
            "X",
            1,
            r#"{"n":18446744073709551615,"m":-9223372036854775808,"k":9007199254740993}"#,
        ),
    )
    .unwrap();
    let value = read_msgpack(&publication.body);
    assert_eq!(value["n"].as_u64(), Some(u64::MAX));
    assert_eq!(value["m"].as_i64(), Some(i64::MIN));
    assert_eq!(value["k"].as_u64(), Some(9_007_199_254_740_993));
}

#[test]
fn json_body_is_the_bytes_of_d() {
    let r = json_body(1, &[0]);
    let json = frame("MESSAGE_REACTION_ADD", 3, REACTION_ADD_D);
    let p = payload(&json);
    let publication = r.route_dispatch(&ctx(0, 1, "s"), &p).unwrap();
    assert_eq!(publication.body, REACTION_ADD_D.as_bytes());
    assert_eq!(publication.body.as_ptr(), p.bytes[p.d.clone()].as_ptr());
    // A dispatch without `d` publishes `null`.
    let publication = route(&r, r#"{"t":"X","s":1,"op":0}"#).unwrap();
    assert_eq!(publication.body, &b"null"[..]);
}

#[test]
fn message_timeout_sets_expiration() {
    let r = router(
        ProfileConfig {
            kind: ProfileKind::Spectacles,
            message_timeout_ms: Some(120_000),
            ..ProfileConfig::default()
        },
        1,
        &[0],
    );
    let publication = route(&r, &frame("READY", 1, "{}")).unwrap();
    assert_eq!(
        publication.properties,
        MessageProperties {
            persistent: true,
            expiration_ms: Some(120_000),
            ..MessageProperties::default()
        }
    );
}

#[test]
fn commands_by_shard_id() {
    let r = spectacles(4, &[1, 2]);
    let packet = r#"{"op":3,"d":{"status":"online"}}"#;
    // msgpack (the default) and JSON bodies are both accepted.
    assert_eq!(
        command(&r, "gateway", "1", &to_msgpack(packet)),
        send(&[1], packet)
    );
    assert_eq!(
        command(&r, "gateway", "2", packet.as_bytes()),
        send(&[2], packet)
    );
    assert_eq!(
        command(&r, "gateway", "0", packet.as_bytes()),
        CommandDecision::Ignore
    );
    let (reason, dead) = rejected(command(&r, "gateway", "4", packet.as_bytes()));
    assert_eq!(reason, "shard 4 does not exist (the shard count is 4)");
    assert_eq!(dead, None);
}

#[test]
fn send_goes_to_the_guilds_shard_or_is_forwarded() {
    let r = spectacles(4, &[2]);
    let packet = r#"{"op":8,"d":{"guild_id":"81384788765712384","query":"","limit":0}}"#;
    // 81384788765712384 is on shard 2 of 4.
    let body = format!(r#"{{"guild_id":"81384788765712384","packet":{packet}}}"#);
    assert_eq!(
        command(&r, "gateway", "SEND", &to_msgpack(&body)),
        send(&[2], packet)
    );
    assert_eq!(
        command(&r, "gateway", "SEND", body.as_bytes()),
        send(&[2], packet)
    );
    // Guild ids as integers work too.
    let body = format!(r#"{{"guild_id":81384788765712384,"packet":{packet}}}"#);
    assert_eq!(
        command(&r, "gateway", "SEND", body.as_bytes()),
        send(&[2], packet)
    );
    // Guild 0 is on shard 0, which another gateway runs: re-published for it, as msgpack.
    let body = format!(r#"{{"guild_id":"0","packet":{packet}}}"#);
    match command(&r, "gateway", "SEND", &to_msgpack(&body)) {
        CommandDecision::Forward(publication) => {
            assert_eq!(publication.exchange, "gateway");
            assert_eq!(publication.routing_key(), "0");
            assert_eq!(publication.body, to_msgpack(packet));
            assert_eq!(publication.properties, MessageProperties::persistent());
        }
        other => panic!("{other:?}"),
    }
    // With JSON bodies the forwarded packet is JSON.
    let r = json_body(4, &[2]);
    match command(&r, "gateway", "SEND", body.as_bytes()) {
        CommandDecision::Forward(publication) => assert_eq!(publication.body, packet.as_bytes()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refused_commands_say_why_and_have_no_dead_letter() {
    let r = spectacles(4, &[0, 1, 2, 3]);
    let cases: [(&str, Vec<u8>, &str); 9] = [
        (
            "0",
            br#"{"op":2,"d":{}}"#.to_vec(),
            "op 2 (Identify) is sent by the gateway itself",
        ),
        (
            "0",
            to_msgpack(r#"{"op":6,"d":{}}"#),
            "op 6 (Resume) is sent by the gateway itself",
        ),
        ("0", vec![0xc1], "command is not valid msgpack"),
        ("0", to_msgpack("[3]"), "command must be a JSON object"),
        (
            "SEND",
            br#"{"packet":{"op":3,"d":{}}}"#.to_vec(),
            "SEND: command has no `guild_id` field",
        ),
        (
            "SEND",
            br#"{"guild_id":"1"}"#.to_vec(),
            "SEND: command has no `packet` field",
        ),
        (
            "SEND",
            br#"{"guild_id":"x","packet":{"op":3,"d":{}}}"#.to_vec(),
            "SEND: `guild_id` must be a guild id, got `\"x\"`",
        ),
        (
            "SEND",
            br#"{"guild_id":"1","packet":[]}"#.to_vec(),
            "SEND: `packet` must be a JSON object",
        ),
        (
            "PRESENCE",
            br#"{"op":3,"d":{}}"#.to_vec(),
            "unknown routing key `PRESENCE`; use a shard number or `SEND`",
        ),
    ];
    for (key, body, expected) in cases {
        let (reason, dead) = rejected(command(&r, "gateway", key, &body));
        assert!(reason.starts_with(expected), "{key}: {reason}");
        assert_eq!(dead, None);
    }
}

proptest! {
    /// SEND reaches the shard `(guild_id >> 22) % count`: sent when owned, forwarded otherwise.
    #[test]
    fn send_routes_every_guild_to_its_shard(guild in any::<u64>(), count in 1u32..4096, owned_bits in any::<u64>()) {
        let owned: Vec<u32> = (0..count.min(64)).filter(|s| owned_bits & (1 << s) != 0).collect();
        let r = json_body(count, &owned);
        let packet = r#"{"op":3,"d":{}}"#;
        let body = format!(r#"{{"guild_id":"{guild}","packet":{packet}}}"#);
        let shard = ((guild >> 22) % u64::from(count)) as u32;
        match command(&r, "gateway", "SEND", body.as_bytes()) {
            CommandDecision::Send { shards, .. } => {
                prop_assert!(owned.contains(&shard));
                prop_assert_eq!(shards, vec![shard]);
            }
            CommandDecision::Forward(publication) => {
                prop_assert!(!owned.contains(&shard));
                prop_assert_eq!(publication.routing_key(), shard.to_string());
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// A `<shard_id>` command reaches exactly that shard, on the gateway that owns it.
    #[test]
    fn shard_commands_reach_exactly_their_shard(count in 1u32..64, owned_bits in any::<u64>(), target in 0u32..64) {
        prop_assume!(target < count);
        let owned: Vec<u32> = (0..count).filter(|s| owned_bits & (1 << s) != 0).collect();
        let packet = r#"{"op":3,"d":{}}"#;
        let decision = command(&spectacles(count, &owned), "gateway", &target.to_string(), &to_msgpack(packet));
        if owned.contains(&target) {
            prop_assert_eq!(decision, send(&[target], packet));
        } else {
            prop_assert_eq!(decision, CommandDecision::Ignore);
        }
    }

    /// With JSON bodies the published bytes are Discord's `d`, exactly.
    #[test]
    fn json_bodies_are_slices_of_the_payload(event in "[A-Z_]{1,20}", d in prop_oneof![Just(MESSAGE_CREATE_D), Just(REACTION_ADD_D), Just(ACTIVITY_D)]) {
        let publication = route(&json_body(1, &[0]), &frame(&event, 1, d)).unwrap();
        prop_assert_eq!(&publication.body[..], d.as_bytes());
    }
}
