//! Load benchmark: signed webhooks and service API lookups against a real `crm serve`, then a
//! check of the books.
//!
//! ```sh
//! scripts/bench.sh                                   # builds release, starts its own server
//! cargo run --release --example bench -- --url http://127.0.0.1:8080 \
//!     --webhook-secret "$WEBHOOK_SECRET" --service-token "$SERVICE_API_TOKEN"
//! ```
//!
//! Phases, each over `--connections` keep-alive connections, every connection sending its next
//! request as soon as the previous answer arrived (the server's throughput, and its latency
//! when saturated):
//! 1. `client.registered` for `--clients` new clients (emails unique to this run);
//! 2. `deposit.completed` for `--seconds` (after `--warmup`), each with its own transactionId,
//!    spread round-robin over the clients;
//! 3. `GET /api/service/clients/:email` for `--seconds` (after `--warmup`);
//! 4. replays of acknowledged deposits, each of which must answer `duplicate`;
//! 5. the books: the real balance of every client, read through the service API, must sum to
//!    exactly the deposits acknowledged. When it started the server itself it also reads the
//!    SQLite file: every acknowledged transactionId has exactly one ledger entry and nothing
//!    else was credited; then it runs `crm verify`.
//!
//! With `--deposit-rate` / `--lookup-rate`, phases 2 and 3 are each followed by the same at that
//! fixed rate: the latency a platform sending that much would see, counted from when each
//! request was due (see `load::drive`); a rate the server cannot sustain shows as latency growing
//! for the whole phase.
//!
//! Against your own server, use a fresh database or accept that the run adds clients named
//! `bench-<run>-<n>@bench.invalid`; set `CRM_SERVICE_RATE_LIMIT=0` for the run, or the lookups
//! are mostly 429s.

mod client;
mod load;
mod server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use client::{encode_segment, request, Conn, Response};
use load::{drive, percentile_ms, Limit, Phase};
use server::{proc_status_kib, Server};

#[derive(Parser)]
#[command(about = "Load benchmark for the CRM: signed webhooks, service lookups, then a check of the books")]
struct Args {
    /// A running CRM (http://host:port). Without it, starts target/release/crm on a temp database.
    #[arg(long, requires_all = ["webhook_secret", "service_token"])]
    url: Option<String>,
    /// The server's WEBHOOK_SECRET (with --url)
    #[arg(long)]
    webhook_secret: Option<String>,
    /// The server's SERVICE_API_TOKEN (with --url)
    #[arg(long)]
    service_token: Option<String>,
    /// Measured seconds of each timed phase
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured seconds before each timed phase
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Concurrent keep-alive connections
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Clients registered before the deposits
    #[arg(long, default_value_t = 10_000)]
    clients: u64,
    /// Acknowledged deposits sent again, each of which must come back as a duplicate
    #[arg(long, default_value_t = 1_000)]
    replays: u64,
    /// Threads of the load generator (it shares the machine with the server)
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The crm binary to start (default: target/release/crm)
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Folder for the temporary database (default: the system temp folder). Put it on the disk
    /// you want measured: the fsync cost is what bounds durable commits.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary database and print where it is
    #[arg(long)]
    keep: bool,
    /// Also send deposits at this fixed rate per second, and report the latency at that rate
    #[arg(long, default_value_t = 0.0)]
    deposit_rate: f64,
    /// Also send lookups at this fixed rate per second, and report the latency at that rate
    #[arg(long, default_value_t = 0.0)]
    lookup_rate: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the benchmark talks to: its own server, or someone else's.
struct Target {
    addr: String,
    webhook_secret: String,
    service_token: String,
    own: Option<Own>,
}

struct Own {
    server: Server,
    bin: PathBuf,
    database: PathBuf,
    dir: tempfile::TempDir,
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let target = match &args.url {
        Some(url) => Target {
            addr: url
                .strip_prefix("http://")
                .context("--url must be http://host:port (benchmark the CRM itself, not the TLS proxy)")?
                .trim_end_matches('/')
                .to_string(),
            webhook_secret: args.webhook_secret.clone().unwrap_or_default(),
            service_token: args.service_token.clone().unwrap_or_default(),
            own: None,
        },
        None => {
            let bin = server::crm_binary(args.bin.clone())?;
            let dir = match &args.dir {
                Some(d) => tempfile::tempdir_in(d)?,
                None => tempfile::tempdir()?,
            };
            let database = dir.path().join("crm.db");
            let server = Server::start(&bin, &database)?;
            Target {
                addr: server.addr.clone(),
                webhook_secret: server.secrets.webhook.clone(),
                service_token: server.secrets.service.clone(),
                own: Some(Own {
                    server,
                    bin,
                    database,
                    dir,
                }),
            }
        }
    };
    print_machine(&args, &target);

