//! The accept loop. warp's own `serve` sets no timers, so a client could hold a connection open
//! forever by trickling its headers or by never reading its answers; this loop runs the same warp
//! filter on hyper with a header read timeout, a write stall timeout, a cap on open connections,
//! the client address for the audit log, and graceful shutdown that lets requests in flight
//! finish.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_service::Service;
use warp::Filter;

/// A client must send its complete request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Unsent bytes a connection may queue in the kernel (`TCP_NOTSENT_LOWAT`); see [`StallGuard`].
const UNSENT_LOW_WATER: u32 = 16 * 1024;
/// How many body timeouts an answer may wait on a client that takes nothing (see [`StallGuard`]).
const STALL_FACTOR: u32 = 4;
/// Beyond this many open connections new ones wait to be accepted; keeps file descriptors bounded.
const MAX_CONNECTIONS: usize = 1024;
/// Connections one address (an IPv6 /64) may hold at once, so that a single client cannot take
/// every slot; trusted proxies, which carry everyone's requests, are not counted.
const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// The client of a request (the TCP peer, or the address a trusted proxy forwarded for), put
/// into its extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// How long a request's body may take to arrive (`body_timeout_secs`), put into its extensions
/// beside the client address so `body::raw` needs no global setting. Four times it bounds how
/// long an answer waits on a client that has stopped reading (see [`StallGuard`]).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

pub async fn run<F, R>(
    filter: F,
    listener: TcpListener,
    trusted_proxies: Arc<[IpAddr]>,
    body_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: Filter<Extract = (R,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    R: warp::Reply,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE or a reset before accept: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // See `StallGuard`: without it a steady but slow reader of a large answer could look
        // stalled.
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_LOW_WATER) {
            tracing::debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT");
        }
        let address_slot = if trusted_proxies.contains(&peer.ip().to_canonical()) {
            None
        } else {
            match per_address.enter(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer, "too many connections from one address: closed");
                    continue;
                }
            }
        };
        let service = warp::service(filter.clone());
        let trusted_proxies = trusted_proxies.clone();
        let handler = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            // Per request, not per connection: a proxy's keep-alive connection carries many clients.
            let client = super::resolve_client_ip(peer.ip(), req.headers(), &trusted_proxies);
            req.extensions_mut().insert(ClientAddr(client));
            req.extensions_mut().insert(BodyTimeout(body_timeout));
            let mut service = service.clone();
            service.call(req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(
                TokioIo::new(StallGuard::new(stream, body_timeout * STALL_FACTOR)),
                handler,
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop((permit, address_slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection whose writes fail once none could proceed for `limit`. A client that sends
/// requests and never reads the answers (pipelined, from a thousand sockets) would otherwise
/// hold every connection slot for as long as it liked. The timer is armed only when a write
/// cannot proceed (the socket's buffer is full), so an answer to a client that reads costs
/// nothing more.
///
/// The kernel reports room in the buffer in steps, not byte by byte: once a third of a send
/// buffer grown to megabytes has drained. `TCP_NOTSENT_LOWAT` ([`UNSENT_LOW_WATER`]) makes the
/// steps small. What is left is the client's own pacing: curl's `--limit-rate 64k` on an 8.7 MB
/// CSV export let nothing through for over 30 s at a time (its receive buffer full) and was cut
/// at a 30-second limit, not at 120; a reader taking 16 KB every half second (32 KB/s) got all of
/// it either way. Hence the limit of four body timeouts, two minutes by default.
struct StallGuard {
    stream: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(stream: TcpStream, limit: Duration) -> StallGuard {
        StallGuard {
            stream,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome on, arming the timer while it is pending and failing the write
    /// once the timer has run out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )))
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, outcome)
    }
}

/// Open connections per address (see [`MAX_CONNECTIONS_PER_ADDRESS`]).
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

/// One connection counted against its address until dropped.
struct AddressSlot {
    counts: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = super::address_block(ip);
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let open = counts.entry(key).or_default();
        if *open >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *open += 1;
        Some(AddressSlot {
            counts: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = counts.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
