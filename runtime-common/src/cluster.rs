//! Cluster mode's glue: Redis calls for the core's cluster rules, and the task that drives
//! this process's `ClusterNode` (member key, leases, starting and stopping shards).
//!
//! Owns: running the core's scripts (`proto_core::cluster::scripts`) and member keys on
//! Redis with short timeouts (an unanswered call counts as Redis being unavailable), the
//! member name, the live status of the shards running here (`<prefix>:cluster:<name>:live:
//! <shard>`, for `gatehouse status`), and doing what the node asks: start a shard (with its
//! stored session, so it RESUMES), hand one over (close it resumably, flush its session to
//! Redis, then release the lease), or stop one at once when its lease is lost. Does not own any
//! decision (the core's `cluster` module) or the shards themselves (`gateway`, `shard_task`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, Either, select};
use proto_core::cluster::{
    Claim, ClaimReply, ClusterKeys, ClusterNode, LeaseReply, LeaseRequest, LeaseTimings,
    NodeAction, Reshard, ReshardAction, ReshardTimings, ShardCounts, StopKind, scripts,
};
use proto_core::identify::SessionStartLimit;
use proto_core::shard::StopReason;
use tokio::sync::mpsc;

use crate::redis_link::{RedisConnection, RedisTarget, Timeouts};
use crate::runtime::Runtime;
use crate::shard_inputs::ShardInput;

/// How long one cluster call to Redis may take before it counts as unavailable (lease calls:
/// at most a twentieth of the lease time, well inside the lease's safety margin, so that a
/// hanging call cannot delay noticing an expired lease past it).
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// [`CALL_TIMEOUT`] for the lease calls of a lease of `ttl`.
fn lease_call_timeout(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(100), CALL_TIMEOUT)
}

/// This machine's name (`HOSTNAME`, else `/etc/hostname`, else `gatehouse`), without `:`, `*`
/// or spaces.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains([':', '*', ' ']))
        .unwrap_or_else(|| "gatehouse".to_owned())
}

/// A name for this process, unique in the cluster: host, process id and a random part.
pub fn member_name() -> String {
    let host = host_name();
    let random = RandomState::new().hash_one(Instant::now()) & 0xff_ffff;
    format!("{host}-{}-{random:06x}", std::process::id())
}

/// One shard's live figures as `gatehouse status` shows them (written by its owner).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveShard {
    /// The shard.
    pub shard: u32,
    /// The member running it.
    pub owner: String,
    /// The latest heartbeat round trip in milliseconds.
    pub latency_ms: Option<f64>,
    /// The last sequence received.
    pub sequence: Option<u64>,
    /// When its last event arrived (ms since the Unix epoch; seen at the owner's 1 s-ish
    /// reporting granularity).
    pub last_event_at_ms: Option<u64>,
    /// When this was written (ms since the Unix epoch).
    pub updated_at_ms: u64,
}

/// The key prefix the shard set of `count` keeps its sessions and statuses under, in cluster
/// `cluster` (`<prefix>:cluster:<name>:set:<count>`, so that two sets running at once during a
/// re-shard never overwrite each other's sessions).
pub fn set_key_prefix(prefix: &str, cluster: &str, count: u32) -> String {
    let prefix = if prefix.is_empty() {
        proto_core::store::EMPTY_PREFIX_NAMESPACE
    } else {
        prefix
    };
    format!("{prefix}:cluster:{cluster}:set:{count}")
}

/// The key of a shard's live figures (`<prefix>:cluster:<name>:live:<shard>`).
pub fn live_key(prefix: &str, cluster: &str, shard: u32) -> String {
    format!("{prefix}:cluster:{cluster}:live:{shard}")
}

/// The pattern of every cluster's live keys under `prefix`.
pub fn live_pattern(prefix: &str) -> String {
    format!("{prefix}:cluster:*:live:*")
}

/// Redis for the cluster rules (cheap to clone), connected on first use and again after a
/// failure.
#[derive(Clone)]
pub(crate) struct ClusterStore {
    target: RedisTarget,
    connection: Option<RedisConnection>,
    keys: ClusterKeys,
    member: String,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("keys", &self.keys)
            .field("member", &self.member)
            .finish()
    }
}

