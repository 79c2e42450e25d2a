//! The human-readable table printed at the end of a run.

use super::{RunReport, Verdict};

/// The pass/fail table with one row per scenario, each failure's reason under its row, and a
/// summary line (`N passed, N failed`).
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
        "conformance: {} with profile {} (run {})\n\n",
        report.implementation, report.profile, report.run_id
    ));
    out.push_str(&format!(
        "{:<name_width$}  RESULT  {:>7}\n",
        "SCENARIO", "TIME"
    ));
    for o in &report.outcomes {
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
    let errors = report.count(Verdict::Error);
    out.push('\n');
    out.push_str(&format!(
        "{} passed, {} failed{}\n",
        report.count(Verdict::Pass),
        report.count(Verdict::Fail) + errors,
        if errors > 0 {
            format!(" ({errors} could not be run)")
        } else {
            String::new()
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_lists_rows_reasons_and_summary() {
        let t = super::to_table(&super::super::sample());
        assert!(t.contains("handshake"));
        assert!(t.contains("FAIL"));
        assert!(t.contains("-> no IDENTIFY within 30s"));
        assert!(t.trim_end().ends_with("1 passed, 1 failed"));
    }
}
