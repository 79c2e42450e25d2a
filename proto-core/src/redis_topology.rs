//! Which Redis Gatehouse talks to: one server, a primary found through Redis Sentinel, or a
//! Redis Cluster.
//!
//! Owns: the URL forms and their parsing ([`RedisTopology::parse`]); for Sentinel, the
//! Sentinels' own credentials ([`SentinelAuth`]), the order in which the Sentinels are asked
//! for the primary ([`SentinelOrder`], the rule of Redis's "Sentinel clients" guidelines: the
//! Sentinel that answered is asked first next time), what their answers mean
//! ([`SentinelTarget::primary_url`], [`is_primary_role`]) and which failed calls mean the
//! primary may have moved, so that the next call asks the Sentinels again
//! ([`needs_new_primary`]); for Redis Cluster, the hash tag that keeps every key of one
//! deployment in one hash slot ([`cluster_key_prefix`]), as cluster mode's scripts and the
//! session store's `MSET` touch several keys at once, and which keys one pipeline can carry
//! there ([`key_groups`]). Does not own: any I/O (the runtime's `redis_link` asks the
//! Sentinels and connects), or when a failed call is tried again (each caller's own retry
//! policy: `store_sync`, `cluster`, the Redis Streams output).
//!
//! URL forms (`rediss+…` for TLS to the data nodes):
//! - `redis://…`, `rediss://…`, `unix://…`: one server, as the redis client takes it.
//! - `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/<master-name>[/<db>]
//!   [?sentinel_password=…[&sentinel_username=…]]`: the Sentinels (port 26379 unless given)
//!   and the name they monitor the primary under. The userinfo's credentials and the database
//!   are the primary's; the Sentinels are asked with the query's credentials
//!   ([`SentinelAuth`]; redis-rb names these options `sentinel_password`/`sentinel_username`,
//!   go-redis and ioredis `SentinelPassword`/`sentinelPassword`), and without any when there
//!   are none (sending a password to a Sentinel without `requirepass` fails).
//! - `redis+cluster://[[user]:password@]host[:port][,host[:port]…][/]`: some nodes of a Redis
//!   Cluster (port 6379 unless given); the client learns the others from them.

use crate::percent::percent_decode;
use crate::secret::Secret;

/// The default port of a Sentinel.
pub const SENTINEL_PORT: u16 = 26379;

/// The default port of a Redis node.
pub const REDIS_PORT: u16 = 6379;

/// Where Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (or a proxy in front of one): the URL as the redis client takes it.
    Single(String),
    /// A primary found through Sentinel.
    Sentinel(SentinelTarget),
    /// A Redis Cluster: one `redis://` (or `rediss://`) URL per given node, with the
    /// credentials.
    Cluster(Vec<String>),
}

/// A primary monitored by Sentinels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `redis://host:port` of each Sentinel, in the URL's order.
    pub sentinels: Vec<String>,
    /// The name the Sentinels monitor the primary under.
    pub master_name: String,
    /// `user:password` or `:password` as written in the URL (still percent-encoded), for the
    /// primary.
    userinfo: Option<String>,
    /// TLS to the primary (`rediss+sentinel://`).
    tls: bool,
    /// The database on the primary.
    pub db: i64,
    /// The Sentinels' own credentials, if they require a password.
    pub sentinel_auth: Option<SentinelAuth>,
}

/// The credentials the Sentinels themselves require (their `requirepass`, or an ACL user):
/// the Sentinel URL's `sentinel_password` and `sentinel_username` query parameters,
/// percent-decoded. Separate from the primary's credentials (the URL's userinfo): Sentinels
/// and data nodes are configured apart and often differ. `Debug` hides the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelAuth {
    /// The ACL user (`None`: the `default` user, as with `requirepass`).
    pub username: Option<String>,
    /// The password.
    pub password: Secret,
}

/// Why a Redis URL cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopologyError(String);