/// Why refreshing this member's key and reading the others' failed (logged).
#[derive(Debug, thiserror::Error)]
enum MembershipError {
    /// No connection to Redis.
    #[error("cannot connect")]
    Unreachable,
    /// A Redis call failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The calls did not finish within the call timeout.
    #[error("timed out")]
    TimedOut,
}

async fn within<R: Runtime, T>(rt: &R, call: impl Future<Output = T>) -> Option<T> {
    within_for(rt, CALL_TIMEOUT, call).await
}

async fn within_for<R: Runtime, T>(
    rt: &R,
    timeout: Duration,
    call: impl Future<Output = T>,
) -> Option<T> {
    let sleep = rt.sleep(timeout);
    futures_util::pin_mut!(call, sleep);
    match select(call, sleep).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// `EVAL script numkeys`, keys and arguments to follow (the scripts are a few lines; Redis
/// caches them by their hash).
fn eval(script: &str, keys: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys);
    cmd
}

impl ClusterStore {
    pub(crate) fn new(target: RedisTarget, keys: ClusterKeys, member: String) -> Self {
        Self {
            target,
            connection: None,
            keys,
            member,
        }
    }

    /// The connection, opened now if there is none (or, through Sentinel, if the primary
    /// may have moved).
    async fn connect<R: Runtime>(&mut self, rt: &R) -> Option<RedisConnection> {
        if let Some(connection) = &self.connection
            && !connection.is_stale()
        {
            return Some(connection.clone());
        }
        self.connection = None;
        let timeouts = Timeouts {
            connect: CALL_TIMEOUT,
            response: CALL_TIMEOUT,
        };
        match within(rt, self.target.connect(rt, timeouts)).await {
            Some(Ok(connection)) => {
                self.connection = Some(connection.clone());
                Some(connection)
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "cannot connect to Redis for the cluster");
                None
            }
            None => None,
        }
    }

    pub(crate) fn member(&self) -> &str {
        &self.member
    }

    /// Runs the identify claim script; any failure is `Unavailable`.
    pub(crate) async fn claim_identify<R: Runtime>(
        &mut self,
        rt: &R,
        claim: &Claim,
        limit: &SessionStartLimit,
    ) -> ClaimReply {
        let mut eval = eval(scripts::IDENTIFY_CLAIM, 2);
        eval.arg(
            self.keys
                .identify_bucket(claim.max_concurrency, claim.bucket),
        )
        .arg(self.keys.identify_remaining())
        .arg(&self.member)
        .arg(claim.period.as_millis() as u64)
        .arg(limit.remaining)
        .arg(limit.reset_after_ms.max(1));
        let Some(mut connection) = self.connect(rt).await else {
            return ClaimReply::Unavailable;
        };
        let call = eval.query_async::<Vec<i64>>(&mut connection);
        let reply = match within(rt, call).await {
            Some(Ok(reply)) => scripts::decode_identify_claim(&reply),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "identify claim failed in Redis");
                ClaimReply::Unavailable
            }
            None => ClaimReply::Unavailable,
        };
        if let ClaimReply::Exhausted { reset_in } = reply {
            tracing::warn!(
                ?reset_in,
                "no session starts left for the bot until Discord's reset; shards wait to identify"
            );
        }
        reply
    }

    async fn lease<R: Runtime>(
        &mut self,
        rt: &R,
        shard_count: u32,
        shard: u32,
        request: LeaseRequest,
        ttl: Duration,
    ) -> LeaseReply {
        let key = self.keys.lease(shard_count, shard);
        let eval = match request {
            LeaseRequest::Claim => {
                let mut eval = eval(scripts::LEASE_CLAIM, 1);
                eval.arg(key).arg(&self.member).arg(ttl.as_millis() as u64);
                eval
            }
            LeaseRequest::Release => {
                let mut eval = eval(scripts::LEASE_RELEASE, 1);
                eval.arg(key).arg(&self.member);
                eval
            }
        };
        let Some(mut connection) = self.connect(rt).await else {
            return LeaseReply::Unavailable;
        };
        let call = eval.query_async::<i64>(&mut connection);
        match within_for(rt, lease_call_timeout(ttl), call).await {
            Some(Ok(reply)) => scripts::decode_lease(reply),
            Some(Err(e)) => {
                tracing::warn!(shard, error = %e, "lease call failed in Redis");
                LeaseReply::Unavailable
            }
            None => {
                tracing::warn!(shard, "lease call to Redis timed out");
                LeaseReply::Unavailable
            }
        }
    }

    /// Reads the cluster's shard counts, recording `default` as the current count when no
    /// member did yet. `None` when Redis cannot be asked.
    pub(crate) async fn counts<R: Runtime>(&mut self, rt: &R, default: u32) -> Option<ShardCounts> {
        let mut eval = eval(scripts::COUNTS_READ, 1);
        eval.arg(self.keys.shard_counts()).arg(default);
        let mut connection = self.connect(rt).await?;
        match within(rt, eval.query_async::<Vec<i64>>(&mut connection)).await {
            Some(Ok(reply)) => scripts::decode_counts(&reply),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster's shard counts");
                None
            }
            None => None,
        }
    }

    /// Runs a script on the counts hash with `args`; `None` when Redis cannot be asked.
    async fn counts_script<R: Runtime, T: redis::FromRedisValue>(
        &mut self,
        rt: &R,
        script: &str,
        args: &[String],
    ) -> Option<T> {
        let mut eval = eval(script, 1);
        eval.arg(self.keys.shard_counts());
        for arg in args {
            eval.arg(arg);
        }
        let mut connection = self.connect(rt).await?;
        match within(rt, eval.query_async::<T>(&mut connection)).await {
            Some(Ok(reply)) => Some(reply),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "re-shard call failed in Redis");
                None
            }
            None => None,
        }
    }

    /// Marks `shards` of the set of `count` ready for `ttl`, and counts the ready marks of
    /// the set of `target` (`None`: Redis could not be asked).
    async fn ready<R: Runtime>(
        &mut self,
        rt: &R,
        count: u32,
        shards: &[u32],
        target: u32,
        ttl: Duration,
    ) -> Option<u32> {
        let mut pipe = redis::pipe();
        for &shard in shards {
            pipe.cmd("SET")
                .arg(self.keys.ready(count, shard))
                .arg(&self.member)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .ignore();
        }
        let keys: Vec<String> = (0..target).map(|s| self.keys.ready(target, s)).collect();
        pipe.cmd("EXISTS").arg(keys);
        let mut connection = self.connect(rt).await?;
        match within(rt, pipe.query_async::<(u32,)>(&mut connection)).await {
            Some(Ok((ready,))) => Some(ready),
            _ => None,
        }
    }

    /// Refreshes this member's key (its value names the shard sets it runs) and lists the
    /// live members with their sets.
    async fn refresh_members<R: Runtime>(
        &mut self,
        rt: &R,
        ttl: Duration,
        sets: &[u32],
    ) -> Result<Vec<(String, Vec<u32>)>, MembershipError> {
        let key = self.keys.member(&self.member);
        let pattern = self.keys.member_pattern();
        let value = member_value(crate::status::epoch_ms(rt.wall_clock()), sets);
        let Some(mut connection) = self.connect(rt).await else {
            return Err(MembershipError::Unreachable);
        };
        let connection = &mut connection;
        let call = async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async::<()>(connection)
                .await?;
            let mut keys = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(connection)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let values: Vec<Option<String>> = if keys.is_empty() {
                Vec::new()
            } else {
                redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(connection)
                    .await?
            };
            Ok::<_, redis::RedisError>(keys.into_iter().zip(values).collect::<Vec<_>>())
        };
        match within(rt, call).await {
            Some(Ok(entries)) => Ok(entries
                .iter()
                .filter_map(|(k, v)| {
                    let member = self.keys.member_of_key(k)?.to_owned();
                    Some((member, member_sets(v.as_deref()?)))
                })
                .collect()),
            Some(Err(e)) => Err(e.into()),
            None => Err(MembershipError::TimedOut),
        }
    }

    /// Deletes this member's key (the others rebalance at once).
    async fn leave<R: Runtime>(&mut self, rt: &R) {
        let key = self.keys.member(&self.member);
        let mut del = redis::cmd("DEL");
        del.arg(key);
        if let Some(mut connection) = self.connect(rt).await {
            let _ = within(rt, del.query_async::<()>(&mut connection)).await;
        }
    }

    async fn write_live<R: Runtime>(
        &mut self,
        rt: &R,
        values: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) {
        if values.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, value) in values {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .ignore();
        }
        let Some(mut connection) = self.connect(rt).await else {
            return;
        };
        let call = pipe.query_async::<()>(&mut connection);
        if let Some(Err(e)) = within(rt, call).await {
            tracing::debug!(error = %e, "cannot write the live shard status");
        }
    }
}

