//! The twilight-dispatch profile.

use proptest::prelude::*;

use super::*;

fn twilight(count: u32, owned: &[u32]) -> Router {
    router_of(ProfileKind::TwilightDispatch, count, owned)
}

#[test]
fn topology_is_exactly_as_specified() {
    assert_eq!(
        twilight(1, &[0]).topology(),
        Topology {
            exchanges: vec![exchange("gateway", ExchangeKind::Topic, true)],
            queues: vec![durable_queue("gateway.send", true)],
            bindings: vec![],
        }
    );
    let with_default_queue = router(
        ProfileConfig {
            kind: ProfileKind::TwilightDispatch,
            default_queue: true,
            ..ProfileConfig::default()
        },
        1,
        &[0],
    );
    assert_eq!(
        with_default_queue.topology(),
        Topology {
            exchanges: vec![exchange("gateway", ExchangeKind::Topic, true)],
            queues: vec![
                durable_queue("gateway.send", true),
                durable_queue("gateway.recv", false),
            ],
            bindings: vec![binding("gateway.recv", "gateway", "#")],
        }
    );
}

#[test]
fn dispatch_body_is_op_t_d_from_the_original_bytes() {
    let r = twilight(1, &[0]);
    let publication = route(&r, &frame("MESSAGE_CREATE", 12, MESSAGE_CREATE_D)).unwrap();
    assert_eq!(publication.exchange, "gateway");
    assert_eq!(publication.event(), Some("MESSAGE_CREATE"));
    assert_eq!(publication.properties, MessageProperties::persistent());
    assert_eq!(
        publication.body,
        format!(r#"{{"op":0,"t":"MESSAGE_CREATE","d":{MESSAGE_CREATE_D}}}"#).as_bytes()
    );
    // Field order and spacing of `d` are Discord's, even when unusual.
    let json = r#"{"d": {"b" : 1, "a":[ 1.50, "\u00e9" ]}, "s": 3, "op": 0, "t": "X"}"#;
    let publication = route(&r, json).unwrap();
    assert_eq!(
        publication.body,
        &br#"{"op":0,"t":"X","d":{"b" : 1, "a":[ 1.50, "\u00e9" ]}}"#[..]
    );
    let publication = route(&r, r#"{"t":"RESUMED","s":5,"op":0}"#).unwrap();
    assert_eq!(publication.body, &br#"{"op":0,"t":"RESUMED","d":null}"#[..]);
}

#[test]
fn send_and_reconnect_commands() {
    let r = twilight(4, &[1, 3]);
    let packet = r#"{"op":3,"d":{"status":"dnd","since":null,"activities":[],"afk":false}}"#;
    let body = format!(r#"{{"op":0,"shard":3,"data":{packet}}}"#);
    assert_eq!(
        command(&r, "", "gateway.send", body.as_bytes()),
        send(&[3], packet)
    );
    assert_eq!(
        command(&r, "", "gateway.send", br#"{"op":1,"shard":1}"#),
        CommandDecision::Reconnect { shards: vec![1] }
    );
    // `data` is ignored for reconnects.
    assert_eq!(
        command(&r, "", "gateway.send", br#"{"shard":1,"op":1,"data":null}"#),
        CommandDecision::Reconnect { shards: vec![1] }
    );
}

#[test]
fn refused_commands_say_why_and_have_no_dead_letter() {
    let r = twilight(4, &[1, 3]);
    let cases: [(&[u8], &str); 11] = [
        (
            br#"{"op":0,"shard":1,"data":{"op":2,"d":{}}}"#,
            "op 2 (Identify) is sent by the gateway itself",
        ),
        (
            br#"{"op":0,"shard":1,"data":{"op":6,"d":{}}}"#,
            "op 6 (Resume) is sent by the gateway itself",
        ),
        (br#"{"op":0,"shard":1}"#, "command has no `data` field"),
        (
            br#"{"op":0,"shard":1,"data":[1]}"#,
            "`data` must be a JSON object",
        ),
        (
            br#"{"op":0,"data":{"op":3,"d":{}}}"#,
            "command has no `shard` field",
        ),
        (br#"{"shard":1}"#, "command has no `op` field"),
        (
            br#"{"op":2,"shard":1}"#,
            "`op` must be 0 (send) or 1 (reconnect), got `2`",
        ),
        (
            br#"{"op":1,"shard":"1"}"#,
            "`shard` must be a shard number, got `\"1\"`",
        ),
        (
            br#"{"op":1,"shard":7}"#,
            "shard 7 does not exist (the shard count is 4)",
        ),
        (
            br#"{"op":1,"shard":0}"#,
            "shard 0 is not run by this process",
        ),
        (b"[]", "command must be a JSON object"),
    ];
    for (body, expected) in cases {
        let (reason, dead) = rejected(command(&r, "", "gateway.send", body));
        assert!(reason.starts_with(expected), "{reason}");
        assert_eq!(dead, None);
    }
}

proptest! {
    /// A command reaches exactly the shard it names, when this process owns it.
    #[test]
    fn commands_reach_exactly_their_shard(count in 1u32..64, owned_bits in any::<u64>(), target in 0u32..70, reconnect in any::<bool>()) {
        let owned: Vec<u32> = (0..count).filter(|s| owned_bits & (1 << s) != 0).collect();
        let packet = r#"{"op":8,"d":{"guild_id":"1","user_ids":["2"]}}"#;
        let body = if reconnect {
            format!(r#"{{"op":1,"shard":{target}}}"#)
        } else {
            format!(r#"{{"op":0,"shard":{target},"data":{packet}}}"#)
        };
        let decision = command(&twilight(count, &owned), "", "gateway.send", body.as_bytes());
        if target < count && owned.contains(&target) {
            if reconnect {
                prop_assert_eq!(decision, CommandDecision::Reconnect { shards: vec![target] });
            } else {
                prop_assert_eq!(decision, send(&[target], packet));
            }
        } else {
            let is_reject = matches!(decision, CommandDecision::Reject { dead_letter: None, .. });
            prop_assert!(is_reject);
        }
    }

    /// The body's `t` and `d` are slices of Discord's bytes.
    #[test]
    fn bodies_reuse_discords_bytes(event in "[A-Z_]{1,20}", d in prop_oneof![Just(MESSAGE_CREATE_D), Just(REACTION_ADD_D), Just(ACTIVITY_D)]) {
        let publication = route(&twilight(1, &[0]), &frame(&event, 1, d)).unwrap();
        let expected = format!(r#"{{"op":0,"t":"{event}","d":{d}}}"#);
        prop_assert_eq!(&publication.body[..], expected.as_bytes());
        let parsed: serde_json::Value = serde_json::from_slice(&publication.body).unwrap();
        prop_assert_eq!(&parsed["t"], &serde_json::Value::from(event));
    }
}
