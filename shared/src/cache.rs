//! The Redis cache of user responses, with fill leases.
//!
//! One key per user, `{CACHE_KEY_PREFIX}:v3:user:{id}`, whose value starts with
//! a one-byte tag:
//!
//! | value | meaning | set by | lifetime |
//! |---|---|---|---|
//! | `v` + version + `:` + body | the user's version (its ETag) and response body, ready to send | a lease holder's fill | `CACHE_TTL_SECONDS`, minus up to 10% jitter |
//! | `n` | no such user (negative entry) | a lease holder's fill | `CACHE_NEGATIVE_TTL_SECONDS` |
//! | `l` + token | a miss is reading Postgres and holds the right to fill | [`UserCache::lookup`] | `CACHE_LEASE_MS` |
//! | `w` + writer tokens | writes are in progress: nobody may fill | [`UserCache::guard_write`] | the write guard, longer than any write |
//!
//! This is the lease scheme of *Scaling Memcache at Facebook* (NSDI 2013) on a
//! single key: the lookup is one native command, the fill and the guard Lua
//! scripts, each on one key, so it works on Redis Cluster.
//! A fill succeeds only while its own lease is still the value, and a write
//! adds its token to the guard before its commit and takes it out after,
//! deleting the key when it was the last writer: either step voids any lease
//! taken before it, so a reader that read the old row can no longer store it.
//! Overlapping writes keep the key guarded until the last one is done, so the
//! first one to finish cannot open the key while another is still to commit.
//! Every call is bounded by `REDIS_RESPONSE_TIMEOUT_MS`.

use crate::config::{CacheConfig, RedisConfig};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, ScriptInvocation, Value};
use std::future::Future;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Version of the entry format; part of every key, so changing the format
/// never makes a new deployment read entries written by an old one.
const FORMAT_VERSION: &str = "v3";

const VALUE: u8 = b'v';
const NEGATIVE: u8 = b'n';
const LEASE: u8 = b'l';
const WRITING: u8 = b'w';

/// The lookup: returns the value, or takes the lease (`token`, for
/// `lease_ms`) and returns nil when the key is absent, so a hit and a miss
/// cost one round trip each. `SET key token NX GET PX ms` does this in one
/// native command (Redis 7.0 or later, Valkey; ElastiCache 7 and Serverless),
/// about 1 µs cheaper per hit than the same read in a Lua script.
pub fn lookup_command(key: &str, token: &[u8], lease_ms: u64) -> Cmd {
    let mut lookup = redis::cmd("SET");
    lookup
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("GET")
        .arg("PX")
        .arg(lease_ms);
    lookup
}

/// Compare-and-set, a Lua script (Redis 7 has no native command for it): stores `ARGV[2]` for `ARGV[3]` ms only if the value is
/// still `ARGV[1]`. A fill is lease -> entry; taking over an unreadable entry
/// is entry -> lease.
pub const COMPARE_AND_SET_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";
static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| Script::new(COMPARE_AND_SET_SCRIPT));

/// Adds the writer token `ARGV[1]` to the key's guard (`w` + tokens), which
/// replaces any entry or lease, and sets its expiry to `ARGV[2]` ms. Adding a
/// token that is there already changes nothing, so a retried call is harmless.
pub const GUARD_SCRIPT: &str = "local v = redis.call('GET', KEYS[1])
local w = 'w'
if v and string.sub(v, 1, 1) == 'w' then w = v end
if not string.find(w, ARGV[1], 2, true) then w = w .. ARGV[1] end
redis.call('SET', KEYS[1], w, 'PX', ARGV[2])
return 1";
static GUARD: LazyLock<Script> = LazyLock::new(|| Script::new(GUARD_SCRIPT));

/// Takes the writer token `ARGV[1]` out of the key's guard. Other writers'
/// tokens keep the key guarded (same expiry); without any, or when the key
/// holds no guard at all (it expired), the key is deleted, so the next find
/// reads the committed row. Idempotent too.
pub const RELEASE_SCRIPT: &str = "local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'w' then
  local first, last = string.find(v, ARGV[1], 2, true)
  if first then v = string.sub(v, 1, first - 1) .. string.sub(v, last + 1) end
  if #v > 1 then
    redis.call('SET', KEYS[1], v, 'KEEPTTL')
    return 0
  end
