//! The HTTP surface: warp filters and handlers, one file per surface.

mod accounts;
mod activity;
mod audit_log;
pub mod auth;
pub mod body;
mod clients;
pub mod error;
mod health;
mod impersonate;
pub mod metrics;
mod openapi;
pub mod query;
pub mod ratelimit;
mod refusals;
mod server;
mod service;
mod staff_admin;
mod staff_auth;
mod static_files;
pub mod throttle;
pub mod views;
pub mod webhooks;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use warp::http::header::{HeaderMap, HeaderValue};
use warp::Filter;

use crate::config::{Secrets, Settings};
use crate::store::Db;

/// Everything a handler may need. Clones share it: the routes clone the state for every request
/// they look at, so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub secrets: Arc<Secrets>,
    pub metrics: Arc<metrics::Metrics>,
    /// The service API's per-caller limit; `None` when switched off.
    pub service_limiter: Option<Arc<ratelimit::Limiter>>,
    /// Unverified webhook attempts per address (see `webhooks::UNVERIFIED_PER_MINUTE_PER_IP`).
    pub webhook_unverified_limiter: Arc<ratelimit::Limiter>,
    /// Failed staff logins per email and per address (see `throttle.rs`).
    pub login_throttle: Arc<throttle::LoginThrottle>,
    /// Audit entries for unauthenticated service calls, per address and minute.
    pub service_unauthorized_notices: Arc<ratelimit::Notices>,
    /// Audit entries for staff requests refused for their token, per address and minute.
    pub staff_unauthorized_notices: Arc<ratelimit::Notices>,
}

impl AppState {
    pub fn new(db: Db, settings: Settings, secrets: Secrets) -> AppState {
        let service_limiter = ratelimit::Limiter::per_minute(settings.service_rate_limit);
        if let Some(limiter) = &service_limiter {
            ratelimit::Limiter::spawn_sweeper(limiter);
        }
        let webhook_unverified_limiter = ratelimit::Limiter::new(webhooks::UNVERIFIED_PER_MINUTE_PER_IP);
        ratelimit::Limiter::spawn_sweeper(&webhook_unverified_limiter);
        let notices = || {
            let notices = Arc::new(ratelimit::Notices::per_minute(
                ratelimit::UNAUTHENTICATED_AUDITS_PER_MINUTE,
            ));
            ratelimit::spawn_sweeper(&notices, ratelimit::Notices::retain_recent);
            notices
        };
        AppState(Arc::new(Shared {
            service_limiter,
            webhook_unverified_limiter,
            service_unauthorized_notices: notices(),
            staff_unauthorized_notices: notices(),
            db,
            settings: Arc::new(settings),
            secrets: Arc::new(secrets),
            metrics: Arc::new(metrics::Metrics::default()),
            login_throttle: Arc::default(),
        }))
    }
}

/// GET, or HEAD for the same answer without its body (hyper leaves the body out): for what
/// uptime monitors and `curl -I` ask for, the health check and the page's files.
pub fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

impl AppState {
    /// Logs the refusals counted but carried by no audit entry yet (see `ratelimit::Notices`):
    /// on a stop, so none is lost with the process.
    pub fn flush_refusal_counts(&self) {
        self.service_unauthorized_notices.flush();
        self.staff_unauthorized_notices.flush();
        self.webhook_unverified_limiter.flush();
        if let Some(limiter) = &self.service_limiter {
            limiter.flush();
        }
    }
}

/// Hands a clone of the state to a handler.
pub fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The caller's address, as the accept loop resolved it with [`resolve_client_ip`]: what the
/// audit log records and what the service rate limit and the login throttle count by.
pub fn client_ip() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<server::ClientAddr>()
        .map(|client: Option<server::ClientAddr>| client.map(|c| c.0.to_string()).unwrap_or_default())
}

/// What limits count a client as: its address, or for IPv6 its /64, the block one subscriber
/// gets (counted per address, one such block is four billion billion addresses). An
/// IPv4-mapped address counts as its IPv4 form.
pub fn address_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// [`address_block`] as a counting key, from an address as the CRM records it (text):
/// `2001:db8:1:2::/64` for IPv6; anything else (IPv4, text that is no address) as it is.
pub fn address_key(ip: &str) -> std::borrow::Cow<'_, str> {
    match ip.parse::<IpAddr>().map(address_block) {
        Ok(IpAddr::V6(block)) => std::borrow::Cow::Owned(format!("{block}/64")),
        _ => std::borrow::Cow::Borrowed(ip),
    }
}

/// The client behind `peer`. A peer that is not a trusted proxy is the client itself, whatever
/// `X-Forwarded-For` says: anyone can send that header. A trusted proxy appends the address it
/// saw to the header, so the header is read from the right, skipping trusted proxies, and the
/// first other address is the client; everything left of it may be forged. An unreadable entry
/// stops the walk at the last proxy, which is then taken as the client.
pub fn resolve_client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let mut client = peer.to_canonical();
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for hop in hops {
        if !trusted.contains(&client) {
            break;
        }
        let hop = hop.trim();
        // Proxies write IPv6 bare, with a port (`[v6]:443`), in brackets alone (`[v6]`), or with
        // a zone (`fe80::1%eth0`), which names no other client.
        let bare = hop.trim_start_matches('[').trim_end_matches(']');
        let bare = bare.split_once('%').map_or(bare, |(address, _zone)| address);
        let Some(ip) = bare
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        else {
            break;
        };
        client = ip.to_canonical();
    }
    client
}

