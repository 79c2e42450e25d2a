//! The profile's settings (the `[profile]` table of the configuration file) and their
//! validation.
//!
//! Owns: every option a profile has, its default, and which profile offers it. Does not read
//! files or the environment (the `gatehouse-config` crate maps the predecessors' names onto it).

use super::{ProfileError, ProfileKind};
use crate::command::CommandPolicy;

/// How a profile encodes message bodies, where it offers a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// JSON bytes exactly as Discord sent them.
    Json,
    /// MessagePack, transcoded losslessly from Discord's JSON.
    Msgpack,
}

/// The profile's settings. Every field has a default; options a profile does not offer are
/// refused by [`ProfileConfig::validate`] with a message naming the profiles that offer them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    /// Which profile.
    pub kind: ProfileKind,
    /// The events exchange (the Spectacles *group*); the profile's default when absent
    /// (`gateway` for every profile).
    pub exchange: Option<String>,
    /// Spectacles: the subgroups whose per-event queues the gateway pre-declares
    /// (`<group>:<subgroup>:<event>`); none means `<group>:<event>`.
    pub subgroups: Vec<String>,
    /// Body encoding: `msgpack` (default) or `json` for spectacles and cordis; the other
    /// profiles publish JSON only.
    pub body: Option<BodyEncoding>,
    /// Spectacles: the `expiration` of each event message in milliseconds (the Go gateway's
    /// `BROKER_MESSAGE_TIMEOUT`); none by default.
    pub message_timeout_ms: Option<u64>,
    /// twilight-dispatch: also declare the durable queue `gateway.recv` bound with `#`
    /// (`DEFAULT_QUEUE`).
    pub default_queue: bool,
    /// Publish only these events (all when empty).
    pub events: Vec<String>,
    /// Never publish these events (Retsu's `ignored_packets`).
    pub ignored_events: Vec<String>,
    /// Spectacles: events whose consumer queues the gateway declares, so that nothing published
    /// before the workers start is lost.
    pub declare_queues: Vec<String>,
    /// Opcodes workers may send besides 3, 4, 8 and 31 (for example 43).
    pub extra_allowed_ops: Vec<u8>,
    /// Native: the commands exchange (default `gateway.commands`); its dead-letter exchange is
    /// this name plus `.dlx`.
    pub commands_exchange: Option<String>,
    /// Native: this node's durable command queue (default `<commands exchange>.shards-<first>-<last>`,
    /// from the shards it owns; set it when nodes own interleaved shards).
    pub command_queue: Option<String>,
    /// The type of every queue Gatehouse declares itself (command queues, dead-letter queues,
    /// and the event queues a profile pre-declares): `classic` (the default, declared without
    /// an `x-queue-type` argument, as before) or `quorum` (replicated, `x-queue-type:
    /// quorum`). See [`super::QueueType`].
    pub queue_type: super::QueueType,
}

impl ProfileConfig {
    /// The events exchange (or Spectacles group) name.
    pub fn exchange_name(&self) -> &str {
        self.exchange.as_deref().unwrap_or("gateway")
    }

    /// The body encoding in effect.
    pub fn body_encoding(&self) -> BodyEncoding {
        match (self.body, self.kind) {
            (Some(body), _) => body,
            (None, ProfileKind::Spectacles | ProfileKind::Cordis) => BodyEncoding::Msgpack,
            (None, _) => BodyEncoding::Json,
        }
    }

