//! # gatehouse-config: what a Gatehouse process is told to do
//!
//! The configuration of the binaries, apart from the sans-IO core (which receives plain values:
//! `ShardConfig`, `ProfileConfig`, `ClusterInfo`).
//!
//! Modules, one line each on what it owns:
//! - [`env`]: the environment variables, one table per source (Gatehouse and each predecessor).
//! - [`error`]: why a configuration was refused.
//! - [`formats`]: the files: Gatehouse's TOML, the Spectacles gateway's TOML, Retsu's
//!   `config.json`, and `.env` files.
//! - [`load`]: the layers (file, environment) and the warnings about names without effect.
//! - [`model`]: the typed [`Config`] and its defaults.
//! - `raw`: the serde shapes of the file before validation.
//! - [`secret_url`]: URLs with credentials and their redaction.
//! - `validate`: from the file's shape to a [`Config`] (checks, defaults, value forms).
//!
//! Nothing here reads a file or the process environment: the binaries pass text and a lookup
//! closure (`runtime_common::app`).

pub mod env;
pub mod error;
pub mod formats;
pub mod load;
pub mod model;
mod raw;
pub mod secret_url;
pub(crate) mod validate;

#[cfg(test)]
mod tests;

pub use error::ConfigError;
pub use load::Loaded;
pub use model::*;
pub use secret_url::{SecretUrl, redact_url};
