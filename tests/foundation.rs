//! The binary itself: first run, restarts, migrations, the CLI and the HTTP skeleton.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_with_no_configuration_at_all() {
    // No secrets, no config file: only a database folder chosen by the test.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = crm_command(dir.path());
    cmd.env_remove("CRM_DATABASE")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let (mut child, lines) = start(cmd);
    let mut printed = Vec::new();
    let base = loop {
        let line = lines.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        printed.push(line.clone());
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    let resp = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();

    let data = dir.path().join("data");
    assert!(data.join("crm.db").exists(), "default database ./data/crm.db");
    let secrets = std::fs::read_to_string(data.join("secrets.env")).unwrap();
    for name in ["JWT_SECRET=", "WEBHOOK_SECRET=", "SERVICE_API_TOKEN=", "SSO_SECRET="] {
        assert!(secrets.contains(name), "{name} missing from secrets.env");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(data.join("secrets.env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let all = printed.join("\n");
    assert!(all.contains("admin@crm.local") && all.contains("password: "), "{all}");
}

/// The guide's Step 2 offers a `.env` file for the secrets: one in the working directory is read,
/// in the forms people write (comments, `export`, quotes), and the environment still wins.
#[tokio::test]
async fn a_dot_env_file_in_the_working_directory_supplies_what_the_environment_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = Secrets::generate();
    let overriding_token = random_hex();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "# CRM secrets (guide, Step 2)\n\
             JWT_SECRET={}\n\
             export WEBHOOK_SECRET=\"{}\" # shared with the platform\n\
             SERVICE_API_TOKEN='{}'\n\
             SSO_SECRET={} # from crm secrets generate\n\
             TRADING_PLATFORM_URL=https://trading.test\n",
            s.jwt, s.webhook, s.service, s.sso
        ),
    )
    .unwrap();
    let mut cmd = crm_command(dir.path());
    // An empty variable (a compose file's `${VAR}` of an unset one) leaves the file's value; a
    // `*_PREVIOUS` set empty ends a rotation instead (config.rs tests).
    cmd.env("SERVICE_API_TOKEN", &overriding_token)
        .env("WEBHOOK_SECRET", "")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let (mut child, lines) = start(cmd);
    let base = loop {
        let line = lines.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    assert!(!dir.path().join("secrets.env").exists(), "nothing was generated");
    let http = reqwest::Client::new();
    let body =
        br#"{"event":"client.registered","data":{"email":"dotenv@example.com"},"timestamp":"2025-10-13T19:00:00Z"}"#;
    let resp = http
        .post(format!("{base}/api/webhooks/site"))
        .header("content-type", "application/json")
        .header("x-webhook-signature", sign(&s.webhook, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "signed with the quoted, exported WEBHOOK_SECRET");
    let lookup = |token: String| {
        http.get(format!("{base}/api/service/clients/dotenv@example.com"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        lookup(s.service.clone()).await.unwrap().status(),
        401,
        "the environment wins"
    );
    assert_eq!(lookup(overriding_token).await.unwrap().status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Impersonation hands a live SSO token to `TRADING_PLATFORM_URL`: a start with the default (or
/// any plain-http address) says so.
#[test]
fn a_platform_address_that_is_not_https_is_warned_about_at_start_up() {
    for (url, warned) in [
        (None, true),
        (Some("http://trading.test"), true),
        (Some("https://trading.test"), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = crm_command(dir.path());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped());
        if let Some(url) = url {
            cmd.env("TRADING_PLATFORM_URL", url);
        }
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        use std::io::BufRead;
        assert!(stdout
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening on")));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!(
            "TRADING_PLATFORM_URL is {} (not https)",
            url.unwrap_or("http://localhost:3000")
        );
        assert_eq!(stderr.contains(&expected), warned, "{url:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_second_start_reuses_secrets_and_admin_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_with(Spawn {
        dir: Some(dir),
        ..Default::default()
    });
    assert!(!first.admin_password.is_empty());
    let secrets = first.secrets.clone();
    let dir = first.stop();
    let second = spawn_with(Spawn {
        dir: Some(dir),
        secrets: Some(secrets),
        ..Default::default()
    });
    assert!(second.admin_password.is_empty(), "no second admin password is printed");
    let staff: i64 = second
        .sqlite()
        .query_row("SELECT COUNT(*) FROM staff_users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(staff, 1);
}

#[tokio::test]
async fn generated_secrets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path| {
        let mut cmd = crm_command(dir);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        let (mut child, lines) = start(cmd);
        while !lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap()
            .starts_with("listening on ")
        {}
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::read_to_string(dir.join("secrets.env")).unwrap()
    };
    assert_eq!(run(dir.path()), run(dir.path()));
}

#[test]
fn migrations_can_be_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    for said in ["created at V", "up to date"] {
        let out = crm_command(dir.path()).arg("migrate").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(said));
    }
    let conn = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    let applied: i64 = conn
        .query_row("SELECT COUNT(*) FROM refinery_schema_history", [], |r| r.get(0))
        .unwrap();
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, shipped);
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn the_schema_itself_refuses_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    assert!(crm_command(dir.path()).arg("migrate").status().unwrap().success());
    let conn = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let now = "2025-01-01T00:00:00.000Z";
    conn.execute(
        "INSERT INTO clients (id, email, created_at, updated_at) VALUES ('c1', 'a@example.com', ?1, ?1)",
        [now],
    )
    .unwrap();
    let bad = [
        ("INSERT INTO clients (id, email, created_at, updated_at) VALUES ('c2', 'A@example.com', 'x', 'x')", "upper-case email"),
        ("INSERT INTO clients (id, email, created_at, updated_at) VALUES ('c3', 'a@example.com', 'x', 'x')", "duplicate email"),
        ("INSERT INTO clients (id, email, kyc_status, created_at, updated_at) VALUES ('c4', 'b@example.com', 'maybe', 'x', 'x')", "unknown KYC status"),
        ("INSERT INTO accounts (id, client_id, leverage, created_at, updated_at) VALUES ('a1', 'c1', 501, 'x', 'x')", "leverage above 500"),
        ("INSERT INTO accounts (id, client_id, leverage, created_at, updated_at) VALUES ('a2', 'c1', 0, 'x', 'x')", "leverage below 1"),
        ("INSERT INTO accounts (id, client_id, real_balance, created_at, updated_at) VALUES ('a3', 'c1', -1, 'x', 'x')", "negative real balance"),
        ("INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES ('a4', 'nobody', 'x', 'x')", "foreign key"),
    ];
    for (sql, why) in bad {
        assert!(conn.execute(sql, []).is_err(), "the schema must refuse: {why}");
    }
    conn.execute(
        "INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES ('a5', 'c1', 'x', 'x')",
        [],
    )
    .unwrap();
    assert!(
        conn.execute(
            "INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES ('a6', 'c1', 'x', 'x')",
            []
        )
        .is_err(),
        "a second primary account"
    );
    assert!(
        conn.execute("INSERT INTO ledger_entries (id, account_id, fund_type, amount, balance_after, reason, actor, created_at) VALUES ('l1', 'a5', 'gold', 1, 1, 'deposit', 'x', 'x')", []).is_err(),
        "unknown fund type"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let app = spawn_app();
    let (status, body) = app.get("/no/such/route").await;
    assert_eq!((status, body["error"].as_str().unwrap()), (404, "Not found"));
    let resp = app.http.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_and_leaves_everything_in_the_database_file() {
    let mut app = spawn_app();
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.register("kept@example.com").await.0, 200);
    let status = app.terminate();
    assert!(status.success(), "exit status {status}");
    let wal = std::fs::metadata(app.dir.path().join("crm.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL was folded into crm.db on the way out");
    // The operator's cold backup: the database file alone, without the WAL beside it.
    let copy = app.dir.path().join("copy.db");
    std::fs::copy(app.db_path(), &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM clients WHERE email = 'kept@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1, "a client registered before the stop is in crm.db itself");
}

/// Another program reading the database when the server stops (a `crm verify`, a backup) holds
/// the fold of the WAL up; the server waits for it rather than leave committed writes behind in
/// the WAL. The reader's snapshot predates a write, so the fold cannot finish while it lasts, and
/// its connection stays open until the WAL is looked at, so SQLite cannot fold the WAL itself
/// when the last connection closes.
#[tokio::test]
async fn a_stop_while_another_program_reads_still_folds_the_wal_once_it_is_done() {
    let mut app = spawn_app();
    assert_eq!(app.register("early@example.com").await.0, 200);
    let reader = rusqlite::Connection::open(app.db_path()).unwrap();
    reader.execute_batch("BEGIN; SELECT COUNT(*) FROM clients;").unwrap();
    assert_eq!(app.register("late@example.com").await.0, 200);
    // Longer than SQLite's busy timeout (5 s), which alone would give up.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(7));
        reader.execute_batch("COMMIT").unwrap();
        reader
    });
    let status = app.terminate();
    let reader = release.join().unwrap();
    assert!(status.success(), "exit status {status}");
    let wal = std::fs::metadata(app.dir.path().join("crm.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL was folded into crm.db once the reader was done");
    let n = count_in_cold_copy(
        &app.db_path(),
        "SELECT COUNT(*) FROM clients WHERE email = 'late@example.com'",
    );
    assert_eq!(n, 1);
    drop(reader);
}

/// Counts the rows `sql` finds in a copy of the database file alone, without its WAL: what an
/// operator's cold backup would hold.
fn count_in_cold_copy(db: &std::path::Path, sql: &str) -> i64 {
    let copy = db.with_file_name("cold-copy.db");
    std::fs::copy(db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let n = conn.query_row(sql, [], |r| r.get(0)).unwrap();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", copy.display()));
    }
    n
}

#[test]
fn a_cli_command_leaves_its_writes_in_the_database_file_itself() {
    let dir = tempfile::tempdir().unwrap();
    assert!(crm_command(dir.path()).arg("migrate").status().unwrap().success());
    let out = crm_command(dir.path())
        .args([
            "user",
            "add",
            "--email",
            "cold@broker.example",
            "--name",
            "Cold",
            "--role",
            "agent",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wal = std::fs::metadata(dir.path().join("crm.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the command's connections were closed, and with them the WAL");
    let sql = "SELECT COUNT(*) FROM staff_users WHERE email = 'cold@broker.example'";
    assert_eq!(count_in_cold_copy(&dir.path().join("crm.db"), sql), 1);
}

#[tokio::test]
async fn a_cli_command_beside_a_running_server_leaves_the_server_its_wal() {
    let mut app = spawn_app();
    assert_eq!(app.register("before@example.com").await.0, 200);
    let out = app.crm(&[
        "user",
        "add",
        "--email",
        "beside@broker.example",
        "--name",
        "B",
        "--role",
        "agent",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(app.register("after@example.com").await.0, 200, "the server writes on");
    assert!(app.terminate().success());
    let sql = "SELECT (SELECT COUNT(*) FROM clients WHERE email IN ('before@example.com', 'after@example.com'))
                    + (SELECT COUNT(*) FROM staff_users WHERE email = 'beside@broker.example')";
    assert_eq!(count_in_cold_copy(&app.db_path(), sql), 3);
}

#[test]
fn secrets_generate_prints_four_fresh_hex_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        String::from_utf8(
            crm_command(dir.path())
                .args(["secrets", "generate"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let (a, b) = (run(), run());
    assert_ne!(a, b);
    let names: Vec<&str> = a.lines().map(|l| l.split_once('=').unwrap().0).collect();
    assert_eq!(
        names,
        ["JWT_SECRET", "WEBHOOK_SECRET", "SERVICE_API_TOKEN", "SSO_SECRET"]
    );
    for line in a.lines() {
        let value = line.split_once('=').unwrap().1;
        assert_eq!(value.len(), 64);
        assert!(value.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}

#[test]
fn staff_users_can_be_added_listed_disabled_and_reset_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let crm = |args: &[&str]| crm_command(dir.path()).args(args).output().unwrap();
    let add =
        |email: &str, name: &str, role: &str| crm(&["user", "add", "--email", email, "--name", name, "--role", role]);
    // No database yet (a mistyped path, say): refused rather than one created for the user.
    let out = add("Ann@Broker.example", "Ann", "manager");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no database at"));
    assert!(!dir.path().join("crm.db").exists());
    assert!(crm(&["migrate"]).status.success());
    let out = add("Ann@Broker.example", "Ann", "manager");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("password (shown once): "), "{stdout}");

    let dup = add("ann@broker.example", "Ann", "agent");
    assert!(!dup.status.success(), "emails are unique case-insensitively");
    let bad_role = add("x@broker.example", "X", "root");
    assert!(!bad_role.status.success());

    let list = String::from_utf8(crm(&["user", "list"]).stdout).unwrap();
    assert!(
        list.contains("ann@broker.example") && list.contains("manager") && list.contains("active"),
        "{list}"
    );
    assert!(crm(&["user", "disable", "--email", "ANN@broker.example"])
        .status
        .success());
    let list = String::from_utf8(crm(&["user", "list"]).stdout).unwrap();
    assert!(list.contains("disabled"), "{list}");
    let reset = crm(&["user", "reset-password", "--email", "ann@broker.example"]);
    assert!(String::from_utf8_lossy(&reset.stdout).contains("password (shown once): "));
    assert!(!crm(&["user", "disable", "--email", "nobody@broker.example"])
        .status
        .success());

    // The staff API's rules and audit entries: the last active admin stays one; a user already
    // disabled is left alone; enable brings a user back.
    assert!(add("boss@broker.example", "Boss", "admin").status.success());
    let last = crm(&["user", "disable", "--email", "boss@broker.example"]);
    assert!(!last.status.success());
    assert!(String::from_utf8_lossy(&last.stderr).contains("last active administrator"));
    let again = crm(&["user", "disable", "--email", "ann@broker.example"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already disabled"));
    assert!(crm(&["user", "enable", "--email", "ann@broker.example"])
        .status
        .success());
    let list = String::from_utf8(crm(&["user", "list"]).stdout).unwrap();
    assert!(!list.contains("disabled"), "{list}");
    let conn = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    let updates: Vec<String> = conn
        .prepare("SELECT details FROM audit_log WHERE action = 'staff.update' AND actor = 'cli' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // A disable, the two refusals (no such user, the last admin), an enable.
    assert_eq!(updates.len(), 4, "{updates:?}");
    assert!(
        updates[0].contains(r#""disabled":{"from":false,"to":true}"#),
        "{updates:?}"
    );
    assert!(
        updates[1].contains("No staff user with email nobody@broker.example"),
        "{updates:?}"
    );
    assert!(updates[2].contains("last active administrator"), "{updates:?}");
    // The staff API's name rule.
    let out = add("esc@broker.example", "E\u{1b}[31mvil", "agent");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("control characters"));
}

/// `migrate` (and `serve`) leave alone a file that is another program's database, or a newer
/// build's, rather than add tables to it or fail half-way.
#[test]
fn migrate_refuses_another_programs_database_and_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let crm = |args: &[&str]| crm_command(dir.path()).args(args).output().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (x)").unwrap();
    drop(conn);
    let out = crm(&["migrate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another program's tables"));
    std::fs::remove_file(dir.path().join("crm.db")).unwrap();
    assert!(crm(&["migrate"]).status.success());
    let conn = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    conn.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'future', 'now', '0')",
        [],
    )
    .unwrap();
    drop(conn);
    let out = crm(&["migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer than this build's"), "{err}");
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("crm.toml"),
        "listen = \"127.0.0.1:0\"\nwebhook_secrte = \"x\"\n",
    )
    .unwrap();
    let out = crm_command(dir.path()).arg("serve").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("webhook_secrte"), "{stderr}");
}

/// A first start on a port already in use fails before it creates the database or the admin,
/// whose password is shown only once.
#[test]
fn a_port_in_use_stops_start_up_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = crm_command(dir.path())
        .env("CRM_LISTEN", taken.local_addr().unwrap().to_string())
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password"));
    assert!(!dir.path().join("crm.db").exists());
}

/// The guide's (and `crm.toml.example`'s) placeholder text is known to everyone who read it, a
/// secret used for two purposes lets the platform (which holds `SSO_SECRET` and
/// `SERVICE_API_TOKEN`) sign staff sessions, and the guide's example platform address is someone
/// else's domain: each stops start-up before anything is created, naming the keys, not the values.
#[tokio::test]
async fn placeholders_or_shared_secrets_stop_start_up_before_anything_is_created() {
    let shared = random_hex();
    for (env, expected) in [
        (
            vec![("WEBHOOK_SECRET", "<your-generated-webhook-secret>".to_string())],
            "WEBHOOK_SECRET is the guide's placeholder text",
        ),
        (
            vec![("JWT_SECRET", shared.clone()), ("SSO_SECRET", shared.clone())],
            "JWT_SECRET and SSO_SECRET are the same value",
        ),
        (
            vec![
                ("SERVICE_API_TOKEN", shared.clone()),
                ("JWT_SECRET_PREVIOUS", shared.clone()),
            ],
            "SERVICE_API_TOKEN and JWT_SECRET_PREVIOUS are the same value",
        ),
        (
            vec![("JWT_SECRET", "<64 hex characters>".to_string())],
            "JWT_SECRET is the guide's placeholder text",
        ),
        (
            vec![("TRADING_PLATFORM_URL", "https://trading.yourcompany.com".to_string())],
            "TRADING_PLATFORM_URL is the guide's example",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = crm_command(dir.path());
        cmd.env("CRM_LISTEN", "127.0.0.1:0").arg("serve");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{expected}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains(&shared), "the value is not shown: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("password"));
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| {
                let name = e.unwrap().file_name();
                name != "crm.db" && name != "secrets.env"
            }),
            "{expected}: nothing created"
        );
    }
    // The same value as a secret's own previous one gives nobody else anything: it starts (and
    // `crm doctor` reports it).
    let secrets = Secrets::generate();
    let previous = secrets.webhook.clone();
    let app = spawn_with(
        Spawn {
            secrets: Some(secrets),
            ..Spawn::default()
        }
        .env("WEBHOOK_SECRET_PREVIOUS", &previous),
    );
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

/// A mistyped log level would be read as a module name and silence every line, errors included.
#[test]
fn a_log_level_that_is_no_level_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for level in ["warning", "verbose"] {
        let out = crm_command(dir.path())
            .env("CRM_LOG", level)
            .env("CRM_LISTEN", "127.0.0.1:0")
            .arg("serve")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("CRM_LOG") && stderr.contains(level), "{stderr}");
        assert!(!dir.path().join("crm.db").exists());
    }
}

#[test]
fn help_explains_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = String::from_utf8(crm_command(dir.path()).arg("--help").output().unwrap().stdout).unwrap();
    for cmd in ["serve", "migrate", "user", "secrets", "backup", "verify"] {
        assert!(out.contains(cmd), "--help lists {cmd}: {out}");
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let app = spawn_app();
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    // The server's header timeout is 10 s; give it generous slack on a loaded machine.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut buf = Vec::new();
    let closed = stream.read_to_end(&mut buf);
    assert!(
        closed.is_ok(),
        "the server closed the connection instead of waiting forever: {closed:?}"
    );
    // Other clients were served all along.
    assert_eq!(app.get("/healthz").await.0, 200);
}

/// A setting whose value is not UTF-8 stops the command with its name, rather than being
/// ignored for the default (a database other than the one meant).
#[test]
fn a_setting_that_is_not_utf8_is_refused_by_name_not_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.db"));
    let out = crm_command(dir.path())
        .env("CRM_DATABASE", &database)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CRM_DATABASE is not valid UTF-8"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "the default database was not created"
    );
    // The same path given as a flag works.
    let out = crm_command(dir.path())
        .env_remove("CRM_DATABASE")
        .arg("--database")
        .arg(&database)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(database.exists());
}