/// Headers every response carries. The admin page loads only its own files, so the policy
/// allows nothing else: no inline script, no framing.
fn security_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut set = |k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    );
    set("x-content-type-options", "nosniff");
    set("x-frame-options", "DENY");
    set("referrer-policy", "no-referrer");
    set("cache-control", "no-store");
    h
}

/// Every route of the CRM, with JSON errors, security headers and request logging.
pub fn routes(state: AppState) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let metrics = state.metrics.clone();
    let log = warp::log::custom(move |info| {
        metrics.record(info.path(), info.status().as_u16(), info.elapsed());
        tracing::info!(
            target: "crm::http",
            method = %info.method(),
            path = info.path(),
            status = info.status().as_u16(),
            micros = info.elapsed().as_micros() as u64,
            "request"
        );
    });
    // One line per surface, each boxed, so adding one never changes the others' types. A request
    // is matched against the surfaces in this order, so the Trading Platform's, which carry nearly
    // all the traffic, come first; no two surfaces claim the same path. Each surface tried costs
    // its boxed future (an allocation, and a copy of up to a few kilobytes), so the chain is not
    // boxed link by link, and the first two are tried only on requests under their prefix.
    let api = under("api/webhooks")
        .and(webhooks::routes(state.clone()))
        .or(under("api/service/").and(service::routes(state.clone())))
        .unify()
        .or(health::routes(state.clone()))
        .unify()
        .or(metrics::routes(state.clone()))
        .unify()
        .or(openapi::routes())
        .unify()
        .or(activity::routes(state.clone()))
        .unify()
        .or(staff_auth::routes(state.clone()))
        .unify()
        .or(clients::routes(state.clone()))
        .unify()
        .or(impersonate::routes(state.clone()))
        .unify()
        .or(accounts::routes(state.clone()))
        .unify()
        .or(audit_log::routes(state.clone()))
        .unify()
        .or(staff_admin::routes(state))
        .unify()
        // The admin page comes last: it claims only paths that name one of its files.
        .or(static_files::routes())
        .unify();
    api.recover(error::recover)
        .unify()
        .with(warp::reply::with::headers(security_headers()))
        .with(log)
}

/// Passes requests whose path starts with `prefix` (without its leading `/`) and rejects the
/// others as not found, as the surface behind it would, without building the surface's future.
fn under(prefix: &'static str) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path::peek()
        .and_then(move |rest: warp::path::Peek| async move {
            if rest.as_str().starts_with(prefix) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let trusted_proxies = state.settings.trusted_proxies.clone().into();
    let body_timeout = state.settings.body_timeout;
    server::run(routes(state), listener, trusted_proxies, body_timeout, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_forwarded_address_that_is_not_a_trusted_proxy() {
        let proxies = [ip("127.0.0.1"), ip("10.0.0.2")];
        let cases = [
            (
                "127.0.0.1",
                vec![],
                &proxies[..],
                "127.0.0.1",
                "no header: the proxy itself",
            ),
            ("127.0.0.1", vec!["203.0.113.7"], &proxies[..], "203.0.113.7", "one hop"),
            (
                "127.0.0.1",
                vec!["1.1.1.1, 203.0.113.7"],
                &proxies[..],
                "203.0.113.7",
                "a forged left part is ignored",
            ),
            (
                "127.0.0.1",
                vec!["1.1.1.1, 203.0.113.7, 10.0.0.2"],
                &proxies[..],
                "203.0.113.7",
                "chained trusted proxies are skipped",
            ),
            (
                "127.0.0.1",
                vec!["1.1.1.1", "203.0.113.7"],
                &proxies[..],
                "203.0.113.7",
                "repeated headers read as one list",
            ),
            (
                "127.0.0.1",
                vec![" 203.0.113.7:4711 "],
                &proxies[..],
                "203.0.113.7",
                "a port is dropped",
            ),
            (
                "127.0.0.1",
                vec!["[2001:db8::5]"],
                &proxies[..],
                "2001:db8::5",
                "IPv6 in brackets without a port",
            ),
            (
                "127.0.0.1",
                vec!["2001:db8::7%eth0"],
                &proxies[..],
                "2001:db8::7",
                "IPv6 with a zone",
            ),
            (
                "::ffff:127.0.0.1",
                vec!["[2001:db8::1]:443"],
                &proxies[..],
                "2001:db8::1",
                "mapped peers and bracketed IPv6 hops",
            ),
            (
                "127.0.0.1",
                vec!["203.0.113.7, garbage"],
                &proxies[..],
                "127.0.0.1",
                "an unreadable hop stops at the proxy",
            ),
            (
                "198.51.100.9",
                vec!["203.0.113.7"],
                &proxies[..],
                "198.51.100.9",
                "an untrusted peer cannot forge its address",
            ),
            (
                "127.0.0.1",
                vec!["203.0.113.7"],
                &[][..],
                "127.0.0.1",
                "nothing is trusted by default",
            ),
        ];
        for (peer, header, trusted, expected, why) in cases {
            assert_eq!(
                resolve_client_ip(ip(peer), &forwarded(&header), trusted),
                ip(expected),
                "{why}"
            );
        }
    }
}
