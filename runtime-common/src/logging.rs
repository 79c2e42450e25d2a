//! Log output: human-readable lines on a terminal, JSON lines for log shippers.
//!
//! Owns: the tracing subscriber (its format, filter and writer) and the colour decision.
//! Does not own what is logged (every module logs its own events).
//!
//! - `GATEHOUSE_LOG_FORMAT=json` (or `--log-format json`): one JSON object per line.
//! - Otherwise text; coloured only when standard error is a terminal and `NO_COLOR` is unset
//!   or empty (<https://no-color.org>), so a log file never holds escape codes.
//! - `RUST_LOG` filters (default `info,lapin=off`: lapin logs each connection failure again, at
//!   ERROR level and without advice, after the broker supervisor has reported it with advice;
//!   `RUST_LOG=info,lapin=warn` shows lapin's lines).
//!
//! Logs go to standard error; standard output is the demo's live view and the subcommands'
//! output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether text logs are coloured: only on a terminal, and never with `NO_COLOR` set to a
/// non-empty value.
pub fn use_colour(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

/// Starts logging to standard error (once per process; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => {
            let no_color = std::env::var("NO_COLOR").ok();
            let colour = use_colour(std::io::stderr().is_terminal(), no_color.as_deref());
            builder.with_ansi(colour).try_init()
        }
    };
    // Already initialised (a test or a second call): keep the first.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("")));
        assert!(!use_colour(true, Some("1")));
        assert!(!use_colour(false, None));
    }
}