    /// Checks that the settings can work (the cluster is valid by construction).
    pub fn validate(&self) -> Result<(), ProfileError> {
        let kind = self.kind;
        let name = kind.name();
        let only = |option: &str, offered_by: &str| {
            Err(ProfileError(format!(
                "`{option}` is not an option of the {name} profile (only of {offered_by})"
            )))
        };
        if !self.subgroups.is_empty() && kind != ProfileKind::Spectacles {
            return only("subgroups", "spectacles");
        }
        if !self.declare_queues.is_empty() && kind != ProfileKind::Spectacles {
            return only("declare_queues", "spectacles");
        }
        if self.message_timeout_ms.is_some() && kind != ProfileKind::Spectacles {
            return only("message_timeout_ms", "spectacles");
        }
        if self.default_queue && kind != ProfileKind::TwilightDispatch {
            return only("default_queue", "twilight-dispatch");
        }
        if self.commands_exchange.is_some() && kind != ProfileKind::Gatehouse {
            return only("commands_exchange", "gatehouse");
        }
        if self.command_queue.is_some() && kind != ProfileKind::Gatehouse {
            return only("command_queue", "gatehouse");
        }
        if self.body == Some(BodyEncoding::Msgpack)
            && !matches!(kind, ProfileKind::Spectacles | ProfileKind::Cordis)
        {
            return Err(ProfileError(format!(
                "the {name} profile publishes JSON only; `body = \"msgpack\"` is offered by the spectacles and cordis profiles"
            )));
        }
        if self.message_timeout_ms == Some(0) {
            return Err(ProfileError(
                "`message_timeout_ms` must be at least 1 (leave it out for no expiration)".into(),
            ));
        }
        check_amqp_name("exchange", self.exchange_name())?;
        if let Some(ex) = &self.commands_exchange {
            check_amqp_name("commands_exchange", &format!("{ex}.dlx"))?;
        }
        if let Some(q) = &self.command_queue {
            check_amqp_name("command_queue", q)?;
        }
        for sub in &self.subgroups {
            check_amqp_name("subgroups", sub)?;
        }
        for (option, list) in [
            ("events", &self.events),
            ("ignored_events", &self.ignored_events),
            ("declare_queues", &self.declare_queues),
        ] {
            for event in list {
                check_amqp_name(option, event)?;
            }
        }
        CommandPolicy::new(&self.extra_allowed_ops).map_err(ProfileError)?;
        Ok(())
    }
}

/// AMQP short strings: 1 to 255 bytes.
fn check_amqp_name(option: &str, value: &str) -> Result<(), ProfileError> {
    if value.is_empty() {
        return Err(ProfileError(format!("`{option}` may not be empty")));
    }
    if value.len() > 255 {
        return Err(ProfileError(format!(
            "`{option}`: `{value}` is longer than the 255 bytes AMQP allows"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ClusterInfo;

    #[test]
    fn default_body_encoding_per_profile() {
        for (kind, body) in [
            (ProfileKind::Gatehouse, BodyEncoding::Json),
            (ProfileKind::Spectacles, BodyEncoding::Msgpack),
            (ProfileKind::Cordis, BodyEncoding::Msgpack),
            (ProfileKind::TwilightDispatch, BodyEncoding::Json),
            (ProfileKind::Retsu, BodyEncoding::Json),
        ] {
            let cfg = ProfileConfig {
                kind,
                ..ProfileConfig::default()
            };
            assert_eq!(cfg.body_encoding(), body, "{kind:?}");
        }
    }

    #[test]
    fn options_of_other_profiles_are_refused_with_clear_text() {
        let err = |cfg: ProfileConfig| cfg.validate().unwrap_err().to_string();
        assert_eq!(
            err(ProfileConfig {
                default_queue: true,
                ..ProfileConfig::default()
            }),
            "invalid profile configuration: `default_queue` is not an option of the gatehouse profile (only of twilight-dispatch)"
        );
        assert!(
            err(ProfileConfig {
                kind: ProfileKind::Retsu,
                body: Some(BodyEncoding::Msgpack),
                ..ProfileConfig::default()
            })
            .contains("the retsu profile publishes JSON only")
        );
        assert!(
            err(ProfileConfig {
                kind: ProfileKind::Cordis,
                message_timeout_ms: Some(5),
                ..ProfileConfig::default()
            })
            .contains("`message_timeout_ms` is not an option of the cordis profile")
        );
        assert!(
            err(ProfileConfig {
                exchange: Some(String::new()),
                ..ProfileConfig::default()
            })
            .contains("`exchange` may not be empty")
        );
        assert!(
            err(ProfileConfig {
                extra_allowed_ops: vec![6],
                ..ProfileConfig::default()
            })
            .contains("op 6 (Resume)")
        );
        assert!(
            err(ProfileConfig {
                kind: ProfileKind::Spectacles,
                message_timeout_ms: Some(0),
                ..ProfileConfig::default()
            })
            .contains("at least 1")
        );
    }

    #[test]
    fn cluster_is_checked() {
        let zero = ClusterInfo::new(0, []).unwrap_err();
        assert!(zero.0.contains("shard count"));
        assert!(
            ClusterInfo::new(2, [0, 2])
                .unwrap_err()
                .0
                .contains("shard 2")
        );
        let cluster = ClusterInfo::new(4, [3, 1, 3]).expect("valid");
        assert_eq!((cluster.shard_count(), cluster.owned()), (4, &[1, 3][..]));
        assert_eq!(cluster.shard(3).map(|s| s.number()), Some(3));
        assert_eq!(cluster.shard(4), None);
    }
}
