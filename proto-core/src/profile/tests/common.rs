//! Rules shared by every profile: only dispatches leave, the event filter, per-event
//! declarations, configuration errors.

use super::*;

const ALL: [ProfileKind; 5] = [
    ProfileKind::Gatehouse,
    ProfileKind::Spectacles,
    ProfileKind::Cordis,
    ProfileKind::TwilightDispatch,
    ProfileKind::Retsu,
];

#[test]
fn only_dispatches_are_published() {
    for kind in ALL {
        let r = router_of(kind, 1, &[0]);
        assert!(
            route(&r, &frame("MESSAGE_CREATE", 1, "{}")).is_some(),
            "{kind:?}"
        );
        for other in [
            r#"{"op":10,"d":{"heartbeat_interval":41250},"s":null,"t":null}"#,
            r#"{"op":11,"d":null}"#,
            r#"{"op":7,"d":null}"#,
            r#"{"op":9,"d":false}"#,
            r#"{"op":0,"s":3,"d":{}}"#,
        ] {
            assert_eq!(route(&r, other), None, "{kind:?} {other}");
        }
    }
}

#[test]
fn the_event_filter_applies_to_every_profile() {
    for kind in ALL {
        let only = router(
            ProfileConfig {
                kind,
                events: vec!["MESSAGE_CREATE".into()],
                ..ProfileConfig::default()
            },
            1,
            &[0],
        );
        assert!(route(&only, &frame("MESSAGE_CREATE", 1, "{}")).is_some());
        assert!(route(&only, &frame("TYPING_START", 2, "{}")).is_none());
        assert!(only.publishes("MESSAGE_CREATE") && !only.publishes("TYPING_START"));
        let ignoring = router(
            ProfileConfig {
                kind,
                ignored_events: vec!["TYPING_START".into()],
                ..ProfileConfig::default()
            },
            1,
            &[0],
        );
        assert!(route(&ignoring, &frame("MESSAGE_CREATE", 1, "{}")).is_some());
        assert!(route(&ignoring, &frame("TYPING_START", 2, "{}")).is_none());
    }
}

#[test]
fn only_retsu_declares_per_event() {
    for kind in ALL {
        let r = router_of(kind, 1, &[0]);
        assert_eq!(r.kind(), kind);
        assert_eq!(r.needs_event_topology(), kind == ProfileKind::Retsu);
        assert_eq!(
            r.topology_for_event("MESSAGE_CREATE").is_some(),
            kind == ProfileKind::Retsu
        );
    }
}

#[test]
fn native_shortcut_is_the_default_profile() {
    let r = Router::native();
    assert_eq!(r.kind(), ProfileKind::Gatehouse);
    assert_eq!(
        r.topology(),
        router_of(ProfileKind::Gatehouse, 1, &[0]).topology()
    );
}

#[test]
fn invalid_clusters_are_refused() {
    let err = ClusterInfo::new(0, []).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid profile configuration: the shard count must be at least 1"
    );
    let err = ClusterInfo::new(4, [1, 4]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid profile configuration: owned shard 4 does not exist (the shard count is 4)"
    );
}

#[test]
fn owned_shards_may_come_unsorted_and_repeated() {
    let r = router_of(ProfileKind::Gatehouse, 8, &[5, 1, 5, 3]);
    let packet = r#"{"op":3,"d":{}}"#;
    assert_eq!(
        command(&r, "gateway.commands", "all", packet.as_bytes()),
        send(&[1, 3, 5], packet)
    );
}

mod garbage {
    use proptest::prelude::*;