end
redis.call('DEL', KEYS[1])
return 1";
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_SCRIPT));

/// Why a cache call did not complete. Either way the caller treats Redis as
/// absent for this request.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis call failed")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// What [`UserCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A cached body and the user's version; the caller checks it decodes.
    Hit { version: i64, body: Vec<u8> },
    /// A cached "no such user".
    NotFound,
    /// The key was empty and this caller now holds the fill lease.
    Leased(Lease),
    /// Another caller holds the fill lease.
    Filling,
    /// Writes are in progress; read Postgres and do not fill.
    Writing,
    /// A value this version cannot read; see [`UserCache::take_over`].
    Unreadable(Vec<u8>),
}

/// The right to fill one key, as long as nobody overwrote it.
#[derive(Debug)]
pub struct Lease {
    token: [u8; 1 + TOKEN_LEN],
    jitter: u128,
}

/// One write's share of a key's guard; see [`UserCache::release_write`].
#[derive(Debug)]
pub struct WriteGuard {
    token: [u8; TOKEN_LEN],
}

/// What a lease holder stores.
pub enum Entry<'a> {
    User { version: i64, body: &'a [u8] },
    NotFound,
}

/// A standalone Redis (one multiplexed connection that reconnects by itself)
/// or a Redis Cluster (ElastiCache Serverless, cluster mode enabled).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    /// Connected on first use, so a cold start while Redis is down succeeds.
    Cluster {
        client: Arc<ClusterClient>,
        connected: Arc<tokio::sync::Mutex<Option<ClusterConnection>>>,
    },
}

/// The connection one call runs on.
enum Active {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn active(&self) -> redis::RedisResult<Active> {
        match self {
            Self::Single(manager) => Ok(Active::Single(manager.clone())),
            Self::Cluster { client, connected } => {
                let mut connected = connected.lock().await;
                if let Some(connection) = connected.as_ref() {
                    return Ok(Active::Cluster(connection.clone()));
                }
                let connection = client.get_async_connection().await?;
                *connected = Some(connection.clone());
                Ok(Active::Cluster(connection))
            }
        }
    }
}