fn error(text: impl Into<String>) -> TopologyError {
    TopologyError(text.into())
}

impl RedisTopology {
    /// The topology `url` names. Only the `+sentinel` and `+cluster` schemes are parsed here;
    /// every other URL is [`RedisTopology::Single`] and left to the redis client.
    pub fn parse(url: &str) -> Result<Self, TopologyError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(Self::Single(url.to_owned()));
        };
        let scheme = scheme.to_ascii_lowercase();
        let (tls, kind) = match scheme.as_str() {
            "redis+sentinel" => (false, Kind::Sentinel),
            "rediss+sentinel" => (true, Kind::Sentinel),
            "redis+cluster" => (false, Kind::Cluster),
            "rediss+cluster" => (true, Kind::Cluster),
            other if other.contains("sentinel") || other.contains("cluster") => {
                return Err(error(format!(
                    "unknown scheme `{other}`: use redis+sentinel://, rediss+sentinel://, \
                     redis+cluster:// or rediss+cluster://"
                )));
            }
            _ => return Ok(Self::Single(url.to_owned())),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let userinfo = userinfo.filter(|u| !u.is_empty()).map(str::to_owned);
        let default_port = match kind {
            Kind::Sentinel => SENTINEL_PORT,
            Kind::Cluster => REDIS_PORT,
        };
        let hosts = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| host_port(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err(error("the URL names no host"));
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match kind {
            Kind::Sentinel => {
                let (master_name, db) = match segments.as_slice() {
                    [name] => (*name, 0),
                    [name, db] => (
                        *name,
                        db.parse::<i64>()
                            .ok()
                            .filter(|db| *db >= 0)
                            .ok_or_else(|| error(format!("`{db}` is not a database number")))?,
                    ),
                    _ => {
                        return Err(error(
                            "a Sentinel URL ends with the master's name (and optionally a \
                             database): redis+sentinel://host:26379/<master-name>[/<db>]",
                        ));
                    }
                };
                Ok(Self::Sentinel(SentinelTarget {
                    sentinels: hosts
                        .iter()
                        .map(|(host, port)| format!("redis://{}", address(host, *port)))
                        .collect(),
                    master_name: master_name.to_owned(),
                    userinfo,
                    tls,
                    db,
                    sentinel_auth: sentinel_auth(query)?,
                }))
            }
            Kind::Cluster => {
                if !matches!(segments.as_slice(), [] | ["0"]) {
                    return Err(error(
                        "a Redis Cluster has only database 0: redis+cluster://host:port,host:port",
                    ));
                }
                Ok(Self::Cluster(
                    hosts
                        .iter()
                        .map(|(host, port)| node_url(tls, userinfo.as_deref(), host, *port, 0))
                        .collect(),
                ))
            }
        }
    }

    /// Whether this is a Redis Cluster (its keys need [`cluster_key_prefix`]).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The key prefix to use for the configured `prefix`: unchanged, except on a Redis Cluster
    /// (see [`cluster_key_prefix`]).
    pub fn key_prefix(&self, prefix: &str) -> String {
        if self.is_cluster() {
            cluster_key_prefix(prefix)
        } else {
            prefix.to_owned()
        }
    }
}

enum Kind {
    Sentinel,
    Cluster,
}

/// The Sentinels' credentials from a Sentinel URL's query (`sentinel_password`,
/// `sentinel_username`). Any other parameter is refused rather than ignored (a `password=`
/// meant for the primary would otherwise be silently dropped). Errors name parameters, never
/// their values.
fn sentinel_auth(query: &str) -> Result<Option<SentinelAuth>, TopologyError> {
    let (mut username, mut password) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sentinel_password" => &mut password,
            "sentinel_username" => &mut username,
            other => {
                return Err(error(format!(
                    "unknown parameter `{other}` in a Sentinel URL: it takes \
                     `sentinel_password` and `sentinel_username` (the primary's credentials go \
                     before the `@`)"
                )));
            }
        };
        let value = percent_decode(value);
        if value.is_empty() {
            return Err(error(format!("`{key}` is empty")));
        }
        if slot.replace(value).is_some() {
            return Err(error(format!("`{key}` is given twice")));
        }
    }
    match (username, password) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(error(
            "`sentinel_username` needs `sentinel_password` (a Sentinel ACL user logs in with both)",
        )),
        (username, Some(password)) => Ok(Some(SentinelAuth {
            username,
            password: Secret::new(password),
        })),
    }
}

