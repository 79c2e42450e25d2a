//! The Cordis profile.

use proptest::prelude::*;

use super::*;

fn cordis(count: u32, owned: &[u32]) -> Router {
    router_of(ProfileKind::Cordis, count, owned)
}

fn json_body() -> Router {
    router(
        ProfileConfig {
            kind: ProfileKind::Cordis,
            body: Some(BodyEncoding::Json),
            ..ProfileConfig::default()
        },
        1,
        &[0],
    )
}

#[test]
fn topology_is_exactly_as_specified() {
    let topology = cordis(2, &[0, 1]).topology();
    assert_eq!(
        topology,
        Topology {
            exchanges: vec![
                exchange("gateway", ExchangeKind::Direct, false),
                exchange("gateway_commands", ExchangeKind::Fanout, true),
            ],
            queues: vec![server_named_queue()],
            bindings: vec![binding("", "gateway_commands", "")],
        }
    );
}

#[test]
fn dispatch_body_is_msgpack_of_type_and_data_with_a_millisecond_timestamp() {
    let r = cordis(1, &[0]);
    let publication = route(&r, &frame("MESSAGE_CREATE", 9, MESSAGE_CREATE_D)).unwrap();
    assert_eq!(publication.exchange, "gateway");
    assert_eq!(publication.event(), Some("MESSAGE_CREATE"));
    assert_eq!(
        publication.properties,
        MessageProperties {
            persistent: true,
            timestamp: Timestamp::Millis,
            ..MessageProperties::default()
        }
    );
    let value = read_msgpack(&publication.body);
    let entries = value.as_map().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].0.as_str(), Some("type"));
    assert_eq!(entries[0].1.as_str(), Some("MESSAGE_CREATE"));
    assert_eq!(entries[1].0.as_str(), Some("data"));
    assert_eq!(
        msgpack::msgpack_to_json(&publication.body).unwrap(),
        format!(
            r#"{{"type":"MESSAGE_CREATE","data":{}}}"#,
            String::from_utf8(msgpack::msgpack_to_json(&to_msgpack(MESSAGE_CREATE_D)).unwrap())
                .unwrap()
        )
        .as_bytes()
    );
}

#[test]
fn dispatch_without_d_has_null_data() {
    let publication = route(&cordis(1, &[0]), r#"{"t":"RESUMED","s":5,"op":0}"#).unwrap();
    let value = read_msgpack(&publication.body);
    assert!(value["data"].is_nil());
}

#[test]
fn json_body_is_the_packet_untouched() {
    let json = frame("MESSAGE_REACTION_ADD", 4, REACTION_ADD_D);
    let publication = route(&json_body(), &json).unwrap();
    assert_eq!(publication.body, json.as_bytes());
    assert_eq!(publication.properties.timestamp, Timestamp::Millis);
}

#[test]
fn every_command_goes_to_every_owned_shard() {
    let r = cordis(8, &[1, 4, 6]);
    let packet =
        r#"{"op":4,"d":{"guild_id":"1","channel_id":null,"self_mute":true,"self_deaf":false}}"#;
    assert_eq!(
        command(&r, "gateway_commands", "", &to_msgpack(packet)),
        send(&[1, 4, 6], packet)
    );
    assert_eq!(
        command(&r, "gateway_commands", "", packet.as_bytes()),
        send(&[1, 4, 6], packet)
    );
    assert_eq!(
        command(&cordis(8, &[]), "gateway_commands", "", packet.as_bytes()),
        CommandDecision::Ignore
    );
}

#[test]
fn refused_commands_say_why_and_have_no_dead_letter() {
    let r = cordis(1, &[0]);
    for (body, expected) in [
        (
            to_msgpack(r#"{"op":2,"d":{}}"#),
            "op 2 (Identify) is sent by the gateway itself",
        ),
        (to_msgpack(r#"{"op":43,"d":{}}"#), "op 43 is not allowed"),
        (
            to_msgpack(r#"{"op":3,"d":"x"}"#),
            "`d` of op 3 (Presence Update) must be a JSON object",
        ),
        (
            vec![0x81, 0xc4, 0x01, 0x00, 0x01],
            "command is not valid msgpack",
        ),
        (b"{nope".to_vec(), "command is not valid JSON"),
        (Vec::new(), "command is not valid JSON: the body is empty"),
    ] {
        let (reason, dead) = rejected(command(&r, "gateway_commands", "", &body));
        assert!(reason.starts_with(expected), "{reason}");
        assert_eq!(dead, None);
    }
}

proptest! {
    /// A command reaches exactly the owned shards, whatever they are.
    #[test]
    fn commands_reach_exactly_the_owned_shards(count in 1u32..64, owned_bits in any::<u64>()) {
        let owned: Vec<u32> = (0..count).filter(|s| owned_bits & (1 << s) != 0).collect();
        let packet = r#"{"op":3,"d":{}}"#;
        let decision = command(&cordis(count, &owned), "gateway_commands", "", &to_msgpack(packet));
        if owned.is_empty() {
            prop_assert_eq!(decision, CommandDecision::Ignore);
        } else {
            prop_assert_eq!(decision, send(&owned, packet));
        }
    }

    /// With JSON bodies the published bytes are Discord's, exactly.
    #[test]
    fn json_bodies_are_the_payload(event in "[A-Z_]{1,20}", seq in any::<u64>(), d in prop_oneof![Just(MESSAGE_CREATE_D), Just(ACTIVITY_D)]) {
        let json = frame(&event, seq, d);
        let publication = route(&json_body(), &json).unwrap();
        prop_assert_eq!(&publication.body[..], json.as_bytes());
    }
}
