//! The one way every use of Redis connects (the session store and status, cluster mode, the
//! Redis Streams output, `gatehouse status`/`reset`, the demo): to one server, to the primary
//! the Sentinels name, or to a Redis Cluster.
//!
//! Owns: the I/O of finding the primary (asking the Sentinels, with their own credentials
//! when they require a password, in the order `proto_core::redis_topology::SentinelOrder`
//! keeps, `SENTINEL GET-MASTER-ADDR-BY-NAME`, then
//! `ROLE` on the named server), opening a connection of the right kind, and marking a
//! Sentinel-found connection stale when a call fails in a way that means the primary moved
//! (`proto_core::redis_topology::needs_new_primary`), so that its holder opens a new one,
//! which asks the Sentinels again. Does not own: which URL forms exist, the order, the
//! failure classes, the hash tag (`proto_core::redis_topology`), or when a holder tries again
//! (each holder's retry policy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto_core::redis_topology::{
    CallFault, RedisTopology, SentinelAuth, SentinelOrder, SentinelTarget, is_primary_role,
    needs_new_primary, scan_slot,
};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    Arg, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

use crate::runtime::Runtime;
use crate::tls::TlsRoots;

/// Where Redis is, ready to connect (cheap to clone).
#[derive(Clone)]
pub struct RedisTarget {
    inner: Arc<Inner>,
}

enum Inner {
    Single(redis::Client),
    Sentinel {
        target: SentinelTarget,
        sentinels: Vec<redis::Client>,
        order: Mutex<SentinelOrder>,
        roots: TlsRoots,
    },
    Cluster {
        nodes: Vec<String>,
        roots: TlsRoots,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.inner {
            Inner::Single(_) => "single",
            Inner::Sentinel { .. } => "sentinel",
            Inner::Cluster { .. } => "cluster",
        };
        f.debug_struct("RedisTarget").field("kind", &kind).finish()
    }
}

/// How long connecting and each reply may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Opening a connection (and, through Sentinel, each Sentinel's answer).
    pub connect: Duration,
    /// One reply.
    pub response: Duration,
}

impl RedisTarget {
    /// The target `url` names, with the process's trusted roots for `rediss`. Does not
    /// connect. Fails for a URL the client refuses.
    pub fn open(url: &str) -> RedisResult<Self> {
        Self::open_with(url, crate::tls::roots())
    }

    /// [`RedisTarget::open`] with `roots`.
    pub fn open_with(url: &str, roots: &TlsRoots) -> RedisResult<Self> {
        let invalid = |e: proto_core::redis_topology::TopologyError| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "bad Redis URL",
                e.to_string(),
            ))
        };
        let inner = match RedisTopology::parse(url).map_err(invalid)? {
            RedisTopology::Single(url) => {
                Inner::Single(crate::tls::redis_client_with(&url, roots)?)
            }
            RedisTopology::Sentinel(target) => Inner::Sentinel {
                sentinels: target
                    .sentinels
                    .iter()
                    .map(|url| sentinel_client(url, target.sentinel_auth.as_ref()))
                    .collect::<RedisResult<_>>()?,
                order: Mutex::new(SentinelOrder::new(target.sentinels.len())),
                target,
                roots: roots.clone(),
            },
            RedisTopology::Cluster(nodes) => {
                // Check the URLs now (a bad one is a configuration error, not an outage).
                cluster_client(&nodes, roots, None)?;
                Inner::Cluster {
                    nodes,
                    roots: roots.clone(),
                }
            }
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(&*self.inner, Inner::Cluster { .. })
    }

    /// A connection that reconnects to the same server by itself after a failure (none of
    /// its own retries: each call fails at once while the server is away). Through Sentinel,
    /// the connection is to the primary the Sentinels name now, and turns stale
    /// ([`RedisConnection::is_stale`]) when a call shows the primary moved.
    pub async fn connect<R: Runtime>(
        &self,
        rt: &R,
        timeouts: Timeouts,
    ) -> RedisResult<RedisConnection> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            .set_number_of_retries(0);
        match &*self.inner {
            Inner::Single(client) => Ok(RedisConnection {
                conn: Conn::Single(rt.redis_connection(client.clone(), config).await?),
                stale: None,
            }),
            Inner::Sentinel {
                target,
                sentinels,
                order,
                roots,
            } => {
                let asked = order.lock().expect("sentinel order").order().to_vec();
                let mut last_error = None;
                for index in asked {
                    match primary(rt, target, &sentinels[index], roots, timeouts, &config).await {
                        Ok(conn) => {
                            order.lock().expect("sentinel order").handle_answered(index);
                            return Ok(RedisConnection {
                                conn: Conn::Single(conn),
                                stale: Some(Arc::new(AtomicBool::new(false))),
                            });
                        }
                        Err(e) => {
                            tracing::debug!(
                                sentinel = index,
                                error = %e,
                                "no primary from this Sentinel; asking the next"
                            );
                            last_error = Some(e);
                        }
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    RedisError::from((ErrorKind::EmptySentinelList, "no Sentinel in the URL"))
                }))
            }
            Inner::Cluster { nodes, roots } => {
                let client = cluster_client(nodes, roots, Some(timeouts))?;
                Ok(RedisConnection {
                    conn: Conn::Cluster(client.get_async_connection().await?),
                    stale: None,
                })
            }
        }
    }
}

