//! Starting the real release binary with a temporary database and generated secrets, and
//! reading its memory and CPU use from /proc.
// Shared by the `bench` and `scale` examples; each uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::RngCore;

pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// `target/release/crm` beside this example (`target/release/examples/<name>`), unless given.
pub fn crm_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match explicit {
        Some(p) => p,
        None => {
            let me = std::env::current_exe()?;
            let profile_dir = me
                .parent()
                .and_then(Path::parent)
                .context("cannot locate the target folder")?;
            profile_dir.join("crm")
        }
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release` (or pass --bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A `crm` command on `database`, with no CRM setting or secret inherited from this shell.
pub fn crm(bin: &Path, database: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("CRM_")
            || k.ends_with("_SECRET")
            || k.contains("_SECRET_")
            || k.starts_with("SERVICE_API_TOKEN")
            || k == "TRADING_PLATFORM_URL"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("CRM_DATABASE", database).env("CRM_LOG", "warn");
    cmd
}

pub struct Secrets {
    pub webhook: String,
    pub service: String,
}

pub struct Server {
    child: Child,
    /// `host:port`
    pub addr: String,
    pub secrets: Secrets,
    /// From spawning the process to its "listening on" line.
    pub startup: Duration,
    pub admin_password: Option<String>,
}

impl Server {
    /// Starts `crm serve` on a free loopback port. Backups are off (they would add noise) and
    /// the service rate limit is off (the load would otherwise be 429s after 100 requests).
    pub fn start(bin: &Path, database: &Path) -> anyhow::Result<Server> {
        let secrets = Secrets {
            webhook: random_hex(),
            service: random_hex(),
        };
        let mut cmd = crm(bin, database);
        cmd.arg("serve")
            .env("CRM_LISTEN", "127.0.0.1:0")
            .env("CRM_BACKUP_INTERVAL", "off")
            .env("CRM_SERVICE_RATE_LIMIT", "0")
            .env("JWT_SECRET", random_hex())
            .env("SSO_SECRET", random_hex())
            .env("WEBHOOK_SECRET", &secrets.webhook)
            .env("SERVICE_API_TOKEN", &secrets.service)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut admin_password = None;
        let addr = loop {
            let line = match lines.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    bail!("the server did not print its listening line within 120 s");
                }
            };
            if let Some(pw) = line.trim().strip_prefix("password: ") {
                admin_password = Some(pw.to_string());
            }
            if let Some(url) = line.strip_prefix("listening on http://") {
                break url.trim().to_string();
            }
        };
        Ok(Server {
            startup: started.elapsed(),
            child,
            addr,
            secrets,
            admin_password,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    /// Stops the server as an operator would (SIGTERM, so it folds its WAL into the database
    /// file and the next measurement starts from a settled file); kills it if it will not stop.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User plus system CPU time of each thread of a process, in seconds, by thread id, with the
/// thread's name: where a server spends its CPU (the writer, the HTTP workers, the WAL sync...).
pub fn thread_cpu_seconds(pid: u32) -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if let Some(secs) = cpu_seconds(&format!("{pid}/task/{tid}")) {
            threads.insert(tid, (name.trim().to_string(), secs));
        }
    }
    threads
}

/// User plus system CPU time of a process (`"self"` for this one, `"<pid>/task/<tid>"` for one
/// thread), in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some(ticks as f64 / 100.0)
}
