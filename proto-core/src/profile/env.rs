//! The predecessors' configuration names that concern a profile, mapped onto [`ProfileConfig`],
//! so that an existing deployment's environment keeps working.
//!
//! Owns: the names and their value formats. Does not read the environment itself: the runtime
//! passes a lookup closure (for example over `std::env::var`, or over the keys of Retsu's
//! `config.json`). Names that concern other parts of Gatehouse (tokens, shard ranges, URLs,
//! intents) are mapped by the runtime's configuration, not here.
//!
//! | profile | name | option |
//! |---|---|---|
//! | spectacles | `BROKER_GROUP` | `exchange` |
//! | spectacles | `BROKER_MESSAGE_TIMEOUT` (Go duration: `2m`, `1m30s`, `500ms`) | `message_timeout_ms` |
//! | spectacles | `DISCORD_EVENTS` (comma list) | `events` and `declare_queues` |
//! | twilight-dispatch | `DEFAULT_QUEUE` (`true`/`false`; older releases: `DECLARE_QUEUE`) | `default_queue` |
//! | retsu | `ignored_packets` (JSON array or comma list) | `ignored_events` |
//!
//! The gatehouse and cordis profiles have no such names (Cordis' `CORDIS_*` variables concern
//! the connection, not the broker contract).

use super::{ProfileConfig, ProfileError, ProfileKind};

