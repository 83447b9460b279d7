//! What each event does to the books. Every function runs on the caller's `BEGIN IMMEDIATE`
//! transaction, audits what it changes there, and returns the client it concerned; an error
//! rolls the whole webhook back.

use rusqlite::Connection;
use serde_json::{json, Map, Value};

use super::payload::{AccountChange, Action, ClientRef, Event, KycChange, Movement, Registration};
use crate::domain::{FundType, Leverage, Money};
use crate::store::accounts::{self, Account, BalanceChange, Reason};
use crate::store::audit::{self, actions, actors, Audit};
use crate::store::clients::{self, Client, Contact};
use crate::store::{StoreError, StoreResult};

/// Who and what the audit entries of one delivery point back to.
pub struct Ctx<'a> {
    pub attempt_id: &'a str,
    pub ip: &'a str,
    /// Which secret verified the body: `current` or `previous`.
    pub secret: &'a str,
    /// The staff member re-running a stored attempt, if this is a re-run.
    pub rerun_by: Option<&'a str>,
    /// The event, once it could be read: its own `id` and `timestamp` go into every entry.
    pub event: Option<&'a Event>,
}

impl Ctx<'_> {
    pub fn audit(&self, action: &str, target: String) -> Audit {
        let audit = Audit::new(actors::WEBHOOK, action, target)
            .ip(self.ip)
            .detail("attemptId", self.attempt_id)
            .detail("secret", self.secret);
        let audit = match self.event {
            Some(event) => audit
                .detail("eventId", event.id.clone())
                .detail("timestamp", event.timestamp.clone()),
            None => audit,
        };
        match self.rerun_by {
            Some(by) => audit.detail("reprocessedBy", by),
            None => audit,
        }
    }
}

/// Applies one event; returns the id of the client it concerned.
pub fn apply(tx: &Connection, action: &Action, ctx: &Ctx) -> StoreResult<String> {
    match action {
        Action::Register(r) => register(tx, r, ctx),
        Action::Deposit(m) => move_money(tx, m, Reason::Deposit, ctx),
        Action::Withdraw(m) => move_money(tx, m, Reason::Withdrawal, ctx),
        Action::Kyc(k) => set_kyc(tx, k, ctx),
        Action::UpdateAccount(a) => update_account(tx, a, ctx),
    }
}

/// The client an event names: by `clientId` when given and known, else by `email`. When both
/// are given they must not name two different clients.
pub fn find_client(conn: &Connection, who: &ClientRef) -> StoreResult<Option<Client>> {
    let by_platform = match &who.platform_id {
        Some(p) => clients::find_by_platform_id(conn, p)?,
        None => None,
    };
    let by_email = match &who.email {
        Some(e) => clients::find_by_email(conn, e)?,
        None => None,
    };
    match (by_platform, by_email) {
        (Some(a), Some(b)) if a.id != b.id => Err(mismatch()),
        (Some(a), _) => Ok(Some(a)),
        (None, Some(b)) if b.platform_client_id.is_some() && who.platform_id.is_some() => Err(mismatch()),
        (None, b) => Ok(b),
    }
}

fn mismatch() -> StoreError {
    StoreError::Invalid("data.clientId and data.email name different clients".into())
}

fn client(conn: &Connection, who: &ClientRef) -> StoreResult<Client> {
    find_client(conn, who)?.ok_or_else(|| {
        let named = match (&who.platform_id, &who.email) {
            (Some(p), _) => format!("clientId {p}"),
            (None, Some(e)) => format!("email {e}"),
            (None, None) => "no identifier".into(),
        };
        StoreError::NotFound(format!("No client with {named} is registered"))
    })
}

/// The event's account: `data.accountId` when given (it must be this client's), else the
/// client's primary account.
fn account_of(conn: &Connection, client: &Client, account_id: Option<&str>) -> StoreResult<Account> {
    match account_id {
        None => accounts::primary_for_client(conn, &client.id),
        Some(id) => accounts::get(conn, id)
            .ok()
            .filter(|a| a.client_id == client.id)
            .ok_or_else(|| StoreError::NotFound(format!("Account {id} does not belong to this client"))),
    }
}

/// A new client gets a primary account. A repeat for a registered email is not an error: the
/// contact fields it carries are brought up to date, and its `clientId` is linked to a client
/// registered without one (later events may name the client by it); nothing else changes.
fn register(tx: &Connection, r: &Registration, ctx: &Ctx) -> StoreResult<String> {
    let by_email = clients::find_by_email(tx, &r.email)?;
    let by_platform = match &r.platform_id {
        Some(p) => clients::find_by_platform_id(tx, p)?,
        None => None,
    };
    match (by_email, by_platform) {
        (None, None) => {
            let client = clients::insert(tx, &r.email, r.platform_id.as_deref(), &r.contact)?;
            let account = accounts::insert(
                tx,
                &client.id,
                None,
                r.currency.as_deref().unwrap_or("USD"),
                r.leverage.unwrap_or(Leverage::DEFAULT),
            )?;
            audit::append(
                tx,
                &ctx.audit(actions::CLIENT_REGISTER, audit::target("client", &client.id))
                    .detail("email", client.email.clone())
                    .detail("platformClientId", client.platform_client_id.clone())
                    .detail("accountId", account.id),
            )?;
            Ok(client.id)
        }
        (Some(existing), other) => {
            let other_platform_id = existing
                .platform_client_id
                .as_ref()
                .filter(|p| r.platform_id.as_ref().is_some_and(|given| given != *p));
            if other_platform_id.is_some() {
                return Err(StoreError::Conflict(format!(
                    "{} is already registered under another clientId",
                    r.email.as_sent()
                )));
            }
            if other.is_some_and(|o| o.id != existing.id) {
                return Err(StoreError::Conflict(
                    "This clientId is already registered with another email".into(),
                ));
            }
            let link = r
                .platform_id
                .as_deref()
                .filter(|_| existing.platform_client_id.is_none());
            update_contact(tx, &existing, None, link, &r.contact, ctx)?;
            Ok(existing.id)
        }
        (None, Some(_)) => Err(StoreError::Conflict(
            "This clientId is already registered with another email".into(),
        )),
    }
}

