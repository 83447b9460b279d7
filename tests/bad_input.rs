//! The bad-input catalogue: hostile requests against every surface, each with the reason it must
//! fail. Every one must get a 4xx answer with a JSON `{"error": "..."}` body (never a 500, never
//! a hang), and afterwards the business tables must be exactly as they were: refused requests
//! may only add to the audit log and the webhook attempt log.

mod common;
mod staff_common;

use common::*;
use serde_json::{json, Value};
use staff_common::{hs256_header, jwt, now_secs, staff_claims, staff_user};

/// How the request authenticates.
#[derive(Clone)]
enum Auth {
    None,
    Admin,
    Agent,
    Service,
    Bearer(String),
}

/// One row: a request and why it must be refused.
struct Row {
    why: &'static str,
    method: &'static str,
    path: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sign the body with the webhook secret.
    signed: bool,
    /// Declare a Content-Length longer than the body sent, then go quiet.
    stalls: bool,
    /// Refused by the HTTP layer (hyper) before any route runs: a 4xx, but it writes no body.
    protocol: bool,
}

fn row(why: &'static str, method: &'static str, path: impl Into<String>) -> Row {
    Row {
        why,
        method,
        path: path.into(),
        auth: Auth::None,
        headers: Vec::new(),
        body: Vec::new(),
        signed: false,
        stalls: false,
        protocol: false,
    }
}

