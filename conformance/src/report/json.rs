//! The JSON report (the [`super::RunReport`] serialised, pretty-printed).

use super::RunReport;

/// The report as pretty JSON.
pub fn to_json(report: &RunReport) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("the report serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_has_the_outcomes() {
        let v: serde_json::Value =
            serde_json::from_str(&super::to_json(&super::super::sample())).unwrap();
        assert_eq!(v["outcomes"][1]["verdict"], "fail");
        assert_eq!(v["outcomes"][1]["reason"], "no IDENTIFY within 30s <&>");
        assert!(v["outcomes"][0].get("reason").is_none());
        assert_eq!(v["duration"], 4.2);
    }
}