/// `host[:port]` or `[v6]:port`.
fn host_port(text: &str, default_port: u16) -> Result<(String, u16), TopologyError> {
    let bad = || error(format!("`{text}` is not host:port"));
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').ok_or_else(bad)?;
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(bad()),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(port) => port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// `host:port`, with brackets around an IPv6 address.
fn address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn node_url(tls: bool, userinfo: Option<&str>, host: &str, port: u16, db: i64) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    format!("{scheme}://{userinfo}{}/{db}", address(host, port))
}

impl SentinelTarget {
    /// The URL of the primary the Sentinels named (`SENTINEL GET-MASTER-ADDR-BY-NAME`), with
    /// the credentials and database of the Sentinel URL.
    pub fn primary_url(&self, host: &str, port: u16) -> String {
        node_url(self.tls, self.userinfo.as_deref(), host, port, self.db)
    }
}

/// Whether the first element of a `ROLE` reply names a primary (a Sentinel's answer can be
/// stale during a failover: the guidelines ask clients to check before using the address).
pub fn is_primary_role(role: &str) -> bool {
    role.eq_ignore_ascii_case("master")
}

/// The order in which the Sentinels are asked: the one that answered last first, then the
/// others in the URL's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelOrder {
    order: Vec<usize>,
}

impl SentinelOrder {
    /// The URL's order over `count` Sentinels.
    pub fn new(count: usize) -> Self {
        Self {
            order: (0..count).collect(),
        }
    }

    /// The Sentinels' indexes, in the order to ask them.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Sentinel `index` named a primary that answered as one: it is asked first next time.
    pub fn handle_answered(&mut self, index: usize) {
        if let Some(at) = self.order.iter().position(|i| *i == index) {
            let first = self.order.remove(at);
            self.order.insert(0, first);
        }
    }
}

/// What a failed Redis call was, as far as the choice of server goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallFault<'a> {
    /// The connection could not be opened, was dropped, or did not answer in time.
    Connection,
    /// The server answered with an error of this code (`READONLY`, `WRONGTYPE`, …).
    Server(&'a str),
    /// Anything else (a reply of an unexpected type, a client-side error).
    Other,
}

/// Whether, after `fault`, the next call must ask the Sentinels for the primary again rather
/// than use the same server: the server is gone or unreachable, or it is no longer the
/// primary (`READONLY`: a replica; `MASTERDOWN`: a replica cut off from its primary;
/// `LOADING`: a restarted server). Other errors are the call's own.
pub fn needs_new_primary(fault: CallFault<'_>) -> bool {
    match fault {
        CallFault::Connection => true,
        CallFault::Server(code) => matches!(code, "READONLY" | "MASTERDOWN" | "LOADING"),
        CallFault::Other => false,
    }
}

/// The namespace used as hash tag when the configured prefix is empty.
const EMPTY_PREFIX_TAG: &str = "{gatehouse}";

/// The part of `key` Redis Cluster hashes to choose the slot: the text between the first `{`
/// and the first `}` after it, if not empty; else `None` (the whole key is hashed).
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    Some(&key[open + 1..open + 1 + close]).filter(|tag| !tag.is_empty())
}

