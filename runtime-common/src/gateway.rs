//! The whole process: from a validated configuration to running shards, and back down.
//!
//! Owns: the start-up order (`/gateway/bot`, cluster, router, Redis, broker, identify
//! coordinator, shard tasks, command consumers), building each shard's configuration (with its
//! persisted session, so a restarted process resumes), and the shutdown order (shards close
//! with a resumable code and wait for their confirms, then the broker closes). Does not own
//! any per-shard or per-message behaviour (the other modules).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use gatehouse_config::{Config, ConfigError};
use proto_core::outbox::OutboxConfig;
use proto_core::profile::{ProfileError, ProfileKind, Router};
use proto_core::shard::{Shard, ShardConfig, StopReason};
use proto_core::sharding::ShardId;
use proto_core::store_sync::StorePolicy;
use tokio::sync::{mpsc, watch};

use crate::cluster::{self as cluster_mode, ClusterStore, ShardHost};
use crate::discord_http::{GatewayBot, GatewayBotError, fetch_gateway_bot};
use crate::identify::{self, IdentifyClient};
use crate::outputs::Outputs;
use crate::runtime::Runtime;
use crate::session_store::{LoadedSessions, SessionStore, StoreError, StoreWriter};
use crate::shard_inputs::{ShardInput, ShardInputs};
use crate::shard_task::{self, ShardIo};

