//! The black-box harness: every test starts the real `crm` binary on a random port with its own
//! SQLite file in a temporary folder, and its own freshly generated secrets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::Sha256;

pub const BIN: &str = env!("CARGO_BIN_EXE_crm");
pub const PLATFORM_URL: &str = "https://trading.test";

pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Clone)]
pub struct Secrets {
    pub jwt: String,
    pub webhook: String,
    pub service: String,
    pub sso: String,
}

impl Secrets {
    pub fn generate() -> Secrets {
        Secrets {
            jwt: random_hex(),
            webhook: random_hex(),
            service: random_hex(),
            sso: random_hex(),
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub secrets: Secrets,
    pub admin_email: String,
    pub admin_password: String,
    pub http: reqwest::Client,
    child: Child,
}

/// Options for starting the server.
#[derive(Default)]
pub struct Spawn {
    pub env: Vec<(String, String)>,
    pub dir: Option<tempfile::TempDir>,
    pub secrets: Option<Secrets>,
}

impl Spawn {
    pub fn env(mut self, k: &str, v: &str) -> Spawn {
        self.env.push((k.into(), v.into()));
        self
    }
}

pub fn spawn_app() -> TestApp {
    spawn_with(Spawn::default())
}

/// A `crm` command with the test's environment: no inherited CRM or secret variables.
pub fn crm_command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
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
    cmd.env("CRM_DATABASE", dir.join("crm.db")).env("CRM_LOG", "warn");
    cmd
}

pub fn spawn_with(opts: Spawn) -> TestApp {
    let dir = opts.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let secrets = opts.secrets.unwrap_or_else(Secrets::generate);
    let mut cmd = crm_command(dir.path());
    cmd.arg("serve")
        .env("CRM_LISTEN", "127.0.0.1:0")
        .env("JWT_SECRET", &secrets.jwt)
        .env("WEBHOOK_SECRET", &secrets.webhook)
        .env("SERVICE_API_TOKEN", &secrets.service)
        .env("SSO_SECRET", &secrets.sso)
        .env("TRADING_PLATFORM_URL", PLATFORM_URL)
        // A first scheduled backup is due at start-up when there is none; tests that want the
        // schedule set an interval.
        .env("CRM_BACKUP_INTERVAL", "off");
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let (child, lines) = start(cmd);
    let mut admin_password = String::new();
    let base = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the server did not start in time");
        if let Some(pw) = line.trim().strip_prefix("password: ") {
            admin_password = pw.to_string();
        }
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_string();
        }
    };
    TestApp {
        base,
        dir,
        secrets,
        admin_email: "admin@crm.local".into(),
        admin_password,
        http: reqwest::Client::new(),
        child,
    }
}

