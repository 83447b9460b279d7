//! Builds a large, consistent CRM database for the scale figures in the README.
//!
//! ```sh
//! cargo run --release --example gen_data -- --out big.db --clients 1000000 --ledger 10000000
//! ```
//!
//! The schema comes from the CRM's own migrations (`Db::open`). Then, in large transactions with
//! prepared statements: clients spread over two years, one primary account each, and ledger
//! entries (deposits, and withdrawals that never overdraw) on the real, demo and bonus funds of
//! accounts that existed at the time, each with its running `balance_after`. Every registration
//! and every ledger entry gets its audit entry through the CRM's own `audit::append`, so the hash
//! chain is genuine, and the balances are set to the sums of their ledger at the end, so
//! `crm verify` passes on the result. Webhook delivery records (`webhook_events`) are not
//! generated: nothing in the scale figures reads them.
//!
//! Deterministic for a given `--seed`, apart from the audit timestamps and ids.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection};

use crm::domain::Money;
use crm::store::audit::{self, actions, actors, Audit};
use crm::store::audit_index;
use crm::store::Db;

#[derive(Parser)]
#[command(about = "Generate a large consistent CRM database (clients, accounts, ledger, audit chain)")]
struct Args {
    /// The database file to create (must not exist)
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    clients: u64,
    #[arg(long, default_value_t = 10_000_000)]
    ledger: u64,
    /// Rows per transaction
    #[arg(long, default_value_t = 100_000)]
    batch: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const FIRST: [&str; 24] = [
    "james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "william", "elena", "david",
    "sofia", "ahmed", "fatima", "wei", "yuki", "carlos", "ana", "ivan", "olga", "raj", "priya", "kwame", "amara",
];
const LAST: [&str; 24] = [
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "martinez", "lopez", "wilson",
    "anderson", "thomas", "taylor", "moore", "jackson", "martin", "lee", "khan", "chen", "tanaka", "petrov", "mensah",
    "silva",
];
const KYC: [&str; 4] = ["approved", "approved", "pending", "in_review"];
const FUNDS: [&str; 3] = ["real", "demo", "bonus"];
/// Two years, in milliseconds: the period the clients and the ledger are spread over.
const SPAN_MS: i64 = 2 * 365 * 24 * 3600 * 1000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.out.exists() {
        bail!("{} already exists: choose a new file", args.out.display());
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let started = Instant::now();
    drop(Db::open(&args.out).context("creating the schema")?);
    let mut conn = Connection::open(&args.out)?;
    // A generator may skip syncing: if it dies, the file is thrown away and built again.
    conn.execute_batch(
        "PRAGMA synchronous = OFF; PRAGMA cache_size = -1048576; PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;",
    )?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let origin = chrono::DateTime::parse_from_rfc3339("2023-01-01T00:00:00Z")?.timestamp_millis();
    let step = (SPAN_MS / args.clients as i64).max(1);

    let mut accounts: Vec<String> = Vec::with_capacity(args.clients as usize);
    let mut done = 0;
    while done < args.clients {
        let end = (done + args.batch).min(args.clients);
        let tx = conn.transaction()?;
        {
            let mut client = tx.prepare(
                "INSERT INTO clients (id, platform_client_id, email, first_name, last_name, phone, kyc_status,
                                      created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )?;
            let mut account =
                tx.prepare("INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)")?;
            for i in done..end {
                let (first, last) = (FIRST[rng.gen_range(0..FIRST.len())], LAST[rng.gen_range(0..LAST.len())]);
                let email = format!("{first}.{last}.{i}@example.com");
                let at_ms = origin + i as i64 * step;
                let id = uuid(&mut rng, at_ms);
                let account_id = uuid(&mut rng, at_ms);
                let at = timestamp(at_ms);
                client.execute(params![
                    id,
                    format!("TP{}", 100_000 + i),
                    email,
                    capitalise(first),
                    capitalise(last),
                    format!("+1555{:07}", i % 10_000_000),
                    KYC[rng.gen_range(0..KYC.len())],
                    at
                ])?;
                account.execute(params![account_id, id, at])?;
                audit::append(
                    &tx,
                    &Audit::new(actors::WEBHOOK, actions::CLIENT_REGISTER, audit::target("client", &id))
                        .detail("email", email)
                        .detail("accountId", account_id.clone()),
                )?;
                accounts.push(account_id);
            }
        }
        tx.commit()?;
        done = end;
        progress("clients", done, args.clients, started);
    }

    // Running balances per account and fund, so every entry carries its true balance_after.
    let mut balances: Vec<[i64; 3]> = vec![[0; 3]; accounts.len()];
    let mut done = 0;
    let ledger_step = (SPAN_MS / args.ledger.max(1) as i64).max(1);
    while done < args.ledger {
        let end = (done + args.batch).min(args.ledger);
        let tx = conn.transaction()?;
        {
            let mut entry = tx.prepare(
                "INSERT INTO ledger_entries (id, account_id, fund_type, amount, balance_after, reason, notes, actor,
                                             external_ref, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7, ?8, ?9)",
            )?;
            for k in done..end {
                // Only clients registered by then have entries: older clients have more history.
                let existing = ((k + 1) * accounts.len() as u64).div_ceil(args.ledger).max(1);
                let a = rng.gen_range(0..existing) as usize;
                let fund = match rng.gen_range(0..20) {
                    0 => 1,
                    1 => 2,
                    _ => 0,
                };
                let before = balances[a][fund];
                let (amount, reason, action) = if before > 0 && rng.gen_range(0..5) == 0 {
                    // A withdrawal of at most the whole fund: never an overdraft.
                    (-rng.gen_range(1..=before), "withdrawal", actions::BALANCE_WITHDRAWAL)
                } else {
                    (
                        // 10.00 to 4,999.99, in cents, then in hundred-millionths.
                        rng.gen_range(1_000..500_000i64) * 1_000_000,
                        "deposit",
                        actions::BALANCE_DEPOSIT,
                    )
                };
                let after = before + amount;
                balances[a][fund] = after;
                let at_ms = origin + k as i64 * ledger_step;
                let id = uuid(&mut rng, at_ms);
                let external_ref = format!("TX{}", 1_000_000 + k);
                entry.execute(params![
                    id,
                    accounts[a],
                    FUNDS[fund],
                    amount,
                    after,
                    reason,
                    actors::WEBHOOK,
                    external_ref,
                    timestamp(at_ms)
                ])?;
                audit::append(
                    &tx,
                    &Audit::new(actors::WEBHOOK, action, audit::target("account", &accounts[a]))
                        .detail("accountId", accounts[a].clone())
                        .detail("fundType", FUNDS[fund])
                        .detail("amount", money(amount))
                        .detail("balanceBefore", money(before))
                        .detail("balanceAfter", money(after))
                        .detail("ledgerEntryId", id)
                        .detail("transactionId", external_ref),
                )?;
            }
        }
        tx.commit()?;
        done = end;
        progress("ledger entries", done, args.ledger, started);
    }

