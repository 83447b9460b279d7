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
        .env("TRADING_PLATFORM_URL", PLATFORM_URL);
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
