//! Why a configuration was refused.
//!
//! Owns: the error type and its messages, which name the key or variable and never a secret
//! value.

/// Why a configuration was refused. Messages name the key or variable, never a secret value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML (or JSON) or has unknown or mistyped keys.
    #[error("configuration file: {0}")]
    File(String),
    /// An environment variable has a value of the wrong kind.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// The key path, for example `discord.shard_ids`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}