/// A client for the Sentinel at `url` (no credentials of its own), logging in with `auth`
/// when the Sentinels require a password. The password goes to the client's settings, never
/// into a URL (which an error could quote).
fn sentinel_client(url: &str, auth: Option<&SentinelAuth>) -> RedisResult<redis::Client> {
    let info = url.into_connection_info()?;
    let info = match auth {
        None => info,
        Some(auth) => {
            let mut settings = info
                .redis_settings()
                .clone()
                .set_password(auth.password.expose());
            if let Some(username) = &auth.username {
                settings = settings.set_username(username);
            }
            info.set_redis_settings(settings)
        }
    };
    redis::Client::open(info)
}

/// The primary Sentinel `sentinel` names for `target`, connected, after `ROLE` confirmed it
/// is one.
async fn primary<R: Runtime>(
    rt: &R,
    target: &SentinelTarget,
    sentinel: &redis::Client,
    roots: &TlsRoots,
    timeouts: Timeouts,
    config: &ConnectionManagerConfig,
) -> RedisResult<ConnectionManager> {
    let sentinel_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.connect));
    let mut asking = sentinel
        .get_multiplexed_async_connection_with_config(&sentinel_config)
        .await?;
    let address: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&target.master_name)
        .query_async(&mut asking)
        .await?;
    let Some((host, port)) = address else {
        return Err(RedisError::from((
            ErrorKind::MasterNameNotFoundBySentinel,
            "the Sentinel does not monitor this master name",
            target.master_name.clone(),
        )));
    };
    let client = crate::tls::redis_client_with(&target.primary_url(&host, port), roots)?;
    let mut conn = rt.redis_connection(client, config.clone()).await?;
    let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
    let role = match role.first() {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(Value::SimpleString(text)) => text.clone(),
        _ => String::new(),
    };
    if !is_primary_role(&role) {
        return Err(RedisError::from((
            ErrorKind::Client,
            "the server the Sentinel named is not a primary (a failover is under way)",
            format!("{host}:{port} is a {role}"),
        )));
    }
    tracing::info!(
        master = target.master_name,
        primary = format!("{host}:{port}"),
        "connected to the Redis primary the Sentinels name"
    );
    Ok(conn)
}

fn cluster_client(
    nodes: &[String],
    roots: &TlsRoots,
    timeouts: Option<Timeouts>,
) -> RedisResult<redis::cluster::ClusterClient> {
    let mut builder =
        redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str)).retries(0);
    if let Some(timeouts) = timeouts {
        builder = builder
            .connection_timeout(timeouts.connect)
            .response_timeout(timeouts.response);
    }
    if let Some(pem) = &roots.redis_ca
        && nodes.iter().any(|n| n.starts_with("rediss://"))
    {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.as_bytes().to_vec()),
        });
    }
    builder.build()
}

/// A connection from [`RedisTarget::connect`] (cheap to clone; the clones share it).
#[derive(Clone)]
pub struct RedisConnection {
    conn: Conn,
    /// Through Sentinel: set once a call showed that this server may no longer be the
    /// primary.
    stale: Option<Arc<AtomicBool>>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether the holder should drop this connection and connect again (through Sentinel:
    /// the primary may have moved). Never for one server or a cluster (their connections
    /// reconnect, or follow the cluster, by themselves).
    pub fn is_stale(&self) -> bool {
        self.stale
            .as_ref()
            .is_some_and(|stale| stale.load(Ordering::Relaxed))
    }

    /// Whether this is a connection to a Redis Cluster (where one pipeline carries keys of
    /// one hash slot only: `proto_core::redis_topology::key_groups`).
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    fn observe<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let (Some(stale), Err(e)) = (&self.stale, &result) {
            let fault = if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
            {
                CallFault::Connection
            } else {
                match e.code() {
                    Some(code) => CallFault::Server(code),
                    None => CallFault::Other,
                }
            };
            if needs_new_primary(fault) {
                stale.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = match &mut self.conn {
                Conn::Single(conn) => conn.req_packed_command(cmd).await,
                Conn::Cluster(conn) => match scan_route(cmd) {
                    Some(route) => conn.route_command(cmd.clone(), route).await,
                    None => conn.req_packed_command(cmd).await,
                },
            };
            self.observe(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = match &mut self.conn {
                Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count).await,
                Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count).await,
            };
            self.observe(result)
        })
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// For `SCAN … MATCH <pattern>` on a Redis Cluster: the node holding the slot of the
/// pattern's hash tag (the client would ask a random node); see
/// `proto_core::redis_topology::scan_slot`.
fn scan_route(cmd: &Cmd) -> Option<RoutingInfo> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    if !args.first()?.eq_ignore_ascii_case(b"SCAN") {
        return None;
    }
    let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"MATCH"))?;
    let pattern = std::str::from_utf8(args.get(at + 1)?).ok()?;
    let slot = scan_slot(pattern)?;
    Some(RoutingInfo::SingleNode(
        SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)),
    ))
}

