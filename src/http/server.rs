//! The accept loop. warp's own `serve` sets no timers, so a client could hold a connection open
//! forever by trickling its headers; this loop runs the same warp filter on hyper with a header
//! read timeout, a cap on open connections, the client address for the audit log, and graceful
//! shutdown that lets requests in flight finish.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;
use warp::Filter;

/// A client must send its complete request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond this many open connections new ones wait to be accepted; keeps file descriptors bounded.
const MAX_CONNECTIONS: usize = 1024;

/// The client of a request (the TCP peer, or the address a trusted proxy forwarded for), put
/// into its extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// How long a request's body may take to arrive (`body_timeout_secs`), put into its extensions
/// beside the client address so `body::raw` needs no global setting.
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
            .serve_connection(TokioIo::new(stream), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
