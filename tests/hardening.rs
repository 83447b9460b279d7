//! Hardening: security headers on every kind of answer, slow bodies cut off, a locked database
//! answered with 503 and nothing acknowledged, and unsigned webhook floods limited per address.

mod common;

use common::*;
use serde_json::json;

fn assert_security_headers(resp: &RawResponse, what: &str) {
    let expect = [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ];
    for (name, value) in expect {
        assert_eq!(resp.header(name), Some(value), "{what}: {name} in {:?}", resp.headers);
    }
    let csp = resp.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{what}: content-security-policy {csp:?}"
    );
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()
}

fn post_webhook(body: &[u8], signature: Option<&str>) -> Vec<u8> {
    let sig = signature
        .map(|s| format!("x-webhook-signature: {s}\r\n"))
        .unwrap_or_default();
    let mut req = format!(
        "POST /api/webhooks/site HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\n\
         {sig}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[tokio::test]
async fn every_kind_of_answer_carries_the_security_headers() {
    let app = spawn_app();
    let too_big = vec![b' '; 2 * 1024 * 1024];
    let bad_event = br#"{"event":"deposit.completed","data":{},"timestamp":"2025-10-13T19:00:00Z"}"#;
    let bad_sig = sign(&app.secrets.webhook, bad_event);
    let cases: Vec<(u16, Vec<u8>, &str)> = vec![
        (200, get("/healthz"), "a success"),
        (404, get("/no/such/page"), "an unknown route"),
        (405, get("/api/webhooks/site"), "a wrong method"),
        (401, get("/api/clients"), "a missing staff token"),
        (413, post_webhook(&too_big, None), "a body over the limit"),
        (
            400,
            post_webhook(bad_event, Some(&bad_sig)),
            "a signed webhook with bad content",
        ),
        (
            401,
            post_webhook(bad_event, Some("00")),
            "a webhook with a bad signature",
        ),
    ];
    for (status, request, what) in cases {
        let resp = raw_request(&app, &request).await.expect(what);
        assert_eq!(resp.status, status, "{what}: {:?}", String::from_utf8_lossy(&resp.body));
        assert_security_headers(&resp, what);
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off_with_408() {
    let app = spawn_with(Spawn::default().env("CRM_BODY_TIMEOUT_SECS", "1"));
    let admin = app.admin_token().await;
    let account = {
        assert_eq!(app.register("slow@example.com").await.0, 200);
        app.account_id("slow@example.com")
    };
    let stalled = [
        // Headers promise 100 bytes; 10 arrive, then nothing.
        b"POST /api/webhooks/site HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          x-webhook-signature: 00\r\nContent-Length: 100\r\n\r\n{\"event\":"
            .to_vec(),
        format!(
            "POST /api/accounts/{account}/adjust-balance HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {admin}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"amount\":"
        )
        .into_bytes(),
    ];
    for request in stalled {
        // Answered 408 (or just closed); either way the connection does not stay open.
        if let Some(resp) = raw_request(&app, &request).await {
            assert_eq!(resp.status, 408, "{:?}", String::from_utf8_lossy(&resp.body));
            assert!(resp.json().is_some_and(|v| v["error"].is_string()));
        }
    }
    assert_eq!(app.funds(&account), (0, 0, 0));
    app.assert_books_balance();
}

/// A client that sends requests and never reads the answers is cut off once the answers stop
/// moving for four body timeouts, so a thousand such sockets cannot hold every connection slot.
#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_with(Spawn::default().env("CRM_BODY_TIMEOUT_SECS", "1"));
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let requests = 500;
    let one = b"GET /api/openapi.json HTTP/1.1\r\nHost: test\r\n\r\n";
    stream.write_all(&one.repeat(requests)).await.unwrap();
    // Read nothing for well over the limit (4 s here), then everything until the server ends it.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let answered = received.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
    assert!(
        answered < requests,
        "all {requests} answers were sent to a client that stopped reading"
    );
    assert_eq!(app.get("/healthz").await.0, 200);
}

/// One address cannot take every connection slot: past 256 open connections its next ones are
/// closed at once, and it gets slots back as its connections end.
#[tokio::test]
async fn one_address_holds_at_most_256_connections() {
    use tokio::io::AsyncReadExt;
    let app = spawn_app();
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Accepted, then closed without a word.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the 257th connection stayed open: {read:?}"
    );
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut status = 0;
    while status != 200 && std::time::Instant::now() < deadline {
        status = app
            .http
            .get(app.url("/healthz"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
    }
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_answers_503_acknowledges_nothing_and_the_resend_applies_once() {
    let app = spawn_with(Spawn::default().env("CRM_SERVICE_RATE_LIMIT", "0"));
    let admin = app.admin_token().await;
    assert_eq!(app.register("busy@example.com").await.0, 200);
    let account = app.account_id("busy@example.com");
    // A deposit for a client not registered yet: failed, for staff to re-run later.
    assert_eq!(app.deposit("later@example.com", "5", "TX-LATER").await.0, 404);
    let failed: String = app
        .sqlite()
        .query_row(
            "SELECT id FROM webhook_events WHERE dedupe_key = 'tx:TX-LATER'",
            [],
            |r| r.get(0),
        )
        .unwrap();

    // Another process (an operator's sqlite3 shell, say) holds the write lock longer than the
    // server's busy timeout: every write the server tries meanwhile fails with SQLITE_BUSY.
    let lock = app.sqlite();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let adjust_path = format!("/api/accounts/{account}/adjust-balance");
    let adjust_body = json!({ "amount": "25", "fundType": "bonus", "notes": "while locked" });
    let deposit = json!({ "event": "deposit.completed", "timestamp": "2025-10-13T19:00:00Z",
                          "data": { "email": "busy@example.com", "amount": "100", "transactionId": "TX-BUSY" } });
    let raw = deposit.to_string();
    let request = post_webhook(raw.as_bytes(), Some(&sign(&app.secrets.webhook, raw.as_bytes())));
    let timed_deposit = async {
        let started = std::time::Instant::now();
        (raw_request(&app, &request).await, started.elapsed())
    };
    let timed_lookup = async {
        let started = std::time::Instant::now();
        let path = "/api/service/clients/busy@example.com";
        (app.service(reqwest::Method::GET, path, None).await, started.elapsed())
    };
    let rerun_path = format!("/api/webhooks/{failed}/reprocess");
    let ((deposit, waited), ((lookup, _), lookup_waited), adjustment, rerun) = tokio::join!(
        timed_deposit,
        timed_lookup,
        app.staff(reqwest::Method::POST, &adjust_path, &admin, Some(adjust_body)),
        app.staff(reqwest::Method::POST, &rerun_path, &admin, None)
    );
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    let deposit = deposit.expect("the deposit was answered");
    // Refused after one busy timeout (5 s), not after a second one spent recording the refusal
    // (recorded after the answer instead): a platform whose HTTP client gives up after 10 s
    // would otherwise see a timeout rather than the 503 and its Retry-After.
    assert!(waited < std::time::Duration::from_secs(9), "answered after {waited:?}");
    assert_eq!(lookup, 503, "a service read under the lock is refused too");
    assert!(
        lookup_waited < std::time::Duration::from_secs(9),
        "the lookup was answered after {lookup_waited:?}"
    );
    assert_eq!(deposit.status, 503, "{:?}", String::from_utf8_lossy(&deposit.body));
    assert!(deposit.json().is_some_and(|v| v["error"].is_string()));
    let retry = deposit.header("retry-after").and_then(|s| s.parse::<u64>().ok());
    assert!(retry.is_some(), "a 503 says when to retry: {:?}", deposit.headers);
    assert_security_headers(&deposit, "a 503");
    assert_eq!(adjustment.0, 503, "{}", adjustment.1);
    assert_eq!(rerun.0, 503, "a staff re-run under the lock: {}", rerun.1);
    assert!(adjustment.1["error"].is_string(), "{}", adjustment.1);
    assert_eq!(
        app.funds(&account),
        (0, 0, 0),
        "nothing answered 503 may be on the books"
    );
    assert!(app.ledger(&account).is_empty());
    // The refused attempt is still on record, written once the lock was gone.
    let recorded = (0..100).find_map(|_| {
        let row: Option<(String, i64)> = app
            .sqlite()
            .query_row(
                "SELECT status, http_status FROM webhook_events WHERE dedupe_key = 'tx:TX-BUSY'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        if row.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        row
    });
    assert_eq!(recorded, Some(("failed".to_string(), 503)));

    // The platform retries: applied now, and once.
    assert_eq!(
        app.deposit("busy@example.com", "100", "TX-BUSY").await,
        (200, json!({ "status": "processed" }))
    );
    assert_eq!(
        app.deposit("busy@example.com", "100", "TX-BUSY").await,
        (200, json!({ "status": "duplicate" }))
    );
    let ledger = app.ledger(&account);
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].external_ref.as_deref(), Some("TX-BUSY"));
    assert_eq!(app.funds(&account).0, 100 * 100_000_000);
    app.assert_books_balance();
}

#[tokio::test]
async fn unsigned_webhook_floods_are_limited_per_address_and_signed_ones_still_pass() {
    let app = spawn_app();
    assert_eq!(app.register("flood@example.com").await.0, 200);
    let body = br#"{"event":"deposit.completed","data":{},"timestamp":"2025-10-13T19:00:00Z"}"#;
    let mut limited = None;
    for i in 0..200 {
        let (status, answer) = app.post_webhook_raw(body, Some("00")).await;
        if status == 429 {
            limited = Some((i, answer));
            break;
        }
        assert_eq!(status, 401, "{answer}");
    }
    let (allowed, answer) = limited.expect("200 unsigned posts in a row were never limited");
    assert_eq!(
        allowed, 60,
        "60 unverified attempts a minute are recorded before the limit"
    );
    assert!(answer["error"].is_string(), "{answer}");
    let recorded = || -> i64 {
        app.sqlite()
            .query_row(
                "SELECT COUNT(*) FROM webhook_events WHERE signature = 'invalid'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(recorded(), 60, "refusals over the limit cost no write");

    // The platform's signed deliveries from the same address are not held back.
    let (status, answer) = app.deposit("flood@example.com", "10", "TX-FLOOD").await;
    assert_eq!((status, answer), (200, json!({ "status": "processed" })));
    let resp = app
        .http
        .post(app.url("/api/webhooks/site"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(recorded(), 60);
    // One too large, over the limit as well: its unread body leaves the connection unusable.
    // Sent by hand, and only its start: a client still writing the rest when the answer and the
    // close arrive may see a broken pipe instead of the answer (reqwest did, now and then).
    let mut large = format!(
        "POST /api/webhooks/site HTTP/1.1\r\nHost: crm\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    )
    .into_bytes();
    large.extend_from_slice(&[b' '; 1024]);
    let resp = raw_request(&app, &large).await.expect("an answer");
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("connection"), Some("close"));
    // The first refusal of the minute is audited; the other one was not written, and is counted
    // into the address's next such entry rather than lost.
    let limited: Vec<(String, String)> = app
        .sqlite()
        .prepare("SELECT outcome, details FROM audit_log WHERE action = 'webhook.rate_limited'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0].0, "failure");
    assert!(limited[0].1.contains(r#""limitPerMinute":60"#), "{limited:?}");
}