    let run_id = format!("{:08x}", rand::random::<u32>());
    let gen = Arc::new(Traffic::new(&run_id, &target, args.clients));
    let pid = target.own.as_ref().map(|o| o.server.pid());
    let mut conns: Vec<Conn> = (0..args.connections.max(1)).map(|_| Conn::new(&target.addr)).collect();
    let mut ok = true;
    let mut report = Vec::new();

    // 1. Registrations: a fixed number, all measured.
    let g = gen.clone();
    let (c, register) = drive(
        conns,
        Limit::Count(args.clients),
        None,
        move |n| Some((n, g.register(n))),
        is_processed,
        pid,
    )
    .await;
    conns = c;
    if register.errors > 0 {
        bail!(
            "{} of {} registrations failed (first: {}); cannot go on",
            register.errors,
            args.clients,
            register.first_error.as_deref().unwrap_or("?")
        );
    }
    report.push(("client.registered".to_string(), register));

    // 2. Deposits, then 3. lookups: as fast as the server answers, then at a fixed rate. Every
    // acknowledged deposit (warm-up included) must be on the books.
    let seq = Arc::new(AtomicU64::new(0));
    let mut acked = Vec::new();
    let mut in_doubt = 0;
    for (name, rate) in phases("deposit.completed", args.deposit_rate) {
        for measured in [false, true] {
            let (g, seq) = (gen.clone(), seq.clone());
            let limit = Limit::For(Duration::from_secs(if measured { args.seconds } else { args.warmup }));
            let (c, phase) = drive(
                conns,
                limit,
                rate,
                move |_| {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    Some((n, g.deposit(n)))
                },
                is_processed,
                pid,
            )
            .await;
            conns = c;
            acked.extend_from_slice(&phase.acked);
            in_doubt += phase.errors;
            if measured {
                report.push((name.clone(), phase));
            }
        }
    }
    for (name, rate) in phases("GET service client", args.lookup_rate) {
        for measured in [false, true] {
            let g = gen.clone();
            let limit = Limit::For(Duration::from_secs(if measured { args.seconds } else { args.warmup }));
            let lookup = move |n| Some((n, g.lookup(n)));
            let (c, phase) = drive(conns, limit, rate, lookup, |r| r.status == 200, pid).await;
            conns = c;
            if measured {
                report.push((name.clone(), phase));
            }
        }
    }

    print_report(&report, pid);
    let peak = pid.and_then(|p| proc_status_kib(p, "VmHWM"));
    if let Some(kib) = peak {
        println!("server peak resident memory (VmHWM): {:.1} MB", kib as f64 / 1024.0);
    }

    // 4. Replays must change nothing.
    println!();
    println!("checking the books");
    let replays: Arc<Vec<u64>> = Arc::new(acked.iter().copied().take(args.replays as usize).collect());
    let (g, r) = (gen.clone(), replays.clone());
    let (c, replay) = drive(
        conns,
        Limit::Count(replays.len() as u64),
        None,
        move |n| r.get(n as usize).map(|seq| (*seq, g.deposit(*seq))),
        |r| r.status == 200 && r.json()["status"] == "duplicate",
        pid,
    )
    .await;
    conns = c;
    ok &= check(
        replay.errors == 0,
        &format!(
            "{} replayed deposits all answered 200 duplicate ({} did not)",
            replays.len(),
            replay.errors
        ),
    );

    // 5. The books, through the service API.
    let expected: i128 = acked.iter().map(|n| Traffic::amount_atoms(*n)).sum();
    let sum = Arc::new(std::sync::Mutex::new(0i128));
    let (g, s) = (gen.clone(), sum.clone());
    let (_, balances) = drive(
        conns,
        Limit::Count(args.clients),
        None,
        move |n| Some((n, g.account(n))),
        move |r| {
            let real = account_real_atoms(&r.json());
            if let (200, Some(v)) = (r.status, real) {
                *s.lock().unwrap_or_else(|p| p.into_inner()) += v;
                true
            } else {
                false
            }
        },
        pid,
    )
    .await;
    let credited = *sum.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "deposits acknowledged: {} ({}), failed or unanswered: {in_doubt}",
        acked.len(),
        atoms_text(expected)
    );
    ok &= check(
        balances.errors == 0,
        &format!("read every client's accounts ({} failed)", balances.errors),
    );
    ok &= check(
        credited == expected,
        &format!(
            "real balances sum to the acknowledged deposits: {} credited, {} acknowledged",
            atoms_text(credited),
            atoms_text(expected)
        ),
    );

    if let Some(own) = &target.own {
        ok &= check_database(own, &gen, &acked)?;
        if args.keep {
            let kept = own.dir.path().to_path_buf();
            println!("database kept in {}", kept.display());
        }
    }
    if let Some(own) = target.own {
        let Own { server, dir, .. } = own;
        drop(server);
        if args.keep {
            let _ = dir.keep();
        }
    }
    println!("{}", if ok { "books: OK" } else { "books: FAILED" });
    Ok(ok)
}