/// A member key's value: when it was written, and the shard sets the member runs
/// (`<ms>;4,8`).
fn member_value(now_ms: u64, sets: &[u32]) -> String {
    let sets: Vec<String> = sets.iter().map(u32::to_string).collect();
    format!("{now_ms};{}", sets.join(","))
}

/// The shard sets a member key's value names (none for a value without them).
fn member_sets(value: &str) -> Vec<u32> {
    value
        .split_once(';')
        .map(|(_, sets)| sets.split(',').filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_default()
}

/// Opens the shard sets of the process (one per shard count; a re-shard runs two at once).
pub(crate) trait ShardSets: Send + Sync {
    /// One set's launcher.
    type Host: ShardHost;
    /// Opens the set of `count` shards, publishing or warming. Its shards' ends are reported
    /// on the done channel with `count`.
    fn open(&self, count: u32, publishing: bool) -> Self::Host;
}

/// What the cluster task needs from the process: starting a shard and talking to it.
pub(crate) trait ShardHost: Send + Sync {
    /// Loads shard `number`'s session and starts its task; its end is reported on the done
    /// channel. Returns a handle that stops it at once.
    fn start(&self, number: u32) -> impl Future<Output = AbortHandle> + Send;
    /// Sends shard `number` an input, if it runs here.
    fn send(&self, number: u32, input: ShardInput);
    /// Waits until the session snapshots queued so far are in Redis.
    fn flush(&self) -> impl Future<Output = ()> + Send;
    /// Starts publishing the set's events (the shards running and those started later).
    fn publish(&self);
    /// Whether shard `number` is READY with every guild arrived.
    fn arrived(&self, number: u32) -> bool;
}

/// The cluster task's settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) shard_count: u32,
    pub(crate) explicit: Option<Vec<u32>>,
    pub(crate) timings: LeaseTimings,
    pub(crate) shutdown_timeout: Duration,
}

