//! Driving a phase of load: many keep-alive connections, each sending its next request as soon
//! as the previous answer arrived (the most the server can do, and its latency when saturated),
//! or on a fixed schedule (its latency at a given rate), with every latency recorded.
// Shared by the `bench` and `scale` examples; each uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Conn, Response};
use crate::server::{cpu_seconds, proc_status_kib, thread_cpu_seconds};

pub enum Limit {
    Count(u64),
    For(Duration),
}

/// What one phase measured.
#[derive(Default)]
pub struct Phase {
    pub elapsed: Duration,
    /// Latency of each successful request, microseconds, sorted.
    pub micros: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The sequence numbers of successful requests.
    pub acked: Vec<u64>,
    pub server_cpu: f64,
    /// The server's CPU seconds in the phase by thread name (threads that ended during the
    /// phase are not counted).
    pub server_threads: BTreeMap<String, f64>,
    pub generator_cpu: f64,
    pub peak_rss_kib: u64,
}

/// Runs one phase: every connection sends request `n` (from a shared counter), waits for the
/// answer, records it, and sends the next, until the limit is reached. `make` returns the
/// request and the tag recorded in `acked` when the answer is accepted.
///
/// With a `rate` (requests per second, all connections together), each connection sends on a
/// schedule instead, its requests `connections / rate` apart and the connections staggered. A
/// request's latency then counts from when it was due if its connection was still waiting for
/// the previous answer at that time: a server that falls behind is charged for the requests it
/// delayed, not only for the ones it answered slowly (no "coordinated omission"). Requests still
/// due when the phase ends are not sent: a server that cannot keep up shows as latency growing
/// through the phase and a rate below the one asked for.
pub async fn drive(
    conns: Vec<Conn>,
    limit: Limit,
    rate: Option<f64>,
    make: impl Fn(u64) -> Option<(u64, Vec<u8>)> + Send + Sync + 'static,
    accept: impl Fn(&Response) -> bool + Send + Sync + 'static,
    pid: Option<u32>,
) -> (Vec<Conn>, Phase) {
    let (count, deadline) = match limit {
        Limit::Count(n) => (n, None),
        Limit::For(d) => (u64::MAX, Some(Instant::now() + d)),
    };
    let next = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let accept = Arc::new(accept);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = pid.map(|pid| {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    });
    let cpu_before = (pid.and_then(|p| cpu_seconds(&p.to_string())), cpu_seconds("self"));
    let threads_before = pid.map(thread_cpu_seconds).unwrap_or_default();
    let started = Instant::now();
    let connections = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let (next, make, accept) = (next.clone(), make.clone(), accept.clone());
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            let mut due = interval.map(|every| started + every.mul_f64(i as f64 / connections as f64));
            tokio::spawn(async move {
                let mut out = Phase::default();
                // When the previous answer arrived.
                let mut free_since = started;
                loop {
                    if let Some(at) = due {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let Some((tag, req)) = make(n) else { break };
                    // Behind schedule (the previous answer came after this request was due): the
                    // wait is the server's doing. On schedule: the timer's slack (tokio's timers
                    // tick in milliseconds) is not, so count from now.
                    let sent = match due {
                        Some(at) if free_since > at => at,
                        _ => Instant::now(),
                    };
                    if let (Some(at), Some(every)) = (due.as_mut(), interval) {
                        *at += every;
                    }
                    let answer = conn.send(&req).await;
                    free_since = Instant::now();
                    let micros = (free_since - sent).as_micros().min(u32::MAX as u128) as u32;
                    match answer {
                        Ok(r) if accept(&r) => {
                            out.micros.push(micros);
                            out.acked.push(tag);
                        }
                        Ok(r) => {
                            out.errors += 1;
                            out.first_error
                                .get_or_insert_with(|| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
                        }
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (conn, out)
            })
        })
        .collect();
    let mut conns = Vec::new();
    let mut phase = Phase::default();
    for task in tasks {
        // A task only ends by returning; a panic here is a bug in this program.
        let (conn, out) = task.await.unwrap_or_else(|e| panic!("a load task failed: {e}"));
        conns.push(conn);
        phase.micros.extend(out.micros);
        phase.acked.extend(out.acked);
        phase.errors += out.errors;
        if phase.first_error.is_none() {
            phase.first_error = out.first_error;
        }
    }
    phase.elapsed = started.elapsed();
    phase.micros.sort_unstable();
    sampling.store(false, Ordering::Relaxed);
    phase.peak_rss_kib = sampler.and_then(|s| s.join().ok()).unwrap_or(0);
    if let (Some(before), Some(after)) = (cpu_before.0, pid.and_then(|p| cpu_seconds(&p.to_string()))) {
        phase.server_cpu = after - before;
    }
    for (tid, (name, after)) in pid.map(thread_cpu_seconds).unwrap_or_default() {
        let before = threads_before.get(&tid).map_or(0.0, |(_, secs)| *secs);
        *phase.server_threads.entry(name).or_default() += after - before;
    }
    if let (Some(before), Some(after)) = (cpu_before.1, cpu_seconds("self")) {
        phase.generator_cpu = after - before;
    }
    (conns, phase)
}

pub fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}