/// A lookup of one configuration name: `Some(value)` when it is set.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl ProfileConfig {
    /// The default settings of `kind` with the predecessor's names applied.
    pub fn from_predecessor_env(
        kind: ProfileKind,
        lookup: Lookup<'_>,
    ) -> Result<Self, ProfileError> {
        let mut config = Self {
            kind,
            ..Self::default()
        };
        config.apply_predecessor_env(lookup)?;
        Ok(config)
    }

    /// Overrides settings with the values of the predecessor's names for `self.kind` that are
    /// set (and not empty). A value that cannot be read is an error naming the variable.
    pub fn apply_predecessor_env(&mut self, lookup: Lookup<'_>) -> Result<(), ProfileError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        match self.kind {
            ProfileKind::Gatehouse | ProfileKind::Cordis => {}
            ProfileKind::Spectacles => {
                if let Some(group) = get("BROKER_GROUP") {
                    self.exchange = Some(group.trim().to_owned());
                }
                if let Some(timeout) = get("BROKER_MESSAGE_TIMEOUT") {
                    let ms = parse_go_duration_ms(timeout.trim()).ok_or_else(|| {
                        ProfileError(format!(
                            "BROKER_MESSAGE_TIMEOUT: `{timeout}` is not a duration like `2m`, `90s` or `1m30s`"
                        ))
                    })?;
                    // Go's gateway treats 0 as "use the default"; here it means no expiration.
                    self.message_timeout_ms = (ms > 0).then_some(ms);
                }
                if let Some(events) = get("DISCORD_EVENTS") {
                    let events = split_list(&events);
                    self.declare_queues.clone_from(&events);
                    self.events = events;
                }
            }
            ProfileKind::TwilightDispatch => {
                let (name, value) = match get("DEFAULT_QUEUE") {
                    Some(v) => ("DEFAULT_QUEUE", Some(v)),
                    None => ("DECLARE_QUEUE", get("DECLARE_QUEUE")),
                };
                if let Some(value) = value {
                    self.default_queue = parse_bool(&value).ok_or_else(|| {
                        ProfileError(format!("{name}: `{value}` is neither `true` nor `false`"))
                    })?;
                }
            }
            ProfileKind::Retsu => {
                if let Some(list) = get("ignored_packets") {
                    self.ignored_events = parse_name_list(&list).ok_or_else(|| {
                        ProfileError(format!(
                            "ignored_packets: `{list}` is neither a JSON array of event names nor a comma list"
                        ))
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A JSON array of strings (`["TYPING_START"]`) or a comma list (`TYPING_START,READY`).
fn parse_name_list(value: &str) -> Option<Vec<String>> {
    let value = value.trim();
    if value.starts_with('[') {
        let names: Vec<String> = serde_json::from_str(value).ok()?;
        return Some(names.into_iter().filter(|n| !n.is_empty()).collect());
    }
    Some(split_list(value))
}

/// A Go `time.ParseDuration` string, in whole milliseconds (rounded down).
pub fn parse_go_duration_ms(text: &str) -> Option<u64> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let mut rest = text;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ns_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += number * ns_per_unit;
    }
    let ms = (total_ns / 1e6).floor();
    (ms.is_finite() && ms < u64::MAX as f64).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_go_duration_ms("500ms"), Some(500));
        assert_eq!(parse_go_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_go_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_go_duration_ms("0"), Some(0));
        assert_eq!(parse_go_duration_ms("10"), None);
        assert_eq!(parse_go_duration_ms("2 minutes"), None);
        assert_eq!(parse_go_duration_ms("-1s"), None);
        assert_eq!(parse_go_duration_ms(""), None);
    }

    #[test]
    fn spectacles_names() {
        let lookup = env(&[
            ("BROKER_GROUP", "mybot"),
            ("BROKER_MESSAGE_TIMEOUT", "2m"),
            ("DISCORD_EVENTS", "MESSAGE_CREATE, GUILD_CREATE"),
            ("DEFAULT_QUEUE", "true"),
        ]);
        let cfg = ProfileConfig::from_predecessor_env(ProfileKind::Spectacles, &lookup).unwrap();
        assert_eq!(cfg.exchange.as_deref(), Some("mybot"));
        assert_eq!(cfg.message_timeout_ms, Some(120_000));
        assert_eq!(cfg.events, ["MESSAGE_CREATE", "GUILD_CREATE"]);
        assert_eq!(cfg.declare_queues, cfg.events);
        assert!(!cfg.default_queue, "another profile's name is not read");
        let bad = env(&[("BROKER_MESSAGE_TIMEOUT", "soon")]);
        let err = ProfileConfig::from_predecessor_env(ProfileKind::Spectacles, &bad).unwrap_err();
        assert!(err.0.contains("BROKER_MESSAGE_TIMEOUT"));
    }

    #[test]
    fn twilight_dispatch_names() {
        let cfg = ProfileConfig::from_predecessor_env(
            ProfileKind::TwilightDispatch,
            &env(&[("DEFAULT_QUEUE", "true")]),
        )
        .unwrap();
        assert!(cfg.default_queue);
        let cfg = ProfileConfig::from_predecessor_env(
            ProfileKind::TwilightDispatch,
            &env(&[("DECLARE_QUEUE", "true")]),
        )
        .unwrap();
        assert!(cfg.default_queue);
        let cfg = ProfileConfig::from_predecessor_env(
            ProfileKind::TwilightDispatch,
            &env(&[("DEFAULT_QUEUE", "false"), ("DECLARE_QUEUE", "true")]),
        )
        .unwrap();
        assert!(!cfg.default_queue);
        let err = ProfileConfig::from_predecessor_env(
            ProfileKind::TwilightDispatch,
            &env(&[("DEFAULT_QUEUE", "maybe")]),
        )
        .unwrap_err();
        assert!(err.0.contains("DEFAULT_QUEUE"));
    }

    #[test]
    fn retsu_names() {
        let cfg = ProfileConfig::from_predecessor_env(
            ProfileKind::Retsu,
            &env(&[("ignored_packets", r#"["TYPING_START","PRESENCE_UPDATE"]"#)]),
        )
        .unwrap();
        assert_eq!(cfg.ignored_events, ["TYPING_START", "PRESENCE_UPDATE"]);
        let cfg = ProfileConfig::from_predecessor_env(
            ProfileKind::Retsu,
            &env(&[("ignored_packets", "TYPING_START,PRESENCE_UPDATE")]),
        )
        .unwrap();
        assert_eq!(cfg.ignored_events, ["TYPING_START", "PRESENCE_UPDATE"]);
        assert!(
            ProfileConfig::from_predecessor_env(
                ProfileKind::Retsu,
                &env(&[("ignored_packets", "[1,2]")]),
            )
            .is_err()
        );
    }

    #[test]
    fn nothing_set_means_defaults() {
        for kind in [
            ProfileKind::Gatehouse,
            ProfileKind::Spectacles,
            ProfileKind::Cordis,
            ProfileKind::TwilightDispatch,
            ProfileKind::Retsu,
        ] {
            let cfg = ProfileConfig::from_predecessor_env(kind, &|_| None).unwrap();
            assert_eq!(
                cfg,
                ProfileConfig {
                    kind,
                    ..ProfileConfig::default()
                }
            );
        }
    }
}
