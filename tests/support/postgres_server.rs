//! A Postgres of the test's own, for tests that must reconfigure the server
//! (make its sessions read-only, as a demoted writer's are after a failover):
//! `initdb` into a temporary directory, `postgres` on a free loopback port,
//! trust authentication, stopped and removed on drop. The shared Postgres is
//! never reconfigured.
//!
//! [`PrivateEnv`] is a [`TestEnv`](crate::TestEnv) on such a server: a fresh
//! migrated database, the shared Redis under a key prefix of its own, and
//! the function state built from them.

use crate::servers::spawn_listening;
use crate::tls::TempDir;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use users_api::AppState;
use uuid::Uuid;

/// The database [`PrivateEnv`] migrates and the functions use; the admin
/// connection stays on `postgres`, so settings made for this database do
/// not reach it.
pub const DATABASE: &str = "users_api";

/// A `postgres` of the test's own, in a temporary directory.
pub struct PostgresServer {
    pub port: u16,
    child: Child,
    /// Holds the data directory (`data/`), the socket and the server's log;
    /// removed after the server has stopped ([`Drop`] runs first).
    dir: TempDir,
    bin: PathBuf,
}

impl PostgresServer {
    /// Runs `initdb` and starts the server; returns once it accepts
    /// connections (a fresh cluster refuses them while it starts up).
    pub fn start() -> Self {
        let bin = newest_bin_dir();
        let owner = postgres_owner();
        let dir = TempDir::new("users-api-pg");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown to postgres");
        }
        let initdb = as_owner(Command::new(bin.join("initdb")), owner, dir.path())
            .arg("--pgdata")
            .arg(dir.path().join("data"))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs (scripts/services.sh installs PostgreSQL)");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let (port, child) = spawn_listening("private postgres", |port| {
            spawn(&bin, owner, dir.path(), port)
        });
        let server = Self {
            port,
            child,
            dir,
            bin,
        };
        server.wait_until_ready(Duration::from_secs(10));
        server
    }

    /// The URL of `database` on this server, as the superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A connection of its own to `database`.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(database), NoTls)
            .await
            .expect("connect to the private postgres");
        tokio::spawn(connection);
        client
    }

    fn wait_until_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private postgres not ready within {limit:?}: {}",
                std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PostgresServer {
    /// A fast shutdown (SIGINT: sessions are ended, nothing waits for
    /// clients), then SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().is_ok_and(|status| status.is_none()) {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.wait();
    }
}

/// `postgres` on `port`, listening on loopback only, its socket in `dir`.
/// fsync is off: the cluster is thrown away.
fn spawn(bin: &Path, owner: Option<(u32, u32)>, dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("log")).expect("the server's log");
    as_owner(Command::new(bin.join("postgres")), owner, dir)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("postgres starts")
}

/// `command` run as `owner` when there is one (the child drops root's uid,
/// gid and groups before it execs, so the child is the server itself and
/// its signals reach it), in `dir`, which it can read.
fn as_owner(mut command: Command, owner: Option<(u32, u32)>, dir: &Path) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command.current_dir(dir);
    command
}

/// Postgres refuses to run as root, as CI runs: then it runs as the
/// `postgres` OS user (uid, gid), which the Debian packages create.
fn postgres_owner() -> Option<(u32, u32)> {
    let running_as = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    (running_as == 0).then(crate::tls::postgres_user)
}

/// The newest `/usr/lib/postgresql/<version>/bin` that holds `initdb`.
fn newest_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .expect("PostgreSQL server binaries in /usr/lib/postgresql/<version>/bin")
}

/// One test's world on a [`PostgresServer`] of its own: the database
/// [`DATABASE`] migrated, a key prefix in the shared Redis (its keys deleted
/// on drop) and the function state built from them.
pub struct PrivateEnv {
    pub state: AppState,
    pub key_prefix: String,
    pub settings: HashMap<String, String>,
    /// An admin connection to the database `postgres` of the server.
    admin: tokio_postgres::Client,
    pub server: PostgresServer,
}

impl PrivateEnv {
    /// `overrides` as in [`TestEnv::with_settings`](crate::TestEnv::with_settings).
    pub async fn new(overrides: &[(&str, &str)]) -> Self {
        let server = PostgresServer::start();
        let admin = server.connect("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await
            .expect("create the database");
        let mut migrator = server.connect(DATABASE).await;
        users_api::migrate::run(&mut migrator)
            .await
            .expect("migrate");
        let key_prefix = format!("test-{}", Uuid::new_v4().simple());
        let settings = crate::test_settings(server.url(DATABASE), &key_prefix, overrides);
        let state = crate::state_from(&settings).await;
        Self {
            state,
            key_prefix,
            settings,
            admin,
            server,
        }
    }

    /// A superuser connection to the server's `postgres` database, to
    /// reconfigure it.
    pub fn admin(&self) -> &tokio_postgres::Client {
        &self.admin
    }

    /// A connection of its own to [`DATABASE`], opened now: it gets the
    /// settings new sessions get.
    pub async fn new_session(&self) -> tokio_postgres::Client {
        self.server.connect(DATABASE).await
    }

    pub async fn row_count(&self) -> i64 {
        self.new_session()
            .await
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .expect("count")
            .get(0)
    }

    /// The name stored for user `id`, `None` when there is no such row.
    pub async fn stored_name(&self, id: Uuid) -> Option<String> {
        self.new_session()
            .await
            .query_opt("SELECT name FROM users WHERE id = $1", &[&id])
            .await
            .expect("select the user")
            .map(|row| row.get(0))
    }
}

impl Drop for PrivateEnv {
    fn drop(&mut self) {
        let redis = self.settings["REDIS_URL"].clone();
        let pattern = format!("{}:*", self.key_prefix);
        // Drop runs inside the test's runtime; clean up from a thread of our own.
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(crate::delete_keys(&redis, &pattern));
        });
        let _ = cleanup.join();
    }
}
