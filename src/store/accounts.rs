//! Accounts, their three fund balances, and the ledger that explains every balance.
//!
//! [`apply_balance_change`] is the only code that changes a balance.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::audit::{self, Audit};
use super::{now, text_column, StoreError, StoreResult};
use crate::domain::{new_uuid, AccountId, FundType, Leverage, Money};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub client_id: String,
    pub parent_id: Option<String>,
    pub real: Money,
    pub demo: Money,
    pub bonus: Money,
    pub leverage: u16,
    pub currency: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The columns [`Account::from_row`] reads, in its order (read by position, as clients are).
macro_rules! account_columns {
    () => {
        "id, client_id, parent_id, real_balance, demo_balance, bonus_balance, leverage, currency, created_at, updated_at"
    };
}

impl Account {
    /// A row selected as `account_columns!`.
    fn from_row(r: &Row) -> rusqlite::Result<Account> {
        let money = |col: usize| -> rusqlite::Result<Money> {
            let atoms: i64 = r.get(col)?;
            Money::from_atoms(atoms).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        };
        Ok(Account {
            id: r.get(0)?,
            client_id: r.get(1)?,
            parent_id: r.get(2)?,
            real: money(3)?,
            demo: money(4)?,
            bonus: money(5)?,
            leverage: r.get(6)?,
            currency: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
        })
    }

    pub fn fund(&self, fund: FundType) -> Money {
        match fund {
            FundType::Real => self.real,
            FundType::Demo => self.demo,
            FundType::Bonus => self.bonus,
        }
    }

    /// The guide's `balance = realBalance + demoBalance + bonusBalance`.
    pub fn balance(&self) -> Money {
        Money::total([self.real, self.demo, self.bonus])
    }
}

fn fund_column(fund: FundType) -> &'static str {
    match fund {
        FundType::Real => "real_balance",
        FundType::Demo => "demo_balance",
        FundType::Bonus => "bonus_balance",
    }
}

