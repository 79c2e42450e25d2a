//! # gatehouse-config: what a Gatehouse process is told to do
//!
//! The configuration of the binaries, apart from the sans-IO core (which receives plain values:
//! `ShardConfig`, `ProfileConfig`, `ClusterInfo`).
//!
//! Modules, one responsibility each:
//! - [`model`]: the typed [`Config`] and its defaults; [`secret_url`]: URLs with credentials
//!   and their redaction.
//! - [`env`]: the environment variables, one table per source (Gatehouse and each predecessor).
//! - [`formats`]: the files: Gatehouse's TOML, the Spectacles gateway's TOML, Retsu's
//!   `config.json`, and `.env` files.
//! - [`load`]: the layers (file, environment) and the warnings about names without effect.
//! - `raw` (serde shapes of the file) and `validate` (checks and value forms).
//! - [`error`]: why a configuration was refused.
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
