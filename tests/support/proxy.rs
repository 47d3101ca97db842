//! A TCP fault proxy for tests: put it between a function and the real Redis
//! or Postgres, then change its mode while traffic flows.
//!
//! - `Pass`: bytes go through untouched.
//! - `Latency(d)`: every chunk, in both directions, is held for `d`.
//! - `BlackHole`: connections stay open but nothing gets through either way;
//!   new connections are accepted and then ignored (a paused or partitioned
//!   server).
//! - `Reset`: every open connection is reset (RST) now, and new ones at once
//!   (a server that restarts, or a NAT that forgot the flow).
//!
//! Listens on 127.0.0.1 only; stops with its last handle. Its upstream can be
//! moved ([`FaultProxy::retarget`]), as a DNS endpoint moves in a failover.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Latency(Duration),
    BlackHole,
    Reset,
}

pub struct FaultProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    upstream: Arc<Mutex<SocketAddr>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, watcher) = watch::channel(Mode::Pass);
        let upstream = Arc::new(Mutex::new(upstream));
        let target = upstream.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = *target.lock().expect("upstream");
                tokio::spawn(serve(client, upstream, watcher.clone()));
            }
        });
        Self {
            port,
            mode,
            upstream,
            accept,
        }
    }

    /// New connections go to `upstream` from now on; open ones stay with the
    /// old one, as connections to a DNS name do when it moves.
    pub fn retarget(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("upstream") = upstream;
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `scheme://127.0.0.1:port` plus `rest` (a path, a query).
    pub fn url(&self, scheme: &str, rest: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{rest}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.mode.send_replace(Mode::Reset);
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // Wait out a black hole before even dialling upstream.
    loop {
        match *mode.borrow_and_update() {
            Mode::Reset => return reset(client),
            Mode::BlackHole => {}
            _ => break,
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone());
    let down = pump(server_read, client_write, mode.clone());
    // Whichever side ends first ends the connection; a reset drops both
    // halves with SO_LINGER 0.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies one direction, applying the mode to every chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Reset {
                    return linger_zero(to);
                }
                continue;
            }
        };
        let Ok(n @ 1..) = read else {
            return;
        };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Pass => break,
                Mode::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Mode::Reset => return linger_zero(to),
                // Hold the chunk until the hole closes (or the proxy resets).
                Mode::BlackHole => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

fn linger_zero(half: tokio::net::tcp::OwnedWriteHalf) {
    let _ = half.as_ref().set_zero_linger();
    drop(half);
}