fn check(passed: bool, what: &str) -> bool {
    println!("  {}  {what}", if passed { "ok  " } else { "FAIL" });
    passed
}

/// Reads the SQLite file of the server it started: one ledger entry per acknowledged
/// transactionId and none for anything else, then `crm verify`.
fn check_database(own: &Own, gen: &Traffic, acked: &[u64]) -> anyhow::Result<bool> {
    let conn = rusqlite::Connection::open_with_flags(&own.database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut per_ref: HashMap<String, (u64, i64)> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT external_ref, amount FROM ledger_entries WHERE reason = 'deposit'")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (reference, amount): (Option<String>, i64) = (r.get(0)?, r.get(1)?);
            let e = per_ref.entry(reference.unwrap_or_default()).or_default();
            e.0 += 1;
            e.1 += amount;
        }
    }
    let mut wrong = 0u64;
    for n in acked {
        match per_ref.remove(&gen.transaction_id(*n)) {
            Some((1, amount)) if amount as i128 == Traffic::amount_atoms(*n) => {}
            _ => wrong += 1,
        }
    }
    let mut ok = check(
        wrong == 0,
        &format!("each acknowledged transactionId has exactly one ledger entry of its amount ({wrong} do not)"),
    );
    ok &= check(
        per_ref.is_empty(),
        &format!("no unacknowledged deposit on the ledger ({} found)", per_ref.len()),
    );
    let total: i64 = conn.query_row("SELECT COALESCE(SUM(real_balance), 0) FROM accounts", [], |r| r.get(0))?;
    let expected: i128 = acked.iter().map(|n| Traffic::amount_atoms(*n)).sum();
    ok &= check(
        total as i128 == expected,
        &format!("SUM(real_balance) in the database is {}", atoms_text(total as i128)),
    );
    drop(conn);
    let started = Instant::now();
    let verify = server::crm(&own.bin, &own.database).arg("verify").output()?;
    ok &= check(
        verify.status.success(),
        &format!("crm verify passed ({:.2} s)", started.elapsed().as_secs_f64()),
    );
    if !verify.status.success() {
        print!("{}", String::from_utf8_lossy(&verify.stdout));
    }
    Ok(ok)
}

/// The traffic of one run: pre-keyed signer, client emails and transaction ids.
struct Traffic {
    run: String,
    host: String,
    auth: String,
    mac: Hmac<Sha256>,
    clients: u64,
}

impl Traffic {
    fn new(run: &str, target: &Target, clients: u64) -> Traffic {
        Traffic {
            run: run.to_string(),
            host: target.addr.clone(),
            auth: format!("authorization: Bearer {}\r\n", target.service_token),
            // HMAC takes a key of any length, so this cannot fail.
            mac: Hmac::<Sha256>::new_from_slice(target.webhook_secret.as_bytes()).unwrap_or_else(|_| unreachable!()),
            clients: clients.max(1),
        }
    }

    fn email(&self, client: u64) -> String {
        format!("bench-{}-{client}@bench.invalid", self.run)
    }

    fn transaction_id(&self, n: u64) -> String {
        format!("bench-{}-tx-{n}", self.run)
    }

    /// Deposit `n`'s amount in cents: 1.00 to 100.99, varying so that a lost or doubled deposit
    /// cannot hide behind another of the same size.
    fn amount_cents(n: u64) -> u64 {
        100 + (n * 7919) % 10_000
    }

    fn amount_atoms(n: u64) -> i128 {
        Self::amount_cents(n) as i128 * 1_000_000
    }

    fn webhook(&self, body: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(body);
        let signature = hex::encode(mac.finalize().into_bytes());
        let headers = format!("content-type: application/json\r\nx-webhook-signature: {signature}\r\n");
        request("POST", &self.host, "/api/webhooks/site", &headers, body)
    }

