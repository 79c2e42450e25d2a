//! The human-readable table printed at the end of a run.

use super::{Outcome, RunReport, Verdict};
use crate::scenario::Requirement;

/// The pass/fail table: the scenarios the profile's contract requires, then the Gatehouse
/// extensions, one row per scenario with each failure's reason under its row, and a summary line
/// per group (`required: N passed, N failed`).
pub fn to_table(report: &RunReport) -> String {
    let name_width = report
        .outcomes
        .iter()
        .map(|o| o.scenario.len())
        .max()
        .unwrap_or(8)
        .max("SCENARIO".len());
    let mut out = String::new();
    out.push_str(&format!(
        "conformance: {} with profile {} (run {})\n",
        report.implementation, report.profile, report.run_id
    ));
    for (requirement, title) in [
        (
            Requirement::Required,
            "required by the profile's contract and the Discord protocol",
        ),
        (
            Requirement::Extension,
            "Gatehouse extensions beyond the profile's contract",
        ),
    ] {
        let rows: Vec<&Outcome> = report
            .outcomes
            .iter()
            .filter(|o| o.requirement == requirement)
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n{} ({title})\n",
            requirement.name().to_uppercase()
        ));
        out.push_str(&format!(
            "{:<name_width$}  RESULT  {:>7}\n",
            "SCENARIO", "TIME"
        ));
        for o in rows {
            row(&mut out, o, name_width);
        }
    }
    out.push('\n');
    for requirement in [Requirement::Required, Requirement::Extension] {
        if report.outcomes.iter().any(|o| o.requirement == requirement) {
            out.push_str(&format!(
                "{}: {}\n",
                requirement.name(),
                summary(
                    report.count_of(requirement, Verdict::Pass),
                    report.count_of(requirement, Verdict::Fail),
                    report.count_of(requirement, Verdict::Error)
                )
            ));
        }
    }
    out.push_str(&format!(
        "{}\n",
        summary(
            report.count(Verdict::Pass),
            report.count(Verdict::Fail),
            report.count(Verdict::Error)
        )
    ));
    out
}

fn row(out: &mut String, o: &Outcome, name_width: usize) {
    out.push_str(&format!(
        "{:<name_width$}  {:<6}  {:>6.1}s\n",
        o.scenario,
        o.verdict.label(),
        o.duration.as_secs_f64()
    ));
    if let Some(reason) = &o.reason {
        for line in reason.lines() {
            out.push_str(&format!("{:name_width$}    -> {line}\n", ""));
        }
        if let Some(log) = &o.log_path {
            out.push_str(&format!(
                "{:name_width$}       (implementation log: {})\n",
                "",
                log.display()
            ));
        }
    }
}

/// `N passed, N failed[ (N could not be run)]`.
fn summary(passed: usize, failed: usize, errors: usize) -> String {
    format!(
        "{passed} passed, {} failed{}",
        failed + errors,
        if errors > 0 {
            format!(" ({errors} could not be run)")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_lists_rows_reasons_and_summaries_per_requirement() {
        let t = super::to_table(&super::super::sample());
        assert!(t.contains("handshake"));
        assert!(t.contains("FAIL"));
        assert!(t.contains("-> no IDENTIFY within 30s"));
        assert!(t.contains("\nREQUIRED ("));
        assert!(t.contains("\nEXTENSION ("));
        assert!(t.find("handshake") < t.find("passthrough"));
        assert!(t.contains("required: 1 passed, 0 failed"));
        assert!(t.contains("extension: 0 passed, 1 failed"));
        assert!(t.trim_end().ends_with("1 passed, 1 failed"));
    }
}
