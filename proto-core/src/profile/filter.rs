//! The event filter: which dispatch events a profile publishes.
//!
//! Owns: the "publish only these" and "drop these" lists and the per-event check. Does not know
//! about profiles or payloads. An empty filter costs one branch per event.

use std::collections::HashSet;

/// Which events to publish. Both lists empty means every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    only: Option<HashSet<Box<str>>>,
    ignored: Option<HashSet<Box<str>>>,
}

impl EventFilter {
    /// A filter that publishes only `only` (all events when empty) and never `ignored`.
    pub fn new(only: &[String], ignored: &[String]) -> Self {
        let set = |names: &[String]| {
            (!names.is_empty()).then(|| names.iter().map(|n| Box::from(n.as_str())).collect())
        };
        Self {
            only: set(only),
            ignored: set(ignored),
        }
    }

    /// Whether an event with this name is published.
    #[inline]
    pub fn allows(&self, event: &str) -> bool {
        if let Some(only) = &self.only
            && !only.contains(event)
        {
            return false;
        }
        match &self.ignored {
            Some(ignored) => !ignored.contains(event),
            None => true,
        }
    }

    /// Whether the filter lets every event through.
    pub fn is_open(&self) -> bool {
        self.only.is_none() && self.ignored.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn empty_filter_passes_everything() {
        let f = EventFilter::new(&[], &[]);
        assert!(f.is_open());
        assert!(f.allows("MESSAGE_CREATE"));
        assert!(f.allows("SOME_FUTURE_EVENT"));
    }

    #[test]
    fn only_and_ignored() {
        let f = EventFilter::new(&names(&["MESSAGE_CREATE", "READY"]), &[]);
        assert!(f.allows("MESSAGE_CREATE"));
        assert!(!f.allows("TYPING_START"));
        let f = EventFilter::new(&[], &names(&["TYPING_START", "PRESENCE_UPDATE"]));
        assert!(f.allows("MESSAGE_CREATE"));
        assert!(!f.allows("TYPING_START"));
        let f = EventFilter::new(
            &names(&["READY", "TYPING_START"]),
            &names(&["TYPING_START"]),
        );
        assert!(f.allows("READY"));
        assert!(!f.allows("TYPING_START"));
        assert!(!f.allows("MESSAGE_CREATE"));
    }
}
