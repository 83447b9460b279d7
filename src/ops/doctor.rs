//! `crm doctor`: the guide's pre-production checklist, checked automatically, one line per item
//! with ok / warn / FAIL and how to fix it.

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::{Connection, OptionalExtension};

use crate::config::{is_placeholder, read_env_file, shared_values, Settings, ROTATING_NAMES, SECRET_NAMES};
use crate::store::{audit, secret_history, Db};

/// The guide: "Rotate tokens every 90 days".
const ROTATION_DAYS: i64 = 90;
const MIN_SECRET_LEN: usize = 32;
/// Below this estimate (see [`looks_hand_made`]) a secret did not come from a random generator.
const MIN_ESTIMATED_BITS: f64 = 80.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
    /// An item of the guide's checklist that only a person can confirm.
    Todo,
}

#[derive(Debug)]
pub struct Item {
    pub level: Level,
    pub what: String,
    pub fix: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    fn push(&mut self, level: Level, what: impl Into<String>, fix: impl Into<String>) {
        self.items.push(Item {
            level,
            what: what.into(),
            fix: fix.into(),
        });
    }

    pub fn failed(&self) -> bool {
        self.items.iter().any(|i| i.level == Level::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            let tag = match item.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
                Level::Todo => "todo",
            };
            if item.fix.is_empty() {
                writeln!(f, "{tag}  {}", item.what)?;
            } else {
                writeln!(f, "{tag}  {} -> {}", item.what, item.fix)?;
            }
        }
        Ok(())
    }
}

pub fn run(settings: &Settings, db: &Db) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let stored = read_env_file(&settings.secrets_file())?;
    let values = check_secrets(settings, &stored, &mut report);
    check_urls(settings, &mut report);
    check_backups(settings, &mut report);
    check_file_modes(settings, &mut report);
    db.read_sync(|conn| {
        check_usage(conn, &mut report)?;
        check_rotation(conn, settings, &values, &mut report)?;
        Ok(())
    })?;
    for item in [
        "Secrets shared with the Trading Platform team via a secure channel",
        "Security team review completed",
        "Secrets documented in a password manager",
    ] {
        report.push(Level::Todo, item, "only a person can confirm this one");
    }
    Ok(report)
}

/// Why `value` cannot have come from a random generator, if it cannot: too few bits by the
/// frequencies of its characters (its length times their Shannon entropy, a rough upper bound:
/// `aaaa...`), or too many repeated three-character runs for its length (a word typed several
/// times: a quarter of its runs repeats). `crm secrets generate` gives about 250 bits and no
/// repeats; 32 random hex characters about 115 bits, never below 89 in 300,000 draws, and never
/// a quarter of repeated runs.
fn looks_hand_made(value: &str) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len() as f64;
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    for c in &chars {
        *counts.entry(*c).or_default() += 1;
    }
    let bits: f64 = counts.values().map(|&k| k as f64 * (n / k as f64).log2()).sum();
    if bits < MIN_ESTIMATED_BITS {
        return Some(format!("about {bits:.0} bits"));
    }
    let runs: Vec<&[char]> = chars.windows(3).collect();
    let distinct: std::collections::BTreeSet<&[char]> = runs.iter().copied().collect();
    if (distinct.len() as f64) < 0.75 * runs.len() as f64 {
        return Some("it repeats itself".into());
    }
    None
}