    use super::*;

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("all".to_owned()),
            Just("SEND".to_owned()),
            "shard\\.[0-9]{1,12}",
            "guild\\.[0-9]{1,22}",
            "[0-9]{1,12}",
            ".{0,12}",
        ]
    }

    fn any_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "\\{.{0,60}\\}".prop_map(String::into_bytes),
            (any::<u64>(), any::<i64>(), ".{0,8}").prop_map(|(a, b, c)| {
                format!(
                    r#"{{"op":{a},"d":{{"x":{b}}},"shard":{a},"shard_id":{b},"opcode":{b},"type":{c:?},"data":{{"op":3,"d":{{}}}},"guild_id":"{a}","packet":{{"op":{b},"d":null}}}}"#
                )
                .into_bytes()
            }),
        ]
    }

    proptest! {
        /// No routing key or body makes any profile panic, and every decision names only owned
        /// shards.
        #[test]
        fn commands_never_panic(key in any_key(), body in any_body(), kind_index in 0usize..5) {
            let owned = [1, 2];
            let r = router_of(ALL[kind_index], 4, &owned);
            match command(&r, "x", &key, &body) {
                CommandDecision::Send { shards, .. } | CommandDecision::Reconnect { shards } => {
                    prop_assert!(!shards.is_empty());
                    prop_assert!(shards.iter().all(|s| owned.contains(s)));
                }
                CommandDecision::Reject { reason, .. } => prop_assert!(!reason.is_empty()),
                CommandDecision::Forward(_) | CommandDecision::Ignore => {}
            }
        }

        /// No payload makes any profile panic.
        #[test]
        fn dispatches_never_panic(d in ".{0,40}", event in ".{0,12}", kind_index in 0usize..5) {
            let r = router_of(ALL[kind_index], 1, &[0]);
            let json = format!(r#"{{"t":{event:?},"s":1,"op":0,"d":{d:?}}}"#);
            if let Ok(p) = crate::codec::scan_json(Bytes::from(json)) {
                let _ = r.try_route_dispatch(&ctx(0, 1, "s"), &p);
            }
        }
    }
}

#[test]
fn commands_refused_after_decoding_are_rejected_like_invalid_ones() {
    for kind in ALL {
        let r = router_of(kind, 2, &[0, 1]);
        let delivery = CommandDelivery {
            exchange: "gateway.commands",
            routing_key: "shard.1",
            queue: "q",
            body: br#"{"op":3,"d":{"status":"online"}}"#,
        };
        let reason = "shard 1 refused the command: command is larger than 4096 bytes";
        let (said, dead) = rejected(r.reject_command(&delivery, reason));
        assert_eq!(said, reason, "{kind:?}");
        match kind {
            ProfileKind::Gatehouse => {
                let dead = dead.expect("the native profile dead-letters");
                assert_eq!(dead.exchange, "gateway.commands.dlx");
                assert_eq!(dead.routing_key(), "shard.1");
                assert_eq!(&dead.body[..], delivery.body);
                assert!(dead.properties.headers.iter().any(|(name, value)| *name
                    == crate::profile::native::ERROR_HEADER
                    && *value == FieldValue::Str(reason.into())));
            }
            _ => assert_eq!(dead, None, "{kind:?} has no dead-letter exchange"),
        }
    }
}

#[test]
fn every_profile_publishes_persistent_events() {
    for kind in ALL {
        let r = router_of(kind, 1, &[0]);
        let publication = route(&r, &frame("MESSAGE_CREATE", 1, "{}")).expect("published");
        assert!(publication.properties.persistent, "{kind:?}");
    }
}

#[test]
fn unroutable_events_are_held_only_where_the_gateway_declares_every_queue() {
    use crate::profile::Unroutable;
    for kind in ALL {
        let expected = match kind {
            ProfileKind::Retsu => Unroutable::Hold,
            _ => Unroutable::Confirm,
        };
        assert_eq!(router_of(kind, 1, &[0]).unroutable(), expected, "{kind:?}");
    }
    let catch_all = router(
        ProfileConfig {
            kind: ProfileKind::TwilightDispatch,
            default_queue: true,
            ..ProfileConfig::default()
        },
        1,
        &[0],
    );
    assert_eq!(catch_all.unroutable(), Unroutable::Hold);
}
