//! `GET /metrics`: Prometheus text format. Request counts by route and status, a latency
//! histogram by route, webhook outcomes, and the database pool.
//!
//! Route labels are paths with ids and emails folded (`/api/clients/:id`), and at most
//! [`MAX_ROUTES`] distinct ones are kept, so hostile URLs cannot grow memory without bound.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use warp::Filter;

use super::error::{respond, ApiError};
use super::{with_state, AppState};

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const MAX_ROUTES: usize = 100;

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
        let label = route_label(path);
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        // One slot stays free for "other" itself.
        let label = if routes.contains_key(&label) || routes.len() < MAX_ROUTES - 1 {
            label
        } else {
            "other".into()
        };
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
    warp::path!("metrics")
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

    #[test]
    fn route_labels_are_bounded() {
        let m = Metrics::default();
        for i in 0..500 {
            m.record(&format!("/random/{i}"), 404, Duration::from_millis(1));
        }
        assert!(m.routes.lock().unwrap().len() <= MAX_ROUTES);
    }
}