impl Row {
    fn auth(mut self, auth: Auth) -> Row {
        self.auth = auth;
        self
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Row {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// A body sent as JSON (whatever it really is).
    fn json(self, body: impl AsRef<[u8]>) -> Row {
        let mut r = self.header("content-type", "application/json");
        r.body = body.as_ref().to_vec();
        r
    }
    fn value(self, body: Value) -> Row {
        self.json(body.to_string())
    }
    fn signed(mut self) -> Row {
        self.signed = true;
        self
    }
    fn stalls(mut self) -> Row {
        self.stalls = true;
        self
    }
    fn protocol(mut self) -> Row {
        self.protocol = true;
        self
    }

    fn render(&self, ctx: &Ctx) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n",
            self.method, self.path
        );
        let bearer = match &self.auth {
            Auth::None => None,
            Auth::Admin => Some(ctx.admin.clone()),
            Auth::Agent => Some(ctx.agent.clone()),
            Auth::Service => Some(ctx.service.clone()),
            Auth::Bearer(t) => Some(t.clone()),
        };
        if let Some(token) = bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if self.signed {
            head.push_str(&format!(
                "x-webhook-signature: {}\r\n",
                sign(&ctx.webhook_secret, &self.body)
            ));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let declared = if self.stalls {
            self.body.len() + 100
        } else {
            self.body.len()
        };
        if !self.body.is_empty() || self.stalls || self.method == "POST" {
            head.push_str(&format!("Content-Length: {declared}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

struct Ctx {
    admin: String,
    agent: String,
    service: String,
    webhook_secret: String,
    client_id: String,
    account_id: String,
    admin_id: String,
    jwt_secret: String,
}

const VICTIM: &str = "victim@example.com";

fn event(name: &str, data: Value) -> Value {
    json!({ "event": name, "data": data, "timestamp": "2025-10-13T19:00:00Z" })
}

fn deposit_with(field: &str, value: Value) -> Value {
    let mut data = json!({ "email": VICTIM, "amount": "100", "transactionId": "BAD-TX" });
    data[field] = value;
    event("deposit.completed", data)
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn catalogue(ctx: &Ctx) -> Vec<Row> {
    let hook = "/api/webhooks/site";
    let acct = format!("/api/accounts/{}", ctx.account_id);
    let adjust = format!("{acct}/adjust-balance");
    let client = format!("/api/clients/{}", ctx.client_id);
    let svc_client = format!("/api/service/clients/{VICTIM}");
    let exp = now_secs() - 3600;
    let expired = jwt(
        &hs256_header(),
        &staff_claims(&ctx.admin_id, "admin", exp - 28800, exp),
        ctx.jwt_secret.as_bytes(),
    );
    let wrong_key = jwt(
        &hs256_header(),
        &staff_claims(&ctx.admin_id, "admin", now_secs(), now_secs() + 600),
        b"not-the-secret-not-the-secret!!",
    );
    let alg_none = {
        let claims = staff_claims(&ctx.admin_id, "admin", now_secs(), now_secs() + 600);
        let enc = |v: &Value| staff_common::b64(v.to_string().as_bytes());
        format!("{}.{}.", enc(&json!({ "alg": "none", "typ": "JWT" })), enc(&claims))
    };
    let escalated = {
        // The agent's own token with its claims rewritten to admin, signature kept.
        let parts: Vec<&str> = ctx.agent.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&staff_common::unb64(parts[1])).unwrap();
        claims["role"] = json!("admin");
        format!(
            "{}.{}.{}",
            parts[0],
            staff_common::b64(claims.to_string().as_bytes()),
            parts[2]
        )
    };
    let good_deposit = deposit_with("transactionId", json!("GOOD-TX"));

    vec![
        // ---- webhooks: authentication -----------------------------------------------------------
        row("an unsigned deposit is not the platform's", "POST", hook).value(good_deposit.clone()),
        row("a signature by another key", "POST", hook).value(good_deposit.clone()).header("x-webhook-signature", sign("wrong-secret-wrong-secret", b"x")),
        row("a signature that is not hex", "POST", hook).value(good_deposit.clone()).header("x-webhook-signature", "zz-not-hex-\u{1F600}"),
        row("an empty signature", "POST", hook).value(good_deposit.clone()).header("x-webhook-signature", ""),
        row("a deep unsigned body is refused before parsing", "POST", hook).json(nested(10_000)),
        // ---- webhooks: signed but malformed -----------------------------------------------------
        row("an empty signed body", "POST", hook).json("").signed(),
        row("signed text that is not JSON", "POST", hook).json("hello").signed(),
        row("a JSON array is not an event", "POST", hook).value(json!([good_deposit.clone()])).signed(),
        row("10,000 nested arrays", "POST", hook).json(nested(10_000)).signed(),
        row("10,000 nested objects in data", "POST", hook).json(format!("{{\"event\":\"deposit.completed\",\"data\":{}1{},\"timestamp\":\"2025-10-13T19:00:00Z\"}}", "{\"a\":".repeat(10_000), "}".repeat(10_000))).signed(),
        row("the event name is a number", "POST", hook).value(json!({ "event": 7, "data": {}, "timestamp": "2025-10-13T19:00:00Z" })).signed(),
        row("no data", "POST", hook).value(json!({ "event": "deposit.completed", "timestamp": "2025-10-13T19:00:00Z" })).signed(),
        row("an unknown event", "POST", hook).value(event("deposit.reversed", json!({ "email": VICTIM }))).signed(),
        row("a timestamp that is not a time", "POST", hook).value(json!({ "event": "deposit.completed", "data": good_deposit["data"], "timestamp": "yesterday" })).signed(),
        row("a boolean amount", "POST", hook).value(deposit_with("amount", json!(true))).signed(),
        row("a negative amount", "POST", hook).value(deposit_with("amount", json!("-100"))).signed(),
        row("a zero amount", "POST", hook).value(deposit_with("amount", json!(0))).signed(),
        row("an amount in exponent form", "POST", hook).json(r#"{"event":"deposit.completed","data":{"email":"victim@example.com","amount":1e308,"transactionId":"BAD-TX"},"timestamp":"2025-10-13T19:00:00Z"}"#).signed(),
        row("an amount beyond any balance", "POST", hook).value(deposit_with("amount", json!("99999999999999999999999"))).signed(),
        row("nine decimals", "POST", hook).value(deposit_with("amount", json!("1.000000001"))).signed(),
        row("NaN", "POST", hook).value(deposit_with("amount", json!("NaN"))).signed(),
        row("an amount as an object", "POST", hook).value(deposit_with("amount", json!({ "value": 100 }))).signed(),
        row("an empty transaction id", "POST", hook).value(deposit_with("transactionId", json!(""))).signed(),
        row("a NUL byte in the transaction id", "POST", hook).value(deposit_with("transactionId", json!("TX\u{0}1"))).signed(),
        row("SQL in the transaction id", "POST", hook).value(deposit_with("transactionId", json!("1'; DROP TABLE ledger_entries;--"))).signed(),
        row("a 10,000-character transaction id", "POST", hook).value(deposit_with("transactionId", json!("T".repeat(10_000)))).signed(),
        row("a right-to-left override in the email", "POST", hook).value(deposit_with("email", json!("victim\u{202e}@example.com"))).signed(),
        row("a currency that is not the account's", "POST", hook).value(deposit_with("currency", json!("EUR"))).signed(),
        row("an account id that is not a uuid", "POST", hook).value(deposit_with("accountId", json!("../../etc/passwd"))).signed(),
        row("the same key twice: which amount is meant?", "POST", hook).json(r#"{"event":"deposit.completed","data":{"email":"victim@example.com","amount":"1","amount":"1000","transactionId":"DUP-KEY"},"timestamp":"2025-10-13T19:00:00Z"}"#).signed(),
        row("the same event key twice", "POST", hook).json(r#"{"event":"kyc.updated","event":"deposit.completed","data":{"email":"victim@example.com","amount":"5","transactionId":"DUP-EV"},"timestamp":"2025-10-13T19:00:00Z"}"#).signed(),
        row("a withdrawal beyond the funds", "POST", hook).value(event("withdrawal.completed", json!({ "email": VICTIM, "amount": "1000000", "transactionId": "BIG-WD" }))).signed(),
        row("a registration with a NUL in the email", "POST", hook).value(event("client.registered", json!({ "email": "nul\u{0}@example.com" }))).signed(),
        row("a registration with SQL for an email", "POST", hook).value(event("client.registered", json!({ "email": "' OR 1=1 --" }))).signed(),
        row("a leverage of 100,000", "POST", hook).value(event("account.updated", json!({ "email": VICTIM, "leverage": 100_000 }))).signed(),
        row("a fractional leverage", "POST", hook).value(event("account.updated", json!({ "email": VICTIM, "leverage": 1.5 }))).signed(),
        row("an unknown KYC status", "POST", hook).value(event("kyc.updated", json!({ "email": VICTIM, "kycStatus": "hacked" }))).signed(),
        row("a deposit for nobody", "POST", hook).value(event("deposit.completed", json!({ "email": "nobody@example.com", "amount": "5", "transactionId": "NOBODY" }))).signed(),
        row("a body over the webhook limit", "POST", hook).json(vec![b' '; 2 * 1024 * 1024]).signed(),
        row("a body that never arrives", "POST", hook).json(b"{\"event\"").signed().stalls(),
        row("webhooks are only posted", "GET", hook),
        row("nor deleted", "DELETE", hook),
        // ---- service API -------------------------------------------------------------------------
        row("no token", "GET", svc_client.clone()),
        row("a wrong token", "GET", svc_client.clone()).auth(Auth::Bearer("0".repeat(64))),
        row("an empty bearer token", "GET", svc_client.clone()).header("authorization", "Bearer "),
        row("basic auth is not a token", "GET", svc_client.clone()).header("authorization", "Basic YWRtaW46YWRtaW4="),
        row("a staff token is not the service token", "GET", svc_client.clone()).auth(Auth::Admin),
        row("SQL for an email", "GET", "/api/service/clients/%27%20OR%20%271%27%3D%271").auth(Auth::Service),
        row("a NUL byte in the email", "GET", "/api/service/clients/victim%00@example.com").auth(Auth::Service),
        row("invalid UTF-8 in the path", "GET", "/api/service/clients/%FF%FE@example.com").auth(Auth::Service),
        row("a KYC status of the wrong type", "PATCH", format!("{svc_client}/kyc")).auth(Auth::Service).value(json!({ "kycStatus": 5 })),
        row("no KYC status", "PATCH", format!("{svc_client}/kyc")).auth(Auth::Service).value(json!({ "kycNotes": "x" })),
        row("a misspelt field", "PATCH", format!("{svc_client}/kyc")).auth(Auth::Service).value(json!({ "kycstatus": "approved" })),
        row("a form is not JSON", "PATCH", format!("{svc_client}/kyc")).auth(Auth::Service).header("content-type", "application/x-www-form-urlencoded").json("kycStatus=approved"),
        row("KYC for an unknown client", "PATCH", "/api/service/clients/ghost@example.com/kyc").auth(Auth::Service).value(json!({ "kycStatus": "approved" })),
        row("an empty comment", "POST", format!("{svc_client}/notes")).auth(Auth::Service).value(json!({ "comment": "   " })),
        row("a null comment", "POST", format!("{svc_client}/notes")).auth(Auth::Service).value(json!({ "comment": null })),
        row("a 20,000-character comment", "POST", format!("{svc_client}/notes")).auth(Auth::Service).value(json!({ "comment": "x".repeat(20_000) })),
        row("a comment body over 64 KiB", "POST", format!("{svc_client}/notes")).auth(Auth::Service).value(json!({ "comment": "x".repeat(70_000) })),
        row("the comment twice", "POST", format!("{svc_client}/notes")).auth(Auth::Service).json(r#"{"comment":"one","comment":"two"}"#),
        row("invalid UTF-8 in a comment", "POST", format!("{svc_client}/notes")).auth(Auth::Service).json(b"{\"comment\":\"\xff\xfe\"}"),
        row("an escape sequence in a comment", "POST", format!("{svc_client}/notes")).auth(Auth::Service).value(json!({ "comment": "fee\u{1b}[2J" })),
        row("a NUL in KYC notes", "PATCH", format!("{svc_client}/kyc")).auth(Auth::Service).value(json!({ "kycStatus": "approved", "kycNotes": "ok\u{0}" })),
        row("a huge activity limit", "GET", format!("{svc_client}/activity?limit=100000000000000000000")).auth(Auth::Service),
        row("a negative activity limit", "GET", format!("{svc_client}/activity?limit=-1")).auth(Auth::Service),
        row("a forged activity cursor", "GET", format!("{svc_client}/activity?before=%27%3B--")).auth(Auth::Service),
        row("plain text where JSON is expected", "POST", format!("{svc_client}/notes")).auth(Auth::Service).header("content-type", "text/plain").json("a note"),
        // ---- staff authentication ----------------------------------------------------------------
        row("no password", "POST", "/api/auth/login").value(json!({ "email": "admin@crm.local" })),
        row("an email that is a number", "POST", "/api/auth/login").value(json!({ "email": 123, "password": "x" })),
        row("SQL for a login", "POST", "/api/auth/login").value(json!({ "email": "' OR 1=1 --", "password": "' OR 1=1 --" })),
        row("a NUL in the login email", "POST", "/api/auth/login").value(json!({ "email": "admin@crm.local\u{0}", "password": "x" })),
        row("a login body of a megabyte", "POST", "/api/auth/login").json(vec![b'{'; 1024 * 1024]),
        row("a wrong password", "POST", "/api/auth/login").value(json!({ "email": "admin@crm.local", "password": "guess-guess-guess" })),
        row("an expired staff token", "GET", "/api/clients").auth(Auth::Bearer(expired)),
        row("a token signed with another key", "GET", "/api/clients").auth(Auth::Bearer(wrong_key)),
        row("an unsigned token (alg none)", "GET", "/api/clients").auth(Auth::Bearer(alg_none)),
        row("an agent's token rewritten to admin", "POST", adjust.clone()).auth(Auth::Bearer(escalated)).value(json!({ "amount": "5", "fundType": "real" })),
        row("the service token is not a staff token", "GET", "/api/clients").auth(Auth::Service),
        row("garbage for a token", "GET", "/api/clients").auth(Auth::Bearer("a.b.c".into())),
        // ---- staff API ---------------------------------------------------------------------------
        row("a huge page size", "GET", "/api/clients?limit=1000000000000").auth(Auth::Admin),
        row("a NUL in a search term", "GET", "/api/clients?q=ab%00cd").auth(Auth::Admin),
        row("a line break in a short search term", "GET", "/api/clients?q=a%0Ab").auth(Auth::Admin),
        row("a page size that is not a number", "GET", "/api/clients?limit=abc").auth(Auth::Admin),
        row("an unknown query parameter value", "GET", "/api/clients?after=%00").auth(Auth::Admin),
        row("a client id that is not a uuid", "GET", "/api/clients/not-a-uuid").auth(Auth::Admin),
        row("SQL for a client id", "GET", "/api/clients/1%27%20OR%20%271%27%3D%271").auth(Auth::Admin),
        row("an unknown client", "GET", format!("/api/clients/{}", uuid::Uuid::new_v4())).auth(Auth::Admin),
        row("an adjustment in exponent form", "POST", adjust.clone()).auth(Auth::Admin).json(r#"{"amount":1e3,"fundType":"real"}"#),
        row("a zero adjustment", "POST", adjust.clone()).auth(Auth::Admin).value(json!({ "amount": "0", "fundType": "real" })),
        row("a fund that does not exist", "POST", adjust.clone()).auth(Auth::Admin).value(json!({ "amount": "5", "fundType": "gold" })),
        row("an amount as an object", "POST", adjust.clone()).auth(Auth::Admin).value(json!({ "amount": { "$gt": 0 }, "fundType": "real" })),
        row("a debit beyond the fund", "POST", adjust.clone()).auth(Auth::Admin).value(json!({ "amount": "-100000", "fundType": "real" })),
        row("an amount beyond the supported range", "POST", adjust.clone()).auth(Auth::Admin).value(json!({ "amount": "99999999999", "fundType": "bonus" })),
        row("i64::MIN as an amount", "POST", adjust.clone()).auth(Auth::Admin).json(r#"{"amount":-9223372036854775808,"fundType":"real"}"#),
        row("notes of 2,000 characters", "POST", adjust.clone()).auth(Auth::Admin).value(json!({ "amount": "5", "fundType": "real", "notes": "n".repeat(2000) })),
        row("the amount twice", "POST", adjust.clone()).auth(Auth::Admin).json(r#"{"amount":"1","fundType":"real","amount":"-1"}"#),
        row("100 levels of nesting in an adjustment", "POST", adjust.clone()).auth(Auth::Admin).json(format!("{{\"amount\":{}\"5\"{},\"fundType\":\"real\"}}", "[".repeat(100), "]".repeat(100))),
        row("agents may not adjust balances", "POST", adjust.clone()).auth(Auth::Agent).value(json!({ "amount": "5", "fundType": "real" })),
        row("an unknown account", "POST", format!("/api/accounts/{}/adjust-balance", uuid::Uuid::new_v4())).auth(Auth::Admin).value(json!({ "amount": "5", "fundType": "real" })),
        row("an adjustment sent as a form", "POST", adjust.clone()).auth(Auth::Admin).header("content-type", "application/x-www-form-urlencoded").json("amount=5&fundType=real"),
        row("a valid adjustment declared as text", "POST", adjust.clone()).auth(Auth::Admin).header("content-type", "text/plain").value(json!({ "amount": "5", "fundType": "real" })),
        row("a valid leverage declared as a form", "PATCH", format!("{acct}/leverage")).auth(Auth::Admin).header("content-type", "application/x-www-form-urlencoded").value(json!({ "leverage": 50 })),
        row("a valid staff note declared as text", "POST", format!("{client}/notes")).auth(Auth::Admin).header("content-type", "text/plain").value(json!({ "comment": "hello" })),
        row("a leverage of zero", "PATCH", format!("{acct}/leverage")).auth(Auth::Admin).value(json!({ "leverage": 0 })),
        row("a leverage as text", "PATCH", format!("{acct}/leverage")).auth(Auth::Admin).value(json!({ "leverage": "high" })),
        row("a leverage beyond u64", "PATCH", format!("{acct}/leverage")).auth(Auth::Admin).json(r#"{"leverage":184467440737095516160}"#),
        row("a huge ledger page", "GET", format!("{acct}/ledger?limit=99999999999999999999")).auth(Auth::Admin),
        row("an unknown KYC status from staff", "PATCH", format!("{client}/kyc")).auth(Auth::Admin).value(json!({ "kycStatus": "approved!" })),
        row("an empty staff note", "POST", format!("{client}/notes")).auth(Auth::Admin).value(json!({ "comment": "" })),
        row("a NUL in a staff note", "POST", format!("{client}/notes")).auth(Auth::Admin).value(json!({ "comment": "a\u{0}b" })),
        row("an escape sequence in staff KYC notes", "PATCH", format!("{client}/kyc")).auth(Auth::Admin).value(json!({ "kycStatus": "approved", "kycNotes": "\u{1b}[31mred" })),
        row("a NUL in adjustment notes", "POST", adjust.clone()).auth(Auth::Admin).value(json!({ "amount": "5", "fundType": "real", "notes": "fee\r\n\u{0}" })),
        row("a staff name with a line break", "POST", "/api/staff").auth(Auth::Admin).value(json!({ "email": "new@crm.test", "name": "N\nM", "role": "agent" })),
        row("a subaccount in a made-up currency", "POST", format!("{client}/subaccounts")).auth(Auth::Admin).value(json!({ "currency": "US$" })),
        row("impersonating an unknown client", "POST", format!("/api/clients/{}/impersonate", uuid::Uuid::new_v4())).auth(Auth::Admin),
        row("a role that does not exist", "POST", "/api/staff").auth(Auth::Admin).value(json!({ "email": "new@crm.test", "name": "N", "role": "superadmin" })),
        row("a staff email with a NUL", "POST", "/api/staff").auth(Auth::Admin).value(json!({ "email": "n\u{0}@crm.test", "name": "N", "role": "agent" })),
        row("a staff password too short", "POST", "/api/staff").auth(Auth::Admin).value(json!({ "email": "new@crm.test", "name": "N", "role": "agent", "password": "short" })),
        row("the last admin demoting themselves", "PATCH", format!("/api/staff/{}", ctx.admin_id)).auth(Auth::Admin).value(json!({ "role": "agent" })),
        row("agents may not create staff", "POST", "/api/staff").auth(Auth::Agent).value(json!({ "email": "new@crm.test", "name": "N", "role": "admin" })),
        row("a huge audit page", "GET", "/api/audit?limit=99999999999").auth(Auth::Admin),
        row("a negative CSV limit", "GET", "/api/audit.csv?limit=-5").auth(Auth::Admin),
        row("an audit date that is not a date", "GET", "/api/audit?from=%27%20OR%201%3D1").auth(Auth::Admin),
        row("a zero webhook page", "GET", "/api/webhooks?limit=0").auth(Auth::Admin),
        row("an unknown webhook status", "GET", "/api/webhooks?status=bogus").auth(Auth::Admin),
        row("re-processing an unknown attempt", "POST", format!("/api/webhooks/{}/reprocess", uuid::Uuid::new_v4())).auth(Auth::Admin),
        row("a staff body that never arrives", "POST", adjust.clone()).auth(Auth::Admin).json(b"{\"amount\"").stalls(),
        // ---- paths, methods, sizes ---------------------------------------------------------------
        row("dot segments to the source tree", "GET", "/../Cargo.toml"),
        row("encoded dot segments to /etc/passwd", "GET", "/%2e%2e/%2e%2e/etc/passwd"),
        row("dot segments from static files to the secrets", "GET", "/static/../../secrets.env"),
        row("an encoded slash to the database", "GET", "/static/..%2f..%2fcrm.db"),
        row("a NUL in the path", "GET", "/api/clients/%00"),
        row("an 8 KiB page size", "GET", format!("/api/clients?limit={}", "9".repeat(8 * 1024))).auth(Auth::Admin),
        row("an 8 KiB path", "GET", format!("/api/clients/{}", "a".repeat(8 * 1024))).auth(Auth::Admin),
        row("a 64 KiB bearer token", "GET", "/api/clients").auth(Auth::Bearer("x".repeat(64 * 1024))),
        row("a 64 KiB signature", "POST", hook).value(good_deposit.clone()).header("x-webhook-signature", "a".repeat(64 * 1024)),
        row("a 100 KiB URL is refused by the HTTP layer", "GET", format!("/api/clients?q={}", "a".repeat(100 * 1024))).protocol(),
        row("a megabyte of headers is refused by the HTTP layer", "GET", "/api/clients").header("x-padding", "p".repeat(1024 * 1024)).protocol(),
        row("a header with a NUL byte is refused by the HTTP layer", "GET", "/api/clients").header("x-evil", "a\0b").protocol(),
        row("deleting all clients", "DELETE", "/api/clients").auth(Auth::Admin),
        row("an unknown route", "GET", "/api/admin/dump").auth(Auth::Admin),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_gets_a_json_4xx_and_changes_no_business_data() {
    let app = spawn_with(
        Spawn::default()
            .env("CRM_SERVICE_RATE_LIMIT", "0")
            .env("CRM_BODY_TIMEOUT_SECS", "2"),
    );
    assert_eq!(app.register(VICTIM).await.0, 200);
    assert_eq!(app.deposit(VICTIM, "100", "SEED-1").await.0, 200);
    let admin = app.admin_token().await;
    let (_, agent) = staff_user(&app, &admin, "agent@crm.test", "agent").await;
    let (_, me) = app.staff(reqwest::Method::GET, "/api/auth/me", &admin, None).await;
    let ctx = Ctx {
        admin,
        agent,
        service: app.secrets.service.clone(),
        webhook_secret: app.secrets.webhook.clone(),
        client_id: app
            .sqlite()
            .query_row("SELECT id FROM clients WHERE email = ?1", [VICTIM], |r| r.get(0))
            .unwrap(),
        account_id: app.account_id(VICTIM),
        admin_id: me["id"]
            .as_str()
            .or(me["user"]["id"].as_str())
            .expect("the admin's id")
            .to_string(),
        jwt_secret: app.secrets.jwt.clone(),
    };
    let rows = catalogue(&ctx);
    assert!(rows.len() >= 60, "the catalogue has {} rows", rows.len());

    let before = app.business_snapshot();
    let mut failures = Vec::new();
    for row in &rows {
        let request = row.render(&ctx);
        let Some(resp) = raw_request(&app, &request).await else {
            failures.push(format!("{} {}: no answer ({})", row.method, clip(&row.path), row.why));
            continue;
        };
        let error = resp.json().and_then(|v| v["error"].as_str().map(str::to_string));
        let json_type = resp
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        let well_formed = row.protocol || (error.is_some() && json_type);
        if !(400..500).contains(&resp.status) || !well_formed {
            failures.push(format!(
                "{} {}: {} {:?} ({})",
                row.method,
                clip(&row.path),
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]),
                row.why
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows were not refused properly:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    let after = app.business_snapshot();
    for ((table, rows_before), (_, rows_after)) in before.iter().zip(&after) {
        assert_eq!(rows_before, rows_after, "{table} changed");
    }
    // Still serving, and the books still balance.
    assert_eq!(app.get("/healthz").await.0, 200);
    app.assert_books_balance();
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}
