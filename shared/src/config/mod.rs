//! Configuration from the environment, read once per cold start.
//!
//! Required values (`DATABASE_URL`, `REDIS_URL`) have no default: a function that
//! would silently talk to the wrong database is worse than one that refuses to
//! start. Every bound the service enforces (timeouts, body and field limits, cache
//! lifetimes) is a setting here with a documented default. Errors name the
//! variable and never echo its value, since URLs carry passwords.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod traces;
pub use traces::TracesConfig;

/// The pool size when `PG_POOL_MAX_SIZE` is unset: the environment's
/// concurrency, within these bounds (docs/deploy.md gives the connection
/// budget).
const POOL_DEFAULT_MIN: usize = 2;
const POOL_DEFAULT_MAX: usize = 16;

/// Everything a function needs to build its state.
#[derive(Clone)]
pub struct Config {
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub limits: Limits,
    /// CloudWatch namespace of the EMF metric lines; `None` when disabled.
    pub metrics_namespace: Option<String>,
    /// `AUTH_LOCAL_HEADERS`: for local use only, an event without an
    /// authorizer context names its caller in `x-local-sub` and
    /// `x-local-scopes` headers. Never on in a deployment.
    pub local_auth_headers: bool,
    /// `AWS_LAMBDA_MAX_CONCURRENCY`: invocations served at once.
    pub concurrency: usize,
    /// The consumer of the change records (the `invalidate-cache` function).
    pub changes: ChangesConfig,
    /// Where spans go; `None`: no traces ([`traces`]).
    pub traces: Option<TracesConfig>,
}

/// How the `invalidate-cache` function works through the change records
/// (docs/cache.md, "Writers outside the API").
#[derive(Clone, Copy, Debug)]
pub struct ChangesConfig {
    /// Records claimed, applied and deleted together.
    pub batch_size: u32,
    /// How often the consumer looks for records without being notified:
    /// records a killed consumer left behind are applied within this.
    pub rescan: Duration,
    /// The consumer claims no new batch this close to its invocation's
    /// deadline, so that it ends by itself.
    pub stop_before_deadline: Duration,
    /// The auditor that runs beside the consumer.
    pub audit: AuditConfig,
}

/// How the auditor in `invalidate-cache` samples the cache against Postgres
/// (docs/cache.md, "Auditor").
#[derive(Clone, Copy, Debug)]
pub struct AuditConfig {
    /// Entries sampled per second; zero turns the auditor off.
    pub per_second: u32,
    /// The bound D: an entry superseded by a change recorded less than this
    /// ago may still be voided by the consumer, so it is not a finding; ids
    /// the consumer voided are audited again this long after.
    pub bound: Duration,
}

#[derive(Clone)]
pub struct PostgresConfig {
    /// Parsed from `DATABASE_URL`; holds the password, so never logged.
    pub connection: tokio_postgres::Config,
    /// Where `DATABASE_URL` points, without user, password or query: what
    /// logs may say.
    pub endpoint: String,
    pub pool_max_size: usize,
    pub connect_timeout: Duration,
    pub pool_wait_timeout: Duration,
    pub statement_timeout: Duration,
    /// Extra CA bundle (PEM) trusted for `sslmode=require`: the RDS global bundle.
    pub ca_file: Option<PathBuf>,
    /// Where the password comes from when it is not in `DATABASE_URL`.
    pub secret: Option<SecretSource>,
    /// How long the answer to a write with an `Idempotency-Key` is kept.
    pub idempotency_ttl: Duration,
}

/// A Secrets Manager secret read at init through the AWS Parameters and
/// Secrets Lambda Extension.
#[derive(Clone)]
pub struct SecretSource {
    pub secret_id: String,
    pub port: u16,
    /// `AWS_SESSION_TOKEN`, which the extension requires; never logged.
    pub token: String,
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`; may hold a password, so never logged. In cluster mode a
    /// comma-separated list of seed nodes (one is enough).
    pub url: String,
    /// `url` without passwords: what logs may say.
    pub endpoint: String,
    /// `REDIS_CLUSTER=true`: Redis Cluster (ElastiCache Serverless, cluster mode).
    pub cluster: bool,
    /// Extra CA (PEM) trusted for `rediss://`; the system roots otherwise.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Clone)]
pub struct CacheConfig {
    /// Keys are `{key_prefix}:v5:user:{id}`; the `v5` changes with the entry format.
    pub key_prefix: String,
    /// How long an entry is fresh (before jitter).
    pub ttl: Duration,
    /// How much longer an entry stays in Redis after its freshness, to be
    /// answered when Postgres fails (fail-safe); zero turns that off.
    pub fail_safe: Duration,
    /// How long a find with a kept entry waits for Postgres before it
    /// answers the entry instead (the soft timeout).
    pub fail_safe_timeout: Duration,
    /// In the last this-many percent of an entry's freshness, one caller
    /// refreshes it while the others keep getting hits; zero turns it off.
    pub eager_refresh_percent: u8,
    pub negative_ttl: Duration,
    /// How long a miss holds the right to fill an entry.
    pub lease: Duration,
    /// How long a miss waits for another caller's fill before going to Postgres.
    pub fill_wait: Duration,
    /// How long a write's guard blocks fills if its cleanup after the commit is lost.
    /// Longer than any write can take, see [`Config::from_lookup`].
    pub write_guard: Duration,
    /// How many replicas must hold a write's guard before its statement runs
    /// (`WAIT` after the guard and after the release); zero does not wait.
    /// So that a failover cannot lose the guard (docs/cache.md, "Writes").
    pub guard_replicas: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub name_max_chars: usize,
    pub email_max_chars: usize,
    pub list_max_limit: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            name_max_chars: 200,
            email_max_chars: 254,
            list_max_limit: 100,
        }
    }
}

