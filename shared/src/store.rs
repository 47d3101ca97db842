//! The Postgres store: the pool and the five statements the API needs.
//!
//! The pool is built once per cold start with every wait bounded (connect,
//! pool wait, recycle, statement), so a missing or slow database turns into a
//! 503/504 well before the Lambda timeout. Statements are prepared once per
//! connection (`prepare_cached`). A connection found dead (the sandbox was
//! frozen and the server or a NAT dropped it) is replaced and the statement
//! retried once.

use crate::config::PostgresConfig;
use crate::error::ApiError;
use crate::user::{NewUser, User};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

const COLUMNS: &str = "id, email, name, created_at, updated_at";

#[derive(Clone)]
pub struct UserStore {
    pool: Pool,
    reads: Arc<AtomicU64>,
}

impl UserStore {
    /// Builds the pool; connects lazily, see [`UserStore::warm_up`].
    pub fn new(config: &PostgresConfig) -> Result<Self, deadpool_postgres::BuildError> {
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
        let manager = Manager::from_config(
            connection,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.pool_wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()?;
        Ok(Self {
            pool,
            reads: Arc::default(),
        })
    }

    /// Opens one connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) -> Result<(), ApiError> {
        drop(self.pool.get().await?);
        Ok(())
    }

    pub async fn insert(&self, id: Uuid, user: &NewUser) -> Result<User, ApiError> {
        let sql =
            format!("INSERT INTO users (id, email, name) VALUES ($1, $2, $3) RETURNING {COLUMNS}");
        let row = self
            .query_opt(&sql, &[&id, &user.email.as_str(), &user.name.as_str()])
            .await?;
        row.map(|row| to_user(&row))
            .ok_or_else(|| ApiError::Internal("INSERT returned no row".into()))
    }

    /// How many single-user reads this instance sent to Postgres: the figure
    /// the cache exists to keep low (stampede tests, offload benchmark).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<User>, ApiError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        Ok(self.query_opt(&sql, &[&id]).await?.map(|row| to_user(&row)))
    }

    /// Users in id (creation) order, strictly after `after`, at most `limit`.
    pub async fn list(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<User>, ApiError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        let after = after.unwrap_or(Uuid::nil());
        let rows = self
            .with_client(|client| {
                let sql = &sql;
                async move {
                    let statement = client.prepare_cached(sql).await?;
                    client.query(&statement, &[&after, &limit]).await
                }
            })
            .await?;
        Ok(rows.iter().map(to_user).collect())
    }

    pub async fn update(&self, id: Uuid, user: &NewUser) -> Result<Option<User>, ApiError> {
        let sql = format!(
            "UPDATE users SET email = $2, name = $3, version = version + 1, updated_at = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = self
            .query_opt(&sql, &[&id, &user.email.as_str(), &user.name.as_str()])
            .await?;
        Ok(row.map(|row| to_user(&row)))
    }

    /// Returns whether a row was deleted.
    pub async fn delete(&self, id: Uuid) -> Result<bool, ApiError> {
        let row = self
            .query_opt("DELETE FROM users WHERE id = $1 RETURNING id", &[&id])
            .await?;
        Ok(row.is_some())
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ApiError> {
        self.with_client(|client| async move {
            let statement = client.prepare_cached(sql).await?;
            client.query_opt(&statement, params).await
        })
        .await
    }

    /// Runs `work` on a pooled connection. If the connection turns out to be
    /// closed (killed while the sandbox was frozen), the statement cannot have
    /// taken effect, so it is retried once on a fresh connection.
    async fn with_client<'a, T, F, Fut>(&self, work: F) -> Result<T, ApiError>
    where
        F: Fn(Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + 'a,
    {
        let client = self.pool.get().await?;
        match work(client).await {
            Err(error) if error.is_closed() => {
                let client = self.pool.get().await?;
                Ok(work(client).await?)
            }
            other => Ok(other?),
        }
    }
}

fn to_user(row: &Row) -> User {
    User {
        id: row.get(0),
        email: row.get(1),
        name: row.get(2),
        created_at: row.get(3),
        updated_at: row.get(4),
    }
}
