//! Private Redis deployments in the shapes production uses: a TLS-only server
//! (ElastiCache with in-transit encryption, `rediss://`) and a three-primary
//! cluster (ElastiCache cluster mode / Serverless), with or without a replica
//! per primary.
//!
//! Each runs on free loopback ports, in a temporary directory of its own, and
//! is killed on drop. The shared Redis is not touched.

use crate::servers::{free_port, spawn_listening};
use crate::tls::{TempDir, TestCa};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_redis(args: &[String], dir: &Path) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--dir"])
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/services.sh installs it)")
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A `redis-server` that speaks TLS only (`--port 0`), with a certificate
/// for 127.0.0.1 issued by [`RedisTlsServer::ca`]. Clients need no
/// certificate of their own (`--tls-auth-clients no`, as on ElastiCache).
pub struct RedisTlsServer {
    pub port: u16,
    pub ca: TestCa,
    child: Child,
    _dir: TempDir,
}

impl RedisTlsServer {
    pub fn start() -> Self {
        let dir = TempDir::new("redis-tls");
        let ca = TestCa::new("users-api test CA (redis)");
        let server = ca.server_cert();
        let ca_file = dir.write("ca.pem", &ca.cert_pem);
        let cert_file = dir.write("server.crt", &server.cert_pem);
        let key_file = dir.write("server.key", &server.key_pem);
        let path = |file: &PathBuf| file.display().to_string();
        let (port, child) = spawn_listening("TLS redis-server (built with TLS?)", |port| {
            let args = [
                "--port".to_owned(),
                "0".to_owned(),
                "--tls-port".to_owned(),
                port.to_string(),
                "--tls-cert-file".to_owned(),
                path(&cert_file),
                "--tls-key-file".to_owned(),
                path(&key_file),
                "--tls-ca-cert-file".to_owned(),
                path(&ca_file),
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
            ];
            spawn_redis(&args, dir.path())
        });
        Self {
            port,
            ca,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisTlsServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Three `redis-server` primaries joined into one cluster, each owning a
/// third of the 16384 slots, and a replica each when asked for. Cluster bus
/// ports are chosen free too (`--cluster-port`), instead of Redis' default of
/// port + 10000.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// The CA of the nodes' certificates when the cluster speaks TLS only
    /// (clients and cluster bus), as ElastiCache Serverless does.
    pub ca: Option<TestCa>,
    children: Vec<Child>,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts a plain-text cluster; see [`RedisCluster::start_with_tls`].
    pub fn start() -> Self {
        Self::start_on(None, 0)
    }

    /// Starts a cluster whose nodes accept TLS only (`--tls-cluster yes`).
    pub fn start_with_tls() -> Self {
        Self::start_on(Some(TestCa::new("users-api test CA (redis cluster)")), 0)
    }

    /// Starts a plain-text cluster of three primaries and a replica each
    /// (six nodes; which is which, [`RedisCluster::is_primary`] says), and
    /// returns once every replica has synchronized with its primary.
    pub fn start_with_replicas() -> Self {
        Self::start_on(None, 1)
    }

    /// Starts the nodes, runs `redis-cli --cluster create`, and returns once
    /// every node reports `cluster_state:ok` and every replica's link to its
    /// primary is up (bounded by 30 s).
    fn start_on(ca: Option<TestCa>, replicas: usize) -> Self {
        let dir = TempDir::new("redis-cluster");
        let mut tls_args = Vec::new();
        let mut cli_tls_args = Vec::new();
        if let Some(ca) = &ca {
            let server = ca.server_cert();
            let ca_file = dir.write("ca.pem", &ca.cert_pem).display().to_string();
            let cert_file = dir.write("server.crt", &server.cert_pem);
            let key_file = dir.write("server.key", &server.key_pem);
            tls_args = vec![
                "--tls-cert-file".to_owned(),
                cert_file.display().to_string(),
                "--tls-key-file".to_owned(),
                key_file.display().to_string(),
                "--tls-ca-cert-file".to_owned(),
                ca_file.clone(),
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
                "--tls-cluster".to_owned(),
                "yes".to_owned(),
            ];
            cli_tls_args = vec!["--tls".to_owned(), "--cacert".to_owned(), ca_file];
        }
        let mut cluster = Self {
            ports: Vec::new(),
            ca,
            children: Vec::new(),
            dir,
        };
        for _ in 0..3 * (1 + replicas) {
            let (port, child) = spawn_listening("cluster node", |port| {
                let (plain_port, tls_port) = match cluster.ca {
                    Some(_) => (0, port),
                    None => (port, 0),
                };
                let mut args = vec![
                    "--port".to_owned(),
                    plain_port.to_string(),
                    "--tls-port".to_owned(),
                    tls_port.to_string(),
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-port".to_owned(),
                    free_port().to_string(),
                    "--cluster-config-file".to_owned(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".to_owned(),
                    "5000".to_owned(),
                    // Replicas synchronize at once instead of after 5 s.
                    "--repl-diskless-sync-delay".to_owned(),
                    "0".to_owned(),
                ];
                args.extend(tls_args.iter().cloned());
                spawn_redis(&args, cluster.dir.path())
            });
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        let output = Command::new("redis-cli")
            .args(&cli_tls_args)
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    /// `redis://` (or `rediss://`) `127.0.0.1:{port}` for every node: the
    /// seed list of a client.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        self.ports
            .iter()
            .map(|port| format!("{scheme}://127.0.0.1:{port}"))
            .collect()
    }

    /// A client of one node, trusting the cluster's CA when it has one.
    pub fn node_client(&self, index: usize) -> redis::Client {
        let url = &self.urls()[index];
        match &self.ca {
            Some(ca) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.cert_pem.as_bytes().to_vec()),
                },
            ),
            None => redis::Client::open(url.as_str()),
        }
        .expect("node client")
    }

    /// `INFO replication` of node `index`.
    pub fn replication(&self, index: usize) -> Option<String> {
        let client = self.node_client(index);
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut connection)
            .ok()
    }

    /// Whether node `index` is a primary now.
    pub fn is_primary(&self, index: usize) -> bool {
        self.replication(index)
            .is_some_and(|info| info.contains("role:master"))
    }

    fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let node_is_ok = |index: usize| -> bool {
            let client = self.node_client(index);
            let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(1))
            else {
                return false;
            };
            let cluster_ok = redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut connection)
                .is_ok_and(|info| info.contains("cluster_state:ok"));
            let replication = redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut connection)
                .unwrap_or_default();
            let synchronized = replication.contains("role:master")
                || replication.contains("master_link_status:up");
            cluster_ok && synchronized
        };
        while !(0..self.ports.len()).all(node_is_ok) {
            assert!(Instant::now() < deadline, "cluster not ok within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            stop(child);
        }
    }
}
