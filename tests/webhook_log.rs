//! The staff webhook log: listing and reading attempts, and admins re-running a stored attempt
//! that did not take effect.

mod common;
mod webhook_support;

use common::*;
use crm::domain::Role;
use reqwest::Method;
use serde_json::json;
use webhook_support::*;

fn attempt_id(app: &TestApp, status: &str) -> String {
    app.sqlite()
        .query_row(
            "SELECT id FROM webhook_events WHERE status = ?1 ORDER BY seq DESC LIMIT 1",
            [status],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn a_deposit_before_its_registration_fails_then_is_credited_once_by_reprocessing() {
    let app = spawn_app();
    let (status, body) = app.deposit("late@example.com", "75", "TX-EARLY").await;
    assert_eq!(status, 404, "{body}");
    let failed = attempt_id(&app, "failed");
    app.register("late@example.com").await;

    let admin = staff_token(&app, Role::Admin);
    let path = format!("/api/webhooks/{failed}/reprocess");
    let (status, body) = app.staff(Method::POST, &path, &admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["response"],
        json!({ "status": 200, "body": { "status": "processed" } })
    );
    assert_eq!(body["attempt"]["status"], "processed");
    assert_eq!(body["attempt"]["reprocessOf"], failed.as_str());
    assert_eq!(body["attempt"]["reprocessedBy"], "staff:admin@crm.local");
    assert_eq!(balances(&app, "late@example.com").0, "75.00");

    // A second re-run, and the platform's own retry, find it already on the books.
    let (status, body) = app.staff(Method::POST, &path, &admin, None).await;
    assert_eq!((status, &body["attempt"]["status"]), (200, &json!("duplicate")));
    assert_eq!(
        app.deposit("late@example.com", "75", "TX-EARLY").await.1["status"],
        "duplicate"
    );
    assert_eq!(balances(&app, "late@example.com").0, "75.00");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ledger_entries"), 1);

    let (_, original) = app
        .staff(Method::GET, &format!("/api/webhooks/{failed}"), &admin, None)
        .await;
    assert_eq!(original["status"], "failed", "the original keeps its own outcome");
    assert_eq!(original["reprocessedBy"], "staff:admin@crm.local");
    assert!(original["reprocessedAt"].is_string());
    let (ledger_actor, deposit_details): (String, String) = app
        .sqlite()
        .query_row(
            "SELECT l.actor, a.details FROM ledger_entries l, audit_log a WHERE a.action = 'account.deposit'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(ledger_actor, "platform:webhook");
    assert!(
        deposit_details.contains(r#""reprocessedBy":"staff:admin@crm.local""#),
        "{deposit_details}"
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'webhook.reprocess' AND actor = 'staff:admin@crm.local'"
        ),
        2
    );
}

#[tokio::test]
async fn only_signed_attempts_that_took_no_effect_can_be_reprocessed_and_only_by_admins() {
    let app = spawn_app();
    app.register("a@example.com").await;
    let processed = attempt_id(&app, "processed");
    app.register("a@example.com").await;
    app.deposit("a@example.com", "5", "TX-1").await;
    app.deposit("a@example.com", "5", "TX-1").await;
    let duplicate = attempt_id(&app, "duplicate");
    app.post_webhook_raw(b"{}", Some("00")).await;
    let unauthorized = attempt_id(&app, "unauthorized");
    app.withdraw("a@example.com", "500", "TX-2").await;
    let rejected = attempt_id(&app, "rejected");

    let admin = staff_token(&app, Role::Admin);
    for (id, why) in [
        (&processed, "already processed"),
        (&duplicate, "a duplicate"),
        (&unauthorized, "never authenticated"),
    ] {
        let (status, body) = app
            .staff(Method::POST, &format!("/api/webhooks/{id}/reprocess"), &admin, None)
            .await;
        assert_eq!(status, 409, "{why}: {body}");
    }
    for role in [Role::Manager, Role::Agent] {
        let token = staff_token(&app, role);
        let (status, _) = app
            .staff(
                Method::POST,
                &format!("/api/webhooks/{rejected}/reprocess"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 403, "{role}");
    }
    let (status, _) = app
        .staff(
            Method::POST,
            &format!("/api/webhooks/{}/reprocess", uuid::Uuid::new_v4()),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A refused withdrawal is never re-run, even once the money is there: the platform was told
    // it was blocked (guide: "No balance changes occur").
    app.deposit("a@example.com", "600", "TX-3").await;
    let (status, body) = app
        .staff(
            Method::POST,
            &format!("/api/webhooks/{rejected}/reprocess"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("withdrawal"), "{body}");
    assert_eq!(balances(&app, "a@example.com").0, "605.00");
}

#[tokio::test]
async fn managers_and_admins_read_the_log_newest_first_with_filters_and_pages() {
    let app = spawn_app();
    app.register("l@example.com").await;
    for i in 0..3 {
        app.deposit("l@example.com", "1", &format!("TX-{i}")).await;
    }
    app.deposit("nobody@example.com", "1", "TX-X").await;
    app.post_webhook_raw(b"{}", None).await;

    let (status, _) = app.get("/api/webhooks").await;
    assert_eq!(status, 401, "staff only");
    let agent = staff_token(&app, Role::Agent);
    let (status, _) = app.staff(Method::GET, "/api/webhooks", &agent, None).await;
    assert_eq!(status, 403, "agents do not read other clients' raw webhook data");
    let reader = staff_token(&app, Role::Manager);
    let (status, body) = app.staff(Method::GET, "/api/webhooks", &reader, None).await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 6);
    assert_eq!(events[0]["status"], "unauthorized", "newest first");
    assert!(
        events.iter().all(|e| e.get("rawBody").is_none()),
        "no bodies in the list"
    );
    assert!(body["nextCursor"].is_null());

    let (_, body) = app
        .staff(
            Method::GET,
            "/api/webhooks?event=deposit.completed&status=processed",
            &reader,
            None,
        )
        .await;
    assert_eq!(body["events"].as_array().unwrap().len(), 3);

    let (_, page1) = app.staff(Method::GET, "/api/webhooks?limit=4", &reader, None).await;
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = app
        .staff(
            Method::GET,
            &format!("/api/webhooks?limit=4&before={cursor}"),
            &reader,
            None,
        )
        .await;
    let ids: Vec<&str> = page1["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["events"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6);
    assert!(page2["nextCursor"].is_null());
    // A page that ends exactly at the oldest event is the last one: no cursor to an empty page.
    let (_, exact) = app.staff(Method::GET, "/api/webhooks?limit=6", &reader, None).await;
    assert_eq!(exact["events"].as_array().unwrap().len(), 6);
    assert!(exact["nextCursor"].is_null(), "{exact}");

    let (_, none) = app
        .staff(Method::GET, "/api/webhooks?from=2999-01-01T00:00:00Z", &reader, None)
        .await;
    assert_eq!(none["events"], json!([]));
    let (_, all) = app
        .staff(
            Method::GET,
            "/api/webhooks?from=2000-01-01T00:00:00%2B02:00&to=2999-01-01T00:00:00Z",
            &reader,
            None,
        )
        .await;
    assert_eq!(all["events"].as_array().unwrap().len(), 6);

    for bad in [
        "status=done",
        "limit=0",
        "limit=abc",
        "before=x",
        "from=yesterday",
        "stauts=failed",
    ] {
        let (status, body) = app
            .staff(Method::GET, &format!("/api/webhooks?{bad}"), &reader, None)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let id = ids[1];
    let (status, one) = app
        .staff(Method::GET, &format!("/api/webhooks/{id}"), &reader, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], id);
    assert_eq!(one["status"], "failed");
    assert!(one["rawBody"].as_str().unwrap().contains("nobody@example.com"));
    assert_eq!(one["httpStatus"], 404);
    for key in [
        "receivedAt",
        "event",
        "dedupeKey",
        "signature",
        "bodySize",
        "error",
        "ip",
        "durationMs",
    ] {
        assert!(one.get(key).is_some(), "{key} in {one}");
    }
    let (status, _) = app
        .staff(
            Method::GET,
            &format!("/api/webhooks/{}", uuid::Uuid::new_v4()),
            &reader,
            None,
        )
        .await;
    assert_eq!(status, 404);
}