/// The cluster's current shard count (recording `configured` when no member did yet): a
/// re-shard may have changed it since this process's configuration was written. Retries for
/// a few seconds while Redis is away, then goes with `configured`.
pub(crate) async fn agreed_count<R: Runtime>(
    rt: &R,
    mut store: ClusterStore,
    configured: u32,
) -> u32 {
    for _ in 0..5 {
        if let Some(counts) = store.counts(rt, configured).await {
            if counts.current != configured {
                tracing::warn!(
                    configured,
                    cluster = counts.current,
                    "the cluster runs another shard count than configured (a re-shard): using the cluster's"
                );
            }
            return counts.current;
        }
        rt.sleep(Duration::from_secs(1)).await;
    }
    tracing::warn!(
        configured,
        "cannot read the cluster's shard count from Redis; assuming the configured one"
    );
    configured
}

/// One shard set running here.
struct SetRun<H> {
    host: H,
    node: ClusterNode,
    aborts: HashMap<u32, AbortHandle>,
    /// Retired (or shutting down): every shard is being handed over; dropped once done.
    closing: bool,
}

impl<H: ShardHost> SetRun<H> {
    /// Does what the set's node asks, until it asks nothing more.
    async fn drive<R: Runtime>(
        &mut self,
        rt: &R,
        store: &mut ClusterStore,
        count: u32,
        ttl: Duration,
    ) {
        while let Some(action) = self.node.poll_action(rt.now()) {
            match action {
                NodeAction::Lease { shard, request } => {
                    let reply = store.lease(rt, count, shard, request, ttl).await;
                    self.node.handle_lease_reply(rt.now(), shard, reply);
                }
                NodeAction::Start(shard) => {
                    tracing::info!(shard, shard_count = count, "lease held: starting the shard");
                    self.aborts.insert(shard, self.host.start(shard).await);
                }
                NodeAction::Stop {
                    shard,
                    kind: StopKind::HandOver,
                } => {
                    tracing::info!(shard, shard_count = count, "handing the shard over");
                    self.host.send(shard, ShardInput::Shutdown);
                }
                NodeAction::Stop {
                    shard,
                    kind: StopKind::LeaseLost,
                } => {
                    tracing::error!(
                        shard,
                        shard_count = count,
                        "lost the shard's lease (Redis unreachable or another member took it): \
                         stopping it at once, publishing nothing more for it"
                    );
                    if let Some(abort) = self.aborts.remove(&shard) {
                        abort.abort();
                    }
                }
            }
        }
    }
}

