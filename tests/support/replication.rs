//! A Redis primary and its replica on loopback, as an ElastiCache replication
//! group without cluster mode: the replica's link to the primary goes through
//! a fault proxy (cut it, and writes stop reaching the replica), and the
//! functions reach the primary through another proxy, the endpoint, which a
//! failover moves to the new primary as ElastiCache moves its primary
//! endpoint's DNS name. Both servers belong to the test and die with it.

use crate::proxy::{FaultProxy, Mode};
use crate::servers::RedisServer;
use crate::tls::TempDir;
use redis::aio::MultiplexedConnection;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct Replicated {
    pub primary: RedisServer,
    pub replica: RedisServer,
    /// The replica's connection to the primary runs through this.
    pub link: FaultProxy,
    /// What the functions connect to: the primary until
    /// [`Replicated::promote_replica`], the replica after.
    pub endpoint: FaultProxy,
    /// Where each server writes the copy of the data a replica receives
    /// when it synchronizes, instead of the test's working directory.
    _dirs: [TempDir; 2],
}

impl Replicated {
    /// Starts both servers and returns once the replica has synchronized.
    pub async fn start() -> Self {
        let dirs = [TempDir::new("redis-primary"), TempDir::new("redis-replica")];
        let dir = |index: usize| dirs[index].path().display().to_string();
        let (primary_dir, replica_dir) = (dir(0), dir(1));
        // Without a delay before a full synchronization (5 s by default);
        // either may become a replica, which writes what it receives there.
        let primary =
            RedisServer::start_with(&["--repl-diskless-sync-delay", "0", "--dir", &primary_dir]);
        let link = FaultProxy::start(loopback(primary.port)).await;
        let link_port = link.port.to_string();
        let replica = RedisServer::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &link_port,
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            &replica_dir,
        ]);
        let endpoint = FaultProxy::start(loopback(primary.port)).await;
        let pair = Self {
            primary,
            replica,
            link,
            endpoint,
            _dirs: dirs,
        };
        pair.wait_until_replicated(Duration::from_secs(20)).await;
        pair
    }

    /// The functions' `REDIS_URL`.
    pub fn url(&self) -> String {
        self.endpoint.url("redis", "")
    }

    /// Waits until the replica holds everything written to the primary so
    /// far, at most `limit` ([`replicated`]).
    pub async fn wait_until_replicated(&self, limit: Duration) {
        let mut primary = connect(self.primary.port).await;
        let caught_up = replicated(&mut primary, limit)
            .await
            .expect("marker and WAIT on the primary");
        assert!(caught_up, "the replica did not catch up within {limit:?}");
    }

    /// Cuts the replication link: connections stay open, nothing gets
    /// through (a partition). Writes go on reaching the primary only.
    pub fn cut_link(&self) {
        self.link.set(Mode::BlackHole);
    }

    /// The primary is lost, as in a crash: its port refuses connections and
    /// those open to it are closed.
    pub fn lose_primary(&mut self) {
        self.primary.stop();
    }

    /// Makes the replica a primary (`REPLICAOF NO ONE`) and moves the
    /// endpoint to it: new connections reach it, open ones stay where they
    /// were.
    pub async fn promote_replica(&self) {
        let mut replica = connect(self.replica.port).await;
        let () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut replica)
            .await
            .expect("REPLICAOF NO ONE");
        self.endpoint.retarget(loopback(self.replica.port));
    }

    /// Makes the old primary a replica of the promoted one, as a failover
    /// does with a primary that comes back: connections still open to it
    /// stay open and get `READONLY` for writes.
    pub async fn demote_primary(&self) {
        let mut primary = connect(self.primary.port).await;
        let () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(self.replica.port)
            .query_async(&mut primary)
            .await
            .expect("REPLICAOF the new primary");
    }

    /// Starts the lost primary again, as a replica of the promoted one (a
    /// replacement node), and returns once it has synchronized.
    pub async fn replace_lost_primary(&mut self) {
        self.primary.restart();
        self.demote_primary().await;
        let mut new_primary = connect(self.replica.port).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let acknowledged: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(200)
                .query_async(&mut new_primary)
                .await
                .expect("WAIT on the new primary");
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut new_primary)
                .await
                .expect("INFO replication");
            if acknowledged >= 1 && info.contains("state=online") {
                return;
            }
            assert!(Instant::now() < deadline, "no replica within 20 s: {info}");
        }
    }

    /// What `key` holds on the server at `port`.
    pub async fn value(port: u16, key: &str) -> Option<Vec<u8>> {
        let mut server = connect(port).await;
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut server)
            .await
            .expect("GET")
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Whether a replica of `primary` acknowledged everything written to it so
/// far within `limit`: a marker written and `WAIT`ed for, again until it is.
pub async fn replicated(
    primary: &mut MultiplexedConnection,
    limit: Duration,
) -> redis::RedisResult<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let () = redis::cmd("SET")
            .arg("replication-test:marker")
            .arg(uuid::Uuid::new_v4().to_string())
            .query_async(primary)
            .await?;
        let acknowledged: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(200)
            .query_async(primary)
            .await?;
        if acknowledged >= 1 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

async fn connect(port: u16) -> MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connect within 5 s")
    .expect("connect")
}
