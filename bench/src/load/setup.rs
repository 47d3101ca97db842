//! The load's own servers' side: a database of its own on the local Postgres
//! (`users_api_load`, created when missing and kept, like the tests'
//! `users_api_test`) with a schema for this run, and a `redis-server` of its
//! own on a free loopback port, so that the counters and CPU the phases read
//! are the load's alone, not those of whatever else uses the shared servers.
//! The schema is dropped at the end and the Redis server stopped (it dies
//! with this process, too).

use crate::fixtures::{self, Row};
use crate::measure::BoxError;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const DATABASE: &str = "users_api_load";
/// How long the Redis server may take to answer its first PING.
const REDIS_LIMIT: Duration = Duration::from_secs(10);

pub struct Servers {
    pub admin: tokio_postgres::Client,
    pub schema: String,
    pub database_url: String,
    pub redis_url: String,
    pub redis_pid: u32,
    redis: Child,
}

impl Servers {
    pub async fn start() -> Result<Self, BoxError> {
        let admin_url = test_support::admin_database_url();
        let schema = format!("load_{}", Uuid::new_v4().simple());
        let database_url = database_url(&admin_url, &schema)?;
        let admin = connect(&admin_url).await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
            .await?
            .is_some();
        if !exists {
            // Two runs starting at once may both try; the loser's error is harmless.
            let _ = admin
                .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .await;
        }
        let mut migrator = connect(&database_url).await?;
        migrator
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await?;
        users_api::migrate::run(&mut migrator).await?;
        let (redis, port) = start_redis().await?;
        let redis_pid = redis.id().ok_or("redis-server has no pid")?;
        Ok(Self {
            admin,
            schema,
            database_url,
            redis_url: format!("redis://127.0.0.1:{port}"),
            redis_pid,
            redis,
        })
    }

    /// Inserts `rows` into the run's schema.
    pub async fn seed(&self, rows: &[Row]) -> Result<(), BoxError> {
        let pg = connect(&self.database_url).await?;
        fixtures::insert(&pg, &self.schema, rows).await?;
        Ok(())
    }

    /// Turns the trigger that records every change off, for
    /// `--break-invalidation`: then neither the writes nor the consumer void
    /// the finds' keys.
    pub async fn disable_change_records(&self) -> Result<(), BoxError> {
        let pg = connect(&self.database_url).await?;
        pg.batch_execute("ALTER TABLE users DISABLE TRIGGER users_record_change")
            .await?;
        Ok(())
    }

    pub async fn redis(&self) -> Result<redis::aio::MultiplexedConnection, BoxError> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// Drops the schema and stops the Redis server.
    pub async fn stop(mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Ok(pg) = connect(&self.database_url).await {
            let _ = pg.batch_execute(&drop_schema).await;
        }
        let _ = self.redis.start_kill();
        let _ = self.redis.wait().await;
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, BoxError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The admin URL's server and user, on the load's database, `search_path`
/// set to `schema`.
fn database_url(admin_url: &str, schema: &str) -> Result<String, BoxError> {
    let admin: tokio_postgres::Config = admin_url.parse()?;
    // The load stays on this machine.
    let host = match admin.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host))
            if matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") =>
        {
            host.clone()
        }
        _ => return Err("TEST_DATABASE_URL must name a loopback host".into()),
    };
    let port = admin.get_ports().first().copied().unwrap_or(5432);
    let user = admin.get_user().unwrap_or("postgres");
    Ok(format!(
        "postgres://{user}@{host}:{port}/{DATABASE}?options=-c%20search_path%3D{schema}"
    ))
}

/// `redis-server` on a free loopback port, no persistence; killed if this
/// process dies.
async fn start_redis() -> Result<(Child, u16), BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes one async-signal-safe call (prctl).
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn()?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let ready = async {
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(REDIS_LIMIT, ready)
        .await
        .map_err(|_| "the load's redis-server did not answer")?;
    Ok((child, port))
}
