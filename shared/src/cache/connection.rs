//! The connection to Redis: one multiplexed connection to a standalone server
//! that reconnects by itself, or a Redis Cluster (ElastiCache Serverless,
//! cluster mode enabled), over TLS for `rediss://`. Every call is bounded by
//! `REDIS_RESPONSE_TIMEOUT_MS` and retried once when its connection was cut.
//!
//! A standalone server that stops answering as a primary (`READONLY` after a
//! failover demoted it, `MASTERDOWN`, `LOADING`) has its connection dropped:
//! the next call opens a new one through the endpoint, which names the new
//! primary (`standalone.rs`). The cluster client does this itself: it
//! refreshes its slots on `READONLY` and `MOVED`. A write's script can be
//! followed by `WAIT` on the same connection and node
//! ([`Redis::run_replicated`]).

use super::protocol::millis;
use super::standalone::Standalone;
use crate::config::RedisConfig;
use crate::telemetry;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture, Script, ScriptInvocation,
    ServerErrorKind, Value,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a cache call did not complete. Either way the caller treats Redis as
/// absent for this request.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis call failed")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The write reached the primary, but fewer replicas than
    /// `CACHE_GUARD_REPLICAS` acknowledged it within `WAIT`'s timeout.
    #[error("{acknowledged} of {wanted} replicas acknowledged the write within {waited:?}")]
    Replicas {
        acknowledged: u32,
        wanted: u32,
        waited: Duration,
    },
}

/// Redis, as the cache calls it.
#[derive(Clone)]
pub(crate) struct Redis {
    link: Link,
    timeout: Duration,
    /// `WAIT`'s own timeout: four fifths of `timeout`, so that it can end
    /// with the replicas' count before the call's bound. Redis checks a
    /// blocked client's timeout at its `hz` (every 100 ms by default), so
    /// below that it is mostly the call's bound that ends a `WAIT` short of
    /// replicas: the same refusal, as a timeout.
    wait: Duration,
}

#[derive(Clone)]
enum Link {
    Single(Arc<Standalone>),
    /// Connected on first use, so a cold start while Redis is down succeeds.
    Cluster {
        client: Arc<ClusterClient>,
        connected: Arc<tokio::sync::Mutex<Option<ClusterConnection>>>,
    },
}

/// The connection one call runs on.
enum Active {
    /// With the generation of the manager, to replace that one only.
    Single(ConnectionManager, u64),
    Cluster(ClusterConnection),
}

/// What one call sends, as its span names it: the command or script, and
/// the key it works on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op<'a> {
    /// `PING`, `GET`, `DEL`, or what a script does: `lookup`,
    /// `compare_and_set`, `guard`, `release`.
    pub name: &'static str,
    pub key: Option<&'a str>,
}

impl<'a> Op<'a> {
    pub(crate) fn on(name: &'static str, key: &'a str) -> Self {
        Self {
            name,
            key: Some(key),
        }
    }

    /// The span's attributes: never the key's id or any value sent, only
    /// the key's prefix (the part before the id: `users-api:v5:user:`).
    fn attributes(self) -> Vec<(&'static str, telemetry::trace::Value)> {
        let mut attributes = vec![
            ("db.system", "redis".into()),
            ("db.system.name", "redis".into()),
            ("db.operation.name", self.name.into()),
        ];
        if let Some((prefix, _)) = self.key.and_then(|key| key.rsplit_once(':')) {
            attributes.push(("users_api.key_prefix", format!("{prefix}:").into()));
        }
        attributes
    }
}

