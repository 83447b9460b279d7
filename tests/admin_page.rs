//! The admin page: how it is served (content types, CSP, no path traversal), what its source may
//! not contain, and end-to-end runs in headless Chromium against the real server.

mod browser;
mod common;

use std::io::{Read, Write};
use std::path::Path;

use browser::Browser;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";

/// A request sent byte for byte, so the path reaches the server exactly as written (an HTTP
/// client library would resolve `..` and re-encode before sending).
fn raw_get(base: &str, path: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, response)
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_content_types() {
    let app = spawn_app();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "javascript; charset=utf-8"),
        ("/js/api.js", "javascript; charset=utf-8"),
        ("/js/money.js", "javascript; charset=utf-8"),
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        let ct = headers["content-type"].to_str().unwrap();
        assert!(ct.ends_with(content_type), "{path}: {ct}");
        assert!(
            ct.starts_with("text/"),
            "{path}: module scripts need a JavaScript type, got {ct}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("style-src 'self'"),
            "{csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(!resp.bytes().await.unwrap().is_empty(), "{path}");
    }
}

#[tokio::test]
async fn paths_outside_the_page_are_not_found() {
    let app = spawn_app();
    for (path, why) in [
        ("/../Cargo.toml", "parent folder"),
        ("/%2e%2e/Cargo.toml", "percent-encoded parent folder"),
        ("/%2E%2E/%2E%2E/Cargo.toml", "upper-case encoding, twice"),
        ("/js/../../Cargo.toml", "parent folder from a subfolder"),
        ("/..%2fCargo.toml", "encoded slash"),
        ("/js/%2e%2e/%2e%2e/src/main.rs", "encoded, from a subfolder"),
        ("/Cargo.toml", "a file of the repository, not of static/"),
        ("/static/index.html", "the folder name is not part of the URL"),
        ("/js/", "a folder is not a file"),
        ("/.gitignore", "hidden files"),
        ("/nope.js", "no such file"),
    ] {
        let (status, response) = raw_get(&app.base, path);
        assert_eq!(status, 404, "{path} ({why}) must be 404:\n{response}");
        assert!(
            response.contains("{\"error\""),
            "{path}: 404s are JSON like every error"
        );
    }
}

#[tokio::test]
async fn a_page_file_answers_only_get_and_unknown_paths_stay_404() {
    let app = spawn_app();
    let (status, _) = app.staff(Method::POST, "/app.js", "x", None).await;
    assert_eq!(status, 405, "a file exists at /app.js, but only for GET");
    let (status, _) = app.staff(Method::POST, "/no/such/thing", "x", None).await;
    assert_eq!(status, 404, "the page must not turn unknown paths into 405s");
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, 200, "the page must not shadow other routes: {body}");
    // HEAD, as uptime monitors and `curl -I` send it: the GET's status and headers, no body.
    for path in ["/healthz", "/", "/app.js"] {
        let get = app.http.get(app.url(path)).send().await.unwrap();
        let head = app.http.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(head.headers()["content-type"], get.headers()["content-type"], "{path}");
        assert_eq!(
            head.headers()["content-length"],
            get.headers()["content-length"],
            "{path}"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
    }
}

/// The CSP forbids inline script and style; the page must not need them, and must never build
/// HTML from strings (client names come from webhooks and are hostile).
#[test]
fn the_page_source_uses_no_inline_code_and_never_parses_html() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let mut files = vec![];
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("index.html")));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.display();
        for (needle, why) in [
            ("innerHTML", "parses HTML"),
            ("outerHTML", "parses HTML"),
            ("insertAdjacentHTML", "parses HTML"),
            ("document.write", "parses HTML"),
            ("eval(", "CSP forbids eval"),
            ("new Function", "CSP forbids eval"),
            ("style=", "CSP forbids inline style"),
            (".style.", "inline style: use a class"),
            ("javascript:", "inline script"),
            ("localStorage", "the token stays in sessionStorage"),
            ("document.cookie", "the token is never a cookie"),
        ] {
            assert!(!text.contains(needle), "{name} contains {needle:?}: {why}");
        }
        if file.extension().is_some_and(|e| e == "html") {
            for tag in text.match_indices("<script").map(|(i, _)| &text[i..]) {
                let open = &tag[..tag.find('>').unwrap()];
                assert!(open.contains("src="), "{name}: inline <script> is blocked by the CSP");
            }
            assert!(!text.contains("<style"), "{name}: inline <style> is blocked by the CSP");
            assert!(
                !text.contains(" on"),
                "{name}: inline event handlers are blocked by the CSP"
            );
        }
    }
}

// ---- in the browser -------------------------------------------------------------------------

