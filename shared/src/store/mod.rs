//! The Postgres store: the pool, the five statements the API needs
//! (`sql.rs`), writes with an `Idempotency-Key` (`keyed.rs`), and the record
//! of every change to a user, whoever made it (`changes.rs`).
//!
//! The pool is built once per cold start with every wait bounded (connect,
//! pool wait, recycle, statement), so a missing or slow database turns into a
//! 503/504 well before the Lambda timeout. Statements are prepared once per
//! connection (`prepare_cached`). A connection found dead (the sandbox was
//! frozen and the server or a NAT dropped it), or read-only (it survived a
//! failover on the demoted writer), is discarded (`attempt.rs`) and the
//! statement retried once on a fresh one.

mod attempt;
mod audit;
mod changes;
mod keyed;
mod sql;
mod write;

pub use audit::Sampled;
pub use changes::{Change, ChangeListener, ClaimedChanges};
pub use keyed::Keyed;
pub use write::Write;

use crate::config::PostgresConfig;
use crate::error::ApiError;
use crate::hooks::{Counter, Hooks};
use crate::telemetry;
use crate::user::User;
use attempt::Failed;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sql::{LIST, SELECT};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

/// Runs `$body` with `$client: &Object` from the pool, bounded by the client
/// timeout (`statement_timeout` stops slow statements on the server; this
/// bound also covers a server or network that stopped answering).
///
/// If the connection turns out to be closed (killed while the sandbox was
/// frozen) or read-only (left on a demoted writer by a failover), it is
/// discarded, with the pool's idle ones, and the body runs once more on a
/// fresh connection. The five
/// statements are safe to repeat: update and delete are idempotent, and a
/// repeated insert of the same id is refused, not duplicated. A macro rather
/// than a function taking an async closure, so the future stays `Send`.
macro_rules! on_connection {
    ($store:expr, $name:expr, |$client:ident| $body:expr) => {{
        let store: &UserStore = $store;
        let started = std::time::Instant::now();
        let result = async {
            let client = store.pool.get().await?;
            let outcome = tokio::time::timeout(store.client_timeout, async {
                let $client = &client;
                $body
            })
            .await;
            match store.settle(client, outcome) {
                Err(Failed { retry: true, .. }) => {
                    let client = store.pool.get().await?;
                    let outcome = tokio::time::timeout(store.client_timeout, async {
                        let $client = &client;
                        $body
                    })
                    .await;
                    store.settle(client, outcome).map_err(|failed| failed.error)
                }
                other => other.map_err(|failed| failed.error),
            }
        }
        .await;
        statement_done($name, started, result.is_err());
        result
    }};
}

/// Adds statement `name`, started at `started`, to the request's Postgres
/// time and, when it is traced, its spans: the statement's name, never its
/// parameters.
fn statement_done(name: &'static str, started: std::time::Instant, failed: bool) {
    telemetry::record_postgres(started.elapsed());
    telemetry::trace::record_client(name, started, failed, || {
        vec![
            ("db.system", "postgresql".into()),
            ("db.system.name", "postgresql".into()),
            ("db.query.summary", name.into()),
        ]
    });
}

/// The result of a conditional write.
#[derive(Debug)]
pub enum Written<T> {
    Done(T),
    /// The user exists but its version matched none of the expected ones.
    Conflict,
    NotFound,
}

#[derive(Clone)]
pub struct UserStore {
    pool: Pool,
    /// Single-user reads sent to Postgres (a test hook, see `hooks.rs`).
    reads: Counter,
    /// A pause point before a keyed write commits (a test hook).
    hooks: Hooks,
    idempotency_ttl: std::time::Duration,
    client_timeout: std::time::Duration,
    /// How the pool connects, for a connection of its own that listens for
    /// change notifications (`changes.rs`).
    connection: tokio_postgres::Config,
    /// The TLS connector, when `sslmode=require`.
    tls: Option<MakeRustlsConnect>,
}

impl UserStore {
    /// Builds the pool; connects lazily, see [`UserStore::warm_up`].
    /// `sslmode=require` connects through rustls and verifies the server's
    /// certificate (against `PG_CA_FILE`, or the system roots without it);
    /// other modes connect in plain text.
    pub fn new(
        config: &PostgresConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let mut connection = config.connection.clone();
        connection.connect_timeout(config.connect_timeout);
        connection.keepalives(true);
        connection.keepalives_idle(std::time::Duration::from_secs(30));
        let statement_ms = config.statement_timeout.as_millis();
        // Appended to any `options` the URL already carries (a search_path, say).
        let options = format!(
            "{} -c statement_timeout={statement_ms} -c lock_timeout={statement_ms} \
             -c idle_in_transaction_session_timeout={}",
            connection.get_options().unwrap_or_default(),
            statement_ms * 2
        );
        connection.options(options.trim_start());
        if connection.get_application_name().is_none() {
            connection.application_name("users-api");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = match connection.get_ssl_mode() {
            SslMode::Require => Some(crate::tls::postgres_tls(config.ca_file.as_deref())?),
            _ => None,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(connection.clone(), tls.clone(), manager_config),
            None => Manager::from_config(connection.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.pool_wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()?;
        Ok(Self {
            pool,
            reads: Counter::default(),
            hooks: Hooks::default(),
            idempotency_ttl: config.idempotency_ttl,
            // The server's statement_timeout fires first when the server is
            // alive; this one is for when it is not.
            client_timeout: config.statement_timeout + std::time::Duration::from_millis(500),
            connection,
            tls,
        })
    }

    /// Opens one connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) -> Result<(), ApiError> {
        drop(self.pool.get().await?);
        Ok(())
    }

    /// Runs one write on its own, without an idempotency record.
    pub async fn write(&self, write: Write<'_>) -> Result<Written<Option<User>>, ApiError> {
        on_connection!(self, write.name(), |client| write::run(client, write).await)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<User>, ApiError> {
        self.reads.bump();
        Ok(self
            .query_opt("select_user", SELECT, &[&id])
            .await?
            .map(|row| to_user(&row)))
    }

    /// Users in id (creation) order, strictly after `after`, at most `limit`.
    pub async fn list(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<User>, ApiError> {
        let after = after.unwrap_or(Uuid::nil());
        let rows = on_connection!(self, "list_users", |client| {
            let statement = client.prepare_cached(LIST).await?;
            client.query(&statement, &[&after, &limit]).await
        })?;
        Ok(rows.iter().map(to_user).collect())
    }

    /// Runs `sql`, named `name` in spans, for all its rows, bounded and
    /// retried as any statement.
    async fn query(
        &self,
        name: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ApiError> {
        on_connection!(self, name, |client| {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        })
    }

    async fn query_opt(
        &self,
        name: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ApiError> {
        on_connection!(self, name, |client| {
            let statement = client.prepare_cached(sql).await?;
            client.query_opt(&statement, params).await
        })
    }
}

/// How many single-user reads this instance sent to Postgres: the figure
/// the cache exists to keep low (stampede tests, offload benchmark).
#[cfg(feature = "test-hooks")]
impl UserStore {
    pub fn reads(&self) -> u64 {
        self.reads.get()
    }

    /// Parks keyed writes that reach `point` at `pause`.
    pub fn pause_at(
        &mut self,
        point: crate::hooks::Point,
        pause: std::sync::Arc<crate::hooks::PausePoint>,
    ) {
        self.hooks.pause_at(point, pause);
    }
}

fn to_user(row: &Row) -> User {
    User {
        id: row.get(0),
        email: row.get(1),
        name: row.get(2),
        version: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
        owner: row.get(6),
    }
}