    fn register(&self, n: u64) -> Vec<u8> {
        let body = serde_json::json!({
            "event": "client.registered",
            "data": {
                "clientId": format!("BENCH-{}-{n}", self.run),
                "email": self.email(n),
                "firstName": "Bench",
                "lastName": format!("Client{n}"),
                "phone": "+10000000000",
            },
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        self.webhook(body.to_string().as_bytes())
    }

    /// Deposit `n` goes to client `n % clients`: consecutive deposits (and so the deposits of one
    /// commit batch) touch distinct clients.
    fn deposit(&self, n: u64) -> Vec<u8> {
        let cents = Self::amount_cents(n);
        let body = format!(
            r#"{{"event":"deposit.completed","data":{{"email":"{}","amount":"{}.{:02}","transactionId":"{}"}},"timestamp":"2025-10-13T19:00:00Z"}}"#,
            self.email(n % self.clients),
            cents / 100,
            cents % 100,
            self.transaction_id(n)
        );
        self.webhook(body.as_bytes())
    }

    fn lookup(&self, n: u64) -> Vec<u8> {
        // A stride coprime with most client counts visits clients in a scattered order.
        let client = (n * 7_919) % self.clients;
        let path = format!("/api/service/clients/{}", encode_segment(&self.email(client)));
        request("GET", &self.host, &path, &self.auth, b"")
    }

    fn account(&self, n: u64) -> Vec<u8> {
        let path = format!("/api/service/accounts/{}", encode_segment(&self.email(n)));
        request("GET", &self.host, &path, &self.auth, b"")
    }
}

fn is_processed(r: &Response) -> bool {
    r.status == 200 && r.json()["status"] == "processed"
}

/// The real funds of the primary account and all subaccounts, in hundred-millionths.
fn account_real_atoms(v: &serde_json::Value) -> Option<i128> {
    let mut total = parse_atoms(v["account"]["realBalance"].as_str()?)?;
    for sub in v["subaccounts"].as_array().into_iter().flatten() {
        total += parse_atoms(sub["realBalance"].as_str()?)?;
    }
    Some(total)
}

/// "123.45" → 12_345_000_000 (8 decimal places), exactly.
fn parse_atoms(text: &str) -> Option<i128> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 8 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let frac: i128 = format!("{frac:0<8}").parse().ok()?;
    Some(whole * 100_000_000 + frac)
}

fn atoms_text(atoms: i128) -> String {
    format!("{}.{:02}", atoms / 100_000_000, (atoms % 100_000_000) / 1_000_000)
}

/// The phases of one kind of request: as fast as the server answers, then at `rate` per second
/// unless it is 0.
fn phases(name: &str, rate: f64) -> Vec<(String, Option<f64>)> {
    let mut phases = vec![(name.to_string(), None)];
    if rate.is_finite() && rate > 0.0 {
        phases.push((format!("{name} @{rate:.0}/s"), Some(rate)));
    }
    phases
}

fn print_report(report: &[(String, Phase)], pid: Option<u32>) {
    println!();
    println!(
        "{:<28} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "phase", "ok", "errors", "per sec", "p50 ms", "p99 ms", "p999 ms", "max ms", "RSS MB", "srv cpu%", "gen cpu%"
    );
    for (name, p) in report {
        let secs = p.elapsed.as_secs_f64();
        let rss = if pid.is_some() {
            format!("{:.1}", p.peak_rss_kib as f64 / 1024.0)
        } else {
            "-".into()
        };
        println!(
            "{:<28} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>9.0} {:>8.0}",
            name,
            p.micros.len(),
            p.errors,
            p.micros.len() as f64 / secs,
            percentile_ms(&p.micros, 0.50),
            percentile_ms(&p.micros, 0.99),
            percentile_ms(&p.micros, 0.999),
            p.micros.last().copied().unwrap_or(0) as f64 / 1000.0,
            rss,
            100.0 * p.server_cpu / secs,
            100.0 * p.generator_cpu / secs,
        );
        if let Some(e) = &p.first_error {
            let e: String = e.chars().take(200).collect();
            println!("  first error: {e}");
        }
    }
    println!("(cpu% is of one core; RSS MB is the server's peak VmRSS sampled every 50 ms in that phase;");
    println!(" @N/s: sent at that fixed rate, latency counted from when each request was due)");
    if pid.is_some() {
        println!();
        println!("CPU per request, microseconds: the server's by thread, and the generator's");
        for (name, p) in report {
            let per = |secs: f64| 1e6 * secs / p.micros.len().max(1) as f64;
            let threads: Vec<String> = p
                .server_threads
                .iter()
                .filter(|(_, secs)| per(**secs) >= 0.5)
                .map(|(thread, secs)| format!("{thread} {:.1}", per(*secs)))
                .collect();
            println!(
                "  {name:<28} server {:.1} ({}); generator {:.1}",
                per(p.server_cpu),
                threads.join(", "),
                per(p.generator_cpu)
            );
        }
    }
}

fn print_machine(args: &Args, target: &Target) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpu}, {cores} cores; load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    match &target.own {
        Some(own) => println!(
            "server: {} on {} (started in {} ms), database {}",
            own.bin.display(),
            target.addr,
            own.server.startup.as_millis(),
            own.database.display()
        ),
        None => println!("server: http://{}", target.addr),
    }
    println!(
        "load: {} connections, {} generator thread(s), {} clients, {} s per timed phase after {} s warm-up",
        args.connections, args.client_threads, args.clients, args.seconds, args.warmup
    );
}