/// Registers a client through the signed webhook and returns its CRM id.
async fn register_named(app: &TestApp, email: &str, first: &str, last: &str) -> String {
    let (status, body) = app
        .event(
            "client.registered",
            json!({ "clientId": format!("TP{}", &random_hex()[..8]), "email": email,
                    "firstName": first, "lastName": last, "phone": "+1234567890" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let admin = app.admin_token().await;
    let (status, body) = app
        .staff(Method::GET, &format!("/api/clients?q={email}"), &admin, None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["clients"][0]["id"].as_str().unwrap().to_string()
}

async fn log_in(b: &Browser, base: &str, email: &str, password: &str) {
    b.goto(&format!("{base}/")).await;
    log_in_here(b, email, password).await;
}

/// Logs in on the login screen the page shows now.
async fn log_in_here(b: &Browser, email: &str, password: &str) {
    b.type_into("#login-form input[name=email]", email).await;
    b.type_into("#login-form input[name=password]", password).await;
    b.click("#login-form button[type=submit]").await;
    b.find("#nav").await;
}

async fn open_client(b: &Browser, search: &str) {
    b.click("#nav a[data-nav=clients]").await;
    b.type_into("input[name=q]", search).await;
    b.click("form[role=search] button").await;
    b.wait_until(&format!("{search} to be the only result"), || async {
        b.js(
            "const rows = [...document.querySelectorAll('#app tbody tr')]; \
             return rows.length === 1 && rows[0].textContent.includes(arguments[0]);",
            vec![json!(search)],
        )
        .await
            == json!(true)
    })
    .await;
    b.click("a.client-name").await;
    b.find("#accounts table").await;
}

/// Adjusts one fund through the form and its confirmation, checking the before/after preview.
async fn adjust(b: &Browser, fund: &str, amount: &str, before: &str, after: &str) {
    b.select("#adjust-form select[name=fundType]", fund).await;
    b.type_into("#adjust-form input[name=amount]", amount).await;
    b.type_into("#adjust-form input[name=notes]", &format!("browser test {fund}"))
        .await;
    b.click("#adjust-form button[type=submit]").await;
    b.find("#adjust-confirm-button").await;
    let preview = b.text("#adjust-confirm").await;
    assert!(
        preview.contains(&format!("{fund} before{before}")) && preview.contains(&format!("{fund} after{after}")),
        "the confirmation shows {before} -> {after}: {preview}"
    );
    b.snapshot(&format!("confirm-{fund}")).await;
    b.click("#adjust-confirm-button").await;
}

#[tokio::test]
async fn staff_run_the_crm_from_a_browser_and_each_role_sees_only_what_it_may_do() {
    let Some(b) = Browser::start().await else { return };
    let app = spawn_app();
    let client_id = register_named(&app, "alice@example.com", "Alice", "Trader").await;
    register_named(&app, "hostile@example.com", HOSTILE_NAME, "Hostile").await;
    let admin = app.admin_token().await;
    let (status, agent) = app
        .staff(
            Method::POST,
            "/api/staff",
            &admin,
            Some(json!({ "email": "agent@crm.local", "name": "Agent", "role": "agent", "password": "agent-password-123" })),
        )
        .await;
    assert_eq!(status, 201, "{agent}");

    // A page that needs a session sends you to the login screen first.
    b.goto(&app.url("/#/clients")).await;
    b.find("#login-form").await;
    log_in(&b, &app.base, &app.admin_email, &app.admin_password).await;
    let token_in_storage = b
        .js("return sessionStorage.getItem('crm.token') !== null", vec![])
        .await;
    assert_eq!(token_in_storage, json!(true));
    assert_eq!(
        b.js("return document.cookie", vec![]).await,
        json!(""),
        "no cookie holds the token"
    );

    // Find the client and adjust each fund type, then debit real funds.
    open_client(&b, "alice@example.com").await;
    let primary = app.account_of("alice@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cell = |key: &str| format!(".bal-{key}[data-account='{primary}']");
    adjust(&b, "real", "100.00", "0.00", "100.00").await;
    b.wait_text(&cell("realBalance"), "100.00").await;
    // A plus sign is a credit, as the guide says ("positive = credit").
    adjust(&b, "demo", "+250.5", "0.00", "250.50").await;
    b.wait_text(&cell("demoBalance"), "250.50").await;
    adjust(&b, "bonus", "0.12345678", "0.00", "0.12345678").await;
    b.wait_text(&cell("bonusBalance"), "0.12345678").await;
    adjust(&b, "real", "-40.01", "100.00", "59.99").await;
    b.wait_text(&cell("realBalance"), "59.99").await;
    b.wait_text(&cell("balance"), "310.61345678").await;
    b.wait_for_text("browser test bonus").await; // the ledger shows the entries with their notes

    // Switching the ledger to another account and back while the first page is still on its way
    // shows only the account now selected: the late answer is dropped, not mixed in.
    let (status, sub) = app
        .staff(
            Method::POST,
            &format!("/api/clients/{client_id}/subaccounts"),
            &admin,
            Some(json!({ "currency": "EUR" })),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let booked = json!({ "amount": "7.77", "fundType": "bonus", "notes": "SUBACCOUNT ENTRY" });
    let path = format!("/api/accounts/{sub_id}/adjust-balance");
    assert_eq!(app.staff(Method::POST, &path, &admin, Some(booked)).await.0, 200);
    b.js("location.reload()", vec![]).await;
    b.find(&format!("select[name=ledger-account] option[value='{sub_id}']"))
        .await;
    b.wait_for_text("browser test bonus").await;
    b.js(
        "const slow = arguments[0]; const real = window.fetch; window.__late = false;
         window.fetch = (url, opts) => String(url).includes(slow)
           ? new Promise((done) => setTimeout(done, 1000))
               .then(() => real(url, opts)).then((r) => { window.__late = true; return r; })
           : real(url, opts);",
        vec![json!(format!("/api/accounts/{sub_id}/ledger"))],
    )
    .await;
    b.select("select[name=ledger-account]", &sub_id).await;
    b.select("select[name=ledger-account]", &primary).await;
    b.wait_until("the late answer", || async {
        b.js("return window.__late", vec![]).await == json!(true)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ledger = b.js("return document.body.innerText", vec![]).await;
    let ledger = ledger.as_str().unwrap();
    assert!(ledger.contains("browser test bonus"), "{ledger}");
    assert!(!ledger.contains("SUBACCOUNT ENTRY"), "{ledger}");
    b.js("location.reload()", vec![]).await;
    b.wait_for_text("browser test bonus").await;

    // A debit beyond the fund is refused in the confirmation, which offers no Confirm.
    b.select("#adjust-form select[name=fundType]", "real").await;
    b.type_into("#adjust-form input[name=amount]", "-1000").await;
    b.click("#adjust-form button[type=submit]").await;
    b.wait_until("the refusal to show", || async {
        b.text("#adjust-confirm .error").await.contains("Not possible")
    })
    .await;
    assert!(!b.exists("#adjust-confirm-button").await);
    assert_eq!(b.text(&cell("realBalance")).await, "59.99");
    b.click("#adjust-confirm button:not(.primary)").await; // Back

    // The answer to a booked adjustment is lost on its way back, and Confirm is pressed again:
    // the confirmation's Idempotency-Key books it once.
    b.js(
        "const real = window.fetch; window.__lost = 0;
         window.fetch = (url, opts) => String(url).includes('/adjust-balance') && window.__lost++ === 0
           ? real(url, opts).then(() => { throw new TypeError('connection reset'); })
           : real(url, opts);",
        vec![],
    )
    .await;
    b.type_into("#adjust-form input[name=amount]", "5").await;
    b.type_into("#adjust-form input[name=notes]", "answer lost").await;
    b.click("#adjust-form button[type=submit]").await;
    b.click("#adjust-confirm-button").await;
    b.wait_until("the lost answer to show", || async {
        b.text("#adjust-confirm .error").await.contains("cannot be reached")
    })
    .await;
    b.click("#adjust-confirm-button").await;
    b.wait_text(&cell("realBalance"), "64.99").await;
    let booked: i64 = app
        .sqlite()
        .query_row(
            "SELECT COUNT(*) FROM ledger_entries WHERE notes = 'answer lost'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(booked, 1, "the adjustment is booked once");

    // Leverage.
    b.select("#leverage-form select[name=account]", &primary).await;
    b.type_into("#leverage-form input[name=leverage]", "200").await;
    b.click("#leverage-form button[type=submit]").await;
    b.wait_text(&format!(".leverage[data-account='{primary}']"), "1:200")
        .await;

    // A note.
    b.type_into("#note-form textarea", "Called about the <b>bonus</b>")
        .await;
    b.click("#note-form button[type=submit]").await;
    b.wait_text("#notes-list .note-text", "Called about the <b>bonus</b>")
        .await;

    // Impersonate: the page must open the SSO URL in a new tab without a handle back to itself.
    // The trading platform (https://trading.test) is not reachable, so the call is recorded.
    b.js(
        "window.__opened = []; window.open = (...args) => { window.__opened.push(args); return null; };",
        vec![],
    )
    .await;
    b.click("#impersonate").await;
    b.wait_until("window.open", || async {
        b.js("return window.__opened.length", vec![]).await == json!(1)
    })
    .await;
    let opened = b.js("return window.__opened[0]", vec![]).await;
    let url = opened[0].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{PLATFORM_URL}/sso/impersonate?token=")),
        "{url}"
    );
    assert_eq!(opened[1], json!("_blank"));
    assert!(opened[2].as_str().unwrap().contains("noopener"), "{opened}");

    // The audit log shows every action above, and downloads as CSV with the token in a header.
    b.goto(&app.url("/#/audit?actor=staff%3Aadmin%40crm.local")).await;
    b.find("#audit-table").await;
    for action in [
        "account.adjust_balance",
        "account.leverage",
        "client.note_add",
        "sso.impersonate",
        "auth.login",
    ] {
        b.wait_for_text(action).await;
    }
    b.snapshot("audit").await;
    b.click("#audit-csv").await;
    let csv = b.downloads.join("audit.csv");
    b.wait_until("audit.csv to download", || async {
        std::fs::metadata(&csv).is_ok_and(|m| m.len() > 0)
    })
    .await;
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(
        csv.contains("account.adjust_balance") && csv.contains("sso.impersonate"),
        "{csv}"
    );

    // The webhook log shows a delivery's raw body (re-processing has its own test below);
    // staff management opens.
    b.goto(&app.url("/#/webhooks?event=client.registered")).await;
    b.click("#app tbody a").await;
    b.wait_until("the raw body", || async {
        b.text("#raw-body").await.contains("\"client.registered\"")
    })
    .await;
    b.goto(&app.url("/#/staff")).await;
    b.find("#staff-form").await;
    b.wait_for_text("agent@crm.local").await;

    b.goto(&app.url(&format!("/#/clients/{client_id}"))).await;
    b.wait_for_text("Called about the").await;
    b.snapshot("client").await;

    // A hostile name is shown as the literal text; no element is created from it, no script runs.
    open_client(&b, "hostile@example.com").await;
    assert_eq!(b.text("#client-title").await, format!("{HOSTILE_NAME} Hostile"));
    b.goto(&app.url("/#/clients?q=hostile")).await;
    b.wait_text("a.client-name", &format!("{HOSTILE_NAME} Hostile")).await;
    // The CSP alone would stop the onerror script; the page must not even create the <img>.
    assert_eq!(
        b.js("return document.querySelectorAll('img').length", vec![]).await,
        json!(0)
    );
    b.assert_no_dialog().await;
    b.snapshot("clients").await;

    // A token the server no longer accepts sends the user back to the login screen.
    b.js("sessionStorage.setItem('crm.token', 'not-a-valid-token')", vec![])
        .await;
    b.goto(&app.url(&format!("/#/clients/{client_id}"))).await;
    b.find("#login-form").await;
    b.wait_for_text("log in again").await;

    // An agent may read and add notes, and is offered nothing else.
    log_in(&b, &app.base, "agent@crm.local", "agent-password-123").await;
    for admin_only in ["staff", "webhooks", "audit"] {
        let hidden = b
            .js(
                &format!("return document.querySelector('[data-nav={admin_only}]').hidden"),
                vec![],
            )
            .await;
        assert_eq!(hidden, json!(true), "an agent is not offered the {admin_only} page");
    }
    b.goto(&app.url(&format!("/#/clients/{client_id}"))).await;
    b.find("#note-form").await;
    b.find("#accounts table").await;
    for absent in [
        "#impersonate",
        "#adjust-form",
        "#leverage-form",
        "#subaccount-form",
        "#kyc-form",
    ] {
        assert!(!b.exists(absent).await, "an agent must not be offered {absent}");
    }
    assert_eq!(
        b.text(&cell("realBalance")).await,
        "64.99",
        "agents still read balances"
    );

    // Logging out forgets the token, and ends the session on the server: a copy is worthless.
    let token = b.js("return sessionStorage.getItem('crm.token')", vec![]).await;
    b.click("#logout").await;
    b.find("#login-form").await;
    assert_eq!(
        b.js("return sessionStorage.getItem('crm.token')", vec![]).await,
        Value::Null
    );
    // The tab forgets first and tells the server without waiting: give that request a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = app
            .staff(Method::GET, "/api/auth/me", token.as_str().unwrap(), None)
            .await;
        if status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the token from before Log out still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.client.clone().close().await.unwrap();
}

// ---- defects found driving the page --------------------------------------------------------

/// A browser logged in as the first admin, or `None` when no browser is installed.
async fn admin_browser(app: &TestApp) -> Option<Browser> {
    let b = Browser::start().await?;
    log_in(&b, &app.base, &app.admin_email, &app.admin_password).await;
    Some(b)
}

/// How many ledger entries carry these notes.
fn entries_with_notes(app: &TestApp, notes: &str) -> i64 {
    app.sqlite()
        .query_row("SELECT COUNT(*) FROM ledger_entries WHERE notes = ?1", [notes], |r| {
            r.get(0)
        })
        .unwrap()
}

#[tokio::test]
async fn enter_pressed_twice_on_the_adjustment_form_reviews_and_never_books() {
    let app = spawn_app();
    register_named(&app, "enter@example.com", "Enter", "Twice").await;
    let Some(b) = admin_browser(&app).await else { return };
    open_client(&b, "enter@example.com").await;
    b.type_into("#adjust-form input[name=amount]", "25").await;
    b.type_into("#adjust-form input[name=notes]", "double enter").await;
    b.press_enter().await;
    b.find("#adjust-confirm-button").await;
    b.press_enter().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        entries_with_notes(&app, "double enter"),
        0,
        "a second Enter must not confirm"
    );
    let focused = b.js("return document.activeElement.id", vec![]).await;
    assert_ne!(
        focused,
        json!("adjust-confirm-button"),
        "Confirm must not hold the focus"
    );
}

/// The texts of the options of a select.
async fn option_labels(b: &Browser, css: &str) -> Vec<String> {
    let v = b
        .js(
            "return [...document.querySelectorAll(arguments[0] + ' option')].map((o) => o.textContent)",
            vec![json!(css)],
        )
        .await;
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn accounts_opened_in_the_same_minute_read_differently_and_pickers_keep_their_choice() {
    let app = spawn_app();
    let client_id = register_named(&app, "twins@example.com", "Twin", "Accounts").await;
    let admin = app.admin_token().await;
    let mut subs = vec![];
    for _ in 0..2 {
        let path = format!("/api/clients/{client_id}/subaccounts");
        let (status, sub) = app.staff(Method::POST, &path, &admin, None).await;
        assert_eq!(status, 201, "{sub}");
        subs.push(sub["id"].as_str().unwrap().to_string());
    }
    let Some(b) = admin_browser(&app).await else { return };
    open_client(&b, "twins@example.com").await;
    let labels = option_labels(&b, "#adjust-form select[name=account]").await;
    let unique: std::collections::HashSet<_> = labels.iter().collect();
    assert_eq!(unique.len(), 3, "every account reads differently: {labels:?}");
    assert!(
        labels[2].starts_with("Subaccount 2") && labels[2].ends_with(&subs[1][28..]),
        "{labels:?}"
    );
    let rows = b
        .js(
            "return [...document.querySelectorAll('#accounts tbody tr td:first-child')].map((c) => c.textContent)",
            vec![],
        )
        .await;
    assert_eq!(rows, json!(labels), "the accounts table uses the same labels");

    // Changing leverage elsewhere or opening a subaccount leaves the Adjust picker where it was.
    b.select("#adjust-form select[name=account]", &subs[0]).await;
    let primary = app.account_of("twins@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.select("#leverage-form select[name=account]", &primary).await;
    b.type_into("#leverage-form input[name=leverage]", "300").await;
    b.click("#leverage-form button[type=submit]").await;
    b.wait_text(&format!(".leverage[data-account='{primary}']"), "1:300")
        .await;
    let adjust_choice = "return document.querySelector('#adjust-form select[name=account]').value";
    assert_eq!(b.js(adjust_choice, vec![]).await, json!(subs[0]));
    b.click("#subaccount-form button[type=submit]").await;
    b.wait_until("the new subaccount", || async {
        option_labels(&b, "#adjust-form select[name=account]").await.len() == 4
    })
    .await;
    assert_eq!(b.js(adjust_choice, vec![]).await, json!(subs[0]));
}

/// Fills the adjustment form for real funds and presses Review.
async fn review_real(b: &Browser, amount: &str) {
    b.select("#adjust-form select[name=fundType]", "real").await;
    b.type_into("#adjust-form input[name=amount]", amount).await;
    b.click("#adjust-form button[type=submit]").await;
    b.find("#adjust-confirm").await;
}

#[tokio::test]
async fn the_confirmation_shows_the_account_as_it_is_now_and_refusals_say_what_is_available() {
    let app = spawn_app();
    register_named(&app, "moving@example.com", "Money", "Moving").await;
    let Some(b) = admin_browser(&app).await else { return };
    open_client(&b, "moving@example.com").await;
    // Money arrives after the page was opened.
    assert_eq!(app.deposit("moving@example.com", "300", "TX-IN").await.0, 200);
    review_real(&b, "-100").await;
    let preview = b.text("#adjust-confirm").await;
    assert!(
        preview.contains("real before300.00") && preview.contains("real after200.00"),
        "{preview}"
    );
    b.click("#adjust-confirm button:not(.primary)").await; // Back

    // A debit beyond the fund is plainly refused before anything is sent.
    review_real(&b, "-500").await;
    let preview = b.text("#adjust-confirm").await;
    assert!(preview.contains("would become -200.00"), "{preview}");
    assert!(!b.exists("#adjust-confirm-button").await, "no Confirm for an overdraft");
    b.click("#adjust-confirm button:not(.primary)").await;

    // Money leaves between Review and Confirm: the server's refusal says what is there.
    review_real(&b, "-100").await;
    assert_eq!(app.withdraw("moving@example.com", "232.86", "TX-OUT").await.0, 200);
    b.click("#adjust-confirm-button").await;
    b.wait_until("the refusal", || async {
        b.text("#adjust-confirm .error").await == "Insufficient real funds: 67.14 available"
    })
    .await;
}

#[tokio::test]
async fn every_saved_change_says_what_was_done() {
    let app = spawn_app();
    register_named(&app, "saved@example.com", "Saved", "Changes").await;
    let primary = app.account_of("saved@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tail = &primary[28..];
    let Some(b) = admin_browser(&app).await else { return };
    open_client(&b, "saved@example.com").await;

    adjust(&b, "real", "1500", "0.00", "1500.00").await;
    b.wait_text(
        "#accounts-done",
        &format!("Booked +1,500.00 real on Primary USD · …{tail}; real funds are now 1500.00 USD."),
    )
    .await;
    adjust(&b, "real", "-1000", "1500.00", "500.00").await;
    b.wait_text(
        "#accounts-done",
        &format!("Booked −1,000.00 real on Primary USD · …{tail}; real funds are now 500.00 USD."),
    )
    .await;

    b.type_into("#leverage-form input[name=leverage]", "50").await;
    b.click("#leverage-form button[type=submit]").await;
    b.wait_text(
        "#accounts-done",
        &format!("Leverage of Primary USD · …{tail} is now 1:50."),
    )
    .await;

    b.click("#subaccount-form button[type=submit]").await;
    b.wait_until("the new subaccount's notice", || async {
        b.text("#accounts-done")
            .await
            .starts_with("Opened Subaccount 1 USD · …")
    })
    .await;

    b.select("#kyc-form select[name=kycStatus]", "approved").await;
    b.click("#kyc-form button[type=submit]").await;
    b.wait_text("#kyc-done", "KYC saved: status Approved.").await;

    b.type_into("#note-form textarea", "Saved, and told so").await;
    b.click("#note-form button[type=submit]").await;
    b.wait_text("#note-done", "Note added.").await;
}

#[tokio::test]
async fn a_failed_role_change_puts_the_role_back() {
    let mut app = spawn_app();
    let admin = app.admin_token().await;
    let body = json!({ "email": "helper@crm.local", "name": "Helper", "role": "agent" });
    assert_eq!(app.staff(Method::POST, "/api/staff", &admin, Some(body)).await.0, 201);
    let Some(b) = admin_browser(&app).await else { return };
    b.goto(&app.url("/#/staff")).await;
    let role = "select[aria-label='Role of helper@crm.local']";
    b.find(role).await;
    app.kill(); // the change cannot be saved
    b.select(role, "manager").await;
    b.wait_until("the failure", || async {
        b.text("#app .error").await.contains("cannot be reached")
    })
    .await;
    let shown = b
        .js("return document.querySelector(arguments[0]).value", vec![json!(role)])
        .await;
    assert_eq!(shown, json!("agent"), "the dropdown shows the role still saved");
}

#[tokio::test]
async fn after_logging_in_staff_return_to_where_they_were_with_what_they_had_typed() {
    let app = spawn_app();
    let client_id = register_named(&app, "return@example.com", "Come", "Back").await;
    let Some(b) = Browser::start().await else { return };
    // A bookmark opened without a session.
    b.goto(&app.url("/#/audit?action=auth.login")).await;
    b.find("#login-form").await;
    log_in_here(&b, &app.admin_email, &app.admin_password).await;
    b.find("#audit-table").await;
    assert_eq!(
        b.js("return location.hash", vec![]).await,
        json!("#/audit?action=auth.login")
    );

    // The session ends while a note and KYC notes are being written.
    b.goto(&app.url(&format!("/#/clients/{client_id}"))).await;
    b.type_into("#note-form textarea", "Half a thought").await;
    b.type_into("#kyc-form textarea", "Passport seen").await;
    b.js("sessionStorage.setItem('crm.token', 'expired')", vec![]).await;
    b.click("#note-form button[type=submit]").await;
    b.find("#login-form").await;
    log_in_here(&b, &app.admin_email, &app.admin_password).await;
    b.find("#note-form").await;
    assert_eq!(
        b.js("return location.hash", vec![]).await,
        json!(format!("#/clients/{client_id}"))
    );
    let typed = b
        .js(
            "return [document.querySelector('#note-form textarea').value, \
                     document.querySelector('#kyc-form textarea').value]",
            vec![],
        )
        .await;
    assert_eq!(typed, json!(["Half a thought", "Passport seen"]));
    // Brought back once: the next visit shows what the server holds, not an old draft.
    b.goto(&app.url("/#/clients")).await;
    b.find("form[role=search]").await;
    b.goto(&app.url(&format!("/#/clients/{client_id}"))).await;
    b.find("#kyc-form").await;
    let shown = b
        .js("return document.querySelector('#kyc-form textarea').value", vec![])
        .await;
    assert_eq!(shown, json!(""));

    // Someone else logging in at that tab after it ends does not get this page or this text.
    let admin = app.admin_token().await;
    let body =
        json!({ "email": "next@broker.example", "name": "Next", "role": "admin", "password": "another-long-password" });
    assert_eq!(app.staff(Method::POST, "/api/staff", &admin, Some(body)).await.0, 201);
    b.type_into("#note-form textarea", "Not for the next person").await;
    b.js("sessionStorage.setItem('crm.token', 'expired')", vec![]).await;
    b.click("#note-form button[type=submit]").await;
    b.find("#login-form").await;
    log_in_here(&b, "next@broker.example", "another-long-password").await;
    b.find("form[role=search]").await;
    assert_eq!(b.js("return location.hash", vec![]).await, json!("#/clients"));
    b.goto(&app.url(&format!("/#/clients/{client_id}"))).await;
    b.find("#note-form").await;
    let typed = b
        .js("return document.querySelector('#note-form textarea').value", vec![])
        .await;
    assert_eq!(typed, json!(""));
}

#[tokio::test]
async fn log_filters_take_utc_show_their_form_and_keep_the_form_on_a_bad_filter() {
    let app = spawn_app();
    let Some(b) = admin_browser(&app).await else { return };
    let offset = b.js("return new Date().getTimezoneOffset()", vec![]).await;
    assert_ne!(
        offset,
        json!(0),
        "the browser must not run in UTC for this test to mean anything"
    );
    b.goto(&app.url("/#/audit")).await;
    b.find("#audit-table").await;
    let labels = b.text("form.filters").await;
    assert!(labels.contains("From (UTC)") && labels.contains("To (UTC)"), "{labels}");
    let placeholder = b
        .js(
            "return document.querySelector('form.filters input[name=actor]').placeholder",
            vec![],
        )
        .await;
    assert!(placeholder.as_str().unwrap().starts_with("staff:"), "{placeholder}");
    // The browser runs in New York; a time typed in the form is the table's UTC all the same.
    b.js(
        "document.querySelector('form.filters input[name=from]').value = '2025-10-13T19:00'",
        vec![],
    )
    .await;
    b.click("form.filters button[type=submit]").await;
    b.wait_until("the filter in the URL", || async {
        b.js("return location.hash", vec![]).await == json!("#/audit?from=2025-10-13T19%3A00%3A00.000Z")
    })
    .await;
    b.find("#audit-table").await;
    let shown = b
        .js(
            "return document.querySelector('form.filters input[name=from]').value",
            vec![],
        )
        .await;
    assert_eq!(shown, json!("2025-10-13T19:00"));

    for page in ["audit", "webhooks"] {
        b.goto(&app.url(&format!("/#/{page}?from=garbage"))).await;
        b.wait_until("the refusal beside the form", || async {
            b.text("#app .error").await.contains("from")
        })
        .await;
        b.find("form.filters button[type=submit]").await;
    }
}

/// Whether the page scrolls sideways.
async fn scrolls_sideways(b: &Browser) -> bool {
    let wide = "return document.documentElement.scrollWidth > document.documentElement.clientWidth";
    b.js(wide, vec![]).await == json!(true)
}

#[tokio::test]
async fn long_names_break_and_the_top_bar_fits_a_phone() {
    let app = spawn_app();
    let long = "W".repeat(100);
    register_named(&app, "long@example.com", &long, "Name").await;
    let Some(b) = admin_browser(&app).await else { return };
    b.goto(&app.url("/#/clients")).await;
    b.find("a.client-name").await;
    assert!(!scrolls_sideways(&b).await, "the client list fits the window");
    b.click("a.client-name").await;
    b.find("#accounts table").await;
    assert!(!scrolls_sideways(&b).await, "the client page fits the window");

    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&app.url("/#/clients")).await;
    b.find("a.client-name").await;
    let width = b.js("return document.documentElement.clientWidth", vec![]).await;
    assert!(width.as_i64().unwrap() <= 400, "a phone-sized window: {width}");
    assert!(!scrolls_sideways(&b).await, "the client list fits a phone");
    for link in ["#logout", "#session a[href='#/password']"] {
        let right = b
            .js(
                "return document.querySelector(arguments[0]).getBoundingClientRect().right",
                vec![json!(link)],
            )
            .await;
        assert!(
            right.as_f64().unwrap() <= width.as_f64().unwrap(),
            "{link} is on screen: {right}"
        );
    }
}

#[tokio::test]
async fn an_error_goes_when_the_browser_refuses_the_next_submit() {
    let app = spawn_app();
    register_named(&app, "stale@example.com", "Stale", "Error").await;
    let Some(b) = admin_browser(&app).await else { return };
    open_client(&b, "stale@example.com").await;
    b.js(
        "document.querySelector('#note-form textarea').value = 'x'.repeat(10001)",
        vec![],
    )
    .await;
    b.click("#note-form button[type=submit]").await;
    b.find("#note-form .error").await; // the API refuses a note that long
    b.type_into("#note-form textarea", "").await;
    b.click("#note-form button[type=submit]").await; // refused by the browser: required
    b.wait_until("the old error to go", || async {
        !b.exists("#note-form .error:not([hidden])").await
    })
    .await;
}

#[tokio::test]
async fn a_one_time_password_goes_when_the_next_action_starts() {
    let app = spawn_app();
    let Some(b) = admin_browser(&app).await else { return };
    b.goto(&app.url("/#/staff")).await;
    b.type_into("#staff-form input[name=email]", "first@crm.local").await;
    b.type_into("#staff-form input[name=name]", "First").await;
    b.click("#staff-form button[type=submit]").await;
    b.find(".password-once").await;
    b.wait_for_text("first@crm.local").await;
    // The next member gets a password the admin chose: nothing is shown for them.
    b.type_into("#staff-form input[name=email]", "second@crm.local").await;
    b.type_into("#staff-form input[name=name]", "Second").await;
    b.type_into("#staff-form input[name=password]", "second-password-123")
        .await;
    b.click("#staff-form button[type=submit]").await;
    b.wait_until("the second member in the list", || async {
        b.text("#app table").await.contains("second@crm.local")
    })
    .await;
    assert!(!b.exists(".secret:not([hidden])").await, "first's password is gone");
}

#[tokio::test]
async fn damaged_links_and_unknown_records_say_not_found_with_a_way_back() {
    let app = spawn_app();
    let Some(b) = admin_browser(&app).await else { return };
    b.js(
        "window.__errors = []; \
         addEventListener('error', (e) => __errors.push(String(e.message))); \
         addEventListener('unhandledrejection', (e) => __errors.push(String(e.reason)));",
        vec![],
    )
    .await;
    b.goto(&app.url("/#/clients/%E0%A4%A")).await;
    b.wait_for_text("Not found").await;
    assert_eq!(b.js("return window.__errors", vec![]).await, json!([]));
    assert_eq!(b.text("#back").await, "← Clients");

    let unknown = "0190c0de-0000-7000-8000-000000000000";
    for (path, back) in [("clients", "#/clients"), ("webhooks", "#/webhooks")] {
        b.goto(&app.url(&format!("/#/{path}/{unknown}"))).await;
        b.wait_for_text("not found").await;
        let href = b
            .js("return document.querySelector('#back').getAttribute('href')", vec![])
            .await;
        assert_eq!(href, json!(back));
    }
}

#[tokio::test]
async fn the_timeline_shows_a_withdrawal_without_a_minus_sign() {
    let app = spawn_app();
    register_named(&app, "out@example.com", "Paid", "Out").await;
    assert_eq!(app.deposit("out@example.com", "100", "TX-1").await.0, 200);
    assert_eq!(app.withdraw("out@example.com", "10.10", "TX-2").await.0, 200);
    let Some(b) = admin_browser(&app).await else { return };
    open_client(&b, "out@example.com").await;
    b.wait_for_text("Withdrawal of 10.10 USD (real funds), balance 89.90")
        .await;
    let summaries = b
        .js(
            "return [...document.querySelectorAll('#activity-list .summary')].map((s) => s.textContent).join('\\n')",
            vec![],
        )
        .await;
    assert!(!summaries.as_str().unwrap().contains("-10.10"), "{summaries}");
}

/// Opens the newest attempt the webhook log lists under `filter` and waits for its body.
async fn open_webhook(b: &Browser, app: &TestApp, filter: &str) {
    b.goto(&app.url(&format!("/#/webhooks?{filter}"))).await;
    b.click("#app tbody a").await;
    b.find("#raw-body").await;
}

#[tokio::test]
async fn re_process_is_offered_only_where_it_can_run_and_its_outcome_reads_as_words() {
    let app = spawn_app();
    register_named(&app, "early@example.com", "Early", "Bird").await;
    // A deposit for a client the CRM does not know yet fails (404), and may be re-run.
    let (status, _) = app.deposit("late@example.com", "50", "TX-LATE").await;
    assert_eq!(status, 404);
    let Some(b) = admin_browser(&app).await else { return };
    open_webhook(&b, &app, "event=client.registered").await;
    assert!(!b.exists("#reprocess").await, "a processed event cannot be re-run");

    open_webhook(&b, &app, "status=failed").await;
    b.find("#reprocess").await;
    assert_eq!(app.register("late@example.com").await.0, 200);
    b.click("#reprocess").await;
    b.wait_until("the outcome", || async {
        b.text("#reprocess-result")
            .await
            .starts_with("Re-processed as a new attempt, which was processed (HTTP 200).")
    })
    .await;
    let meta = b.text("#webhook-meta").await;
    assert!(meta.contains("reprocessedBystaff:admin@crm.local"), "{meta}");
}

#[tokio::test]
async fn managers_read_the_webhook_log_and_are_not_offered_re_processing() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let body = json!({ "email": "manager@crm.local", "name": "Manager", "role": "manager", "password": "manager-password-123" });
    assert_eq!(app.staff(Method::POST, "/api/staff", &admin, Some(body)).await.0, 201);
    assert_eq!(app.deposit("nobody@example.com", "5", "TX-NOBODY").await.0, 404);
    let Some(b) = Browser::start().await else { return };
    log_in(&b, &app.base, "manager@crm.local", "manager-password-123").await;
    b.click("#nav a[data-nav=webhooks]").await;
    open_webhook(&b, &app, "status=failed").await;
    b.wait_for_text("deposit.completed").await;
    assert!(!b.exists("#reprocess").await, "re-processing is for admins");
}