/// A blocking connection from [`RedisTarget::blocking_connection`], for the one-shot
/// commands (`gatehouse status`, `gatehouse reshard`).
pub enum BlockingConnection {
    /// One server, or the primary the Sentinels named.
    Single(redis::Connection),
    /// A Redis Cluster.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl RedisTarget {
    /// A blocking connection (through Sentinel: to the primary the Sentinels name now).
    pub fn blocking_connection(&self, timeout: Duration) -> RedisResult<BlockingConnection> {
        match &*self.inner {
            Inner::Single(client) => Ok(BlockingConnection::Single(
                client.get_connection_with_timeout(timeout)?,
            )),
            Inner::Sentinel {
                target,
                sentinels,
                order,
                roots,
            } => {
                let asked = order.lock().expect("sentinel order").order().to_vec();
                let mut last_error = None;
                for index in asked {
                    let found = (|| {
                        let mut asking = sentinels[index].get_connection_with_timeout(timeout)?;
                        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
                            .arg("GET-MASTER-ADDR-BY-NAME")
                            .arg(&target.master_name)
                            .query(&mut asking)?;
                        let (host, port) = address.ok_or_else(|| {
                            RedisError::from((
                                ErrorKind::MasterNameNotFoundBySentinel,
                                "the Sentinel does not monitor this master name",
                            ))
                        })?;
                        let client =
                            crate::tls::redis_client_with(&target.primary_url(&host, port), roots)?;
                        let mut conn = client.get_connection_with_timeout(timeout)?;
                        let role: Vec<Value> = redis::cmd("ROLE").query(&mut conn)?;
                        match role.first() {
                            Some(Value::BulkString(b))
                                if is_primary_role(&String::from_utf8_lossy(b)) =>
                            {
                                Ok(conn)
                            }
                            _ => Err(RedisError::from((
                                ErrorKind::Client,
                                "the server the Sentinel named is not a primary",
                            ))),
                        }
                    })();
                    match found {
                        Ok(conn) => {
                            order.lock().expect("sentinel order").handle_answered(index);
                            return Ok(BlockingConnection::Single(conn));
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    RedisError::from((ErrorKind::EmptySentinelList, "no Sentinel in the URL"))
                }))
            }
            Inner::Cluster { nodes, roots } => {
                let timeouts = Timeouts {
                    connect: timeout,
                    response: timeout,
                };
                Ok(BlockingConnection::Cluster(Box::new(
                    cluster_client(nodes, roots, Some(timeouts))?.get_connection()?,
                )))
            }
        }
    }
}

impl redis::ConnectionLike for BlockingConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Single(c) => c.req_command(cmd),
            Self::Cluster(c) => match scan_route(cmd) {
                Some(route) => c.route_command(cmd, route),
                None => c.req_command(cmd),
            },
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Self::Single(c) => c.supports_pipelining(),
            Self::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Single(c) => c.check_connection(),
            Self::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Single(c) => c.is_open(),
            Self::Cluster(c) => c.is_open(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_of_a_tagged_pattern_go_to_the_tags_slot_and_nothing_else_is_rerouted() {
        let mut scan = redis::cmd("SCAN");
        scan.arg(0)
            .arg("MATCH")
            .arg("{bot}:status:*")
            .arg("COUNT")
            .arg(500);
        let slot = proto_core::redis_topology::hash_slot(b"bot");
        assert_eq!(
            scan_route(&scan),
            Some(RoutingInfo::SingleNode(
                SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master))
            ))
        );
        let mut untagged = redis::cmd("SCAN");
        untagged.arg(0).arg("MATCH").arg("bot:status:*");
        assert_eq!(scan_route(&untagged), None);
        assert_eq!(scan_route(redis::cmd("GET").arg("{bot}:status:0")), None);
    }

    #[test]
    fn sentinels_log_in_with_their_own_credentials_only_when_given() {
        let auth = SentinelAuth {
            username: Some("watch".into()),
            password: proto_core::secret::Secret::new("s3cret"),
        };
        let client = sentinel_client("redis://127.0.0.1:26379", Some(&auth)).unwrap();
        let settings = client.get_connection_info().redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (Some("watch"), Some("s3cret"))
        );
        let plain = sentinel_client("redis://127.0.0.1:26379", None).unwrap();
        assert_eq!(
            plain.get_connection_info().redis_settings().password(),
            None
        );
    }

    #[test]
    fn sentinel_and_cluster_urls_open_without_connecting() {
        let roots = TlsRoots::default();
        let sentinel = RedisTarget::open_with("redis+sentinel://127.0.0.1:1/m", &roots).unwrap();
        assert!(!sentinel.is_cluster());
        let cluster = RedisTarget::open_with("redis+cluster://127.0.0.1:1", &roots).unwrap();
        assert!(cluster.is_cluster());
        assert!(RedisTarget::open_with("redis+sentinel://127.0.0.1:1", &roots).is_err());
    }
}
