//! Results of a suite run and their presentation: the terminal table, JSON and JUnit XML.
//!
//! Owns the outcome data model and the formats. It does not run anything (see
//! [`crate::runner`]).

mod json;
mod junit;
mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::scenario::Requirement;

pub use json::to_json;
pub use junit::to_junit_xml;
pub use table::to_table;

/// How a scenario ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// A check failed: the implementation does not conform.
    Fail,
    /// The suite could not run the scenario (broker, Redis or mock trouble): no verdict on the
    /// implementation, but the run fails.
    Error,
}

impl Verdict {
    /// `PASS`, `FAIL` or `ERROR`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Error => "ERROR",
        }
    }
}

/// The outcome of one scenario run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// Whether the profile's contract requires what it checks, or it is a Gatehouse extension.
    pub requirement: Requirement,
    /// What it checks (one line).
    pub description: String,
    /// The profile it ran under.
    pub profile: String,
    /// Pass, fail or error.
    pub verdict: Verdict,
    /// Why it failed (absent on pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall time.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// The implementation's output for this scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    /// The last lines of that output (kept on failure).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub log_tail: String,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Everything about one `conformance run`.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The `--impl` command.
    pub implementation: String,
    /// The profile.
    pub profile: String,
    /// The run's id (vhost and key prefix component).
    pub run_id: String,
    /// Seconds since the Unix epoch at the start.
    pub started_at: u64,
    /// Wall time of the run.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// One entry per scenario, in registry order.
    pub outcomes: Vec<Outcome>,
}

impl RunReport {
    /// How many scenarios ended with `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.verdict == verdict)
            .count()
    }

    /// How many scenarios of `requirement` ended with `verdict`.
    pub fn count_of(&self, requirement: Requirement, verdict: Verdict) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.requirement == requirement && o.verdict == verdict)
            .count()
    }

    /// Whether every scenario passed (and there was at least one).
    pub fn all_passed(&self) -> bool {
        !self.outcomes.is_empty() && self.outcomes.iter().all(|o| o.verdict == Verdict::Pass)
    }

    /// Writes the report to `path`: JUnit XML for `.xml`, JSON otherwise.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
        {
            to_junit_xml(self)
        } else {
            to_json(self)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, text)
    }
}

#[cfg(test)]
pub(crate) fn sample() -> RunReport {
    RunReport {
        implementation: "/bin/true".into(),
        profile: "gatehouse".into(),
        run_id: "abc".into(),
        started_at: 1_700_000_000,
        duration: Duration::from_millis(4200),
        outcomes: vec![
            Outcome {
                scenario: "handshake".into(),
                requirement: Requirement::Required,
                description: "identify & heartbeat".into(),
                profile: "gatehouse".into(),
                verdict: Verdict::Pass,
                reason: None,
                duration: Duration::from_millis(1500),
                log_path: None,
                log_tail: String::new(),
            },
            Outcome {
                scenario: "passthrough".into(),
                requirement: Requirement::Extension,
                description: "bytes <& \"exact\">".into(),
                profile: "gatehouse".into(),
                verdict: Verdict::Fail,
                reason: Some("no IDENTIFY within 30s <&>".into()),
                duration: Duration::from_millis(2700),
                log_path: Some("/tmp/x.log".into()),
                log_tail: "exited\nwith ]]> inside".into(),
            },
        ],
    }
}