/// Runs this process as a member of the cluster until `shutdown` (then hands every shard
/// over) or until a shard of the publishing set stops for good on its own (then hands the
/// others over and returns why). Runs the shard sets the cluster's counts name (`Reshard`):
/// the current one, and during a re-shard the target beside it.
pub(crate) async fn run<R: Runtime, S: ShardSets>(
    rt: R,
    sets_factory: S,
    mut store: ClusterStore,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
    mut done: mpsc::UnboundedReceiver<(u32, u32, Option<StopReason>)>,
) -> Result<(), StopReason> {
    let timings = settings.timings;
    let poll = timings.renew_after.min(Duration::from_secs(1));
    // Announce this member (with the sets it will run) and give processes starting at the
    // same time a moment to do the same, so that the first placement already counts them.
    let first = store.counts(&rt, settings.shard_count).await;
    let announced: Vec<u32> = first
        .iter()
        .flat_map(|c| [Some(c.current), c.pending()])
        .flatten()
        .collect();
    let _ = store.refresh_members(&rt, timings.ttl, &announced).await;
    rt.sleep(poll).await;
    tracing::info!(
        cluster = settings.name,
        member = store.member(),
        lease = ?timings.ttl,
        "joined the cluster"
    );
    let mut reshard = Reshard::new(ReshardTimings::new(poll));
    let mut sets: BTreeMap<u32, SetRun<S::Host>> = BTreeMap::new();
    let mut next_refresh = rt.now();
    let mut live = LiveTracker::default();
    let mut fatal = None;
    let mut give_up_at = None;
    futures_util::pin_mut!(shutdown);
    let mut shutdown_seen = false;
    loop {
        let now = rt.now();
        let refresh = now >= next_refresh;
        if refresh {
            next_refresh = now + poll;
            if give_up_at.is_none()
                && let Some(counts) = store.counts(&rt, settings.shard_count).await
            {
                reshard.handle_counts(rt.now(), counts);
            }
        }
        reshard.handle_timeout(rt.now());
        apply_reshard(
            &rt,
            &mut reshard,
            &mut sets,
            &sets_factory,
            &mut store,
            &settings,
        )
        .await;
        if refresh {
            if give_up_at.is_none() {
                let running: Vec<u32> = sets
                    .iter()
                    .filter(|(_, set)| !set.closing)
                    .map(|(&count, _)| count)
                    .collect();
                match store.refresh_members(&rt, timings.ttl, &running).await {
                    Ok(members) => {
                        for (count, set) in sets.iter_mut().filter(|(_, set)| !set.closing) {
                            let of_set = members
                                .iter()
                                .filter(|(_, sets)| sets.contains(count))
                                .map(|(member, _)| member.clone());
                            set.node.handle_members(rt.now(), of_set);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot refresh the cluster membership in Redis")
                    }
                }
                if let Some(target) = reshard.counts().and_then(|c| c.pending()) {
                    let arrived: Vec<u32> = sets
                        .get(&target)
                        .filter(|set| !set.closing)
                        .map(|set| {
                            set.node
                                .running()
                                .filter(|&n| set.host.arrived(n))
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(ready) = store
                        .ready(&rt, target, &arrived, target, timings.ttl)
                        .await
                    {
                        reshard.handle_ready(rt.now(), target, ready);
                    }
                }
            }
            if let Some(current) = reshard.counts().map(|c| c.current)
                && let Some(set) = sets.get(&current)
            {
                let values = live.report(
                    &settings,
                    store.member(),
                    set.node.running(),
                    (rt.now(), rt.wall_clock()),
                );
                store.write_live(&rt, values, timings.ttl).await;
            }
        }
        for (&count, set) in sets.iter_mut() {
            set.node.handle_timeout(rt.now());
            set.drive(&rt, &mut store, count, timings.ttl).await;
        }
        sets.retain(|count, set| {
            let finished = set.closing && set.node.is_done();
            if finished {
                tracing::info!(shard_count = count, "shard set closed here");
            }
            !finished
        });
        if give_up_at.is_some() && sets.is_empty() {
            break;
        }
        if give_up_at.is_some_and(|t| rt.now() >= t) {
            tracing::warn!("shards did not hand over in time; stopping them");
            for abort in sets.values().flat_map(|set| set.aborts.values()) {
                abort.abort();
            }
            break;
        }
        let deadline = sets
            .values()
            .filter_map(|set| set.node.poll_timeout())
            .chain(
                [reshard.poll_timeout(), Some(next_refresh), give_up_at]
                    .into_iter()
                    .flatten(),
            )
            .min()
            .unwrap_or(next_refresh);
        let sleep = rt.sleep_until(deadline);
        let stopped = done.recv();
        futures_util::pin_mut!(sleep, stopped);
        let wake = select(stopped, sleep);
        let event = if shutdown_seen {
            match wake.await {
                Either::Left((message, _)) => Some(message),
                Either::Right(_) => None,
            }
        } else {
            match select(shutdown.as_mut(), wake).await {
                Either::Left(_) => {
                    shutdown_seen = true;
                    None
                }
                Either::Right((Either::Left((message, _)), _)) => Some(message),
                Either::Right((Either::Right(_), _)) => None,
            }
        };
        if shutdown_seen && give_up_at.is_none() {
            tracing::info!("leaving the cluster: handing every shard over");
            give_up_at = Some(rt.now() + settings.shutdown_timeout);
            leave(&rt, &mut store, &mut sets).await;
        }
        match event {
            Some(Some((count, shard, reason))) => {
                let Some(set) = sets.get_mut(&count) else {
                    continue;
                };
                set.aborts.remove(&shard);
                // The shard's last session snapshot must be in Redis before another member
                // may take the lease and resume it.
                set.host.flush().await;
                set.node.handle_stopped(rt.now(), shard);
                let Some(reason @ StopReason::Fatal { .. }) = reason else {
                    continue;
                };
                if reshard.counts().and_then(|c| c.pending()) == Some(count) {
                    tracing::error!(
                        shard,
                        shard_count = count,
                        %reason,
                        "a shard of the new shard set stopped for good: giving the re-shard up"
                    );
                    reshard.handle_failed(rt.now(), count);
                    continue;
                }
                tracing::error!(shard, %reason, "shard stopped for good; leaving the cluster");
                fatal = Some(reason);
                if give_up_at.is_none() {
                    give_up_at = Some(rt.now() + settings.shutdown_timeout);
                    leave(&rt, &mut store, &mut sets).await;
                }
            }
            Some(None) => break,
            None => {}
        }
    }
    store.leave(&rt).await;
    tracing::info!("left the cluster");
    fatal.map_or(Ok(()), Err)
}

/// Leaves the cluster: the member key goes (the others rebalance at once) and every set
/// hands its shards over.
async fn leave<R: Runtime, H: ShardHost>(
    rt: &R,
    store: &mut ClusterStore,
    sets: &mut BTreeMap<u32, SetRun<H>>,
) {
    store.leave(rt).await;
    for set in sets.values_mut() {
        set.closing = true;
        set.node.shutdown(rt.now());
    }
}

/// Does what the re-shard decisions ask: open a set, let it publish, switch or cancel in
/// Redis, close a set.
async fn apply_reshard<R: Runtime, S: ShardSets>(
    rt: &R,
    reshard: &mut Reshard,
    sets: &mut BTreeMap<u32, SetRun<S::Host>>,
    factory: &S,
    store: &mut ClusterStore,
    settings: &Settings,
) {
    while let Some(action) = reshard.poll_action(rt.now()) {
        match action {
            ReshardAction::Run { count, publishing } => {
                if publishing {
                    tracing::info!(shard_count = count, "running the cluster's shard set");
                } else {
                    tracing::info!(
                        shard_count = count,
                        "re-shard: bringing the new shard set up beside the old one (not publishing yet)"
                    );
                }
                // Explicit shard ids name shards of the configured count; any other set is
                // placed automatically.
                let explicit = settings
                    .explicit
                    .as_ref()
                    .filter(|_| count == settings.shard_count)
                    .map(|ids| ids.iter().copied().collect());
                let node = ClusterNode::new(
                    store.member().to_owned(),
                    count,
                    explicit,
                    settings.timings,
                    rt.now(),
                );
                // A set still closing here from before is stopped now (it is wanted again,
                // from scratch).
                if let Some(old) = sets.remove(&count) {
                    old.aborts.values().for_each(AbortHandle::abort);
                }
                sets.insert(
                    count,
                    SetRun {
                        host: factory.open(count, publishing),
                        node,
                        aborts: HashMap::new(),
                        closing: false,
                    },
                );
            }
            ReshardAction::Publish(count) => {
                tracing::info!(
                    shard_count = count,
                    "re-shard: the new shard set publishes now"
                );
                if let Some(set) = sets.get(&count) {
                    set.host.publish();
                }
            }
            ReshardAction::Switch { from, to } => {
                let args = [
                    from.to_string(),
                    to.to_string(),
                    store.keys.ready_prefix(to),
                ];
                if store
                    .counts_script::<_, i64>(rt, scripts::SWITCH, &args)
                    .await
                    == Some(1)
                {
                    tracing::info!(from, to, "re-shard: every new shard is ready; switched");
                }
            }
            ReshardAction::Cancel { to } => {
                let _ = store
                    .counts_script::<_, i64>(rt, scripts::CANCEL, &[to.to_string()])
                    .await;
            }
            ReshardAction::Retire(count) => {
                tracing::info!(shard_count = count, "re-shard: closing the old shard set");
                if let Some(set) = sets.get_mut(&count) {
                    set.closing = true;
                    set.node.shutdown(rt.now());
                }
            }
        }
    }
}

/// Turns the process's live status registry into the live keys of the shards running here,
/// noting when each one's sequence last moved.
#[derive(Default)]
struct LiveTracker {
    last: BTreeMap<u32, (Option<u64>, Option<u64>)>,
}

impl LiveTracker {
    fn report(
        &mut self,
        settings: &Settings,
        member: &str,
        running: impl Iterator<Item = u32>,
        (now, wall): (Instant, std::time::SystemTime),
    ) -> Vec<(String, Vec<u8>)> {
        let now_ms = crate::status::epoch_ms(wall);
        let rows: BTreeMap<u32, crate::status::ShardRow> = crate::status::global()
            .snapshot(now)
            .shards
            .into_iter()
            .map(|row| (row.shard, row))
            .collect();
        let running: Vec<u32> = running.collect();
        self.last.retain(|shard, _| running.contains(shard));
        running
            .into_iter()
            .map(|shard| {
                let row = rows.get(&shard);
                let sequence = row.and_then(|r| r.sequence);
                let entry = self.last.entry(shard).or_insert((None, None));
                if sequence.is_some() && sequence != entry.0 {
                    *entry = (sequence, Some(now_ms));
                }
                let value = LiveShard {
                    shard,
                    owner: member.to_owned(),
                    latency_ms: row.and_then(|r| r.latency_ms),
                    sequence,
                    last_event_at_ms: entry.1,
                    updated_at_ms: now_ms,
                };
                (
                    live_key(&settings.prefix, &settings.name, shard),
                    serde_json::to_vec(&value).expect("a live status always serializes"),
                )
            })
            .collect()
    }
}