/// Why the process could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `/gateway/bot` failed.
    #[error(transparent)]
    GatewayBot(#[from] GatewayBotError),
    /// The configuration does not fit (for example a shard id beyond the count).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The profile settings do not work.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The Redis URL cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output cannot start (stdio's threads).
    #[error("cannot start the output: {0}")]
    Output(#[from] std::io::Error),
    /// Every shard stopped for good on its own.
    #[error("every shard stopped: {0}")]
    AllShardsStopped(StopReason),
}

/// How long shutdown waits for shards (their own grace for confirms, 5 s, is inside the core).
/// With the Redis flush and the AMQP close below, a stop stays within the 10 s that process
/// supervisors commonly allow between SIGTERM and SIGKILL.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs Gatehouse until `shutdown` completes (then shuts down cleanly) or every shard stops.
pub async fn run<R: Runtime>(
    rt: R,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    tracing::info!(api_base = %config.discord.api_base, "asking Discord for the gateway");
    let bot = fetch_gateway_bot(&config.discord.api_base, &config.discord.token).await?;
    tracing::info!(
        url = %bot.url,
        recommended_shards = bot.shards,
        max_concurrency = bot.session_start_limit.max_concurrency,
        remaining = bot.session_start_limit.remaining,
        "gateway"
    );
    run_with_gateway(rt, config, bot, shutdown).await
}

/// [`run`] with `/gateway/bot`'s answer already at hand.
pub async fn run_with_gateway<R: Runtime>(
    rt: R,
    mut config: Config,
    bot: GatewayBot,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    crate::outputs::adjust(&mut config);
    let cluster = config.cluster(bot.shards)?;
    let router = Router::new(&config.profile, &cluster)?;
    crate::predecessor_metrics::enable(config.profile.kind, cluster.owned().len());
    if let Some(channel) = config.discord.log_channel {
        crate::log_channel::start(&config.discord.api_base, &config.discord.token, channel);
    }
    tracing::info!(
        shard_count = cluster.shard_count(),
        owned = ?cluster.owned(),
        profile = ?config.profile.kind,
        output = ?config.broker.kind(),
        amqp = %config.amqp.url,
        redis = %config.redis.url,
        "starting"
    );
    let mut store = if config.redis.enabled {
        Some(SessionStore::open(
            &rt,
            &config.redis.url,
            &config.redis.key_prefix,
        )?)
    } else {
        tracing::warn!(
            "no Redis (redis.enabled is off): sessions live in memory only, so a restart \
             identifies every shard afresh and Discord's replay of the missed events is lost"
        );
        None
    };
    // The identify limits are shared with every process of the bot through Redis, when
    // there is one (otherwise the local rule decides alone).
    let shared = store.as_ref().map(|store| {
        ClusterStore::new(
            store.target(),
            proto_core::cluster::ClusterKeys::new(
                &config.redis.key_prefix,
                &proto_core::cluster::bot_id_from_token(config.discord.token.expose()),
                config.cluster.name.as_deref().unwrap_or_default(),
            ),
            cluster_mode::member_name(),
        )
    });
    // Cluster mode needs Redis (the configuration refuses it without).
    let clustered = config.cluster.name.clone().filter(|_| shared.is_some());
    // In cluster mode the cluster's shard count in Redis wins (a re-shard changes it); the
    // first member records the configured one.
    let (cluster, router) = match (&clustered, &shared) {
        (Some(_), Some(shared)) => {
            let count = cluster_mode::agreed_count(
                &rt,
                shared.clone(),
                cluster.shard_count(),
                config.discord.shard_count,
            )
            .await;
            if count == cluster.shard_count() {
                (cluster, router)
            } else {
                let cluster = proto_core::profile::ClusterInfo::new(count, 0..count)?;
                let router = Router::new(&config.profile, &cluster)?;
                (cluster, router)
            }
        }
        _ => (cluster, router),
    };
    // In cluster mode each shard's session is loaded when its lease is held.
    let at_start: &[u32] = if clustered.is_some() {
        &[]
    } else {
        cluster.owned()
    };
    let store_policy = StorePolicy {
        identify_anyway_after: config.redis.identify_anyway_after,
        ..StorePolicy::default()
    };
    futures_util::pin_mut!(shutdown);
    if !config.discord.resume {
        tracing::info!("discord.resume is off: every shard identifies afresh");
    }
    // Every shard waits for its snapshot: while Redis is down this waits (retrying), because
    // a shard started without it would start a new session and lose Discord's replay.
    let loaded = match store.as_mut().filter(|_| config.discord.resume) {
        Some(store) => {
            let shard_ids: Vec<ShardId> = at_start
                .iter()
                .filter_map(|&number| cluster.shard(number))
                .collect();
            let load = store.load_sessions(&shard_ids, store_policy);
            futures_util::pin_mut!(load);
            match futures_util::future::select(load, shutdown.as_mut()).await {
                futures_util::future::Either::Left((loaded, _)) => loaded,
                futures_util::future::Either::Right(_) => {
                    tracing::info!("stopped before the shards started (waiting for Redis)");
                    return Ok(());
                }
            }
        }
        None => LoadedSessions {
            sessions: at_start.iter().map(|&n| (n, None)).collect(),
            unread: Vec::new(),
        },
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let outputs = Outputs::start(&rt, &config, &router, cluster.owned(), stop_rx.clone())?;

    if let Some(broker) = outputs
        .amqp()
        .filter(|_| config.profile.kind == ProfileKind::Cordis)
    {
        // The Cordis spec: ensure the broker connection before connecting to Discord.
        tracing::info!("cordis profile: waiting for RabbitMQ before starting the shards");
        let mut links = broker.watch();
        let connected = links.wait_for(Option::is_some);
        futures_util::pin_mut!(connected);
        if let futures_util::future::Either::Right(_) =
            futures_util::future::select(connected, shutdown.as_mut()).await
        {
            tracing::info!("interrupted before RabbitMQ was reachable");
            let _ = stop_tx.send(true);
            return Ok(());
        }
    }

    let inputs = ShardInputs::new(clustered.is_some());
    let mut sessions = loaded.sessions;
    for &number in at_start {
        match sessions.get(&number) {
            Some(Some(s)) => tracing::info!(
                shard = number,
                sequence = s.sequence,
                "resuming the stored session"
            ),
            _ if loaded.unread.contains(&number) => tracing::warn!(
                shard = number,
                "identifying without reading the stored session (Redis unreachable)"
            ),
            _ => {}
        }
    }
    let identifying_at_start = sessions
        .iter()
        .filter(|(_, session)| session.is_none())
        .map(|(&number, _)| number)
        .collect();
    let mut session_start_limit = bot.session_start_limit;
    if let Some(concurrency) = config.discord.max_concurrency {
        tracing::info!(
            configured = concurrency,
            discord = session_start_limit.max_concurrency,
            "identify concurrency set by the configuration"
        );
        session_start_limit.max_concurrency = concurrency;
    }
    let identify = identify::start(
        &rt,
        session_start_limit,
        inputs.clone(),
        identifying_at_start,
        shared.clone(),
    );
    let launch_store = store.as_ref().map(SessionStore::another);

    let writer = match store {
        Some(store) => {
            let saved = sessions.values().flatten().cloned().collect();
            store.start_writer(
                config.profile.kind,
                cluster.shard_count(),
                store_policy.retry,
                saved,
            )
        }
        None => crate::session_store::StoreWriter::discarding(),
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u32, u32, Option<StopReason>)>();
    let seed_base = config
        .discord
        .seed
        .unwrap_or_else(|| RandomState::new().hash_one(Instant::now()));
    let launcher = Launcher {
        rt: rt.clone(),
        config: config.clone(),
        bot: bot.clone(),
        router: router.clone(),
        shard_count: cluster.shard_count(),
        outputs: outputs.clone(),
        writer: writer.clone(),
        identify,
        inputs: inputs.clone(),
        done: done_tx,
        seed_base,
        store: launch_store,
        store_policy,
        resume: config.discord.resume,
        process_shards: cluster.owned().len(),
        publishing: Arc::new(AtomicBool::new(true)),
        replay: Duration::ZERO,
        command_inputs: None,
        arrived: Arc::default(),
    };

    let commands = outputs.commands(
        &rt,
        &config,
        &router,
        cluster.owned(),
        crate::commands::prefetch(cluster.owned(), config.limits.command_queue_capacity),
        stop_rx.clone(),
    )?;
    crate::commands::start(
        &rt,
        commands,
        router,
        inputs.clone(),
        cluster.owned(),
        config.limits.command_queue_capacity,
        stop_rx.clone(),
    );

    if let (Some(name), Some(shared)) = (clustered, shared) {
        let sets = SetFactory {
            launcher,
            limit: session_start_limit,
            shared: shared.clone(),
            prefix: config.redis.key_prefix.clone(),
            cluster: name.clone(),
        };
        let settings = cluster_mode::Settings {
            name,
            prefix: config.redis.key_prefix.clone(),
            shard_count: cluster.shard_count(),
            explicit: config.discord.shard_ids.clone(),
            timings: proto_core::cluster::LeaseTimings::new(Duration::from_millis(
                config.cluster.lease_ms,
            )),
            shutdown_timeout: SHUTDOWN_TIMEOUT,
        };
        let result = cluster_mode::run(
            rt.clone(),
            sets,
            shared,
            settings,
            shutdown.as_mut(),
            done_rx,
        )
        .await;
        close(&rt, &writer, &outputs, stop_tx).await;
        return result.map_err(RunError::AllShardsStopped);
    }

    for &number in cluster.owned() {
        let session = sessions.remove(&number).flatten();
        launcher.spawn(number, session);
    }
    drop(launcher);

    let mut running = cluster.owned().len();
    let mut last_reason = None;
    let shutdown_requested = loop {
        match futures_util::future::select(shutdown.as_mut(), Box::pin(done_rx.recv())).await {
            futures_util::future::Either::Left(_) => break true,
            futures_util::future::Either::Right((Some((_, number, reason)), _)) => {
                let reason = reason.unwrap_or(StopReason::Shutdown);
                tracing::warn!(shard = number, %reason, "shard stopped");
                running -= 1;
                last_reason = Some(reason);
                if running == 0 {
                    break false;
                }
            }
            futures_util::future::Either::Right((None, _)) => break false,
        }
    };

    if shutdown_requested {
        tracing::info!("shutting down: closing shards with a resumable code");
        inputs.send_all(|| ShardInput::Shutdown);
        let deadline = rt.now() + SHUTDOWN_TIMEOUT;
        while running > 0 {
            let sleep = rt.sleep_until(deadline);
            futures_util::pin_mut!(sleep);
            match futures_util::future::select(Box::pin(done_rx.recv()), sleep).await {
                futures_util::future::Either::Left((Some(_), _)) => running -= 1,
                futures_util::future::Either::Left((None, _)) => break,
                futures_util::future::Either::Right(_) => {
                    tracing::warn!(running, "shards did not stop in time");
                    break;
                }
            }
        }
    }

    close(&rt, &writer, &outputs, stop_tx).await;

    match (shutdown_requested, last_reason) {
        (false, Some(reason)) => Err(RunError::AllShardsStopped(reason)),
        _ => Ok(()),
    }
}

/// The end of the shutdown order: the final session snapshots reach Redis, then the output
/// closes.
async fn close<R: Runtime>(
    rt: &R,
    writer: &StoreWriter,
    outputs: &Outputs,
    stop_tx: watch::Sender<bool>,
) {
    let flushed = writer.flush();
    let sleep = rt.sleep(Duration::from_secs(1));
    futures_util::pin_mut!(flushed, sleep);
    futures_util::future::select(flushed, sleep).await;

    let _ = stop_tx.send(true);
    // Give the output a moment to close politely.
    outputs.closed(rt).await;
    tracing::info!("stopped");
}

/// Everything needed to start one shard task, at start-up or (cluster mode) later.
struct Launcher<R: Runtime> {
    rt: R,
    config: Config,
    bot: GatewayBot,
    router: Router,
    shard_count: u32,
    outputs: Outputs,
    writer: StoreWriter,
    identify: IdentifyClient,
    inputs: ShardInputs,
    /// Where each shard's end is reported: (shard count, shard, why).
    done: mpsc::UnboundedSender<(u32, u32, Option<StopReason>)>,
    seed_base: u64,
    /// Where sessions are loaded from (none without Redis).
    store: Option<SessionStore<R>>,
    /// How loads retry while Redis fails.
    store_policy: StorePolicy,
    /// Whether stored sessions are resumed (`discord.resume`).
    resume: bool,
    /// The shards this process may run (cluster mode: all of the bot's or the explicit ones),
    /// which share its bound on unconfirmed bytes.
    process_shards: usize,
    /// Whether the set's shards publish (cluster mode: a re-shard's new set warms up first).
    publishing: Arc<AtomicBool>,
    /// While not publishing, how much of what each shard received it keeps to publish when
    /// told to ([`proto_core::shard::ReplayLimits::window`]).
    replay: Duration,
    /// Cluster mode: where worker commands look shards up (the publishing sets' shards are
    /// registered there; `inputs` is the set's own).
    command_inputs: Option<ShardInputs>,
    /// Per shard running: whether its guilds arrived.
    arrived: Arc<Mutex<HashMap<u32, Arc<AtomicBool>>>>,
}

impl<R: Runtime> Launcher<R> {
    /// Starts shard `number` (resuming `session`); reports its end on `done` (`None` when
    /// stopped through the returned handle).
    fn spawn(
        &self,
        number: u32,
        session: Option<proto_core::session::SessionSnapshot>,
    ) -> futures_util::future::AbortHandle {
        let shard_id = ShardId::new(number, self.shard_count)
            .expect("only shards below the count are started");
        let mut shard_config = shard_config(
            &self.config,
            &self.bot,
            &self.router,
            shard_id,
            session,
            self.seed_base ^ u64::from(number),
            self.process_shards,
        );
        shard_config.publishing = self.publishing.load(Ordering::SeqCst);
        shard_config.replay.window = self.replay;
        let shard = Shard::new(shard_config, self.rt.now());
        let (tx, rx) = crate::lazy_channel::unbounded();
        let ticket = self.inputs.insert(number, tx.clone());
        let commands = self.command_inputs.clone();
        if let Some(commands) = commands.as_ref().filter(|_| shard.publishing()) {
            commands.insert_channel(number, tx.clone());
        }
        let arrived = Arc::new(AtomicBool::new(false));
        self.arrived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(number, arrived.clone());
        let io = ShardIo {
            rt: self.rt.clone(),
            inputs: rx,
            output: self.outputs.client(number),
            store: self.writer.clone(),
            identify: self.identify.clone(),
            max_message: self.config.limits.max_message,
            outbox: OutboxConfig {
                confirm_timeout: Duration::from_secs(self.config.limits.confirm_timeout_secs),
                unroutable: self.router.unroutable(),
            },
            guilds_arrived: Some(arrived),
        };
        let done = self.done.clone();
        let inputs = self.inputs.clone();
        let count = self.shard_count;
        let (task, abort) = futures_util::future::abortable(shard_task::run(shard, io));
        // `map`, not an `async` block awaiting `task`: such a block keeps the captured future
        // and the one it awaits side by side, twice the shard's task for its whole life
        // (BENCHMARKS.md section 4: memory per idle shard).
        self.rt.spawn(task.map(move |result| {
            inputs.remove(number, ticket);
            if let Some(commands) = commands {
                commands.remove_channel(number, &tx);
            }
            let _ = done.send((count, number, result.ok()));
        }));
        abort
    }
}

impl<R: Runtime> ShardHost for Launcher<R> {
    async fn start(&self, number: u32) -> futures_util::future::AbortHandle {
        let store = self.store.as_ref().filter(|_| self.resume);
        let session = match (store, ShardId::new(number, self.shard_count)) {
            (Some(store), Some(id)) => store
                .another()
                .load_sessions(&[id], self.store_policy)
                .await
                .sessions
                .remove(&number)
                .flatten(),
            _ => None,
        };
        if let Some(s) = &session {
            tracing::info!(
                shard = number,
                sequence = s.sequence,
                "resuming the stored session"
            );
        }
        self.spawn(number, session)
    }

    fn send(&self, number: u32, input: ShardInput) {
        if let Some(tx) = self.inputs.get(number) {
            let _ = tx.send(input);
        }
    }

    async fn flush(&self) {
        self.writer.flush().await;
    }

    fn publish(&self) {
        self.publishing.store(true, Ordering::SeqCst);
        for (number, tx) in self.inputs.entries() {
            let _ = tx.send(ShardInput::Publish(true));
            if let Some(commands) = &self.command_inputs {
                commands.insert_channel(number, tx);
            }
        }
    }

    fn arrived(&self, number: u32) -> bool {
        self.arrived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&number)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

/// Cluster mode: opens each shard set the cluster runs (one per shard count; two at once
/// during a re-shard), each with its own router, identify coordinator (sharing the bot's
/// limits through Redis), session keys and shard inputs.
struct SetFactory<R: Runtime> {
    /// The process's launcher; each set's is derived from it.
    launcher: Launcher<R>,
    limit: proto_core::identify::SessionStartLimit,
    shared: ClusterStore,
    prefix: String,
    cluster: String,
}

impl<R: Runtime> cluster_mode::ShardSets for SetFactory<R> {
    type Host = Launcher<R>;

    fn open(&self, count: u32, publishing: bool, replay: Duration) -> Launcher<R> {
        let base = &self.launcher;
        let router = proto_core::profile::ClusterInfo::new(count, 0..count)
            .and_then(|info| Router::new(&base.config.profile, &info))
            .unwrap_or_else(|e| {
            tracing::error!(error = %e, shard_count = count, "the profile refuses this shard count; routing as for the first one");
            base.router.clone()
        });
        let inputs = ShardInputs::new(true);
        let identify = identify::start(
            &base.rt,
            self.limit,
            inputs.clone(),
            Default::default(),
            Some(self.shared.clone()),
        );
        let set_prefix = cluster_mode::set_key_prefix(&self.prefix, &self.cluster, count);
        let store = base
            .config
            .redis
            .enabled
            .then(|| SessionStore::open(&base.rt, &base.config.redis.url, &set_prefix).ok())
            .flatten();
        let writer = match &store {
            Some(store) => store.another().start_writer(
                base.config.profile.kind,
                count,
                base.store_policy.retry,
                Vec::new(),
            ),
            None => StoreWriter::discarding(),
        };
        Launcher {
            rt: base.rt.clone(),
            config: base.config.clone(),
            bot: base.bot.clone(),
            router,
            shard_count: count,
            outputs: base.outputs.clone(),
            writer,
            identify,
            inputs,
            done: base.done.clone(),
            seed_base: base.seed_base,
            store,
            store_policy: base.store_policy,
            resume: base.resume,
            process_shards: count as usize,
            publishing: Arc::new(AtomicBool::new(publishing)),
            replay,
            command_inputs: Some(base.inputs.clone()),
            arrived: Arc::default(),
        }
    }
}

fn shard_config(
    config: &Config,
    bot: &GatewayBot,
    router: &Router,
    shard: ShardId,
    session: Option<proto_core::session::SessionSnapshot>,
    seed: u64,
    owned: usize,
) -> ShardConfig {
    let mut shard_config = ShardConfig::new(
        shard,
        config.discord.token.clone(),
        bot.url.clone(),
        router.clone(),
    );
    shard_config.intents = config.discord.intents;
    shard_config.large_threshold = config.discord.large_threshold;
    shard_config.presence = config.discord.presence.clone();
    shard_config.compression = config.discord.compression;
    shard_config.encoding = config.discord.encoding;
    shard_config.max_payload = config.limits.max_payload;
    shard_config.seed = seed;
    shard_config.command_queue_capacity = config.limits.command_queue_capacity;
    shard_config.session = session;
    shard_config.max_unconfirmed = config.limits.max_unconfirmed_publishes;
    // The process's byte bound, shared out equally: the shards together never hold more
    // (beyond the one message each that reaches its share).
    shard_config.max_unconfirmed_bytes = config.limits.max_unconfirmed_bytes / owned.max(1);
    shard_config.api_version = config.discord.api_version;
    shard_config.hello_timeout = config.discord.hello_timeout;
    shard_config
}
