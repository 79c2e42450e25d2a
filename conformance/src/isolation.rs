//! Isolation of one scenario run: its own RabbitMQ vhost (created through the management API,
//! with permissions for the suite's user, deleted afterwards) and its own Redis key prefix
//! (every key under it deleted afterwards), so runs can go in parallel and each profile's
//! exchange names stay exactly as specified.
//!
//! Owns naming and the create/clean-up lifecycle. It does not inspect contents (see
//! [`crate::broker`], [`rabbitmq_management`], [`crate::redis_store`]).

use crate::redis_store::RedisStore;
use rabbitmq_management::ManagementApi;

/// Names every vhost and prefix of one suite run start with, so leftovers are recognisable.
pub const NAME_PREFIX: &str = "conformance";

/// The isolated resources of one scenario run.
#[derive(Clone, Debug)]
pub struct Isolation {
    /// The vhost's name.
    pub vhost: String,
    /// `AMQP_URL` with the vhost as its path.
    pub amqp_url: String,
    /// The Redis key prefix (ends with `:`).
    pub redis_prefix: String,
    management: ManagementApi,
}

/// What went wrong while creating or cleaning up.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// The management API refused or is unreachable.
    #[error(
        "{0} (is the rabbitmq_management plugin enabled? set RABBITMQ_MANAGEMENT_URL to point elsewhere)"
    )]
    Management(#[from] rabbitmq_management::ManagementError),
    /// Redis refused or is unreachable.
    #[error(transparent)]
    Redis(#[from] crate::redis_store::RedisError),
    /// A bad URL.
    #[error("{0}")]
    Url(String),
    /// The blocking task was cancelled (the suite is shutting down).
    #[error("cancelled: {0}")]
    Cancelled(String),
}

fn joined<T>(
    result: Result<Result<T, IsolationError>, tokio::task::JoinError>,
) -> Result<T, IsolationError> {
    result.map_err(|e| IsolationError::Cancelled(e.to_string()))?
}

impl Isolation {
    /// Creates the vhost for run `run_id`, job `index`, scenario `scenario`.
    pub async fn create(
        management: &ManagementApi,
        amqp_url: &str,
        run_id: &str,
        index: usize,
        scenario: &str,
    ) -> Result<Self, IsolationError> {
        let slug: String = scenario
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let vhost = format!("{NAME_PREFIX}-{run_id}-{index}-{slug}");
        let redis_prefix = format!("{NAME_PREFIX}:{run_id}:{index}:");
        let amqp_url = amqp_url_for_vhost(amqp_url, &vhost).map_err(IsolationError::Url)?;
        let api = management.clone();
        let name = vhost.clone();
        joined(
            tokio::task::spawn_blocking(move || api.create_vhost(&name).map_err(Into::into)).await,
        )?;
        Ok(Self {
            vhost,
            amqp_url,
            redis_prefix,
            management: management.clone(),
        })
    }

    /// Deletes the vhost and every Redis key under the prefix. Runs every step even when one
    /// fails, and reports the first failure.
    pub async fn clean_up(&self, redis_url: &str) -> Result<(), IsolationError> {
        let api = self.management.clone();
        let vhost = self.vhost.clone();
        let vhost_result = joined(
            tokio::task::spawn_blocking(move || api.delete_vhost(&vhost).map_err(Into::into)).await,
        );
        let redis_result = match RedisStore::connect(redis_url, &self.redis_prefix).await {
            Ok(store) => store.delete_all().await.map(drop),
            Err(e) => Err(e),
        };
        vhost_result?;
        redis_result?;
        Ok(())
    }
}

/// Removes whatever run `run_id` left behind (its vhosts and Redis keys): for an interrupted run.
pub async fn clean_up_run(
    management: &ManagementApi,
    redis_url: &str,
    run_id: &str,
) -> Result<usize, IsolationError> {
    let api = management.clone();
    let prefix = format!("{NAME_PREFIX}-{run_id}-");
    let removed = joined(
        tokio::task::spawn_blocking(move || -> Result<usize, IsolationError> {
            let mut removed = 0;
            for vhost in api.vhosts()?.into_iter().filter(|v| v.starts_with(&prefix)) {
                api.delete_vhost(&vhost)?;
                removed += 1;
            }
            Ok(removed)
        })
        .await,
    )?;
    let store = RedisStore::connect(redis_url, &format!("{NAME_PREFIX}:{run_id}:")).await?;
    Ok(removed + store.delete_all().await?)
}

/// `amqp_url` with its path replaced by `vhost` (percent-encoded).
pub fn amqp_url_for_vhost(amqp_url: &str, vhost: &str) -> Result<String, String> {
    let mut url = url::Url::parse(amqp_url).map_err(|e| format!("bad AMQP_URL: {e}"))?;
    let encoded = percent_encoding::utf8_percent_encode(vhost, rabbitmq_management::PATH_SEGMENT);
    url.set_path(&format!("/{encoded}"));
    Ok(url.to_string())
}

/// A short identifier for one suite run (time-based, unique enough across parallel runs).
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}{:04x}",
        now.as_millis() % 0x1_0000_0000,
        std::process::id() % 0x1_0000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_replaces_the_path() {
        assert_eq!(
            amqp_url_for_vhost("amqp://guest:guest@127.0.0.1:5672/%2f", "conformance-1-2-x")
                .unwrap(),
            "amqp://guest:guest@127.0.0.1:5672/conformance-1-2-x"
        );
        assert_eq!(
            amqp_url_for_vhost("amqp://127.0.0.1:5672", "v").unwrap(),
            "amqp://127.0.0.1:5672/v"
        );
    }
}