pub fn insert(
    conn: &Connection,
    client_id: &str,
    parent_id: Option<&str>,
    currency: &str,
    leverage: Leverage,
) -> StoreResult<Account> {
    let id = AccountId::new().to_string();
    let at = now();
    conn.prepare_cached(
        "INSERT INTO accounts (id, client_id, parent_id, leverage, currency, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![id, client_id, parent_id, leverage.get(), currency, at])?;
    get(conn, &id)
}

pub fn get(conn: &Connection, id: &str) -> StoreResult<Account> {
    conn.prepare_cached(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = ?1"))?
        .query_row([id], Account::from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound("Account not found".into()))
}

pub fn primary_for_client(conn: &Connection, client_id: &str) -> StoreResult<Account> {
    conn.prepare_cached(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE client_id = ?1 AND parent_id IS NULL"
    ))?
    .query_row([client_id], Account::from_row)
    .optional()?
    .ok_or_else(|| StoreError::NotFound("The client has no primary account".into()))
}

/// Subaccounts one client may have. Every read of a client lists them all (the service API's
/// accounts answer, the admin page), some inside the writer's transaction with their audit entry,
/// so a client with thousands would slow every other write; a broker's client has a handful.
pub const MAX_SUBACCOUNTS: i64 = 100;

/// Opens a subaccount under the client's primary account; refused past [`MAX_SUBACCOUNTS`].
pub fn insert_subaccount(
    conn: &Connection,
    client_id: &str,
    parent: &Account,
    currency: &str,
    leverage: Leverage,
) -> StoreResult<Account> {
    let held: i64 = conn
        .prepare_cached("SELECT count(*) FROM accounts WHERE client_id = ?1 AND parent_id IS NOT NULL")?
        .query_row([client_id], |r| r.get(0))?;
    if held >= MAX_SUBACCOUNTS {
        return Err(StoreError::Conflict(format!(
            "The client already has {held} subaccounts, the most one client may have"
        )));
    }
    insert(conn, client_id, Some(&parent.id), currency, leverage)
}

/// The client's subaccounts, oldest first.
pub fn subaccounts_for_client(conn: &Connection, client_id: &str) -> StoreResult<Vec<Account>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE client_id = ?1 AND parent_id IS NOT NULL ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([client_id], Account::from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_leverage(conn: &Connection, id: &str, leverage: Leverage) -> StoreResult<Account> {
    let changed = conn
        .prepare_cached("UPDATE accounts SET leverage = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, leverage.get(), now()])?;
    if changed == 0 {
        return Err(StoreError::NotFound("Account not found".into()));
    }
    get(conn, id)
}

pub fn set_currency(conn: &Connection, id: &str, currency: &str) -> StoreResult<Account> {
    conn.prepare_cached("UPDATE accounts SET currency = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, currency, now()])?;
    get(conn, id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Deposit,
    Withdrawal,
    Adjustment,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deposit => "deposit",
            Reason::Withdrawal => "withdrawal",
            Reason::Adjustment => "adjustment",
        }
    }
}

/// One requested movement of money on one fund of one account.
#[derive(Debug, Clone)]
pub struct BalanceChange {
    pub account_id: String,
    pub fund: FundType,
    /// Positive credits, negative debits.
    pub amount: Money,
    pub reason: Reason,
    pub notes: String,
    pub actor: String,
    pub external_ref: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub id: String,
    pub account_id: String,
    pub fund_type: String,
    pub amount: Money,
    pub balance_after: Money,
    pub reason: String,
    pub notes: String,
    pub actor: String,
    pub external_ref: Option<String>,
    pub created_at: String,
}

impl LedgerEntry {
    fn from_row(r: &Row) -> rusqlite::Result<LedgerEntry> {
        let money = |col: &str| -> rusqlite::Result<Money> {
            let atoms: i64 = r.get(col)?;
            Money::from_atoms(atoms).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        };
        Ok(LedgerEntry {
            id: r.get("id")?,
            account_id: r.get("account_id")?,
            fund_type: r.get("fund_type")?,
            amount: money("amount")?,
            balance_after: money("balance_after")?,
            reason: r.get("reason")?,
            notes: r.get("notes")?,
            actor: r.get("actor")?,
            external_ref: r.get("external_ref")?,
            created_at: r.get("created_at")?,
        })
    }
}

/// Moves money: checks the fund, writes the ledger entry with the balance after it, updates the
/// account and appends `audit` (with the amounts added to its details), all on `conn`, which must
/// be inside the caller's `BEGIN IMMEDIATE` transaction. A debit beyond the fund is refused with
/// [`StoreError::InsufficientFunds`] and writes nothing.
pub fn apply_balance_change(
    conn: &Connection,
    change: &BalanceChange,
    audit: Audit,
) -> StoreResult<(Account, LedgerEntry)> {
    if change.amount.is_zero() {
        return Err(StoreError::Invalid("amount must not be zero".into()));
    }
    let account = get(conn, &change.account_id)?;
    let before = account.fund(change.fund);
    let after = before.checked_add(change.amount).ok_or_else(|| {
        StoreError::Invalid(format!(
            "the resulting {} balance would be out of range: {}",
            change.fund,
            crate::domain::OUT_OF_RANGE
        ))
    })?;
    if after.is_negative() {
        return Err(StoreError::InsufficientFunds {
            fund: change.fund,
            required: change.amount.abs(),
            available: before,
        });
    }
    let entry = LedgerEntry {
        id: new_uuid().to_string(),
        account_id: account.id.clone(),
        fund_type: change.fund.as_str().to_string(),
        amount: change.amount,
        balance_after: after,
        reason: change.reason.as_str().to_string(),
        notes: change.notes.clone(),
        actor: change.actor.clone(),
        external_ref: change.external_ref.clone(),
        created_at: now(),
    };
    conn.prepare_cached(
        "INSERT INTO ledger_entries (id, account_id, fund_type, amount, balance_after, reason, notes, actor,
                                     external_ref, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        entry.id,
        entry.account_id,
        entry.fund_type,
        entry.amount.atoms(),
        entry.balance_after.atoms(),
        entry.reason,
        entry.notes,
        entry.actor,
        entry.external_ref,
        entry.created_at,
    ])?;
    // Three statements, one per fund column, each prepared once.
    conn.prepare_cached(&format!(
        "UPDATE accounts SET {} = ?2, updated_at = ?3 WHERE id = ?1",
        fund_column(change.fund)
    ))?
    .execute(params![account.id, after.atoms(), entry.created_at])?;
    audit::append(
        conn,
        &audit
            .detail("accountId", account.id.clone())
            .detail("fundType", change.fund.as_str())
            .detail("amount", change.amount.to_string())
            .detail("balanceBefore", before.to_string())
            .detail("balanceAfter", after.to_string())
            .detail("ledgerEntryId", entry.id.clone()),
    )?;
    // The rows as now stored, without reading them back.
    let mut account = account;
    match change.fund {
        FundType::Real => account.real = after,
        FundType::Demo => account.demo = after,
        FundType::Bonus => account.bonus = after,
    }
    account.updated_at = entry.created_at.clone();
    Ok((account, entry))
}

/// An account's ledger, newest first, paged by `before` (an entry id).
pub fn ledger(conn: &Connection, account_id: &str, before: Option<&str>, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT * FROM ledger_entries WHERE account_id = ?1
           AND (?2 IS NULL OR seq < (SELECT seq FROM ledger_entries WHERE id = ?2))
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![account_id, before, limit.clamp(1, 500)], LedgerEntry::from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every ledger entry of a client's accounts, newest first (for the activity timeline).
pub fn ledger_for_client(conn: &Connection, client_id: &str, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.* FROM ledger_entries l JOIN accounts a ON a.id = l.account_id
         WHERE a.client_id = ?1 ORDER BY l.seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![client_id, limit], LedgerEntry::from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An order-independent digest of ledger entries, each as (id, account, fund, amount, balance
/// after): the same entries give the same digest whether read from the ledger or from the audit
/// entries that recorded them, in any order. Each entry counts by its SHA-256, so no change to
/// the ledger can be made to cancel out in the sum.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LedgerDigest {
    pub entries: u64,
    sum: u128,
}

impl LedgerDigest {
    pub fn add(&mut self, id: &str, account: &str, fund: &str, amount: i64, balance_after: i64) {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        // Length-prefixed, so no two different entries hash the same bytes.
        for field in [id, account, fund] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.update(amount.to_be_bytes());
        h.update(balance_after.to_be_bytes());
        let hash = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        self.entries += 1;
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(first));
    }

    pub fn merge(mut self, other: LedgerDigest) -> LedgerDigest {
        self.entries += other.entries;
        self.sum = self.sum.wrapping_add(other.sum);
        self
    }
}

/// What one pass over the ledger found (see [`check_ledger`]).
#[derive(Debug, Default)]
pub struct LedgerCheck {
    /// Accounts whose stored balance differs from the sum of their ledger entries, per fund.
    pub mismatches: Vec<String>,
    /// Entries whose `balance_after` is not the fund's balance after the entries before them
    /// and their own amount.
    pub running: Vec<String>,
    /// Accounts named by ledger entries that do not exist: the ledger's one foreign key.
    pub missing_accounts: Vec<String>,
    /// Every entry up to the `seq` asked for, to compare with what the audit log recorded.
    pub digest: LedgerDigest,
}

/// At most this many entries are named in [`LedgerCheck::running`]; a count stands for the rest.
const NAMED: usize = 100;

/// Every balance against its ledger, and every ledger entry's account.
///
/// One pass over the ledger in storage order, summing per account in memory, then one over the
/// accounts: on a large ledger that is many times faster than summing each account through its
/// index, which reads the entries in random order. The sums left over once every account has
/// taken its own belong to no account; so the entries' foreign key is checked on the way,
/// without the index search per entry that `PRAGMA foreign_key_check` makes.
///
/// The same pass follows each fund's running balance in the order the entries were written, so
/// an entry whose `balance_after` was edited, or one taken out of the middle of an account's
/// ledger, shows even when the totals were made to agree. Entries up to `digest_through` (a
/// `seq`) go into [`LedgerCheck::digest`].
pub fn check_ledger(conn: &Connection, digest_through: i64) -> StoreResult<LedgerCheck> {
    let mut sums: std::collections::HashMap<String, [i128; 3]> = std::collections::HashMap::new();
    let mut found = LedgerCheck::default();
    let mut off_course = 0usize;
    let mut entries =
        conn.prepare("SELECT account_id, fund_type, amount, balance_after, seq, id FROM ledger_entries ORDER BY seq")?;
    let mut rows = entries.query([])?;
    while let Some(r) = rows.next()? {
        let account = text_column(r, 0)?;
        let fund_type = text_column(r, 1)?;
        // The schema's CHECK allows only the three funds.
        let fund = FundType::ALL
            .iter()
            .position(|f| f.as_str() == fund_type)
            .unwrap_or_default();
        let amount = i128::from(r.get::<_, i64>(2)?);
        let running = match sums.get_mut(account) {
            Some(funds) => {
                funds[fund] += amount;
                funds[fund]
            }
            None => {
                let mut funds = [0; 3];
                funds[fund] = amount;
                sums.insert(account.to_string(), funds);
                amount
            }
        };
        let balance_after = r.get::<_, i64>(3)?;
        let seq = r.get::<_, i64>(4)?;
        if seq <= digest_through {
            found
                .digest
                .add(text_column(r, 5)?, account, fund_type, r.get(2)?, balance_after);
        }
        if i128::from(balance_after) != running {
            off_course += 1;
            if off_course <= NAMED {
                found.running.push(format!(
                    "ledger entry seq {seq} (account {account}, {fund_type}): balance_after {balance_after} \
                     but the entries up to it sum to {running} (hundred-millionths)",
                ));
            }
        }
    }
    if off_course > NAMED {
        found
            .running
            .push(format!("and {} more entries like these", off_course - NAMED));
    }
    let mut accounts = conn.prepare("SELECT id, real_balance, demo_balance, bonus_balance FROM accounts")?;
    let mut rows = accounts.query([])?;
    while let Some(r) = rows.next()? {
        let id = text_column(r, 0)?;
        let summed = sums.remove(id).unwrap_or_default();
        for (i, fund) in FundType::ALL.iter().enumerate() {
            let stored = r.get::<_, i64>(i + 1)?;
            if i128::from(stored) != summed[i] {
                found.mismatches.push(format!(
                    "account {id}: {fund} balance {stored} but ledger sums to {} (hundred-millionths)",
                    summed[i]
                ));
            }
        }
    }
    let mut missing: Vec<String> = sums.into_keys().collect();
    missing.sort();
    found.missing_accounts = missing
        .into_iter()
        .map(|id| format!("ledger_entries of account {id} point at a missing accounts row"))
        .collect();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;
    use crate::store::clients::{self, Contact};
    use crate::store::Db;

    #[test]
    fn a_balance_change_returns_exactly_the_rows_it_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write_sync(|tx| {
            let email = Email::parse("a@example.com")?;
            let client = clients::insert(tx, &email, None, &Contact::default())?;
            let account = insert(tx, &client.id, None, "USD", Leverage::DEFAULT)?;
            for (fund, amount) in [
                (FundType::Real, "100.5"),
                (FundType::Bonus, "7"),
                (FundType::Real, "-0.25"),
            ] {
                let change = BalanceChange {
                    account_id: account.id.clone(),
                    fund,
                    amount: Money::parse(amount)?,
                    reason: Reason::Adjustment,
                    notes: "test".into(),
                    actor: "cli".into(),
                    external_ref: None,
                };
                let (returned, entry) = apply_balance_change(tx, &change, Audit::new("cli", "test", "t"))?;
                let stored = get(tx, &account.id)?;
                assert_eq!(
                    (returned.real, returned.demo, returned.bonus, &returned.updated_at),
                    (stored.real, stored.demo, stored.bonus, &stored.updated_at)
                );
                let stored_entry = ledger(tx, &account.id, None, 1)?.remove(0);
                assert_eq!(
                    serde_json::to_value(&entry).unwrap(),
                    serde_json::to_value(&stored_entry).unwrap()
                );
            }
            Ok(())
        })
        .unwrap();
    }
}
