//! A TCP forwarder between errata and one of its servers (CQL or Redis)
//! that can break the path the ways networks do:
//!
//! - [`FaultProxy::cut`]: the listener closes and every connection drops
//!   (what a crashed node or a reset looks like): new connections are
//!   refused, requests in flight are lost, unanswered;
//! - [`FaultProxy::hold`]: a black hole: connections stay open and new ones
//!   are accepted, but no byte moves either way; a request already sent
//!   may or may not have reached the server, its answer never comes;
//! - [`FaultProxy::restore`]: back to normal. After a hold the bytes that
//!   waited are delivered (late, as TCP retransmission would), so a request
//!   its client gave up on may still be applied; after a cut the listener
//!   opens again on the same port.
//!
//! `hold` then `cut` drops what was held. [`FaultProxy::redirect`] points
//! it at another server, as a failover's virtual address moves to the new
//! master.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct FaultProxy {
    pub address: SocketAddr,
    /// Where new connections go.
    upstream: Arc<Mutex<String>>,
    /// True while held.
    held: watch::Sender<bool>,
    /// The accept loop and every connection's task; empty while cut.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listens on a free local port and forwards to `upstream` (host:port).
    pub async fn start(upstream: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let (held, _) = watch::channel(false);
        let proxy = Self {
            address: listener.local_addr().expect("an address"),
            upstream: Arc::new(Mutex::new(upstream.into())),
            held,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = self.tasks.clone();
        let upstream = self.upstream.clone();
        let held = self.held.subscribe();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let upstream = upstream.lock().expect("the upstream").clone();
                let held = held.clone();
                let connection = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let _ = tokio::join!(
                        pump(client_read, server_write, held.clone()),
                        pump(server_read, client_write, held),
                    );
                });
                let mut tasks = tasks.lock().expect("the task list");
                tasks.retain(|t| !t.is_finished());
                tasks.push(connection);
            }
        });
        self.tasks.lock().expect("the task list").push(accept);
    }

    /// Drops every connection and stops listening.
    pub fn cut(&self) {
        for task in self.tasks.lock().expect("the task list").drain(..) {
            task.abort();
        }
    }

    /// From now on forwards to `upstream`: every connection to the old one
    /// drops (its clients connect again, to the new one).
    pub async fn redirect(&self, upstream: impl Into<String>) {
        *self.upstream.lock().expect("the upstream") = upstream.into();
        self.cut();
        self.restore().await;
    }

    /// Stops every byte, both ways, on every connection, old and new.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Forwards again (listening again on the same port after a cut).
    pub async fn restore(&self) {
        self.held.send_replace(false);
        if !self.tasks.lock().expect("the task list").is_empty() {
            return;
        }
        let started = Instant::now();
        let listener = loop {
            // The aborted listener closes once its task has been dropped.
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "cannot listen on {} again: {e}",
                        self.address
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies one direction, waiting whenever the proxy is held (before reading
/// and again before writing what was read).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if held.wait_for(|h| !*h).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