/// The key prefix on a Redis Cluster: `prefix` wrapped in a hash tag (`gatehouse` →
/// `{gatehouse}`), so that every key of the deployment (`{gatehouse}:session:0`, cluster
/// mode's `{gatehouse}:cluster:…`, the predecessors' `{gatehouse}gateway_sessions`) hashes to
/// one slot. A prefix that already holds a hash tag is kept; an empty one becomes
/// `{gatehouse}`.
pub fn cluster_key_prefix(prefix: &str) -> String {
    if hash_tag(prefix).is_some() {
        return prefix.to_owned();
    }
    if prefix.is_empty() {
        return EMPTY_PREFIX_TAG.to_owned();
    }
    let wrapped = format!("{{{prefix}}}");
    if hash_tag(&wrapped).is_some() {
        wrapped
    } else {
        format!("{EMPTY_PREFIX_TAG}{prefix}")
    }
}

/// `keys` (by index) in groups that one pipeline, or one multi-key command, can carry: on a
/// Redis Cluster the keys of one hash slot (a pipeline or `XREADGROUP … STREAMS` over keys of
/// several slots fails with `CROSSSLOT`), elsewhere all of them. Groups come in the order of
/// their first key, and each keeps the keys' order (so one stream's entries keep theirs).
/// No keys, no groups.
pub fn key_groups<'a>(cluster: bool, keys: impl IntoIterator<Item = &'a str>) -> Vec<Vec<usize>> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        let slot = if cluster {
            hash_slot(key.as_bytes())
        } else {
            0
        };
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(index),
            None => groups.push((slot, vec![index])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// The Redis Cluster hash slot of `key` (CRC16-XMODEM of its hash tag, or of the whole key,
/// modulo 16384), as the servers compute it.
pub fn hash_slot(key: &[u8]) -> u16 {
    let hashed = match std::str::from_utf8(key).ok().and_then(hash_tag) {
        Some(tag) => tag.as_bytes(),
        None => tag_bytes(key).unwrap_or(key),
    };
    crc16(hashed) % 16384
}

/// [`hash_tag`] on bytes that are not UTF-8.
fn tag_bytes(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let close = key[open + 1..].iter().position(|b| *b == b'}')?;
    Some(&key[open + 1..open + 1 + close]).filter(|tag| !tag.is_empty())
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, byte| {
        (0..8).fold(crc ^ (u16::from(*byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    })
}

/// On a Redis Cluster, the one slot whose node holds every key `SCAN … MATCH pattern` can
/// find: the slot of the pattern's hash tag, when the pattern has one without glob characters
/// (every key of a deployment is under its prefix's tag, [`cluster_key_prefix`]). `None`: the
/// keys may be on any node.
pub fn scan_slot(pattern: &str) -> Option<u16> {
    let tag = hash_tag(pattern)?;
    let open = pattern.find('{')?;
    // A glob before the tag could match keys with another first `{`.
    if pattern[..open].contains(['*', '?', '[', '\\']) || tag.contains(['*', '?', '[', '\\']) {
        return None;
    }
    Some(hash_slot(pattern.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_are_left_to_the_client() {
        for url in [
            "redis://127.0.0.1:6379/",
            "rediss://:pw@h/2",
            "unix:///run/redis.sock",
            "h:6379",
        ] {
            assert_eq!(
                RedisTopology::parse(url),
                Ok(RedisTopology::Single(url.into()))
            );
        }
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_the_primarys_settings() {
        let RedisTopology::Sentinel(target) =
            RedisTopology::parse("redis+sentinel://:s%40cret@s1,s2:26380,[::1]:5/mymaster/3")
                .unwrap()
        else {
            panic!("a Sentinel URL");
        };
        assert_eq!(
            target.sentinels,
            ["redis://s1:26379", "redis://s2:26380", "redis://[::1]:5"]
        );
        assert_eq!(target.master_name, "mymaster");
        assert_eq!(target.db, 3);
        assert_eq!(
            target.primary_url("10.0.0.2", 6380),
            "redis://:s%40cret@10.0.0.2:6380/3"
        );
        let RedisTopology::Sentinel(tls) =
            RedisTopology::parse("rediss+sentinel://u:p@s1/m").unwrap()
        else {
            panic!("a Sentinel URL");
        };
        assert_eq!(tls.db, 0);
        assert_eq!(tls.primary_url("::1", 1), "rediss://u:p@[::1]:1/0");
    }

    #[test]
    fn sentinel_credentials_come_from_the_query_decoded_and_apart_from_the_primarys() {
        let target = |url: &str| match RedisTopology::parse(url) {
            Ok(RedisTopology::Sentinel(target)) => target,
            other => panic!("{url}: {other:?}"),
        };
        let plain = target("redis+sentinel://:pw@s1,s2/m/1");
        assert_eq!(plain.sentinel_auth, None);
        let auth = target(
            "redis+sentinel://:pw@s1,s2/m/1?sentinel_password=s%40nt+in%2Fel&sentinel_username=watch",
        );
        assert_eq!(
            auth.sentinel_auth,
            Some(SentinelAuth {
                username: Some("watch".into()),
                password: Secret::new("s@nt+in/el"),
            })
        );
        // The Sentinels' password is not the primary's, nor part of the Sentinels' URLs.
        assert_eq!(auth.primary_url("h", 1), "redis://:pw@h:1/1");
        assert_eq!(auth.sentinels, ["redis://s1:26379", "redis://s2:26379"]);
        assert!(!format!("{auth:?}").contains("nt+in"));
        let password_only = target("redis+sentinel://s1/m?sentinel_password=x#frag");
        assert_eq!(
            password_only
                .sentinel_auth
                .map(|a| (a.username, a.password)),
            Some((None, Secret::new("x")))
        );
        assert_eq!(target("redis+sentinel://s1/m?").sentinel_auth, None);
    }

    #[test]
    fn bad_sentinel_parameters_are_refused_without_their_values() {
        for (url, says) in [
            (
                "redis+sentinel://s1/m?password=hunter2",
                "unknown parameter `password`",
            ),
            (
                "redis+sentinel://s1/m?sentinel_username=u",
                "needs `sentinel_password`",
            ),
            ("redis+sentinel://s1/m?sentinel_password=", "is empty"),
            (
                "redis+sentinel://s1/m?sentinel_password=hunter2&sentinel_password=hunter3",
                "given twice",
            ),
        ] {
            let error = RedisTopology::parse(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("hunter"), "{url}: {error}");
        }
    }

    #[test]
    fn cluster_urls_name_the_nodes() {
        assert_eq!(
            RedisTopology::parse("redis+cluster://:pw@n1:7000,n2:7001,n3").unwrap(),
            RedisTopology::Cluster(vec![
                "redis://:pw@n1:7000/0".into(),
                "redis://:pw@n2:7001/0".into(),
                "redis://:pw@n3:6379/0".into(),
            ])
        );
        assert!(RedisTopology::parse("rediss+cluster://n1:7000/").is_ok());
    }

    #[test]
    fn malformed_urls_say_why() {
        for url in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1/m/x",
            "redis+sentinel://s1/m/1/2",
            "redis+sentinel:///m",
            "redis+sentinel://s1:0/m",
            "redis+sentinel://s1:port/m",
            "redis+cluster://n1:7000/2",
            "redis-cluster://n1:7000",
            "redis+sentinels://s1/m",
        ] {
            assert!(RedisTopology::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn the_sentinel_that_answered_is_asked_first() {
        let mut order = SentinelOrder::new(3);
        assert_eq!(order.order(), [0, 1, 2]);
        order.handle_answered(2);
        assert_eq!(order.order(), [2, 0, 1]);
        order.handle_answered(1);
        assert_eq!(order.order(), [1, 2, 0]);
        order.handle_answered(1);
        order.handle_answered(7);
        assert_eq!(order.order(), [1, 2, 0]);
    }

    #[test]
    fn lost_connections_and_demoted_servers_send_the_client_back_to_the_sentinels() {
        assert!(needs_new_primary(CallFault::Connection));
        assert!(needs_new_primary(CallFault::Server("READONLY")));
        assert!(needs_new_primary(CallFault::Server("MASTERDOWN")));
        assert!(needs_new_primary(CallFault::Server("LOADING")));
        assert!(!needs_new_primary(CallFault::Server("WRONGTYPE")));
        assert!(!needs_new_primary(CallFault::Server("NOSCRIPT")));
        assert!(!needs_new_primary(CallFault::Other));
        assert!(is_primary_role("master"));
        assert!(!is_primary_role("slave"));
        assert!(!is_primary_role("sentinel"));
    }

    #[test]
    fn cluster_prefixes_are_one_hash_tag_and_others_unchanged() {
        let single = RedisTopology::Single("redis://h/".into());
        for prefix in ["gatehouse", "", "bot1:", "{x}"] {
            assert_eq!(single.key_prefix(prefix), prefix);
        }
        let cluster = RedisTopology::Cluster(vec![]);
        assert_eq!(cluster.key_prefix("gatehouse"), "{gatehouse}");
        assert_eq!(cluster.key_prefix(""), "{gatehouse}");
        assert_eq!(cluster.key_prefix("app:{bot}"), "app:{bot}");
        assert_eq!(cluster.key_prefix("{}"), "{{}}");
        assert_eq!(cluster.key_prefix("}x"), "{gatehouse}}x");
        assert_eq!(hash_tag("{gatehouse}:session:0"), Some("gatehouse"));
        assert_eq!(hash_tag("{}:a"), None);
        assert_eq!(hash_tag("a"), None);
    }

    #[test]
    fn hash_slots_are_the_servers() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(
            hash_slot(b"{user1000}.following"),
            hash_slot(b"{user1000}.followers")
        );
        assert_eq!(hash_slot(b"{gatehouse}:session:0"), hash_slot(b"gatehouse"));
        assert_eq!(hash_slot(b"foo{}{bar}"), hash_slot(b"foo{}{bar}"));
        assert_eq!(scan_slot("{bot}:status:*"), Some(hash_slot(b"bot")));
        assert_eq!(scan_slot("{bot}:cluster:*:live:*"), Some(hash_slot(b"bot")));
        assert_eq!(scan_slot("bot:status:*"), None);
        assert_eq!(scan_slot("*{bot}:status:*"), None);
        assert_eq!(scan_slot("{b*t}:status:*"), None);
    }

    #[test]
    fn keys_are_grouped_by_slot_on_a_cluster_only() {
        let keys = [
            "MESSAGE_CREATE",
            "{bot}:a",
            "READY",
            "MESSAGE_CREATE",
            "{bot}:b",
        ];
        assert_eq!(key_groups(false, keys), [vec![0, 1, 2, 3, 4]]);
        let groups = key_groups(true, keys);
        assert!(groups.contains(&vec![0, 3]), "{groups:?}");
        assert!(groups.contains(&vec![1, 4]), "{groups:?}");
        assert!(groups.contains(&vec![2]), "{groups:?}");
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0], [0, 3]);
        assert!(key_groups(true, []).is_empty());
        assert!(key_groups(false, []).is_empty());
    }

    proptest::proptest! {
        /// Whatever the prefix, every key built on the cluster prefix has the prefix's tag.
        #[test]
        fn every_key_under_a_cluster_prefix_shares_its_tag(prefix in ".{0,12}", a in ".{0,12}", b in ".{0,12}") {
            let tagged = cluster_key_prefix(&prefix);
            let tag = hash_tag(&tagged).map(str::to_owned);
            proptest::prop_assert!(tag.is_some());
            proptest::prop_assert_eq!(hash_tag(&format!("{tagged}{a}")).map(str::to_owned), tag.clone());
            proptest::prop_assert_eq!(hash_tag(&format!("{tagged}:{b}")).map(str::to_owned), tag);
        }
    }
}
