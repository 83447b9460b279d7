//! `GET /metrics`: Prometheus text format. Request counts by route and status, a latency
//! histogram by route, webhook outcomes, and the database pool.
//!
//! Route labels are paths with ids and emails folded (`/api/clients/:id`). Only the CRM's own
//! routes and page files get a label of their own; every other path is counted as `unmatched`,
//! so scanners probing random paths neither grow memory nor crowd out the real routes.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use warp::Filter;

use super::error::{respond, ApiError};
use super::{openapi, static_files, with_state, AppState};

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// The label of every request to a path that is no route of the CRM.
const UNMATCHED: &str = "unmatched";

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_secs: f64,
}

#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, RouteStats>>,
}

impl Metrics {
    pub fn record(&self, path: &str, status: u16, elapsed: Duration) {
        // warp answers `/api/clients/` as `/api/clients` (the page's files are not so lenient).
        let trimmed = match path.strip_suffix('/') {
            Some(rest) if rest.starts_with("/api/") => rest,
            _ => path,
        };
        let mut label = route_label(trimmed);
        if !known_routes().contains(&label) {
            label = UNMATCHED.to_string();
        }
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let stats = routes.entry(label).or_default();
        *stats.by_status.entry(status).or_default() += 1;
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                stats.buckets[i] += 1;
            }
        }
        stats.count += 1;
        stats.sum_secs += secs;
    }

    fn render_requests(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP crm_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE crm_http_requests_total counter\n");
        for (route, stats) in routes.iter() {
            for (status, n) in &stats.by_status {
                let _ = writeln!(
                    out,
                    "crm_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP crm_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE crm_http_request_duration_seconds histogram\n");
        for (route, stats) in routes.iter() {
            for (bound, n) in BUCKETS.iter().zip(stats.buckets) {
                let _ = writeln!(
                    out,
                    "crm_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "crm_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 crm_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 crm_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                stats.count, stats.sum_secs, stats.count
            );
        }
    }
}

/// The labels of the CRM's routes: every path of the API reference with its parameters folded
/// as [`route_label`] folds them (`{email}` to `:email`, any other to `:id`), and every file of
/// the admin page.
fn known_routes() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let reference: serde_json::Value = serde_json::from_str(openapi::DOCUMENT).unwrap_or_default();
        let documented = reference["paths"].as_object().into_iter().flatten().map(|(path, _)| {
            let folded: Vec<&str> = path
                .split('/')
                .map(|segment| match segment.strip_prefix('{') {
                    Some(name) if name.to_ascii_lowercase().contains("email") => ":email",
                    Some(_) => ":id",
                    None => segment,
                })
                .collect();
            folded.join("/")
        });
        documented.chain(static_files::request_paths()).collect()
    })
}

/// Folds the parts of a path that vary per record, and escapes what Prometheus labels cannot hold.
fn route_label(path: &str) -> String {
    // Built in one string: this runs for every request.
    let mut label = String::with_capacity(path.len().min(64));
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            label.push('/');
        }
        if uuid::Uuid::parse_str(seg).is_ok() {
            label.push_str(":id");
        } else if seg.contains('@') || seg.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(b"%40")) {
            label.push_str(":email");
        } else {
            label.extend(
                seg.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                    .take(40),
            );
        }
    }
    label
}

pub fn routes(state: AppState) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    // Exactly `/metrics`: warp would also match `/metrics/`, which a proxy blocking the one path
    // lets through.
    warp::path!("metrics")
        .and(warp::path::full())
        .and_then(|path: warp::path::FullPath| async move {
            match path.as_str() {
                "/metrics" => Ok(()),
                _ => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
        .and(warp::get())
        .and(with_state(state))
        .then(|state: AppState| async move { respond(render(state).await) })
        .boxed()
}

async fn render(state: AppState) -> Result<impl warp::Reply, ApiError> {
    let webhooks: Vec<(String, i64)> = state
        .db
        .read(|conn| {
            let mut stmt =
                conn.prepare("SELECT status, COUNT(*) FROM webhook_events GROUP BY status ORDER BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await?;
    let mut out = String::new();
    state.metrics.render_requests(&mut out);
    out.push_str("# HELP crm_webhook_events Webhook attempts on record, by outcome.\n");
    out.push_str("# TYPE crm_webhook_events gauge\n");
    for (status, n) in webhooks {
        let _ = writeln!(out, "crm_webhook_events{{status=\"{status}\"}} {n}");
    }
    let (connections, idle) = state.db.pool_state();
    let _ = writeln!(
        out,
        "# HELP crm_db_pool_connections Open reader connections.\n# TYPE crm_db_pool_connections gauge\n\
         crm_db_pool_connections {connections}\n\
         # HELP crm_db_pool_idle_connections Idle reader connections.\n# TYPE crm_db_pool_idle_connections gauge\n\
         crm_db_pool_idle_connections {idle}"
    );
    Ok(warp::reply::with_header(
        out,
        "content-type",
        "text/plain; version=0.0.4",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_emails_are_folded_out_of_route_labels() {
        assert_eq!(
            route_label("/api/accounts/550e8400-e29b-41d4-a716-446655440000/leverage"),
            "/api/accounts/:id/leverage"
        );
        assert_eq!(
            route_label("/api/service/clients/a%40b.com/kyc"),
            "/api/service/clients/:email/kyc"
        );
        assert_eq!(route_label("/x\"}{evil"), "/xevil");
    }

    /// Paths that are no route of the CRM share one label, however many there are, and the
    /// routes keep theirs (with ids and emails folded), page files included.
    #[test]
    fn only_the_crms_own_routes_get_a_label() {
        let m = Metrics::default();
        for i in 0..500 {
            m.record(&format!("/random/{i}"), 404, Duration::from_millis(1));
        }
        let ms = Duration::from_millis(1);
        m.record("/api/service/clients/a%40b.com", 200, ms);
        m.record("/api/accounts/550e8400-e29b-41d4-a716-446655440000/ledger", 200, ms);
        m.record("/api/service/accounts/a@b.com", 404, ms);
        m.record("/", 200, ms);
        m.record("/js/client.js", 200, ms);
        m.record("/api/clients/not-an-id", 400, ms);
        m.record("/api/service/clients/a%40b.com/", 200, ms);
        m.record("/js/client.js/", 404, ms);
        let routes = m.routes.lock().unwrap();
        let labels: Vec<&str> = routes.keys().map(String::as_str).collect();
        assert_eq!(
            labels,
            [
                "/",
                "/api/accounts/:id/ledger",
                "/api/service/accounts/:email",
                "/api/service/clients/:email",
                "/js/client.js",
                UNMATCHED
            ]
        );
        assert_eq!(routes[UNMATCHED].count, 502);
    }
}
