//! Whether the guilds READY listed have arrived: READY names every guild of the shard as
//! unavailable, and Discord then sends a GUILD_CREATE for each (or GUILD_DELETE for one that
//! stays unavailable through an outage).
//!
//! Owns: the set of guilds still expected after READY, and the moment it became empty. A
//! session taken over by RESUME (READY was seen by another process, or before a restart)
//! counts as arrived: Discord replays whatever was missed. Does not own what the runtime does
//! with it (cluster mode's re-shard waits for it before switching to a new shard set).

use std::collections::HashSet;

use serde::Deserialize;

/// The guilds still expected.
#[derive(Clone, Debug, Default)]
pub(crate) struct GuildArrival {
    /// `None` before the first READY or RESUMED of this shard.
    pending: Option<HashSet<u64>>,
}

#[derive(Deserialize)]
struct Ready {
    #[serde(default)]
    guilds: Vec<Guild>,
}

#[derive(Deserialize)]
struct Guild {
    id: serde_json::Value,
}

fn id_of(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

impl GuildArrival {
    /// READY arrived with `d`; true when it listed no guild (all arrived at once).
    pub(crate) fn ready(&mut self, d: &[u8]) -> bool {
        let guilds: HashSet<u64> = serde_json::from_slice::<Ready>(d)
            .map(|r| r.guilds.iter().filter_map(|g| id_of(&g.id)).collect())
            .unwrap_or_default();
        let done = guilds.is_empty();
        self.pending = Some(guilds);
        done
    }

    /// RESUMED arrived; true when this shard had not seen its READY (taken over).
    pub(crate) fn resumed(&mut self) -> bool {
        if self.pending.is_none() {
            self.pending = Some(HashSet::new());
            return true;
        }
        false
    }

    /// Another dispatch; true when it was the last guild expected.
    pub(crate) fn dispatch(&mut self, event: Option<&str>, d: &[u8]) -> bool {
        let Some(pending) = self.pending.as_mut().filter(|p| !p.is_empty()) else {
            return false;
        };
        if !matches!(event, Some("GUILD_CREATE" | "GUILD_DELETE")) {
            return false;
        }
        let Ok(guild) = serde_json::from_slice::<Guild>(d) else {
            return false;
        };
        id_of(&guild.id).is_some_and(|id| pending.remove(&id)) && pending.is_empty()
    }

    /// Whether READY (or RESUMED) came and every guild it listed has arrived.
    pub(crate) fn arrived(&self) -> bool {
        self.pending.as_ref().is_some_and(HashSet::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrives_with_the_last_guild_create() {
        let mut g = GuildArrival::default();
        assert!(!g.arrived());
        assert!(!g.ready(
            br#"{"session_id":"s","guilds":[{"id":"1","unavailable":true},{"id":"2","unavailable":true}]}"#
        ));
        assert!(!g.dispatch(Some("MESSAGE_CREATE"), br#"{"id":"2"}"#));
        assert!(!g.dispatch(Some("GUILD_CREATE"), br#"{"id":"1"}"#));
        assert!(!g.dispatch(Some("GUILD_CREATE"), br#"{"id":"1"}"#));
        assert!(!g.arrived());
        assert!(g.dispatch(Some("GUILD_DELETE"), br#"{"id":"2","unavailable":true}"#));
        assert!(g.arrived());
        assert!(!g.dispatch(Some("GUILD_CREATE"), br#"{"id":"3"}"#));
        assert!(
            !g.resumed(),
            "a resume of a session seen here changes nothing"
        );
    }

    #[test]
    fn no_guilds_or_a_taken_over_session_count_as_arrived() {
        let mut g = GuildArrival::default();
        assert!(g.ready(br#"{"session_id":"s","guilds":[]}"#));
        assert!(g.arrived());
        let mut taken = GuildArrival::default();
        assert!(taken.resumed());
        assert!(taken.arrived());
    }
}