/// A setting that is missing or malformed. Displays the variable name and what
/// is wrong with it, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {} {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can configure a function
    /// without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let database_url = env.required("DATABASE_URL")?;
        let connection = crate::tls::normalize_sslmode(&database_url)
            .parse::<tokio_postgres::Config>()
            .map_err(|_| ConfigError {
                variable: "DATABASE_URL",
                problem: "is not a valid PostgreSQL connection URL",
            })?;
        let redis_url = env.required("REDIS_URL")?;
        if redis_url
            .split(',')
            .any(|url| redis::parse_redis_url(url.trim()).is_none())
        {
            return Err(ConfigError {
                variable: "REDIS_URL",
                problem: "is not a valid redis:// or rediss:// URL",
            });
        }
        let defaults = Limits::default();
        // Set by Lambda Managed Instances: the invocations one environment
        // serves at once (unset, 1, on classic Lambda).
        let concurrency: usize = env.parse("AWS_LAMBDA_MAX_CONCURRENCY", 1)?;
        let postgres = PostgresConfig {
            connection,
            endpoint: redacted_endpoint(&database_url),
            pool_max_size: env.parse(
                "PG_POOL_MAX_SIZE",
                concurrency.clamp(POOL_DEFAULT_MIN, POOL_DEFAULT_MAX),
            )?,
            connect_timeout: env.millis("PG_CONNECT_TIMEOUT_MS", 2000)?,
            pool_wait_timeout: env.millis("PG_POOL_WAIT_TIMEOUT_MS", 1000)?,
            statement_timeout: env.millis("PG_STATEMENT_TIMEOUT_MS", 3000)?,
            ca_file: env.optional("PG_CA_FILE").map(PathBuf::from),
            idempotency_ttl: Duration::from_secs(env.parse("IDEMPOTENCY_TTL_SECONDS", 86_400)?),
            secret: match env.optional("DATABASE_SECRET_ARN") {
                None => None,
                Some(secret_id) => Some(SecretSource {
                    secret_id,
                    port: env.parse(
                        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
                        DEFAULT_EXTENSION_PORT,
                    )?,
                    token: env.required("AWS_SESSION_TOKEN")?,
                    timeout: env.millis("SECRETS_TIMEOUT_MS", 2000)?,
                }),
            },
        };
        // A write waits for a pooled connection (at most wait + connect), runs
        // one statement, and may retry both once on a dead connection. Its
        // guard must outlive all of that, with a second to spare.
        let longest_write = 2
            * (postgres.pool_wait_timeout + postgres.connect_timeout + postgres.statement_timeout)
            + Duration::from_secs(1);
        let longest_write_ms = u64::try_from(longest_write.as_millis()).unwrap_or(u64::MAX);
        Ok(Self {
            postgres,
            redis: RedisConfig {
                endpoint: redis_url
                    .split(',')
                    .map(|url| redacted_endpoint(url.trim()))
                    .collect::<Vec<_>>()
                    .join(","),
                url: redis_url,
                cluster: env.flag("REDIS_CLUSTER", false)?,
                ca_file: env.optional("REDIS_CA_FILE").map(PathBuf::from),
                connect_timeout: env.millis("REDIS_CONNECT_TIMEOUT_MS", 200)?,
                response_timeout: env.millis("REDIS_RESPONSE_TIMEOUT_MS", 50)?,
            },
            cache: CacheConfig {
                key_prefix: env
                    .optional("CACHE_KEY_PREFIX")
                    .unwrap_or_else(|| "users-api".to_owned()),
                ttl: Duration::from_secs(env.parse("CACHE_TTL_SECONDS", 3600)?),
                fail_safe: Duration::from_secs(env.whole("CACHE_FAIL_SAFE_SECONDS", 86_400)?),
                fail_safe_timeout: env.millis("CACHE_FAIL_SAFE_TIMEOUT_MS", 200)?,
                eager_refresh_percent: env.percent("CACHE_EAGER_REFRESH_PERCENT", 10)?,
                negative_ttl: Duration::from_secs(env.parse("CACHE_NEGATIVE_TTL_SECONDS", 30)?),
                lease: env.millis("CACHE_LEASE_MS", 3000)?,
                fill_wait: env.millis("CACHE_FILL_WAIT_MS", 40)?,
                write_guard: env.millis("CACHE_WRITE_GUARD_MS", longest_write_ms)?,
                guard_replicas: env.count("CACHE_GUARD_REPLICAS", 0)?,
            },
            limits: Limits {
                max_body_bytes: env.parse("MAX_BODY_BYTES", defaults.max_body_bytes)?,
                name_max_chars: env.parse("NAME_MAX_CHARS", defaults.name_max_chars)?,
                email_max_chars: env.parse("EMAIL_MAX_CHARS", defaults.email_max_chars)?,
                list_max_limit: env.parse("LIST_MAX_LIMIT", defaults.list_max_limit)?,
            },
            metrics_namespace: env.flag("METRICS_ENABLED", true)?.then(|| {
                env.optional("METRICS_NAMESPACE")
                    .unwrap_or_else(|| "users-api".to_owned())
            }),
            local_auth_headers: env.flag("AUTH_LOCAL_HEADERS", false)?,
            concurrency,
            changes: ChangesConfig {
                batch_size: env.parse("CHANGES_BATCH_SIZE", 500)?,
                rescan: env.millis("CHANGES_RESCAN_MS", 1000)?,
                stop_before_deadline: env.millis("CHANGES_STOP_BEFORE_DEADLINE_MS", 3000)?,
                audit: AuditConfig {
                    per_second: env.count("CACHE_AUDIT_PER_SECOND", 5)?,
                    bound: env.millis("CACHE_AUDIT_BOUND_MS", 1000)?,
                },
            },
            traces: traces::from_env(&env)?,
        })
    }
}