/// Each of the four secrets: configured by the operator, long enough, distinct from the others.
fn check_secrets(
    settings: &Settings,
    stored: &BTreeMap<String, String>,
    report: &mut Report,
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for name in SECRET_NAMES {
        let value = if let Some((secret, _)) = settings.secrets.get(name) {
            report.push(Level::Ok, format!("{name} is configured"), "");
            secret.expose().to_string()
        } else if let Some(v) = stored.get(name) {
            report.push(
                Level::Warn,
                format!("{name} is the generated first-run value in {}", settings.secrets_file().display()),
                "set your own in the environment or crm.toml (`crm secrets generate`) and share it over a secure channel",
            );
            v.clone()
        } else {
            report.push(
                Level::Fail,
                format!("{name} is not set"),
                "set it (`crm secrets generate` prints one)",
            );
            continue;
        };
        let generate = "use 32 random bytes as hex (64 characters): `crm secrets generate`";
        if is_placeholder(&value) {
            report.push(Level::Fail, format!("{name} is the guide's placeholder text"), generate);
        } else if value.len() < MIN_SECRET_LEN {
            report.push(
                Level::Fail,
                format!("{name} is only {} characters", value.len()),
                generate,
            );
        } else if let Some(why) = looks_hand_made(&value) {
            report.push(
                Level::Fail,
                format!("{name} is too regular to be random ({why})"),
                generate,
            );
        }
        values.insert(name.to_string(), value);
    }
    // The four, and the previous values still accepted: serve refuses the same pairs.
    let mut named: Vec<(&str, &str)> = values.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    for name in ROTATING_NAMES {
        let prev = format!("{name}_PREVIOUS");
        if let Some((key, (value, _))) = settings.secrets.get_key_value(&prev) {
            named.push((key.as_str(), value.expose()));
        }
    }
    let shared = shared_values(&named);
    for (name, other) in &shared {
        report.push(
            Level::Fail,
            format!("{name} and {other} are the same value"),
            "give every secret its own value",
        );
    }
    if shared.is_empty() && values.len() == SECRET_NAMES.len() {
        report.push(Level::Ok, "the four secrets are distinct", "");
    }
    for name in ROTATING_NAMES {
        let prev = format!("{name}_PREVIOUS");
        if let Some((value, _)) = settings.secrets.get(&prev) {
            if values.get(name).is_some_and(|v| v == value.expose()) {
                report.push(
                    Level::Fail,
                    format!("{prev} equals {name}"),
                    format!("remove {prev} or set it to the old value"),
                );
            }
        }
    }
    values
}

fn check_urls(settings: &Settings, report: &mut Report) {
    if is_placeholder(&settings.trading_platform_url) {
        report.push(
            Level::Fail,
            format!(
                "TRADING_PLATFORM_URL is the guide's example {}",
                settings.trading_platform_url
            ),
            "set TRADING_PLATFORM_URL to your trading platform's https:// address",
        );
    } else if settings.trading_platform_url.starts_with("https://") {
        report.push(
            Level::Ok,
            format!("TRADING_PLATFORM_URL is {}", settings.trading_platform_url),
            "",
        );
    } else {
        report.push(
            Level::Fail,
            format!("TRADING_PLATFORM_URL is {} (not https)", settings.trading_platform_url),
            "set TRADING_PLATFORM_URL to the platform's https:// address",
        );
    }
    match &settings.public_url {
        Some(url) if url.starts_with("https://") => {
            report.push(Level::Ok, format!("served over HTTPS at {url}"), "");
        }
        Some(url) => report.push(
            Level::Fail,
            format!("public_url {url} is not https"),
            "put a TLS reverse proxy in front (README: Run it on a VPS) and set public_url to its https:// address",
        ),
        None if settings.listen.ip().is_loopback() => report.push(
            Level::Warn,
            format!("listening on {} (loopback) with no public_url set", settings.listen),
            "put a TLS reverse proxy in front (README: Run it on a VPS) and set public_url / CRM_PUBLIC_URL",
        ),
        None => report.push(
            Level::Fail,
            format!("listening on {} without TLS", settings.listen),
            "listen on 127.0.0.1 behind a TLS reverse proxy and set public_url",
        ),
    }
}

