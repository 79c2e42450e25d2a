//! The environment variables Gatehouse reads: one table per source (Gatehouse's own names, and
//! each predecessor's), each in its own module so that a predecessor's whole mapping reads at a
//! glance. (Retsu reads no environment: its `config.json` keys are mapped in
//! [`crate::formats::retsu`].)
//!
//! Owns: the table types and the list of tables in the order they apply. Does not own: applying
//! them ([`crate::load`]) or the meaning of the keys they set ([`crate::model`]).
//!
//! Precedence: predecessors' tables apply first and Gatehouse's own last, so Gatehouse's names
//! win; within one row the first name that is set wins. A table marked with a profile applies
//! only when that profile is selected (Cordis 1.x's unprefixed `AUTH`, `DEBUG`, ... are too
//! generic to read otherwise). A name that is recognised but not supported is reported as a
//! warning naming it, never silently ignored.

use proto_core::profile::ProfileKind;

pub mod cordis;
pub mod gatehouse;
pub mod spectacles;
pub mod twilight_dispatch;

/// The environment as a lookup: `Some(value)` when the variable is set.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What kind of value an environment variable holds.
#[derive(Clone, Copy, Debug)]
pub enum EnvKind {
    /// Any text.
    Text,
    /// A non-negative integer.
    Integer,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Boolean,
    /// An integer when it parses as one, text otherwise (intents: `513` or `GUILDS,GUILD_MESSAGES`).
    IntegerOrText,
    /// A comma-separated list of names.
    List,
    /// Text converted to the file's value (a predecessor's spelling of a setting).
    /// `Ok(None)` leaves the key unset (for example a predecessor's "0 means the default").
    Converted(fn(&str) -> Result<Option<toml::Value>, String>),
}

/// One row of a table: variable names and the file key they set.
#[derive(Clone, Copy, Debug)]
pub struct EnvVar {
    /// Variable names, checked in order (the first that is set wins).
    pub names: &'static [&'static str],
    /// The key path in the file, for example `["discord", "token"]`.
    pub path: &'static [&'static str],
    /// The kind of value.
    pub kind: EnvKind,
}

/// A setting a predecessor spread over several variables (host and port, first and last
/// shard). Applied before the table's [`EnvVar`]s.
#[derive(Clone, Copy, Debug)]
pub struct CompositeEnvVar {
    /// The variables it reads (for documentation and error messages).
    pub names: &'static [&'static str],
    /// The key path in the file.
    pub path: &'static [&'static str],
    /// The value, or `None` when none of the variables is set.
    pub build: fn(EnvLookup<'_>) -> Option<Result<toml::Value, String>>,
}

/// A name Gatehouse recognises but does not support (or does not need): setting it logs a
/// warning with the reason.
#[derive(Clone, Copy, Debug)]
pub struct Unsupported {
    /// The variable.
    pub name: &'static str,
    /// Values that need no warning (compared without case), for example `amqp` for
    /// Spectacles' `BROKER_TYPE`.
    pub fine: &'static [&'static str],
    /// Why it has no effect, or what Gatehouse does instead.
    pub why: &'static str,
}

/// The names of one source.
#[derive(Clone, Copy, Debug)]
pub struct EnvTable {
    /// Whose names these are (`gatehouse`, `spectacles`, ...).
    pub source: &'static str,
    /// Read only when this profile is selected; `None`: always read.
    pub only_with: Option<ProfileKind>,
    /// Whether setting one of these names while another profile is selected is warned about
    /// (not for names as generic as Cordis 1.x's `DEBUG`).
    pub warn_elsewhere: bool,
    /// Settings spread over several variables.
    pub composites: &'static [CompositeEnvVar],
    /// One variable (or alias list) per setting.
    pub vars: &'static [EnvVar],
    /// Recognised names without effect.
    pub unsupported: &'static [Unsupported],
}

/// Every table, in the order they apply (later ones win). Gatehouse's own is last.
pub const TABLES: &[&EnvTable] = &[
    &twilight_dispatch::TABLE,
    &twilight_dispatch::PROFILE_TABLE,
    &cordis::TABLE,
    &cordis::PROFILE_TABLE,
    &cordis::UNPREFIXED_TABLE,
    &spectacles::TABLE,
    &spectacles::PROFILE_TABLE,
    &gatehouse::TABLE,
];

/// A variable's value, trimmed; empty counts as unset.
pub(crate) fn set_value(env: EnvLookup<'_>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A variable's value as a number, if set.
pub(crate) fn number(env: EnvLookup<'_>, name: &str) -> Option<Result<u32, String>> {
    set_value(env, name).map(|v| {
        v.parse::<u32>()
            .map_err(|_| format!("{name}: expected a non-negative integer, got {v:?}"))
    })
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A comma list as a TOML array of strings (empty items dropped).
pub(crate) fn list_value(text: &str) -> toml::Value {
    toml::Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| toml::Value::String(s.to_owned()))
            .collect(),
    )
}

/// Percent-encodes the characters that would break a URL's userinfo.
pub(crate) fn userinfo_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ':' | '@' | '/' | '%' | '?' | '#' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
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
    fn every_name_belongs_to_one_row_of_its_table() {
        for table in TABLES {
            let mut seen = std::collections::HashSet::new();
            let names = table
                .vars
                .iter()
                .flat_map(|v| v.names.iter().map(|n| (*n, v.path)))
                .chain(
                    table
                        .composites
                        .iter()
                        .flat_map(|c| c.names.iter().map(|n| (*n, c.path))),
                )
                .chain(table.unsupported.iter().map(|u| (u.name, &[][..])));
            for (name, path) in names {
                assert!(seen.insert((name, path)), "{}: {name} twice", table.source);
            }
        }
    }
}