/// The port of the AWS Parameters and Secrets Lambda Extension when
/// `PARAMETERS_SECRETS_EXTENSION_HTTP_PORT` is unset.
pub const DEFAULT_EXTENSION_PORT: u16 = 2773;

/// `scheme://host:port/path` of a URL: no user, password or query (where
/// libpq URLs may carry `password=`). How a URL reaches a log.
fn redacted_endpoint(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => host,
        None => &rest[..authority_end],
    };
    format!("{scheme}://{host}{}", &rest[authority_end..])
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|value| !value.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError {
            variable: name,
            problem: "is required but not set",
        })
    }

    fn parse<T: FromStr + PartialOrd + Default>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.optional(name) else {
            return Ok(default);
        };
        match raw.trim().parse::<T>() {
            Ok(value) if value > T::default() => Ok(value),
            _ => Err(ConfigError {
                variable: name,
                problem: "must be a positive whole number",
            }),
        }
    }

    /// A whole number where zero is allowed (it turns a feature off).
    fn whole(&self, name: &'static str, default: u64) -> Result<u64, ConfigError> {
        let Some(raw) = self.optional(name) else {
            return Ok(default);
        };
        raw.trim().parse().map_err(|_| ConfigError {
            variable: name,
            problem: "must be a whole number",
        })
    }

    /// A count where zero is allowed, that fits in 32 bits.
    fn count(&self, name: &'static str, default: u32) -> Result<u32, ConfigError> {
        let value = self.whole(name, u64::from(default))?;
        u32::try_from(value).map_err(|_| ConfigError {
            variable: name,
            problem: "must be a whole number",
        })
    }

    /// A percentage, 0 to 99.
    fn percent(&self, name: &'static str, default: u8) -> Result<u8, ConfigError> {
        match self.whole(name, u64::from(default)) {
            Ok(value @ 0..=99) => Ok(u8::try_from(value).unwrap_or(default)),
            _ => Err(ConfigError {
                variable: name,
                problem: "must be a whole number from 0 to 99",
            }),
        }
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .optional(name)
            .map(|raw| raw.trim().to_ascii_lowercase())
        {
            None => Ok(default),
            Some(raw) if raw == "true" || raw == "1" => Ok(true),
            Some(raw) if raw == "false" || raw == "0" => Ok(false),
            Some(_) => Err(ConfigError {
                variable: name,
                problem: "must be true or false",
            }),
        }
    }

    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests;
