//! Loading: the file's text (Gatehouse's TOML, or a predecessor's file, see
//! [`crate::formats`]), the environment on top (the tables of [`crate::env`]), then
//! validation ([`crate::validate`]).
//!
//! Owns: the order of the layers and the warnings about names that are recognised but have no
//! effect. Does not read files or the process environment: the caller passes text and a lookup
//! closure.

use proto_core::profile::ProfileKind;

use crate::env::{EnvKind, EnvTable, TABLES, parse_bool};
use crate::error::ConfigError;
use crate::formats;
use crate::model::Config;
use crate::raw::RawConfig;

/// A loaded configuration and what the operator should be told about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Settings that were recognised but have no effect, or were adapted: one sentence each,
    /// naming the variable or key. Log each as a warning at start-up.
    pub warnings: Vec<String>,
}

impl Config {
    /// The configuration from the file's text (empty text is fine) with the environment on
    /// top. See [`Config::load_reporting`]; this drops the warnings.
    pub fn load(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::load_reporting(text, env).map(|loaded| loaded.config)
    }

    /// The configuration from the file's text with the environment on top, and the warnings.
    ///
    /// The text is Gatehouse's TOML, the Spectacles gateway's `gateway.toml`, or Retsu's
    /// `config.json` (recognised by their shape, see [`crate::formats`]). `env` looks a
    /// variable up (`|name| std::env::var(name).ok()` in a binary); an empty value counts as
    /// unset.
    pub fn load_reporting(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let mut table = formats::read(text, &mut warnings)?;
        // Tables read whatever the profile first (Gatehouse's own included, as it may name the
        // profile), then those of the selected profile, then Gatehouse's own again so it wins.
        for env_table in TABLES.iter().filter(|t| t.only_with.is_none()) {
            apply_table(&mut table, env_table, &env)?;
        }
        let kind = profile_kind(&table)?;
        for env_table in TABLES.iter().filter(|t| t.only_with.is_some()) {
            if env_table.only_with == Some(kind) {
                apply_table(&mut table, env_table, &env)?;
            } else {
                warn_other_profile(env_table, kind, &env, &mut warnings);
            }
        }
        apply_table(&mut table, &crate::env::gatehouse::TABLE, &env)?;
        if kind != ProfileKind::Cordis
            && crate::env::cordis::uses_unprefixed_shard_names(&env)
            && is_set(&env, "SHARD_COUNT")
            && !is_set(&env, "GATEHOUSE_SHARD_COUNT")
        {
            warnings.push(
                "SHARD_COUNT is not read: STARTING_SHARD or TOTAL_SHARD_COUNT is set, which makes \
                 it Cordis 1.x's count of this process's shards, and those names are read only \
                 with the cordis profile"
                    .to_owned(),
            );
        }
        for env_table in TABLES {
            if env_table.only_with.is_none_or(|k| k == kind) {
                warn_unsupported(env_table, &env, &mut warnings);
            }
        }
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::File(e.to_string()))?;
        let config = raw.validate(&mut warnings)?;
        Ok(Loaded { config, warnings })
    }
}

fn profile_kind(table: &toml::Table) -> Result<ProfileKind, ConfigError> {
    match table.get("profile").and_then(|p| p.get("kind")) {
        None => Ok(ProfileKind::default()),
        Some(kind) => kind
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::File(format!("profile.kind: {e}"))),
    }
}

fn apply_table(
    table: &mut toml::Table,
    env_table: &EnvTable,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for composite in env_table.composites {
        if let Some(value) = (composite.build)(env) {
            let var = composite.names[0];
            let value = value.map_err(|message| ConfigError::Env { var, message })?;
            formats::set_path(table, composite.path, value)
                .map_err(|message| ConfigError::Env { var, message })?;
        }
    }
    for var in env_table.vars {
        let found = var
            .names
            .iter()
            .find_map(|&name| env(name).filter(|v| !v.is_empty()).map(|v| (name, v)));
        let Some((name, value)) = found else { continue };
        if let Some(value) = env_value(name, var.kind, value.trim())? {
            formats::set_path(table, var.path, value)
                .map_err(|message| ConfigError::Env { var: name, message })?;
        }
    }
    Ok(())
}

fn is_set(env: &impl Fn(&str) -> Option<String>, name: &str) -> bool {
    env(name).is_some_and(|v| !v.trim().is_empty())
}

fn warn_unsupported(
    env_table: &EnvTable,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) {
    for unsupported in env_table.unsupported {
        let Some(value) = env(unsupported.name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        if unsupported
            .fine
            .iter()
            .any(|fine| fine.eq_ignore_ascii_case(value.trim()))
        {
            continue;
        }
        warnings.push(format!(
            "{} ({}) has no effect: {}",
            unsupported.name, env_table.source, unsupported.why
        ));
    }
}

/// A profile-only name that is set while another profile is selected.
fn warn_other_profile(
    env_table: &EnvTable,
    kind: ProfileKind,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) {
    let Some(only) = env_table.only_with.filter(|_| env_table.warn_elsewhere) else {
        return;
    };
    let names = env_table
        .vars
        .iter()
        .flat_map(|v| v.names.iter())
        .chain(env_table.composites.iter().flat_map(|c| c.names.iter()))
        .chain(env_table.unsupported.iter().map(|u| &u.name));
    let mut seen = Vec::new();
    for &name in names {
        if is_set(env, name) && !seen.contains(&name) {
            seen.push(name);
            warnings.push(format!(
                "{name} ({}) is read only with the {} profile, and the {} profile is selected",
                env_table.source,
                only.name(),
                kind.name()
            ));
        }
    }
}

fn env_value(
    name: &'static str,
    kind: EnvKind,
    text: &str,
) -> Result<Option<toml::Value>, ConfigError> {
    let integer = || -> Result<toml::Value, ConfigError> {
        text.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(toml::Value::Integer)
            .ok_or_else(|| ConfigError::Env {
                var: name,
                message: format!("expected a non-negative integer, got {text:?}"),
            })
    };
    Ok(Some(match kind {
        EnvKind::Text => toml::Value::String(text.to_owned()),
        EnvKind::Integer => integer()?,
        EnvKind::IntegerOrText => {
            integer().unwrap_or_else(|_| toml::Value::String(text.to_owned()))
        }
        EnvKind::List => crate::env::list_value(text),
        EnvKind::Converted(convert) => {
            return convert(text).map_err(|message| ConfigError::Env { var: name, message });
        }
        EnvKind::Boolean => match parse_bool(text) {
            Some(b) => toml::Value::Boolean(b),
            None => {
                return Err(ConfigError::Env {
                    var: name,
                    message: format!("expected true or false, got {text:?}"),
                });
            }
        },
    }))
}
