//! Where RabbitMQ and Redis come from: the addresses given (`AMQP_URL`, `REDIS_URL`, defaults on
//! 127.0.0.1), or, with the `testcontainers` feature and `--containers`, Docker containers the
//! suite starts and removes itself. Also the pre-flight check that they answer.
//!
//! Owns the services' addresses and the containers' lifetime. It does not isolate scenarios (see
//! [`crate::isolation`]).

use crate::broker::Broker;
use crate::redis_store::RedisStore;
use rabbitmq_management::ManagementApi;

/// The default `AMQP_URL`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The default `REDIS_URL`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// The services a run uses.
pub struct Services {
    /// The broker (its path, if any, is replaced by each scenario's vhost).
    pub amqp_url: String,
    /// Redis.
    pub redis_url: String,
    /// The management API address, when not derived from `amqp_url`.
    pub management_url: Option<String>,
    #[cfg(feature = "testcontainers")]
    _containers: Option<containers::Running>,
}

impl Services {
    /// Services at the given addresses.
    pub fn external(amqp_url: String, redis_url: String, management_url: Option<String>) -> Self {
        Self {
            amqp_url,
            redis_url,
            management_url,
            #[cfg(feature = "testcontainers")]
            _containers: None,
        }
    }

    /// Starts RabbitMQ (with the management plugin) and Redis in Docker; they are removed when
    /// the returned value is dropped.
    #[cfg(feature = "testcontainers")]
    pub async fn start_containers() -> Result<Self, String> {
        let running = containers::Running::start().await?;
        Ok(Self {
            amqp_url: running.amqp_url.clone(),
            redis_url: running.redis_url.clone(),
            management_url: Some(running.management_url.clone()),
            _containers: Some(running),
        })
    }

    /// The management API client for these services.
    pub fn management(&self) -> Result<ManagementApi, String> {
        ManagementApi::for_amqp_url(&self.amqp_url, self.management_url.as_deref())
    }

    /// Checks that AMQP, the management API and Redis answer.
    pub async fn preflight(&self, management: &ManagementApi) -> Result<(), String> {
        let broker = Broker::connect(&self.amqp_url)
            .await
            .map_err(|e| format!("RabbitMQ at AMQP_URL does not answer: {e}"))?;
        broker.close().await;
        let api = management.clone();
        tokio::task::spawn_blocking(move || api.ping())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                format!(
                    "{e} (enable the rabbitmq_management plugin, or set {})",
                    rabbitmq_management::MANAGEMENT_URL_VAR
                )
            })?;
        let redis = RedisStore::connect(&self.redis_url, "conformance:preflight:")
            .await
            .map_err(|e| format!("Redis at REDIS_URL does not answer: {e}"))?;
        redis
            .keys()
            .await
            .map_err(|e| format!("Redis at REDIS_URL does not answer: {e}"))?;
        Ok(())
    }
}

#[cfg(feature = "testcontainers")]
mod containers {
    use testcontainers_modules::rabbitmq::RabbitMq;
    use testcontainers_modules::redis::Redis;
    use testcontainers_modules::testcontainers::ContainerAsync;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;

    pub(super) struct Running {
        pub(super) amqp_url: String,
        pub(super) redis_url: String,
        pub(super) management_url: String,
        _rabbitmq: ContainerAsync<RabbitMq>,
        _redis: ContainerAsync<Redis>,
    }

    impl Running {
        pub(super) async fn start() -> Result<Self, String> {
            let docker = |e: testcontainers_modules::testcontainers::TestcontainersError| {
                format!("starting a container (is a Docker engine running?): {e}")
            };
            let rabbitmq = RabbitMq::default().start().await.map_err(docker)?;
            let redis = Redis::default().start().await.map_err(docker)?;
            let rabbit_host = rabbitmq.get_host().await.map_err(docker)?;
            let amqp_port = rabbitmq.get_host_port_ipv4(5672).await.map_err(docker)?;
            let management_port = rabbitmq.get_host_port_ipv4(15672).await.map_err(docker)?;
            let redis_host = redis.get_host().await.map_err(docker)?;
            let redis_port = redis.get_host_port_ipv4(6379).await.map_err(docker)?;
            Ok(Self {
                amqp_url: format!("amqp://guest:guest@{rabbit_host}:{amqp_port}/%2f"),
                redis_url: format!("redis://{redis_host}:{redis_port}/"),
                management_url: format!("http://guest:guest@{rabbit_host}:{management_port}"),
                _rabbitmq: rabbitmq,
                _redis: redis,
            })
        }
    }
}