fn move_money(tx: &Connection, m: &Movement, reason: Reason, ctx: &Ctx) -> StoreResult<String> {
    let client = client(tx, &m.who)?;
    let account = account_of(tx, &client, m.account_id.as_deref())?;
    if let Some(currency) = m.currency.as_ref().filter(|c| **c != account.currency) {
        return Err(StoreError::Invalid(format!(
            "data.currency {currency} does not match the account's currency {}",
            account.currency
        )));
    }
    let (amount, action) = match reason {
        Reason::Withdrawal => (Money::from_atoms(-m.amount.atoms())?, actions::BALANCE_WITHDRAWAL),
        _ => (m.amount, actions::BALANCE_DEPOSIT),
    };
    let change = BalanceChange {
        account_id: account.id.clone(),
        fund: FundType::Real,
        amount,
        reason,
        notes: match &m.transaction_id {
            Some(tx) => format!("Trading Platform {} {tx}", reason.as_str()),
            None => format!("Trading Platform {}", reason.as_str()),
        },
        actor: actors::WEBHOOK.to_string(),
        external_ref: m.transaction_id.clone(),
    };
    let audit = ctx
        .audit(action, audit::target("account", &account.id))
        .detail("clientId", client.id.clone())
        .detail("transactionId", m.transaction_id.clone());
    accounts::apply_balance_change(tx, &change, audit)?;
    Ok(client.id)
}

fn set_kyc(tx: &Connection, k: &KycChange, ctx: &Ctx) -> StoreResult<String> {
    let client = client(tx, &k.who)?;
    clients::set_kyc(tx, &client.id, k.status, k.notes.as_deref())?;
    audit::append(
        tx,
        &ctx.audit(actions::KYC_UPDATE, audit::target("client", &client.id))
            .detail("from", client.kyc_status.clone())
            .detail("to", k.status.as_str())
            .detail("notes", k.notes.clone()),
    )?;
    Ok(client.id)
}

fn update_account(tx: &Connection, a: &AccountChange, ctx: &Ctx) -> StoreResult<String> {
    let client = client(tx, &a.who)?;
    if a.leverage.is_some() || a.currency.is_some() {
        let account = account_of(tx, &client, a.account_id.as_deref())?;
        let target = audit::target("account", &account.id);
        if let Some(leverage) = a.leverage.filter(|l| l.get() != account.leverage) {
            accounts::set_leverage(tx, &account.id, leverage)?;
            audit::append(
                tx,
                &ctx.audit(actions::LEVERAGE_CHANGE, target.clone())
                    .detail("from", account.leverage)
                    .detail("to", leverage.get()),
            )?;
        }
        if let Some(currency) = a.currency.as_ref().filter(|c| **c != account.currency) {
            // Relabelling money already held would silently change what it is worth.
            if !(account.real.is_zero() && account.demo.is_zero() && account.bonus.is_zero()) {
                return Err(StoreError::Conflict(
                    "The currency of an account that holds funds cannot be changed".into(),
                ));
            }
            accounts::set_currency(tx, &account.id, currency)?;
            audit::append(
                tx,
                &ctx.audit(actions::CURRENCY_CHANGE, target)
                    .detail("from", account.currency.clone())
                    .detail("to", currency.clone()),
            )?;
        }
    }
    update_contact(tx, &client, a.new_email.as_ref(), None, &a.contact, ctx)?;
    Ok(client.id)
}

/// Writes the contact fields that differ, auditing each change with its old and new value.
fn update_contact(
    tx: &Connection,
    client: &Client,
    email: Option<&crate::domain::Email>,
    platform_id: Option<&str>,
    contact: &Contact,
    ctx: &Ctx,
) -> StoreResult<()> {
    let mut changes = Map::new();
    if let Some(p) = platform_id {
        changes.insert("platformClientId".into(), json!({ "from": null, "to": p }));
    }
    let mut note = |field: &str, from: &str, to: Option<&str>| {
        if let Some(to) = to.filter(|t| *t != from) {
            changes.insert(field.into(), json!({ "from": from, "to": to }));
        }
    };
    note("email", &client.email, email.map(crate::domain::Email::as_sent));
    note("firstName", &client.first_name, contact.first_name.as_deref());
    note("lastName", &client.last_name, contact.last_name.as_deref());
    note("phone", &client.phone, contact.phone.as_deref());
    if changes.is_empty() {
        return Ok(());
    }
    clients::update_contact(tx, &client.id, email, platform_id, contact)?;
    audit::append(
        tx,
        &ctx.audit(actions::CLIENT_UPDATE, audit::target("client", &client.id))
            .detail("changes", Value::Object(changes)),
    )?;
    Ok(())
}
