//! `profile.queue_type`: quorum queues for every queue a profile declares, or a clear refusal.

use super::*;

fn with_type(kind: ProfileKind, queue_type: QueueType) -> Result<Router, ProfileError> {
    Router::new(
        &ProfileConfig {
            kind,
            queue_type,
            declare_queues: if kind == ProfileKind::Spectacles {
                vec!["MESSAGE_CREATE".into()]
            } else {
                Vec::new()
            },
            default_queue: kind == ProfileKind::TwilightDispatch,
            ..ProfileConfig::default()
        },
        &ClusterInfo::new(2, [0, 1]).unwrap(),
    )
}

fn queue_types(topology: &Topology) -> Vec<Option<FieldValue>> {
    topology
        .queues
        .iter()
        .map(|q| {
            q.arguments
                .iter()
                .find(|(k, _)| k == "x-queue-type")
                .map(|(_, v)| v.clone())
        })
        .collect()
}

#[test]
fn classic_declares_exactly_what_it_did_before() {
    for kind in [
        ProfileKind::Gatehouse,
        ProfileKind::Spectacles,
        ProfileKind::Cordis,
        ProfileKind::TwilightDispatch,
        ProfileKind::Retsu,
    ] {
        let router = with_type(kind, QueueType::Classic).unwrap();
        let topology = router.topology();
        assert!(
            queue_types(&topology).iter().all(Option::is_none),
            "{kind:?}"
        );
        if let Some(events) = router.topology_for_event("MESSAGE_CREATE") {
            assert!(queue_types(&events).iter().all(Option::is_none), "{kind:?}");
        }
    }
}

#[test]
fn quorum_marks_every_queue_the_profile_declares() {
    let quorum = Some(FieldValue::Str("quorum".into()));
    for kind in [
        ProfileKind::Gatehouse,
        ProfileKind::Spectacles,
        ProfileKind::TwilightDispatch,
        ProfileKind::Retsu,
    ] {
        let router = with_type(kind, QueueType::Quorum).unwrap();
        assert_eq!(router.queue_type(), QueueType::Quorum);
        let topology = router.topology();
        for (queue, queue_type) in topology.queues.iter().zip(queue_types(&topology)) {
            if queue.can_be_quorum() {
                assert_eq!(queue_type, quorum, "{kind:?}: {}", queue.name);
            } else {
                // Retsu's per-connection command queue.
                assert_eq!(kind, ProfileKind::Retsu);
                assert!(queue.name.is_empty() && queue.exclusive && queue.auto_delete);
                assert_eq!(queue_type, None, "a per-connection queue stays classic");
            }
        }
        if let Some(events) = router.topology_for_event("MESSAGE_CREATE") {
            assert_eq!(queue_types(&events), vec![quorum.clone()], "{kind:?}");
        }
    }
    // The native profile's command and dead-letter queues keep their other arguments.
    let native = with_type(ProfileKind::Gatehouse, QueueType::Quorum)
        .unwrap()
        .topology();
    assert_eq!(native.queues.len(), 2);
    assert!(
        native.queues[1]
            .arguments
            .iter()
            .any(|(k, _)| k == "x-dead-letter-exchange")
    );
}

#[test]
fn a_profile_with_only_per_connection_queues_refuses_quorum_with_the_reason() {
    let err = with_type(ProfileKind::Cordis, QueueType::Quorum)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cordis profile"), "{err}");
    assert!(
        err.contains("server-named, exclusive, auto-delete"),
        "{err}"
    );
    assert!(err.contains("\"classic\""), "{err}");
}

#[test]
fn the_queue_type_is_read_from_configuration() {
    let config: ProfileConfig = serde_json::from_str(r#"{"queue_type":"quorum"}"#).unwrap();
    assert_eq!(config.queue_type, QueueType::Quorum);
    assert!(serde_json::from_str::<ProfileConfig>(r#"{"queue_type":"stream"}"#).is_err());
}