/// The database, its WAL and the backups hold staff password hashes and clients' personal data,
/// and `secrets.env`, a `.env` and `crm.toml` may hold the secrets. The CRM creates its own files
/// private; a database from before that (or files made by hand) may not be.
fn check_file_modes(settings: &Settings, report: &mut Report) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = crate::store::database_files(&settings.database).to_vec();
    files.extend(crate::ops::backup::list(&settings.backup_dir));
    files.extend([
        settings.secrets_file(),
        std::path::PathBuf::from(crate::config::DOTENV_FILE),
    ]);
    files.extend(settings.config_file.clone());
    let open: Vec<String> = files
        .iter()
        .filter_map(|f| Some((f, std::fs::metadata(f).ok()?.permissions().mode() & 0o777)))
        .filter(|(_, mode)| mode & 0o077 != 0)
        .map(|(f, mode)| format!("{} ({mode:o})", f.display()))
        .collect();
    if open.is_empty() {
        report.push(
            Level::Ok,
            "the database, its backups and the files with secrets are readable by their owner only",
            "",
        );
    } else {
        report.push(
            Level::Warn,
            format!("readable by other users: {}", open.join(", ")),
            "chmod 600 them (and chmod 700 their folders): they hold secrets, password hashes and clients' data",
        );
    }
}

fn check_backups(settings: &Settings, report: &mut Report) {
    let Some(interval) = settings.backup_interval else {
        report.push(
            Level::Warn,
            "scheduled backups are off",
            "set backup_interval (e.g. \"24h\") or back up with cron and `crm backup`",
        );
        return;
    };
    let newest = crate::ops::backup::list(&settings.backup_dir).into_iter().next();
    let age = newest
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok());
    match (newest, age) {
        (Some(path), Some(age)) if age <= interval * 2 => {
            report.push(
                Level::Ok,
                format!("latest backup {} is {} h old", path.display(), age.as_secs() / 3600),
                "",
            );
        }
        (Some(path), Some(age)) => report.push(
            Level::Warn,
            format!("latest backup {} is {} h old", path.display(), age.as_secs() / 3600),
            "check that `crm serve` is running and can write to the backup folder",
        ),
        _ => report.push(
            Level::Warn,
            format!("no backup in {} yet", settings.backup_dir.display()),
            "run `crm backup` now; `serve` writes one every backup_interval",
        ),
    }
}

fn exists(conn: &Connection, sql: &str) -> rusqlite::Result<bool> {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n > 0)
}

/// The guide's "tested end-to-end" items, and the audit trail itself.
fn check_usage(conn: &Connection, report: &mut Report) -> crate::store::StoreResult<()> {
    let checks = [
        (
            "SELECT COUNT(*) FROM webhook_events WHERE status = 'processed'",
            "a signed webhook has been processed",
            "send the guide's test webhook (README: Webhooks)",
        ),
        (
            "SELECT COUNT(*) FROM audit_log WHERE action LIKE 'service.%' AND outcome = 'success'",
            "the service API has answered a Bearer-token call",
            "run the guide's service API curl example",
        ),
        (
            "SELECT COUNT(*) FROM audit_log WHERE action = 'sso.impersonate' AND outcome = 'success'",
            "an SSO impersonation has been issued",
            "impersonate a test client from the admin page and check the platform accepts the token",
        ),
    ];
    for (sql, what, fix) in checks {
        if exists(conn, sql)? {
            report.push(Level::Ok, what, "");
        } else {
            report.push(Level::Warn, format!("not yet: {what}"), fix);
        }
    }
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))?;
    match audit::verify_chain(conn)? {
        Some(broken) => report.push(
            Level::Fail,
            format!("audit log: {broken}"),
            "restore from a backup and investigate",
        ),
        None if rows > 0 => report.push(
            Level::Ok,
            format!("audit log is written ({rows} entries, chain intact)"),
            "",
        ),
        None => report.push(Level::Warn, "audit log is empty", "start `crm serve` once"),
    }
    Ok(())
}