    let tx = conn.transaction()?;
    {
        let mut set =
            tx.prepare("UPDATE accounts SET real_balance = ?2, demo_balance = ?3, bonus_balance = ?4 WHERE id = ?1")?;
        for (id, [real, demo, bonus]) in accounts.iter().zip(&balances) {
            if [real, demo, bonus].iter().any(|b| **b != 0) {
                set.execute(params![id, real, demo, bonus])?;
            }
        }
    }
    tx.commit()?;
    // What `crm serve` would otherwise index slice by slice after starting.
    let tx = conn.transaction()?;
    audit_index::index_all(&tx)?;
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    drop(conn);
    let size = std::fs::metadata(&args.out)?.len();
    println!(
        "wrote {} ({:.2} GB): {} clients, {} ledger entries, {} audit entries in {:.0} s",
        args.out.display(),
        size as f64 / 1e9,
        args.clients,
        args.ledger,
        args.clients + args.ledger,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A UUIDv7 for the given time, as the CRM makes them (`domain::new_uuid`), but reproducible.
fn uuid(rng: &mut StdRng, at_ms: i64) -> String {
    let random: [u8; 10] = rng.gen();
    uuid::Builder::from_unix_timestamp_millis(at_ms as u64, &random)
        .into_uuid()
        .to_string()
}

fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn money(atoms: i64) -> String {
    Money::from_atoms(atoms).map(|m| m.to_string()).unwrap_or_default()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn progress(what: &str, done: u64, total: u64, started: Instant) {
    eprintln!("{what}: {done}/{total} ({:.0} s)", started.elapsed().as_secs_f64());
}