impl Redis {
    /// Creates the client without waiting for Redis: a cold start while
    /// Redis is down must still succeed.
    pub(crate) fn new(config: &RedisConfig) -> Result<Self, BoxError> {
        let certificates = match &config.ca_file {
            None => None,
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|error| {
                    format!("cannot read REDIS_CA_FILE {}: {error}", path.display())
                })?),
            }),
        };
        let link = if config.cluster {
            let nodes = config.url.split(',').map(str::trim);
            let mut builder = ClusterClientBuilder::new(nodes)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(1);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            Link::Cluster {
                client: Arc::new(builder.build()?),
                connected: Arc::default(),
            }
        } else {
            let client = match certificates {
                Some(certificates) => {
                    redis::Client::build_with_tls(config.url.as_str(), certificates)?
                }
                None => redis::Client::open(config.url.as_str())?,
            };
            Link::Single(Arc::new(Standalone::new(client, config)?))
        };
        let timeout = config.response_timeout;
        Ok(Self {
            link,
            timeout,
            wait: (timeout - timeout / 5).max(Duration::from_millis(1)),
        })
    }

    /// Sends `command` (`op`) through [`Redis::call`].
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        op: Op<'_>,
        command: &Cmd,
    ) -> Result<T, CacheError> {
        self.call(op, |mut connection| async move {
            command.query_async(&mut connection).await
        })
        .await
    }

    /// Runs a script `invocation` (`op`) through [`Redis::call`].
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        op: Op<'_>,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, CacheError> {
        self.call(op, |mut connection| async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    /// Runs `script`, whose `EVALSHA` is `call`, then, when `replicas` is not
    /// zero, `WAIT replicas` for [`Redis::wait`], in one pipeline: on a
    /// standalone server one connection carries both, so `WAIT` counts the
    /// replicas holding the script's write; in a cluster the client sends a
    /// pipeline to the node owning its first key's slot, so only the key's
    /// own shard waits (a `WAIT` alone would go to every primary). A server
    /// that does not have the script (new, restarted, flushed) loads it and
    /// is sent the pipeline again (the first `WAIT` ran too, for nothing
    /// new). `Err(CacheError::Replicas)` when fewer replicas acknowledged:
    /// the write is on the primary all the same.
    pub(crate) async fn run_replicated<T: FromRedisValue>(
        &self,
        op: Op<'_>,
        script: &Script,
        call: Cmd,
        replicas: u32,
    ) -> Result<T, CacheError> {
        let mut pipeline = redis::pipe();
        pipeline.add_command(call);
        if replicas > 0 {
            pipeline.cmd("WAIT").arg(replicas).arg(millis(self.wait));
        }
        let pipeline = &pipeline;
        let values: Vec<Value> = self
            .call(op, |mut connection| async move {
                match pipeline.query_async(&mut connection).await {
                    Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        script.load_async(&mut connection).await?;
                        pipeline.query_async(&mut connection).await
                    }
                    answered => answered,
                }
            })
            .await?;
        let mut values = values.into_iter();
        let answer = T::from_redis_value(values.next().unwrap_or(Value::Nil))
            .map_err(redis::RedisError::from)?;
        if replicas > 0 {
            let acknowledged = u32::from_redis_value(values.next().unwrap_or(Value::Nil))
                .map_err(redis::RedisError::from)?;
            if acknowledged < replicas {
                return Err(CacheError::Replicas {
                    acknowledged,
                    wanted: replicas,
                    waited: self.wait,
                });
            }
        }
        Ok(answer)
    }

    /// Runs one Redis call within `REDIS_RESPONSE_TIMEOUT_MS`. A call that
    /// failed because its connection was cut (an idle connection killed while
    /// the sandbox was frozen) is retried once, on the manager's new
    /// connection; every call of the cache is safe to repeat. A call answered
    /// by a server that is no primary (any more) is not retried: its
    /// connection is dropped, and the next call reconnects.
    async fn call<T, F, Fut>(&self, op: Op<'_>, command: F) -> Result<T, CacheError>
    where
        F: Fn(Active) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = || async {
            let active = self.active().await?;
            let generation = match &active {
                Active::Single(_, generation) => Some(*generation),
                Active::Cluster(_) => None,
            };
            let result = command(active).await;
            if let (Err(error), Some(generation), Link::Single(standalone)) =
                (&result, generation, &self.link)
            {
                standalone.reconnect_unless_primary(generation, error);
            }
            result
        };
        let started = Instant::now();
        let result = match self.bounded(attempt()).await {
            Err(CacheError::Redis(error))
                if (error.is_connection_dropped() || error.is_io_error())
                    && !error.is_timeout() =>
            {
                self.bounded(attempt()).await
            }
            other => other,
        };
        telemetry::record_redis(started.elapsed());
        telemetry::trace::record_client(op.name, started, result.is_err(), || op.attributes());
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

    async fn active(&self) -> redis::RedisResult<Active> {
        match &self.link {
            Link::Single(standalone) => {
                let (manager, generation) = standalone.current();
                Ok(Active::Single(manager, generation))
            }
            Link::Cluster { client, connected } => {
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
            Self::Single(connection, _) => connection.req_packed_command(cmd),
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
            Self::Single(connection, _) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection, _) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}