/// Secrets older than 90 days, and when each `*_PREVIOUS` secret was last used.
fn check_rotation(
    conn: &Connection,
    settings: &Settings,
    values: &BTreeMap<String, String>,
    report: &mut Report,
) -> crate::store::StoreResult<()> {
    let now = chrono::Utc::now();
    for (name, value) in values {
        let Some(first_seen) = secret_history::first_seen(conn, name, value)? else {
            continue;
        };
        let age =
            chrono::DateTime::parse_from_rfc3339(&first_seen).map(|t| (now - t.with_timezone(&chrono::Utc)).num_days());
        match age {
            Ok(days) if days > ROTATION_DAYS => report.push(
                Level::Warn,
                format!("{name} has been in use for {days} days"),
                "rotate it (README: Rotating secrets); the guide asks for every 90 days",
            ),
            Ok(days) => report.push(Level::Ok, format!("{name} in use for {days} days"), ""),
            Err(_) => {}
        }
    }
    const PLATFORM: &str = "once the Trading Platform has switched to the new value, remove it";
    const STAFF: &str = "staff sessions signed with it end 8 hours after they began: remove it after that";
    let last_use = [
        (
            "WEBHOOK_SECRET_PREVIOUS",
            "SELECT MAX(received_at) FROM webhook_events WHERE signature = 'previous'",
            PLATFORM,
        ),
        (
            "SERVICE_API_TOKEN_PREVIOUS",
            "SELECT MAX(at) FROM audit_log WHERE action LIKE 'service.%' AND json_extract(details, '$.token') = 'previous'",
            PLATFORM,
        ),
        // Staff reads are not audited, so this is the last recorded change made with such a
        // session; sessions last 8 hours at most in any case.
        (
            "JWT_SECRET_PREVIOUS",
            "SELECT MAX(at) FROM audit_log WHERE json_extract(details, '$.jwt') = 'previous'",
            STAFF,
        ),
    ];
    for (name, sql, advice) in last_use {
        if !settings.secrets.contains_key(name) {
            continue;
        }
        let last: Option<String> = conn.query_row(sql, [], |r| r.get(0)).optional()?.flatten();
        match last {
            Some(at) => report.push(Level::Warn, format!("{name} is set and was last used at {at}"), advice),
            None => report.push(Level::Ok, format!("{name} is set and has not been used"), advice),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore};

    /// Generated secrets pass, however they were generated (the guide's `openssl rand -hex 32`,
    /// the shortest accepted hex, base64), thousands of times over; typed ones do not.
    #[test]
    fn random_secrets_pass_and_typed_ones_do_not() {
        let mut rng = rand::thread_rng();
        let base64 = |bytes: &[u8]| {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            bytes
                .iter()
                .map(|b| ALPHABET[(*b & 63) as usize] as char)
                .collect::<String>()
        };
        for _ in 0..3000 {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            for secret in [hex::encode(bytes), hex::encode(&bytes[..16]), base64(&bytes)] {
                assert_eq!(looks_hand_made(&secret), None, "{secret}");
            }
        }
        let word: String = (0..8).map(|_| rng.gen_range('a'..='z')).collect();
        for typed in [
            "a".repeat(64),
            format!("{word}-").repeat(6),
            "0123456789abcdef".repeat(4),
        ] {
            assert!(looks_hand_made(&typed).is_some(), "{typed}");
        }
        assert!(is_placeholder("<your-generated-jwt-secret>"));
        assert!(
            is_placeholder("\"<your-generated-webhook-secret>\""),
            "pasted with its quotes"
        );
        assert!(is_placeholder("<same-as-crm-webhook-secret>"));
        assert!(is_placeholder("https://trading.yourcompany.com"));
        assert!(is_placeholder("<64 hex characters>"), "crm.toml.example's");
        assert!(is_placeholder(" '<old value>' "));
        for real in [
            "https://trading.yourbroker.com",
            "https://trade.your-fx.com",
            "q7V<mZ2r!Kp9>Lw4@xT8#nB3$hY6%jD1&",
        ] {
            assert!(!is_placeholder(real), "{real}");
        }
    }
}