/// Starts a process and forwards its stdout lines to a channel (and keeps draining them).
pub fn start(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start crm");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("crm.db")
    }

    /// Runs another `crm` command against this app's database and configuration.
    pub fn crm(&self, args: &[&str]) -> std::process::Output {
        crm_command(self.dir.path()).args(args).output().unwrap()
    }

    /// Stops the server the way an operator's `systemctl stop` would.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }

    /// Kills the server and hands back its folder, so a test can start it again on the same data.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Opens the database directly, as an operator's sqlite3 shell would.
    pub fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db_path()).unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        into_parts(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    // ---- webhooks -------------------------------------------------------------------------

    pub async fn post_webhook_raw(&self, body: &[u8], signature: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url("/api/webhooks/site"))
            .header("content-type", "application/json");
        if let Some(sig) = signature {
            req = req.header("x-webhook-signature", sig);
        }
        into_parts(req.body(body.to_vec()).send().await.unwrap()).await
    }

    /// Signs `body` with the webhook secret and posts it.
    pub async fn post_webhook(&self, body: &Value) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let sig = sign(&self.secrets.webhook, &raw);
        self.post_webhook_raw(&raw, Some(&sig)).await
    }

    pub async fn event(&self, event: &str, data: Value) -> (u16, Value) {
        self.post_webhook(&json!({ "event": event, "data": data, "timestamp": "2025-10-13T19:00:00Z" }))
            .await
    }

    pub async fn register(&self, email: &str) -> (u16, Value) {
        let id = format!("TP{}", &random_hex()[..8]);
        self.event(
            "client.registered",
            json!({ "clientId": id, "email": email, "firstName": "John", "lastName": "Doe", "phone": "+1234567890" }),
        )
        .await
    }

    pub async fn deposit(&self, email: &str, amount: &str, tx: &str) -> (u16, Value) {
        self.event(
            "deposit.completed",
            json!({ "email": email, "amount": amount, "transactionId": tx }),
        )
        .await
    }

    pub async fn withdraw(&self, email: &str, amount: &str, tx: &str) -> (u16, Value) {
        self.event(
            "withdrawal.completed",
            json!({ "email": email, "amount": amount, "transactionId": tx }),
        )
        .await
    }

    // ---- service API ----------------------------------------------------------------------

    pub async fn service(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.secrets.service);
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_parts(req.send().await.unwrap()).await
    }

    // ---- staff API ------------------------------------------------------------------------

    pub async fn login_as(&self, email: &str, password: &str) -> (u16, Value) {
        into_parts(
            self.http
                .post(self.url("/api/auth/login"))
                .json(&json!({ "email": email, "password": password }))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Logs in as the first-run admin and returns the token.
    pub async fn admin_token(&self) -> String {
        let (status, body) = self.login_as(&self.admin_email, &self.admin_password).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn staff(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_parts(req.send().await.unwrap()).await
    }

    /// Reads one client's primary account straight from the service API.
    pub async fn account_of(&self, email: &str) -> Value {
        let (status, body) = self
            .service(reqwest::Method::GET, &format!("/api/service/accounts/{email}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["account"].clone()
    }
}

pub async fn into_parts(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

// ---- the books, read straight from SQLite (reliability tests) ----------------------------------

/// What the Trading Platform needs to send webhooks: cheap to clone into sender tasks, and not
/// tied to the `TestApp`, so a test can kill the server while senders are still sending.
#[derive(Clone)]
pub struct Platform {
    pub base: String,
    pub secret: String,
    pub http: reqwest::Client,
}

impl Platform {
    /// Signs and posts one event; `Err` when no answer came (connection refused or cut).
    pub async fn send(&self, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        let raw = serde_json::to_vec(body).unwrap();
        let resp = self
            .http
            .post(format!("{}/api/webhooks/site", self.base))
            .header("content-type", "application/json")
            .header("x-webhook-signature", sign(&self.secret, &raw))
            .body(raw)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn deposit(&self, email: &str, amount: &str, tx: &str) -> Result<(u16, Value), reqwest::Error> {
        self.send(&json!({
            "event": "deposit.completed",
            "data": { "email": email, "amount": amount, "transactionId": tx },
            "timestamp": "2025-10-13T19:00:00Z"
        }))
        .await
    }
}

/// One ledger entry as the reliability tests compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fund: String,
    pub amount: i64,
    pub external_ref: Option<String>,
}

impl TestApp {
    pub fn platform(&self) -> Platform {
        Platform {
            base: self.base.clone(),
            secret: self.secrets.webhook.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The primary account id of the client with `email`.
    pub fn account_id(&self, email: &str) -> String {
        self.sqlite()
            .query_row(
                "SELECT a.id FROM accounts a JOIN clients c ON c.id = a.client_id
                 WHERE c.email = ?1 AND a.parent_id IS NULL",
                [email],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// (real, demo, bonus) of an account in hundred-millionths.
    pub fn funds(&self, account: &str) -> (i64, i64, i64) {
        self.sqlite()
            .query_row(
                "SELECT real_balance, demo_balance, bonus_balance FROM accounts WHERE id = ?1",
                [account],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    }

    /// Every ledger entry of an account, oldest first.
    pub fn ledger(&self, account: &str) -> Vec<Entry> {
        let conn = self.sqlite();
        let mut stmt = conn
            .prepare("SELECT fund_type, amount, external_ref FROM ledger_entries WHERE account_id = ?1 ORDER BY seq")
            .unwrap();
        stmt.query_map([account], |r| {
            Ok(Entry {
                fund: r.get(0)?,
                amount: r.get(1)?,
                external_ref: r.get(2)?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// The invariants that must hold after anything at all: every balance of every account equals
    /// the sum of its ledger entries per fund and none is negative, no transaction id is on the
    /// ledger twice, and `crm verify` (integrity, balances, audit chain) passes.
    pub fn assert_books_balance(&self) {
        let conn = self.sqlite();
        let mismatched: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM accounts a WHERE a.real_balance < 0 OR a.demo_balance < 0 OR a.bonus_balance < 0
                 OR a.real_balance <> (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries l
                                       WHERE l.account_id = a.id AND l.fund_type = 'real')
                 OR a.demo_balance <> (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries l
                                       WHERE l.account_id = a.id AND l.fund_type = 'demo')
                 OR a.bonus_balance <> (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries l
                                        WHERE l.account_id = a.id AND l.fund_type = 'bonus')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            mismatched, 0,
            "an account's balance differs from its ledger or is negative"
        );
        let twice: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM (SELECT external_ref FROM ledger_entries WHERE external_ref IS NOT NULL
                 GROUP BY external_ref HAVING COUNT(*) > 1)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(twice, 0, "a transaction is on the ledger more than once");
        let verify = self.crm(&["verify"]);
        assert!(
            verify.status.success(),
            "crm verify failed:\n{}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    /// Every row of the tables that hold business state, ordered by primary key, as text: two
    /// equal snapshots mean nothing a client or staff member can see has changed.
    pub fn business_snapshot(&self) -> Vec<(String, Vec<String>)> {
        const TABLES: [(&str, &str); 7] = [
            ("clients", "id"),
            ("accounts", "id"),
            ("ledger_entries", "seq"),
            ("notes", "id"),
            ("staff_users", "id"),
            ("webhook_claims", "claim"),
            ("sso_sessions", "id"),
        ];
        let conn = self.sqlite();
        TABLES
            .iter()
            .map(|(table, key)| {
                let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {key}")).unwrap();
                let columns = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        let cells: Vec<String> = (0..columns)
                            .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).ok()))
                            .collect();
                        Ok(cells.join("|"))
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                (table.to_string(), rows)
            })
            .collect()
    }
}

/// An answer read off the wire: for requests reqwest would not send as written (dot segments,
/// NUL bytes, lying lengths) and for checking headers.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends `request` as it is over a new connection and reads until the server closes it (send
/// `Connection: close`). `None` when the server closed without answering.
pub async fn raw_request(app: &TestApp, request: &[u8]) -> Option<RawResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before taking all of a refused request.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Option<RawResponse> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(eol + 2..eol + 2 + size)?);
            rest = rest.get(eol + 4 + size..)?;
        }
        body = out;
    }
    Some(RawResponse { status, headers, body })
}
