//! Scale figures on a large database (make one with the `gen_data` example):
//! start-up time, client lookup latency, admin search first page, and `crm verify` time.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example gen_data -- --out big.db --clients 1000000 --ledger 10000000
//! cargo run --release --example scale -- --database big.db
//! ```
//!
//! It starts `target/release/crm serve` on the database several times (the first start creates
//! the `admin` user, whose one-time password it uses to log in), so the database gains a staff
//! user and audit entries for the calls made: run it on a generated copy, not on real data.

#[path = "bench/client.rs"]
mod client;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/server.rs"]
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use client::{encode_segment, request, Conn};
use load::{drive, percentile_ms, Limit};
use server::Server;

#[derive(Parser)]
#[command(about = "Start-up, lookup, search and verify times of the CRM on a large database")]
struct Args {
    /// The database to measure (from the gen_data example)
    #[arg(long)]
    database: PathBuf,
    /// The crm binary (default: target/release/crm)
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Client lookups to time
    #[arg(long, default_value_t = 20_000)]
    lookups: u64,
    /// Concurrent connections for the lookups
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Times each search term is run
    #[arg(long, default_value_t = 20)]
    searches: u64,
    /// Start-ups to time
    #[arg(long, default_value_t = 3)]
    starts: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.database.is_file() {
        bail!(
            "{} not found: make it with the gen_data example",
            args.database.display()
        );
    }
    let bin = server::crm_binary(args.bin.clone())?;
    let size = std::fs::metadata(&args.database)?.len();
    let (clients, ledger, audit) = {
        let conn = rusqlite::Connection::open(&args.database)?;
        let count = |table: &str| -> rusqlite::Result<i64> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        };
        (count("clients")?, count("ledger_entries")?, count("audit_log")?)
    };
    println!(
        "database: {} ({:.2} GB): {clients} clients, {ledger} ledger entries, {audit} audit entries",
        args.database.display(),
        size as f64 / 1e9
    );
    let emails = sample_emails(&args.database, args.lookups)?;

    // The first start creates the admin user (a password hash) and records the secrets: timed
    // apart from the ordinary starts that follow.
    let first = Server::start(&bin, &args.database)?;
    let password = first.admin_password.clone();
    println!(
        "start-up, first (creates the admin user): {} ms",
        first.startup.as_millis()
    );
    drop(first);
    let mut startups = Vec::new();
    let mut server = None;
    for _ in 0..args.starts.max(1) {
        drop(server.take());
        let s = Server::start(&bin, &args.database)?;
        startups.push(s.startup);
        server = Some(s);
    }
    let server = server.context("no server")?;
    startups.sort();
    println!(
        "start-up (spawn to listening), {} starts: median {} ms, max {} ms",
        startups.len(),
        startups[startups.len() / 2].as_millis(),
        startups.last().copied().unwrap_or_default().as_millis()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (addr, token) = (server.addr.clone(), server.secrets.service.clone());
        let conns: Vec<Conn> = (0..args.connections.max(1)).map(|_| Conn::new(&addr)).collect();
        let emails = Arc::new(emails);
        let auth = format!("authorization: Bearer {token}\r\n");
        let (a, e) = (addr.clone(), emails.clone());
        let (_, lookups) = drive(
            conns,
            Limit::Count(emails.len() as u64),
            None,
            move |n| {
                let path = format!("/api/service/clients/{}", encode_segment(&e[n as usize]));
                Some((n, request("GET", &a, &path, &auth, b"")))
            },
            |r| r.status == 200,
            Some(server.pid()),
        )
        .await;
        println!(
            "GET /api/service/clients/:email ({} random clients, {} connection(s), audit on): {:.0}/s, \
             p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, {} errors{}",
            lookups.micros.len(),
            args.connections,
            lookups.micros.len() as f64 / lookups.elapsed.as_secs_f64(),
            percentile_ms(&lookups.micros, 0.5),
            percentile_ms(&lookups.micros, 0.99),
            percentile_ms(&lookups.micros, 0.999),
            lookups.errors,
            lookups
                .first_error
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );

        let Some(password) = password else {
            println!("admin search: skipped (the database already had staff users, so no password was printed)");
            return Ok(());
        };
        let mut conn = Conn::new(&addr);
        let login = serde_json::json!({ "email": "admin@crm.local", "password": password }).to_string();
        let answer = conn
            .send(&request(
                "POST",
                &addr,
                "/api/auth/login",
                "content-type: application/json\r\n",
                login.as_bytes(),
            ))
            .await?;
        let jwt = answer.json()["token"].as_str().map(str::to_string);
        let Some(jwt) = jwt else {
            bail!(
                "login failed: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        };
        let auth = format!("authorization: Bearer {jwt}\r\n");
        let terms = [
            ("(no term: newest clients)", String::new()),
            ("common surname", "smith".to_string()),
            ("full name", "mary garcia".to_string()),
            ("platform id", format!("tp{}", 100_000 + clients / 2)),
            ("one client's email", emails.first().cloned().unwrap_or_default()),
            // gen_data's phones are +1555 and the client's number in seven digits.
            ("one client's phone", format!("+1 555 {:07}", clients / 3 % 10_000_000)),
            ("four digits of a phone", "4321".to_string()),
            ("no match", "zzqx-nobody".to_string()),
        ];
        println!(
            "GET /api/clients?q=... first page (50 rows), {} runs each:",
            args.searches
        );
        for (what, term) in terms {
            let path = if term.is_empty() {
                "/api/clients".to_string()
            } else {
                format!("/api/clients?q={}", encode_segment(&term))
            };
            let mut times = Vec::new();
            let mut rows = 0;
            for _ in 0..args.searches.max(1) {
                let started = Instant::now();
                let r = conn.send(&request("GET", &addr, &path, &auth, b"")).await?;
                times.push(started.elapsed());
                if r.status != 200 {
                    bail!(
                        "search {term:?} failed: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                rows = r.json()["clients"].as_array().map(Vec::len).unwrap_or(0);
            }
            times.sort();
            println!(
                "  {what:<28} {term:<36} {rows:>3} rows  p50 {:>8.2} ms  max {:>8.2} ms",
                ms(times[times.len() / 2]),
                ms(times[times.len() - 1])
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let peak = server::proc_status_kib(server.pid(), "VmHWM").unwrap_or(0);
    println!("server peak resident memory (VmHWM): {:.1} MB", peak as f64 / 1024.0);
    drop(server);

    let started = Instant::now();
    let verify = server::crm(&bin, &args.database).arg("verify").output()?;
    print!("{}", String::from_utf8_lossy(&verify.stdout));
    println!(
        "crm verify: {} in {:.1} s",
        if verify.status.success() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `n` emails of random clients, in random order.
fn sample_emails(database: &std::path::Path, n: u64) -> anyhow::Result<Vec<String>> {
    let conn = rusqlite::Connection::open(database)?;
    let mut stmt = conn.prepare("SELECT email FROM clients ORDER BY random() LIMIT ?1")?;
    let emails = stmt
        .query_map([n as i64], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(emails)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
