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
//! - [`FaultProxy::hold_next_batch`]: the next CQL `BATCH` request a client
//!   sends is held, with everything after it, both ways, until
//!   [`FaultProxy::restore`]: a write (a counter batch) delivered after
//!   its client gave up on it, while the reads before it went through.
//!
//! `hold` then `cut` drops what was held. [`FaultProxy::redirect`] points
//! it at another server, as a failover's virtual address moves to the new
//! master.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Hold at the next CQL BATCH request (then disarmed).
    batch_trap: Arc<AtomicBool>,
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
            batch_trap: Arc::new(AtomicBool::new(false)),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = self.tasks.clone();
        let upstream = self.upstream.clone();
        let held = self.held.subscribe();
        let (hold, trap) = (self.held.clone(), self.batch_trap.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let upstream = upstream.lock().expect("the upstream").clone();
                let held = held.clone();
                let requests = Trap {
                    hold: hold.clone(),
                    armed: trap.clone(),
                    frames: FrameScanner::default(),
                };
                let connection = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let _ = tokio::join!(
                        pump(client_read, server_write, held.clone(), Some(requests)),
                        pump(server_read, client_write, held, None),
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

    /// Holds every byte, both ways, from the start of the next CQL `BATCH`
    /// request any client sends (the requests before it go through).
    pub fn hold_next_batch(&self) {
        self.batch_trap.store(true, Ordering::SeqCst);
    }

    /// Whether the proxy holds (after `hold`, or once a trapped batch came).
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Forwards again (listening again on the same port after a cut).
    pub async fn restore(&self) {
        self.batch_trap.store(false, Ordering::SeqCst);
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

/// The CQL frames of one client's requests (native protocol v4: a 9-byte
/// header, its opcode in byte 4 and the body's length in bytes 5 to 8).
#[derive(Default)]
struct FrameScanner {
    header: Vec<u8>,
    /// Where the frame whose header is being read began in this chunk.
    start: usize,
    body_left: usize,
}

const HEADER: usize = 9;
const BATCH: u8 = 0x0D;

impl FrameScanner {
    /// Where in `chunk` a `BATCH` request begins (0 when its header began
    /// in an earlier chunk), if one does.
    fn batch_in(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut at = 0;
        let mut found = None;
        while at < chunk.len() {
            if self.body_left > 0 {
                let skip = self.body_left.min(chunk.len() - at);
                self.body_left -= skip;
                at += skip;
                continue;
            }
            if self.header.is_empty() {
                self.start = at;
            }
            self.header.push(chunk[at]);
            at += 1;
            if self.header.len() == HEADER {
                let length = u32::from_be_bytes([
                    self.header[5],
                    self.header[6],
                    self.header[7],
                    self.header[8],
                ]);
                if self.header[4] == BATCH && found.is_none() {
                    // A header begun in an earlier chunk: from here on.
                    let here = at >= HEADER && self.start == at - HEADER;
                    found = Some(if here { self.start } else { 0 });
                }
                self.body_left = length as usize;
                self.header.clear();
            }
        }
        found
    }
}

/// Holds the proxy when a client's next `BATCH` request starts.
struct Trap {
    hold: watch::Sender<bool>,
    armed: Arc<AtomicBool>,
    frames: FrameScanner,
}

/// Copies one direction, waiting whenever the proxy is held (before reading
/// and again before writing what was read); with a `trap`, a client's
/// requests, holding the proxy where a trapped batch begins.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
    mut trap: Option<Trap>,
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
        let mut from_byte = 0;
        if let Some(trap) = trap.as_mut() {
            let batch = trap.frames.batch_in(&buf[..n]);
            if let Some(start) = batch {
                if trap.armed.swap(false, Ordering::SeqCst) {
                    if to.write_all(&buf[..start]).await.is_err() {
                        return;
                    }
                    trap.hold.send_replace(true);
                    from_byte = start;
                }
            }
        }
        if held.wait_for(|h| !*h).await.is_err() || to.write_all(&buf[from_byte..n]).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v4 request frame with `opcode` and a body of `len` bytes.
    fn frame(opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0x04, 0, 0, 1, opcode];
        f.extend_from_slice(&(len as u32).to_be_bytes());
        f.extend(std::iter::repeat_n(BATCH, len));
        f
    }

    #[test]
    fn a_batch_is_found_where_it_begins_across_chunks() {
        // A QUERY, an EXECUTE whose body holds the batch opcode's byte,
        // then a BATCH.
        let mut stream = frame(0x07, 20);
        stream.extend(frame(0x0A, 30));
        let batch_at = stream.len();
        stream.extend(frame(BATCH, 40));
        // In one chunk.
        assert_eq!(FrameScanner::default().batch_in(&stream), Some(batch_at));
        // Cut inside the batch's header: found in the second chunk, from
        // its start.
        let mut scanner = FrameScanner::default();
        let (first, second) = stream.split_at(batch_at + 3);
        assert_eq!(scanner.batch_in(first), None);
        assert_eq!(scanner.batch_in(second), Some(0));
        // Cut inside an earlier body: found at its place in the second.
        let mut scanner = FrameScanner::default();
        let (first, second) = stream.split_at(10);
        assert_eq!(scanner.batch_in(first), None);
        assert_eq!(scanner.batch_in(second), Some(batch_at - 10));
        // No batch, no find.
        assert_eq!(FrameScanner::default().batch_in(&frame(0x0A, 13)), None);
    }
}