impl ConnectionLike for Active {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[derive(Clone)]
pub struct UserCache {
    connection: Connection,
    prefix: String,
    ttl: Duration,
    negative_ttl: Duration,
    lease: Duration,
    write_guard: Duration,
    timeout: Duration,
}

impl UserCache {
    /// Creates the connection manager without waiting for Redis: a cold start
    /// while Redis is down must still succeed. See [`UserCache::ping`].
    pub fn new(
        redis: &RedisConfig,
        cache: &CacheConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let certificates = match &redis.ca_file {
            None => None,
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|error| {
                    format!("cannot read REDIS_CA_FILE {}: {error}", path.display())
                })?),
            }),
        };
        let connection = if redis.cluster {
            let nodes = redis.url.split(',').map(str::trim);
            let mut builder = ClusterClientBuilder::new(nodes)
                .connection_timeout(redis.connect_timeout)
                .response_timeout(redis.response_timeout)
                .retries(1);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            Connection::Cluster {
                client: Arc::new(client),
                connected: Arc::default(),
            }
        } else {
            Connection::Single(Self::manager(redis, certificates)?)
        };
        Ok(Self {
            connection,
            prefix: format!("{}:{FORMAT_VERSION}:user:", cache.key_prefix),
            ttl: cache.ttl,
            negative_ttl: cache.negative_ttl,
            lease: cache.lease,
            write_guard: cache.write_guard,
            timeout: redis.response_timeout,
        })
    }

    fn manager(
        redis: &RedisConfig,
        certificates: Option<redis::TlsCertificates>,
    ) -> Result<ConnectionManager, redis::RedisError> {
        let client = match certificates {
            Some(certificates) => redis::Client::build_with_tls(redis.url.as_str(), certificates)?,
            None => redis::Client::open(redis.url.as_str())?,
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis.connect_timeout))
            // Every call is bounded by `UserCache::call` (reconnect wait
            // included), so a second timer per request would only cost
            // time; a timeout never made the manager reconnect anyway.
            .set_response_timeout(None)
            // One connection attempt per reconnect: while Redis is down each
            // request makes one quick attempt instead of queueing behind a
            // backoff, and the first one after it returns reconnects.
            .set_number_of_retries(0);
        ConnectionManager::new_lazy_with_config(client, manager_config)
    }

    /// Opens the connection now (during init) and checks it answers.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let ping = redis::cmd("PING");
        self.query(&ping).await
    }

    pub fn key(&self, id: Uuid) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 36);
        key.push_str(&self.prefix);
        key.push_str(id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        key
    }

    /// One round trip: the entry, or the fill lease when there is none.
    pub async fn lookup(&self, id: Uuid) -> Result<Lookup, CacheError> {
        let lease = Lease::new();
        let lookup = lookup_command(&self.key(id), &lease.token, millis(self.lease));
        let found: Option<Vec<u8>> = self.query(&lookup).await?;
        let Some(mut value) = found else {
            return Ok(Lookup::Leased(lease));
        };
        Ok(match value.first() {
            Some(&VALUE) => match split_version(&value) {
                Some((version, start)) => {
                    value.drain(..start);
                    Lookup::Hit {
                        version,
                        body: value,
                    }
                }
                None => Lookup::Unreadable(value),
            },
            Some(&NEGATIVE) if value.len() == 1 => Lookup::NotFound,
            Some(&LEASE) => Lookup::Filling,
            Some(&WRITING) => Lookup::Writing,
            _ => Lookup::Unreadable(value),
        })
    }

    /// Stores `entry` if `lease` still holds the key. Returns whether it did.
    pub async fn fill(
        &self,
        id: Uuid,
        lease: &Lease,
        entry: Entry<'_>,
    ) -> Result<bool, CacheError> {
        let (value, ttl) = match entry {
            Entry::User { version, body } => {
                (encode_value(version, body), lease.jittered(self.ttl))
            }
            Entry::NotFound => (vec![NEGATIVE], millis(self.negative_ttl)),
        };
        let mut invocation = COMPARE_AND_SET.key(self.key(id));
        invocation.arg(&lease.token).arg(value).arg(ttl);
        let stored: i64 = self.invoke(&invocation).await?;
        Ok(stored == 1)
    }

    /// Replaces an unreadable `value` with a new lease, unless it changed.
    pub async fn take_over(&self, id: Uuid, value: &[u8]) -> Result<Option<Lease>, CacheError> {
        let lease = Lease::new();
        let mut invocation = COMPARE_AND_SET.key(self.key(id));
        invocation
            .arg(value)
            .arg(&lease.token)
            .arg(millis(self.lease));
        let taken: i64 = self.invoke(&invocation).await?;
        Ok((taken == 1).then_some(lease))
    }

    /// Before a write commits: add this write to the key's guard, which
    /// voids any lease and blocks new fills until every write in it has
    /// called [`UserCache::release_write`] or the guard expires (it outlives
    /// the write's own timeouts).
    pub async fn guard_write(&self, id: Uuid) -> Result<WriteGuard, CacheError> {
        let guard = WriteGuard {
            token: unique_token().0,
        };
        let mut invocation = GUARD.key(self.key(id));
        invocation
            .arg(&guard.token[..])
            .arg(millis(self.write_guard));
        let _: i64 = self.invoke(&invocation).await?;
        Ok(guard)
    }

    /// After a write commits (or fails): take it out of the key's guard,
    /// deleting the key when no other write is in it, so the next `find`
    /// reads the committed row and fills.
    pub async fn release_write(&self, id: Uuid, guard: &WriteGuard) -> Result<(), CacheError> {
        let mut invocation = RELEASE.key(self.key(id));
        invocation.arg(&guard.token[..]);
        let _: i64 = self.invoke(&invocation).await?;
        Ok(())
    }

    /// Deletes the key (entry, lease or negative entry): `create` clears a
    /// "no such user" this way. Writes to existing users use the guard.
    pub async fn invalidate(&self, id: Uuid) -> Result<(), CacheError> {
        let mut delete = redis::cmd("DEL");
        delete.arg(self.key(id));
        self.query(&delete).await
    }

    /// Sends `command` through [`UserCache::call`].
    async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, CacheError> {
        self.call(|mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Runs a script `invocation` through [`UserCache::call`].
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, CacheError> {
        self.call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    /// Runs one Redis call within `REDIS_RESPONSE_TIMEOUT_MS`. A call that
    /// failed because its connection was cut (an idle connection killed while
    /// the sandbox was frozen) is retried once, on the manager's new
    /// connection; every call here is safe to repeat.
    async fn call<T, F, Fut>(&self, command: F) -> Result<T, CacheError>
    where
        F: Fn(Active) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = || async { command(self.connection.active().await?).await };
        let started = std::time::Instant::now();
        let result = match self.bounded(attempt()).await {
            Err(CacheError::Redis(error))
                if (error.is_connection_dropped() || error.is_io_error())
                    && !error.is_timeout() =>
            {
                self.bounded(attempt()).await
            }
            other => other,
        };
        crate::telemetry::record_redis(started.elapsed());
        result
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }
}

const TOKEN_LEN: usize = 24;

/// A token nobody else has: 16 random bytes drawn once per process (so no
/// two instances share them) and a counter, which is returned too. Every
/// lookup makes one, hits included, so it must not cost a `getrandom` call
/// each time.
fn unique_token() -> ([u8; TOKEN_LEN], u64) {
    static PROCESS: LazyLock<[u8; 16]> = LazyLock::new(|| *Uuid::new_v4().as_bytes());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut token = [0; TOKEN_LEN];
    token[..16].copy_from_slice(&*PROCESS);
    token[16..].copy_from_slice(&count.to_be_bytes());
    (token, count)
}

impl Lease {
    /// A lease with a [`unique_token`].
    fn new() -> Self {
        let (unique, count) = unique_token();
        let mut token = [LEASE; 1 + TOKEN_LEN];
        token[1..].copy_from_slice(&unique);
        Self {
            token,
            jitter: u128::from(spread_bits(
                count ^ u64::from_be_bytes(unique[..8].try_into().unwrap_or_default()),
            )),
        }
    }

    /// `ttl` shortened by up to 10%, so entries filled together expire apart.
    /// Never longer than configured.
    fn jittered(&self, ttl: Duration) -> u64 {
        let ttl = millis(ttl);
        let spread = (ttl / 10).max(1);
        ttl - (self.jitter % u128::from(spread)) as u64
    }
}

/// SplitMix64's finalizer: consecutive counters give unrelated jitters.
fn spread_bits(mut bits: u64) -> u64 {
    bits = (bits ^ (bits >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    bits = (bits ^ (bits >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    bits ^ (bits >> 31)
}

/// `v{version}:{body}`, the stored form of a user.
pub fn encode_value(version: i64, body: &[u8]) -> Vec<u8> {
    let version = version.to_string();
    let mut value = Vec::with_capacity(body.len() + version.len() + 2);
    value.push(VALUE);
    value.extend_from_slice(version.as_bytes());
    value.push(b':');
    value.extend_from_slice(body);
    value
}

/// The version of a `v{version}:{body}` value and where its body starts.
fn split_version(value: &[u8]) -> Option<(i64, usize)> {
    let colon = value.iter().take(24).position(|&byte| byte == b':')?;
    let version = std::str::from_utf8(&value[1..colon]).ok()?.parse().ok()?;
    Some((version, colon + 1))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_shortens_the_ttl_by_at_most_a_tenth_and_varies() {
        let ttl = Duration::from_secs(3600);
        let ttls: Vec<u64> = (0..200).map(|_| Lease::new().jittered(ttl)).collect();
        assert!(ttls.iter().all(|&t| (3_240_000..=3_600_000).contains(&t)));
        let distinct: std::collections::HashSet<_> = ttls.iter().collect();
        assert!(distinct.len() > 150, "{} distinct TTLs", distinct.len());
    }

    #[test]
    fn a_value_round_trips_its_version_and_body() {
        let value = encode_value(42, br#"{"id":1}"#);
        assert_eq!(value, br#"v42:{"id":1}"#);
        let (version, start) = split_version(&value).unwrap();
        assert_eq!((version, &value[start..]), (42, &br#"{"id":1}"#[..]));
        for bad in [&b"v"[..], b"vx:{}", b"v:{}", br#"v{"id":1}"#] {
            assert!(split_version(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn lease_tokens_are_unique_and_tagged() {
        let (a, b) = (Lease::new(), Lease::new());
        assert_ne!(a.token, b.token);
        assert_eq!(a.token[0], LEASE);
        assert_eq!(a.token.len(), 25);
    }
}
