//! Private servers for tests that must stop, pause or reconfigure one: each
//! runs on a free loopback port, belongs to one test, and is killed on drop.
//! The shared Redis and Postgres are never touched this way.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Private servers listen on ports drawn from this range, below the kernel's
/// ephemeral range (32768-60999 on Linux by default). An ephemeral port can be
/// taken by any outgoing connection of any test between the moment it is
/// found free and the moment the server binds it, and a client probing an
/// ephemeral port nobody listens on can even connect to itself.
const PRIVATE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it next).
/// Another test may still pick the same one: [`spawn_listening`] retries then.
pub fn free_port() -> u16 {
    let span = u128::from(PRIVATE_PORTS.end - PRIVATE_PORTS.start);
    loop {
        let offset = uuid::Uuid::new_v4().as_u128() % span;
        let port = PRIVATE_PORTS.start + u16::try_from(offset).expect("offset is below the span");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until `127.0.0.1:port` accepts connections, at most `limit`.
pub fn wait_until_listening(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Starts a server with `spawn(port)` on a free port and waits until it
/// listens. A server that exits first most likely lost its port to a test
/// that picked the same one; it is started again on another port, at most
/// five times. Returns the port and the running child.
pub fn spawn_listening(what: &str, mut spawn: impl FnMut(u16) -> Child) -> (u16, Child) {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let port = free_port();
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (port, child);
            }
            if child.try_wait().is_ok_and(|status| status.is_some()) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("{what} exited before listening, {ATTEMPTS} times on different ports");
}

/// A `redis-server` of the test's own, without persistence.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    /// Its extra settings, for [`RedisServer::restart`].
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line settings (`--tls-port ...`).
    pub fn start_with(extra: &[&str]) -> Self {
        let (port, child) = spawn_listening("private redis-server", |port| spawn(port, extra));
        let extra = extra.iter().map(|setting| (*setting).to_owned()).collect();
        Self { port, child, extra }
    }

    /// Starts a server on a port it had before, with the same settings (see
    /// [`RedisServer::restart`]).
    fn start_on(port: u16, extra: Vec<String>) -> Self {
        let settings: Vec<&str> = extra.iter().map(String::as_str).collect();
        let child = spawn(port, &settings);
        assert!(
            wait_until_listening(port, Duration::from_secs(10)),
            "private redis-server did not start again on port {port}"
        );
        Self { port, child, extra }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes the server process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// Stops the server (its port refuses connections) and starts a new one
    /// on the same port when `restart` is called.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        let replacement = Self::start_on(self.port, self.extra.clone());
        let old = std::mem::replace(self, replacement);
        std::mem::forget(old);
    }

    /// Kills every client connection (as a failover or an idle reap would).
    pub async fn kill_clients(&self) {
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(mut connection) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query_async(&mut connection)
                .await;
        }
    }
}

impl RedisServer {
    fn resume_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn spawn(port: u16, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/services.sh installs it)")
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

impl RedisServer {
    /// Kills every other client connection without yielding to the async
    /// runtime, and returns once the server no longer lists them: on a
    /// current-thread runtime the clients cannot notice until their next
    /// command, exactly as in a Lambda sandbox frozen between invocations.
    pub fn kill_clients_while_frozen(&self) {
        let client = redis::Client::open(self.url()).expect("url");
        let mut connection = client.get_connection().expect("blocking connection");
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut connection)
            .expect("client kill");
        assert!(killed > 0, "there were connections to kill");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut connection)
                .expect("client list");
            if list.lines().count() == 1 || std::time::Instant::now() > deadline {
                break;
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume_quietly();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
